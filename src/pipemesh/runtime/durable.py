"""Durable delivery: what makes a plain ``send()`` to a ``durable=True`` agent survive its SIGKILL.

Two halves, both used by :mod:`pipemesh.runtime.agent` (see docs/delivery.md):

Sender side, :class:`Unacked`: every message an agent writes to a durable
peer's pipe is kept in memory (bounded) until that peer says it was handled.
The peer's ``mesh.handled`` control frames carry the handled IDs, batched (one
frame per 256 messages, or every 50 ms, or once its pipe stayed empty for 50 ms).
When the peer is gone (a write fails, it joins again after a restart, or its pid
is dead) the kept
messages move to its spool, in the order they were sent, and the restarted
peer handles them from there. A bare :class:`~pipemesh.runtime.agent.MeshClient`
has no inbox for those frames: it spools first and then notifies (``sync``).

Receiver side, :class:`HandledLog`: a durable agent appends one line
``<sender> <id>`` per handled message to ``<spool>/<name>/.handled`` right after
its handler returns and before anything acknowledges it (one ``write`` to an
``O_APPEND`` file: the page cache keeps it when the process is killed). At
start the last ``window`` records are loaded into the duplicate filter, so a
message replayed from the spool, or left in the pipe by the previous process,
is dropped instead of handled twice. The file is rewritten (temporary file,
rename) with only its last ``window`` records once it holds four windows.

Nothing here runs for non-durable peers: the send hot path is unchanged.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pipemesh import _platform
from pipemesh.errors import MeshError, SpoolError
from pipemesh.spool import Spool

__all__ = [
    "ACK_BATCH",
    "DEFAULT_UNACKED_BYTES",
    "DEFAULT_UNACKED_MESSAGES",
    "HANDLED_DIR",
    "HandledLog",
    "Unacked",
]

HANDLED_DIR: Final = ".handled"
ACK_BATCH: Final = 256
"""A receiver acknowledges a sender after this many handled messages (or when idle)."""
ACK_INTERVAL_S: Final = 0.05
"""...or when this long passed since its last acknowledgement."""
# Above what a peer legitimately holds unhandled (its pipe, plus its router's queue of
# max_queue = 10,000): past it the oldest move to the peer's spool.
DEFAULT_UNACKED_MESSAGES: Final = 50_000
DEFAULT_UNACKED_BYTES: Final = 64 * 1024 * 1024
WATCH_INTERVAL_S: Final = 0.5
"""How often a sender with unacknowledged messages checks that their recipients live."""


# -- receiver side --


class HandledLog:
    """The on-disk record of the messages a durable agent handled (see the module doc).

    Args:
        spool_root: the mesh home's ``spool`` directory.
        name: the agent's name.
        window: how many recent (sender, ID) pairs are kept and reloaded.
    """

    def __init__(self, spool_root: Path, name: str, window: int) -> None:
        directory = Path(spool_root) / HANDLED_DIR
        self.path = directory / name
        self.window = max(1, window)
        self.recent: deque[tuple[str, str]] = deque(maxlen=self.window)
        self._lock = threading.Lock()
        try:
            Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
            torn = self._load()
            self._fd = _platform.open_append(self.path)  # Windows: replaceable while open
            if torn:
                os.write(self._fd, b"\n")  # end the torn line, so the next one stands alone
        except OSError as exc:
            raise SpoolError(
                f"cannot open the record of handled messages {self.path}: {exc.strerror}; "
                "check that the mesh home is writable"
            ) from exc
        self._records = len(self.recent)

    def _load(self) -> bool:
        """Read the last ``window`` records; True if the file ends in a torn line."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return False
        lines = data.split(b"\n")
        lines.pop()  # "" after the last newline, or a line torn by a kill: not a record
        for line in lines[-self.window :]:
            sender, sep, msg_id = line.decode("ascii", "replace").partition(" ")
            if sep and sender and msg_id and " " not in msg_id:
                self.recent.append((sender, msg_id))
        return bool(data) and not data.endswith(b"\n")

    def recent_keys(self) -> list[tuple[str, str]]:
        """The (sender, ID) pairs handled recently, oldest first."""
        return list(self.recent)

    def record(self, sender: str, msg_id: str) -> None:
        """Note that (sender, ID) was handled; one ``write``, compacting now and then."""
        self.recent.append((sender, msg_id))
        line = f"{sender} {msg_id}\n".encode("ascii", "replace")
        with self._lock:
            if self._fd < 0:
                return
            os.write(self._fd, line)
            self._records += 1
            if self._records > 4 * self.window:
                self._compact()

    def _compact(self) -> None:
        tmp = self.path.with_name(f".tmp-{self.path.name}-{os.getpid()}")
        data = "".join(f"{s} {i}\n" for s, i in self.recent).encode("ascii", "replace")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _platform.O_CLOEXEC | _platform.O_BINARY
        fd = os.open(tmp, flags, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        if _platform.IS_WINDOWS:
            # Windows may refuse to replace a file open here: close it first, reopen after.
            os.close(self._fd)
            try:
                _platform.replace(tmp, self.path)
            finally:
                self._fd = _platform.open_append(self.path)
        else:
            os.replace(tmp, self.path)
            new_fd = _platform.open_append(self.path)
            os.close(self._fd)
            self._fd = new_fd
        self._records = len(self.recent)

    def close(self) -> None:
        """Close the file; idempotent."""
        with self._lock:
            fd, self._fd = self._fd, -1
            if fd >= 0:
                os.close(fd)


@dataclass(slots=True)
class AckBatch:
    """Handled IDs a durable receiver still owes one sender, batched."""

    ids: list[str] = field(default_factory=list)


# -- sender side --


@dataclass(slots=True)
class _Peer:
    lock: threading.Lock = field(default_factory=threading.Lock)
    moving: threading.Lock = field(default_factory=threading.Lock)  # one evacuation at a time
    sent: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    size: int = 0
    since: float = 0.0  # monotonic time the oldest kept message was sent (approx.)


class Unacked:
    """Messages written to durable peers and not yet reported handled, per peer.

    Args:
        spool: where the kept messages go when their peer is gone.
        notify: called with a peer's name after messages were moved to its
            spool (sends it ``mesh.spooled``; must not raise).
        report: called with (event, error text) when messages cannot be moved.
        max_messages, max_bytes: bound per peer; past it the oldest kept
            messages move to the spool at once (the peer drops any copy it
            handles twice: it checks its record of handled messages).
    """

    def __init__(
        self,
        spool: Spool,
        notify: Callable[[str], object],
        report: Callable[[str, str], object],
        *,
        max_messages: int = DEFAULT_UNACKED_MESSAGES,
        max_bytes: int = DEFAULT_UNACKED_BYTES,
    ) -> None:
        self._spool = spool
        self._notify = notify
        self._report = report
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._peers: dict[str, _Peer] = {}
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None
        self._stop = threading.Event()
        self._changed = threading.Condition()

    def _peer(self, name: str) -> _Peer:
        peer = self._peers.get(name)
        if peer is None:
            with self._lock:
                peer = self._peers.setdefault(name, _Peer())
        return peer

    def keep(self, to: str, msg_id: str, data: bytes) -> None:
        """Keep one message before it is written to ``to``'s pipe."""
        peer = self._peer(to)
        overflow: list[tuple[str, bytes]] = []
        with peer.lock:
            if not peer.sent:
                peer.since = time.monotonic()
            old = peer.sent.pop(msg_id, None)  # a retry with the same ID replaces it
            if old is not None:
                peer.size -= len(old)
            peer.sent[msg_id] = data
            peer.size += len(data)
            if len(peer.sent) > self.max_messages or peer.size > self.max_bytes:
                # Spill the oldest tenth: a peer that far behind keeps them on disk.
                for _ in range(max(1, len(peer.sent) // 10)):
                    key, value = peer.sent.popitem(last=False)
                    peer.size -= len(value)
                    overflow.append((key, value))
        if overflow:
            with peer.moving:  # the peer drops the copy it handles second
                self._put(to, peer, overflow, notify=True)

    def forget(self, to: str, msg_id: str) -> None:
        """Drop one kept message whose write failed without its peer being gone."""
        peer = self._peer(to)
        with peer.lock:
            data = peer.sent.pop(msg_id, None)
            if data is not None:
                peer.size -= len(data)

    def handled(self, peer_name: str, ids: Iterable[str]) -> int:
        """``peer_name`` reports these IDs handled: forget them; return how many were kept."""
        peer = self._peers.get(peer_name)
        if peer is None:
            return 0
        n = 0
        with peer.lock:
            sent = peer.sent
            for msg_id in ids:
                data = sent.pop(msg_id, None)
                if data is not None:
                    peer.size -= len(data)
                    n += 1
            if sent and n:
                peer.since = time.monotonic()
        if n:
            with self._changed:
                self._changed.notify_all()
        return n

    def count(self, to: str | None = None) -> int:
        """Messages kept for ``to`` (or for every peer)."""
        if to is not None:
            peer = self._peers.get(to)
            return len(peer.sent) if peer is not None else 0
        return sum(len(p.sent) for p in list(self._peers.values()))

    def peers(self) -> list[str]:
        """Names of the peers with kept messages."""
        return [name for name, peer in list(self._peers.items()) if peer.sent]

    def move_to_spool(self, to: str, extra: tuple[str, bytes] | None = None) -> bool:
        """``to`` is gone: move its kept messages (then ``extra``) to its spool, in order.

        Returns True if anything was moved. Raises the spool's error only when
        ``extra`` (the caller's own message) could not be queued; kept messages
        that did not fit stay kept and are reported.
        """
        peer = self._peer(to)
        with peer.moving:
            with peer.lock:
                items = list(peer.sent.items())
                peer.sent.clear()
                peer.size = 0
            if items:
                with self._changed:
                    self._changed.notify_all()
            if extra is not None:
                items.append(extra)
            if not items:
                return False
            self._put(to, peer, items, notify=True, raise_last=extra is not None)
            return True

    def _put(
        self,
        to: str,
        peer: _Peer,
        items: list[tuple[str, bytes]],
        *,
        notify: bool,
        raise_last: bool = False,
    ) -> None:
        done = 0
        try:
            done = self._spool.put_many(to, [(data, msg_id) for msg_id, data in items])
        except MeshError as exc:
            done = getattr(exc, "written", 0)
            left = items[done:]
            if raise_last:
                left = left[:-1]
            if left:
                with peer.lock:  # keep them, oldest first, for the next attempt
                    for msg_id, data in reversed(left):
                        peer.sent[msg_id] = data
                        peer.sent.move_to_end(msg_id, last=False)
                        peer.size += len(data)
                    peer.since = time.monotonic()
                self._report(
                    "unacked_not_spooled",
                    f"{len(left)} messages to {to} are still unacknowledged and could not be "
                    f"queued in its spool: {exc}; they stay in memory and are retried",
                )
            if raise_last:
                raise
        finally:
            if notify and done:
                self._notify(to)

    # -- watching the peers' liveness --

    def watch(self, is_gone: Callable[[str], bool]) -> None:
        """Start (once) the thread that moves kept messages of dead peers to their spools."""
        if self._watch is not None:
            return
        with self._lock:
            if self._watch is not None:
                return
            self._watch = threading.Thread(
                target=self._run_watch, args=(is_gone,), name="pipemesh-durable-watch", daemon=True
            )
            self._watch.start()

    def _run_watch(self, is_gone: Callable[[str], bool]) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            now = time.monotonic()
            for name, peer in list(self._peers.items()):
                if not peer.sent or now - peer.since < WATCH_INTERVAL_S:
                    continue
                try:
                    if is_gone(name):
                        self.move_to_spool(name)
                except Exception as exc:  # the watcher must outlive any one failure
                    self._report("unacked_watch_failed", f"{type(exc).__name__}: {exc}")

    def wait_empty(self, timeout_s: float) -> bool:
        """Wait until every kept message was reported handled; True if so."""
        with self._changed:
            return self._changed.wait_for(lambda: not self.count(), timeout_s)

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the watcher thread; idempotent."""
        self._stop.set()
        watch = self._watch
        if watch is not None and watch is not threading.current_thread():
            with contextlib.suppress(RuntimeError):
                watch.join(timeout_s)
