r"""Windows named-pipe transport: each agent serves ``\\.\pipe\pipemesh-<mesh>-<name>-public``.

Why it is built this way (see shared/WINDOWS-FACTS.md):

* The pipes are *message* pipes (``PIPE_TYPE_MESSAGE``): one ``WriteFile`` is one
  message of any size, and every client connection gets its own pipe *instance*,
  so concurrent writers never interleave and no frame needs splitting into
  PIPE_BUF parts: :attr:`WinPipeTransport.max_frame_bytes` fits the largest body.
* The reader is one thread (the router's), with overlapped I/O: each instance
  has one pending ``ConnectNamedPipe`` or ``ReadFile``, and :meth:`WinPipeInbox.read`
  waits on all their events at once. Spare listening instances are kept ready,
  so a new writer connects at once instead of seeing ``ERROR_PIPE_BUSY``; when
  the instance cap is reached, writers wait (``WaitNamedPipe``) for a free one.
* Nothing is read while :meth:`WinPipeInbox.read` is not called, so a reader
  that stops reading fills its pipes' buffers and writers wait, as with FIFOs.
  A writer's ``WriteFile`` is overlapped and waited for up to its deadline; on
  timeout it is cancelled. A message is handed on only when ``ReadFile``
  reports its end, so the bytes of a writer that was cancelled or killed
  mid-message (TerminateProcess) are dropped when its instance breaks.
* No reader: the pipe name does not exist (a named pipe disappears with its
  last server handle), so ``CreateFile`` fails with ``ERROR_FILE_NOT_FOUND``
  and :meth:`WinPipeTransport.connect` raises ``AgentOffline`` at once. A writer
  whose reader went away gets ``ERROR_NO_DATA``/``ERROR_BROKEN_PIPE``:
  ``PeerGone``; the runtime reconnects, which picks up a restarted receiver.
* Access: pipes are created with the default security descriptor, which lets
  only the creating user, SYSTEM and Administrators write to them, and with
  ``PIPE_REJECT_REMOTE_CLIENTS``: no other user and no other machine can send.

Pipe names are case-insensitive on Windows; a name with capitals gets a short
hash of its exact spelling, so ``Bob`` and ``bob`` stay two agents.

This module imports on every platform (nothing Windows-only at import time);
only instantiating the transport needs Windows.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Final

from pipemesh.errors import (
    AgentOffline,
    DeliveryError,
    PeerGone,
    SendTimeout,
    TransportClosed,
    TransportError,
)
from pipemesh.wire import MAX_BODY_BYTES, MAX_HEADER_BYTES

__all__ = [
    "DEFAULT_PIPE_SIZE",
    "MAX_INSTANCES",
    "WinPipeInbox",
    "WinPipeOutbox",
    "WinPipeTransport",
    "mesh_id",
    "pipe_name",
]

DEFAULT_PIPE_SIZE: Final = 256 * 1024
MAX_INSTANCES: Final = 254  # PIPE_UNLIMITED_INSTANCES is 255 per name
SPARE_INSTANCES: Final = 2
CONNECT_BUSY_WAIT_S: Final = 5.0
_READ_CHUNK: Final = 64 * 1024
_RETURN_AFTER_BYTES: Final = 4 * 1024 * 1024  # hand bytes on at least this often

# Win32 values (winerror.h, winbase.h); _winapi lacks some of them.
_ERROR_FILE_NOT_FOUND: Final = 2
_ERROR_ACCESS_DENIED: Final = 5
_ERROR_BROKEN_PIPE: Final = 109
_ERROR_SEM_TIMEOUT: Final = 121
_ERROR_PIPE_BUSY: Final = 231
_ERROR_NO_DATA: Final = 232
_ERROR_PIPE_NOT_CONNECTED: Final = 233
_ERROR_MORE_DATA: Final = 234
_ERROR_IO_INCOMPLETE: Final = 996
_ERROR_IO_PENDING: Final = 997
_ERROR_PIPE_CONNECTED: Final = 535
_PIPE_ACCESS_INBOUND: Final = 0x00000001
_FILE_FLAG_FIRST_PIPE_INSTANCE: Final = 0x00080000
_FILE_FLAG_OVERLAPPED: Final = 0x40000000
_PIPE_TYPE_MESSAGE: Final = 0x4
_PIPE_READMODE_MESSAGE: Final = 0x2
_PIPE_REJECT_REMOTE_CLIENTS: Final = 0x8
_GENERIC_WRITE: Final = 0x40000000
_OPEN_EXISTING: Final = 3
_WAIT_OBJECT_0: Final = 0
_WAIT_TIMEOUT: Final = 0x102
_INFINITE: Final = 0xFFFFFFFF
_MAX_WAIT_OBJECTS: Final = 64
_GONE: Final = (_ERROR_BROKEN_PIPE, _ERROR_NO_DATA, _ERROR_PIPE_NOT_CONNECTED)


def _api() -> Any:
    """The ``_winapi`` module (Windows only), typed loosely: its stubs are Windows-only."""
    if sys.platform != "win32":
        raise TransportError("the named-pipe transport needs Windows; use FifoTransport here")
    import _winapi  # noqa: PLC0415 - Windows only

    return _winapi


def mesh_id(home_root: str | os.PathLike[str]) -> str:
    """A short id of the mesh home, so two meshes on one machine never share pipe names."""
    path = os.path.normcase(os.path.abspath(os.fspath(home_root)))
    return hashlib.sha1(path.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()[
        :12
    ]


def pipe_name(mesh: str, name: str, kind: str = "public") -> str:
    """``\\\\.\\pipe\\pipemesh-<mesh>-<name>-<kind>`` (names with capitals get a hash suffix)."""
    if name != name.lower():
        digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:8]
        name = f"{name}-{digest}"
    return rf"\\.\pipe\pipemesh-{mesh}-{name}-{kind}"


def _winerror(exc: OSError) -> int:
    return int(getattr(exc, "winerror", 0) or 0)


class _Instance:
    """One server instance of the pipe and its one pending operation."""

    __slots__ = ("connected", "handle", "ov", "partial")

    def __init__(self, handle: int) -> None:
        self.handle = handle
        self.ov: Any = None
        self.connected = False
        self.partial: list[bytes] = []


class WinPipeInbox:
    """The server side of an agent's public pipe; read by one thread only.

    Args:
        name: the agent name.
        address: the full pipe name.
        pipe_size_bytes: the input buffer of each instance.
        max_instances: at most this many writers are connected at once.
    """

    def __init__(
        self, name: str, address: str, pipe_size_bytes: int, max_instances: int = MAX_INSTANCES
    ) -> None:
        self._api = _api()
        self._name = name
        self.address = address
        self.pipe_size_bytes = pipe_size_bytes
        self.max_instances = max(2, min(max_instances, MAX_INSTANCES))
        self.accepting = True  # cleared by WinPipeTransport.remove (any thread)
        self.dropped_partial = 0  # messages cut by a writer that died or gave up
        self._instances: list[_Instance] = []
        self._closed = False
        self._turn = 0
        self._add_instance(first=True)
        for _ in range(SPARE_INSTANCES - 1):
            self._add_instance(first=False)

    @property
    def name(self) -> str:
        """The agent name this inbox belongs to."""
        return self._name

    # -- instances --

    def _add_instance(self, *, first: bool) -> None:
        api = self._api
        open_mode = _PIPE_ACCESS_INBOUND | _FILE_FLAG_OVERLAPPED
        if first:
            # Refuse a name another process already serves (a squatter, or a live twin).
            open_mode |= _FILE_FLAG_FIRST_PIPE_INSTANCE
        pipe_mode = _PIPE_TYPE_MESSAGE | _PIPE_READMODE_MESSAGE | _PIPE_REJECT_REMOTE_CLIENTS
        try:
            handle = api.CreateNamedPipe(
                self.address,
                open_mode,
                pipe_mode,
                MAX_INSTANCES + 1,
                0,
                self.pipe_size_bytes,
                0,
                0,  # NULL: the default security descriptor (see the module docstring)
            )
        except OSError as exc:
            if first and _winerror(exc) == _ERROR_ACCESS_DENIED:
                raise TransportError(
                    f"the pipe {self.address} is already served by another process; "
                    f"is agent {self._name} running twice?"
                ) from exc
            raise TransportError(f"cannot create the pipe {self.address}: {exc}") from exc
        inst = _Instance(handle)
        self._instances.append(inst)
        try:
            inst.ov = api.ConnectNamedPipe(handle, overlapped=True)
        except OSError:
            self._drop(inst)  # a client came and went already; the next instance serves

    def _drop(self, inst: _Instance) -> None:
        """Cancel the instance's pending operation and close it."""
        ov, inst.ov = inst.ov, None
        if ov is not None:
            with contextlib.suppress(OSError):
                ov.cancel()
            with contextlib.suppress(OSError):
                ov.GetOverlappedResult(True)
        with contextlib.suppress(OSError):
            self._api.CloseHandle(inst.handle)
        if inst.partial:
            self.dropped_partial += 1
            inst.partial = []
        with contextlib.suppress(ValueError):
            self._instances.remove(inst)

    def _listening(self) -> int:
        return sum(1 for inst in self._instances if not inst.connected)

    def _keep_spares(self) -> None:
        if not self.accepting:
            for inst in [i for i in self._instances if not i.connected]:
                self._drop(inst)
            return
        while self._listening() < SPARE_INSTANCES and len(self._instances) < self.max_instances:
            self._add_instance(first=False)

    def _start_read(self, inst: _Instance, size: int) -> None:
        try:
            inst.ov, _ = self._api.ReadFile(inst.handle, size, overlapped=True)
        except OSError:
            inst.ov = None
            self._drop(inst)  # the writer is gone (ERROR_BROKEN_PIPE)

    def _step(self, inst: _Instance, out: list[bytes]) -> bool:
        """Take the result of ``inst``'s operation if it finished; True if it had."""
        ov = inst.ov
        if ov is None:
            return False
        try:
            n, err = ov.GetOverlappedResult(False)
        except OSError:
            inst.ov = None
            self._drop(inst)  # broken: the writer closed, died, or gave up mid-message
            return True
        if err == _ERROR_IO_INCOMPLETE and (
            inst.connected or self._api.WaitForSingleObject(ov.event, 0) != _WAIT_OBJECT_0
        ):
            return False
        # (A listening instance whose event is set but whose status still reads pending
        # is connected: Wine signals a finished ConnectNamedPipe before it writes the
        # status, and only its own waits fix the status up; seen as writers stuck on
        # ERROR_PIPE_BUSY with no spare instance left. Windows sets the status first.)
        if not inst.connected:
            inst.connected = True
            self._start_read(inst, _READ_CHUNK)
            return True
        data = ov.getbuffer()[:n] if n else b""
        if err == _ERROR_MORE_DATA:
            inst.partial.append(data)
            left = _READ_CHUNK
            with contextlib.suppress(OSError):
                left = max(1, int(self._api.PeekNamedPipe(inst.handle)[1]) or _READ_CHUNK)
            self._start_read(inst, left)
            return True
        # The end of a message: only now is it handed on, whole.
        if inst.partial:
            inst.partial.append(data)
            out.append(b"".join(inst.partial))
            inst.partial = []
        elif data:
            out.append(data)
        self._start_read(inst, _READ_CHUNK)
        return True

    def _harvest(self, out: list[bytes]) -> None:
        """Collect every finished operation, round-robin so no writer starves another."""
        size = 0
        for _ in range(10_000):  # bounded: each pass only continues while data flows
            progressed = False
            instances = list(self._instances)
            start = self._turn % max(1, len(instances))
            self._turn += 1
            for inst in instances[start:] + instances[:start]:
                before = len(out)
                if self._step(inst, out):
                    progressed = True
                    size += sum(len(b) for b in out[before:])
            self._keep_spares()
            if not progressed or size >= _RETURN_AFTER_BYTES:
                return

    def _wait(self, timeout_ms: int) -> None:
        """Wait until any instance's operation finishes, or ``timeout_ms`` passes."""
        events = [inst.ov.event for inst in self._instances if inst.ov is not None]
        if not events:
            time.sleep(min(timeout_ms, 50) / 1000)  # only while every instance is in use
            return
        api = self._api
        if len(events) <= _MAX_WAIT_OBJECTS:
            api.WaitForMultipleObjects(events, False, timeout_ms)
            return
        batched = getattr(api, "BatchedWaitForMultipleObjects", None)  # Python 3.12+
        if batched is not None:
            with contextlib.suppress(TimeoutError):  # it raises where the others return
                batched(events, False, timeout_ms)
            return
        # Python 3.11 with more than 64 writers connected: short waits, chunk by chunk.
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            for i in range(0, len(events), _MAX_WAIT_OBJECTS):
                chunk = events[i : i + _MAX_WAIT_OBJECTS]
                if api.WaitForMultipleObjects(chunk, False, 0) != _WAIT_TIMEOUT:
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            api.WaitForMultipleObjects(
                events[:_MAX_WAIT_OBJECTS], False, min(10, int(remaining * 1000))
            )

    def read(self, timeout_s: float | None = None) -> bytes:
        """Whole messages that came: block (``None``), or wait up to ``timeout_s``; b"" if none."""
        if self._closed:
            raise TransportClosed(f"the inbox of {self._name} is closed")
        deadline = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
        out: list[bytes] = []
        for _ in range(1 << 30):  # bounded by the deadline; the count only satisfies the style
            self._harvest(out)
            if out:
                return b"".join(out)
            if deadline is None:
                timeout_ms = _INFINITE - 1
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return b""
                timeout_ms = max(1, int(remaining * 1000))
            self._wait(timeout_ms)
        return b""

    def close(self) -> None:
        """Close every instance: writers get PeerGone, the pipe name disappears. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for inst in list(self._instances):
            self._drop(inst)


class WinPipeOutbox:
    """A client connection to one agent's public pipe; safe to share between threads.

    After a write that timed out part-way, the connection is closed (so the
    reader drops the partial message) and reopened on the next write.
    """

    def __init__(self, name: str, address: str, handle: int) -> None:
        self._api = _api()
        self.name = name
        self.address = address
        self._handle: int | None = handle
        self._lock = threading.Lock()
        self._closed = False

    def _reopen(self) -> int:
        try:
            handle = _open_client(self._api, self.address, self.name, CONNECT_BUSY_WAIT_S)
        except AgentOffline as exc:
            raise PeerGone(f"the reader of {self.name} went away", agent_id=self.name) from exc
        self._handle = handle
        return handle

    def _close_handle(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            with contextlib.suppress(OSError):
                self._api.CloseHandle(handle)

    def write_frames(self, frames: Sequence[bytes], timeout_s: float) -> None:
        """Write each frame as one message within ``timeout_s``; see :class:`Outbox`."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        if not self._lock.acquire(timeout=max(timeout_s, 0.0)):
            raise SendTimeout(
                f"another thread kept the pipe to {self.name} busy for {timeout_s:g}s",
                agent_id=self.name,
            )
        try:
            if self._closed:
                raise TransportClosed(f"the outbox to {self.name} is closed")
            for frame in frames:
                handle = self._handle if self._handle is not None else self._reopen()
                self._write_one(handle, frame, deadline, timeout_s)
        finally:
            self._lock.release()

    def _write_one(self, handle: int, frame: bytes, deadline: float, timeout_s: float) -> None:
        api = self._api
        try:
            ov, err = api.WriteFile(handle, frame, overlapped=True)
        except OSError as exc:
            self._close_handle()
            raise self._gone(exc) from exc
        if err == _ERROR_IO_PENDING:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if api.WaitForSingleObject(ov.event, remaining_ms) == _WAIT_TIMEOUT:
                with contextlib.suppress(OSError):
                    ov.cancel()
        try:
            written, err = ov.GetOverlappedResult(True)
        except OSError as exc:
            self._close_handle()
            raise self._gone(exc) from exc
        if err == 0 and written == len(frame):
            return
        if written:
            # Part of the message went out: closing breaks the instance, and the reader
            # drops what it got of it (it hands on only messages whose end it read).
            self._close_handle()
        raise SendTimeout(
            f"the pipe of {self.name} stayed full for {timeout_s:g}s; the agent is not "
            "reading fast enough (raise timeout_s or check that agent)",
            agent_id=self.name,
        )

    def _gone(self, exc: OSError) -> PeerGone:
        if _winerror(exc) in _GONE:
            return PeerGone(f"the reader of {self.name} went away", agent_id=self.name)
        return PeerGone(f"writing to {self.address} failed: {exc}", agent_id=self.name)

    def close(self) -> None:
        """Close the connection; idempotent and safe while another thread writes."""
        with self._lock:
            self._closed = True
            self._close_handle()


def _open_client(api: Any, address: str, name: str, busy_wait_s: float) -> int:
    """Open ``address`` for overlapped writing; wait for a free instance if all are busy."""
    deadline = time.monotonic() + busy_wait_s
    for _ in range(1000):  # each round waits in WaitNamedPipe; bounded by the deadline too
        try:
            return int(
                api.CreateFile(
                    address, _GENERIC_WRITE, 0, 0, _OPEN_EXISTING, _FILE_FLAG_OVERLAPPED, 0
                )
            )
        except OSError as exc:
            code = _winerror(exc)
            if code in (_ERROR_FILE_NOT_FOUND, 3):
                raise AgentOffline(
                    f"agent {name} is not reading its pipe (no server for {address}); "
                    "start it, or check 'pipemesh agents'",
                    agent_id=name,
                ) from exc
            if code != _ERROR_PIPE_BUSY:
                raise DeliveryError(
                    f"cannot open the pipe of {name} at {address}: {exc}", agent_id=name
                ) from exc
        # Every instance is taken: wait for the reader to offer another one.
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            break
        try:
            api.WaitNamedPipe(address, remaining_ms)
        except OSError as exc:
            if _winerror(exc) == _ERROR_FILE_NOT_FOUND:
                raise AgentOffline(
                    f"agent {name} stopped reading its pipe ({address})", agent_id=name
                ) from exc
            if _winerror(exc) != _ERROR_SEM_TIMEOUT:
                raise DeliveryError(f"waiting for the pipe of {name} failed: {exc}") from exc
    raise SendTimeout(
        f"every instance of the pipe of {name} stayed busy for {busy_wait_s:g}s; "
        "too many writers at once (retry, or check that agent)",
        agent_id=name,
    )


class WinPipeTransport:
    """Inboxes and outboxes on Windows named pipes, one pipe name per agent.

    Args:
        mesh: the mesh id (see :func:`mesh_id`) that prefixes every pipe name.
        pipe_size_bytes: the input buffer of each pipe instance.
        max_instances: writers connected to one agent at once (at most 254).
    """

    def __init__(
        self,
        mesh: str,
        *,
        pipe_size_bytes: int = DEFAULT_PIPE_SIZE,
        max_instances: int = MAX_INSTANCES,
    ) -> None:
        _api()  # fail early, with a clear message, off Windows
        self.mesh = mesh
        self.pipe_size_bytes = pipe_size_bytes
        self.max_instances = max_instances
        self._inboxes: dict[str, WinPipeInbox] = {}
        self._lock = threading.Lock()

    @property
    def max_frame_bytes(self) -> int:
        """A message pipe keeps any write whole: the largest body fits in one frame."""
        return MAX_BODY_BYTES + MAX_HEADER_BYTES + 64

    def address(self, name: str) -> str:
        r"""The pipe name of ``name``'s inbox (``\\.\pipe\...``)."""
        return pipe_name(self.mesh, name)

    def bind(self, name: str) -> WinPipeInbox:
        """Serve ``name``'s pipe and return its inbox."""
        inbox = WinPipeInbox(
            name, self.address(name), self.pipe_size_bytes, max_instances=self.max_instances
        )
        with self._lock:
            self._inboxes[name] = inbox
        return inbox

    def connect(self, name: str) -> WinPipeOutbox:
        """Connect to ``name``'s pipe.

        Raises:
            AgentOffline: nobody serves that pipe.
            SendTimeout: every instance stayed busy for a few seconds.
            DeliveryError: access denied or another OS error.
        """
        address = self.address(name)
        api = _api()
        return WinPipeOutbox(name, address, _open_client(api, address, name, CONNECT_BUSY_WAIT_S))

    def remove(self, name: str) -> None:
        """Stop taking new writers for ``name`` (connected ones finish); idempotent.

        There is no file to delete: the pipe name vanishes with its last server handle.
        """
        with self._lock:
            inbox = self._inboxes.pop(name, None)
        if inbox is not None:
            inbox.accepting = False

    def inboxes(self) -> Iterator[WinPipeInbox]:
        """The inboxes this transport serves (for tests and diagnostics)."""
        with self._lock:
            return iter(list(self._inboxes.values()))
