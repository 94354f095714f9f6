"""The persisted inbox of an MCP agent, shared by the MCP server and the hooks.

Layout, under ``<home>/mcp/<name>/``::

    inbox.jsonl     messages received and not yet handed to the model, oldest first
    read.jsonl      the last READ_KEEP messages handed over (so ``reply`` finds a sender)
    inbox.lock      lock file for both (filelock, with a timeout)
    waiters/        one FIFO per process waiting for the next message

Why a file and not a question to the server over the mesh: the hooks run as
short-lived processes that cannot join the mesh under NAME (the MCP server
holds that name), and the inbox must survive a restart of the server anyway.
So the file is the one source of truth: the server appends, and whoever hands
messages to the model (the ``inbox`` tool or a hook) *takes* them under the
lock, so each message is handed over exactly once.

Waking without polling: a process that wants to wait creates a FIFO in
``waiters/`` and blocks in ``select`` on it; the server writes one byte to
every waiter FIFO after each append. The waiter creates its FIFO *before* it
looks at the inbox, so an append between the look and the wait still wakes it.

This module must not import the runtime: hooks load it without joining a mesh.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import select
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import filelock

from pipemesh import _platform
from pipemesh.errors import MeshError, UsageError
from pipemesh.wire import Message, validate_name

__all__ = ["READ_KEEP", "SUPERSEDED", "InboxFile", "WaitOutcome", "format_messages"]

READ_KEEP: Final = 200
_MAX_TAKE: Final = 1000


def _to_json(msg: Message) -> str:
    return json.dumps(
        {
            "id": msg.id,
            "from": msg.sender,
            "to": msg.to,
            "type": msg.msg_type,
            "priority": msg.priority,
            "re": msg.reply_to,
            "sent_ns": msg.sent_ns,
            "body": msg.body,
        },
        ensure_ascii=False,
    )


def _line_bytes(msg: Message) -> bytes:
    line = _to_json(msg) + "\n"
    try:
        return line.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in a field: JSON escapes keep it
        return (json.dumps(json.loads(line), ensure_ascii=True) + "\n").encode("ascii")


def _from_json(line: str) -> Message | None:
    try:
        rec = json.loads(line)
        return Message(
            sender=str(rec["from"]),
            to=str(rec["to"]),
            priority=int(rec["priority"]),
            msg_type=str(rec["type"]),
            id=str(rec["id"]),
            body=str(rec["body"]),
            sent_ns=int(rec.get("sent_ns", 0)),
            reply_to=str(rec.get("re", "")),
        )
    except (ValueError, KeyError, TypeError):
        return None  # a torn last line after a crash: skip it, keep the rest


def _private(path: str, flags: int) -> int:
    """open() opener: files 0600 whatever the umask, and never through a symlink."""
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o600)


def format_messages(msgs: list[Message]) -> str:
    """Messages as short text a model reads easily (one header line, then the body)."""
    parts = []
    for m in msgs:
        re = f", re {m.reply_to}" if m.reply_to else ""
        to = "" if m.to else " (broadcast)"
        parts.append(f"[{m.id}] from {m.sender}{to}, {m.msg_type}, P{m.priority}{re}:\n{m.body}")
    return "\n\n".join(parts)


@dataclass(frozen=True, slots=True)
class InboxFile:
    """The inbox files of agent ``name`` in mesh home ``root``.

    Args:
        root: the mesh home directory (already checked by ``MeshHome.open``).
        name: the agent's name.
        lock_timeout_s: how long to wait for the inbox lock.
    """

    root: Path
    name: str
    lock_timeout_s: float = 5.0

    @classmethod
    def open(cls, root: Path, name: str, *, lock_timeout_s: float = 5.0) -> InboxFile:
        """Create (0700) and return the inbox directory of ``name``.

        Raises:
            UsageError: the directory cannot be created.
            ValueError: ``name`` is not a valid agent name.
        """
        validate_name(name)
        made = cls(root, name, lock_timeout_s)
        try:
            # One level at a time: parents=True would make <home>/mcp by the umask.
            for directory in (made.directory.parent, made.directory, made.waiters_dir):
                directory.mkdir(mode=0o700, exist_ok=True)
            os.chmod(made.directory, 0o700)
        except OSError as exc:
            raise UsageError(
                f"cannot create the inbox directory {made.directory}: {exc.strerror}"
            ) from exc
        return made

    @property
    def directory(self) -> Path:
        """``<home>/mcp/<name>``."""
        return self.root / "mcp" / self.name

    @property
    def path(self) -> Path:
        """The unread messages, one JSON object per line."""
        return self.directory / "inbox.jsonl"

    @property
    def read_path(self) -> Path:
        """The last messages handed over."""
        return self.directory / "read.jsonl"

    @property
    def waiters_dir(self) -> Path:
        """FIFOs of processes waiting for the next message."""
        return self.directory / "waiters"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock = filelock.FileLock(
            self.directory / "inbox.lock", timeout=self.lock_timeout_s, mode=0o600
        )
        try:
            with lock:
                yield
        except filelock.Timeout:
            raise MeshError(
                f"inbox lock of {self.name} not acquired after {self.lock_timeout_s:g}s; "
                "is another pipemesh hook or server stuck?"
            ) from None

    def _read(self, path: Path) -> list[Message]:
        try:
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            return []
        return [m for m in map(_from_json, text.splitlines()) if m is not None]

    def _write(self, path: Path, msgs: list[Message]) -> None:
        # Write a temp file and rename it over, so a crash never leaves half a file.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape", opener=_private) as f:
            f.writelines(_to_json(m) + "\n" for m in msgs)
        os.replace(tmp, path)

    def append(self, *msgs: Message) -> None:
        """Add received messages, in order, and wake every waiting process.

        All or nothing: when the write fails (disk full, I/O error) the file is cut
        back to its length before the write, so no torn line is left to glue onto
        the next one, and the error is raised for the caller to keep the messages.

        Raises:
            MeshError: the lock was not acquired in time.
            OSError: the file could not be written (nothing of ``msgs`` is in it).
        """
        if not msgs:
            return
        data = b"".join(_line_bytes(m) for m in msgs)
        with self._locked():
            fd = _private(str(self.path), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                size = os.lseek(fd, 0, os.SEEK_END)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)
        self.notify()

    def pending(self) -> list[Message]:
        """Unread messages, oldest first, without taking them."""
        with self._locked():
            return self._read(self.path)

    def take(self, max_count: int = _MAX_TAKE) -> list[Message]:
        """Remove and return up to ``max_count`` unread messages, oldest first."""
        with self._locked():
            unread = self._read(self.path)
            if not unread:
                return []
            taken, rest = unread[:max_count], unread[max_count:]
            self._write(self.path, rest)
            self._write(self.read_path, (self._read(self.read_path) + taken)[-READ_KEEP:])
            return taken

    def find(self, msg_id: str) -> Message | None:
        """A message by ID among the unread and the recently read ones."""
        with self._locked():
            for msg in self._read(self.path) + self._read(self.read_path):
                if msg.id == msg_id:
                    return msg
        return None

    # -- waking --

    def notify(self) -> None:
        """Write one byte to every waiter FIFO; remove those nobody reads any more."""
        try:
            entries = list(os.scandir(self.waiters_dir))
        except FileNotFoundError:
            return
        for entry in entries:
            _write_byte(entry.path, b"!")

    @contextlib.contextmanager
    def waiter(self, tag: str = "") -> Iterator[_Waiter | _PollWaiter]:
        """A FIFO in ``waiters/`` that :meth:`notify` writes to; removed on exit.

        ``tag`` starts the FIFO's name, so :meth:`supersede` can find the waiters
        of one session. Windows has no FIFOs: the waiter there looks at the inbox
        every 50 ms.
        """
        if _platform.IS_WINDOWS:
            yield _PollWaiter()
            return
        path = self.waiters_dir / f"{tag}{os.getpid()}-{secrets.token_hex(4)}.fifo"
        try:
            os.mkfifo(path, 0o600)
            # O_RDWR: the reader never sees EOF when notifiers come and go.
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        except OSError as exc:
            raise MeshError(f"cannot create the waiter FIFO {path}: {exc.strerror}") from exc
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                raise MeshError(f"{path} is not a FIFO")
            yield _Waiter(fd, path)
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)

    def supersede(self, tag: str, keep: Path) -> int:
        """Tell every other waiter whose name starts with ``tag`` to end; return how many."""
        if not tag:
            return 0
        told = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.waiters_dir):
                if not entry.name.startswith(tag) or entry.path == str(keep):
                    continue
                if _write_byte(entry.path, SUPERSEDED):
                    told += 1
        return told

    def wait_take(
        self,
        timeout_s: float,
        max_count: int = _MAX_TAKE,
        *,
        watch: Sequence[int] = (),
        tag: str = "",
    ) -> WaitOutcome:
        """Take unread messages, waiting up to ``timeout_s`` for the first one to arrive.

        The wait also ends, with no messages, when a descriptor in ``watch`` turns
        readable (the parent process exited) or, with a ``tag``, when a newer
        waiter of the same tag supersedes this one.

        Raises:
            UsageError: ``timeout_s`` is not a finite number.
        """
        if not math.isfinite(timeout_s):
            raise UsageError(f"wait of {timeout_s} seconds is not a finite number of seconds")
        if timeout_s <= 0:
            return WaitOutcome(self.take(max_count), "message")
        deadline = time.monotonic() + timeout_s
        with self.waiter(tag) as w:
            if isinstance(w, _Waiter):  # Windows: no FIFO, so no superseding
                self.supersede(tag, w.path)
            while True:
                msgs = self.take(max_count)
                if msgs:
                    return WaitOutcome(msgs, "message")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return WaitOutcome([], "timeout")
                why = w.wait(remaining, watch)
                if why in ("watch", "superseded"):
                    return WaitOutcome([], why)


SUPERSEDED: Final = b"x"
"""The byte a newer waiter of the same tag writes to an older one: "end, I take over"."""


def _write_byte(path: str, byte: bytes) -> bool:
    """Write ``byte`` to the FIFO at ``path`` without blocking; unlink it if nobody reads it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        # ENXIO: no reader, so the waiter died without cleaning up.
        if exc.errno == errno.ENXIO:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return False
    try:
        os.write(fd, byte)
    except OSError:
        pass  # EAGAIN: its pipe is full, so it is awake already
    finally:
        os.close(fd)
    return True


@dataclass(frozen=True, slots=True)
class WaitOutcome:
    """What :meth:`InboxFile.wait_take` took, and why the wait ended.

    ``reason`` is ``message``, ``timeout``, ``watch`` (a watched process exited)
    or ``superseded`` (a newer waiter of the same tag took over).
    """

    messages: list[Message]
    reason: str


class _PollWaiter:
    """The Windows waiter: a short bounded sleep; the caller then looks at the inbox."""

    def wait(self, timeout_s: float, watch: Sequence[int] = ()) -> str:
        """Sleep ``timeout_s``, at most 50 ms; ``watch`` is not looked at (no select on pipes)."""
        time.sleep(min(max(0.0, timeout_s), 0.05))
        return "timeout"


@dataclass(frozen=True, slots=True)
class _Waiter:
    fd: int
    path: Path

    def wait(self, timeout_s: float, watch: Sequence[int] = ()) -> str:
        """Block until a byte arrives, a ``watch`` fd turns readable, or ``timeout_s`` passes.

        Returns ``notified``, ``superseded``, ``watch`` or ``timeout``; drains the FIFO.
        """
        ready, _, _ = select.select([self.fd, *watch], [], [], max(0.0, timeout_s))
        if any(fd in ready for fd in watch):
            return "watch"
        if self.fd not in ready:
            return "timeout"
        got = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.fd, 4096):
                got += chunk
        return "superseded" if SUPERSEDED in got else "notified"
