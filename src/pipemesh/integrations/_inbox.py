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
import os
import secrets
import select
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import filelock

from pipemesh import _platform
from pipemesh.errors import MeshError, UsageError
from pipemesh.wire import Message, validate_name

__all__ = ["READ_KEEP", "InboxFile", "format_messages"]

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
            made.waiters_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
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
        lock = filelock.FileLock(self.directory / "inbox.lock", timeout=self.lock_timeout_s)
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
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.writelines(_to_json(m) + "\n" for m in msgs)
        os.replace(tmp, path)

    def append(self, msg: Message) -> None:
        """Add one received message and wake every waiting process."""
        with self._locked(), open(self.path, "a", encoding="utf-8") as f:
            f.write(_to_json(msg) + "\n")
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
            try:
                fd = os.open(entry.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                # ENXIO: no reader, so the waiter died without cleaning up.
                if exc.errno == errno.ENXIO:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                continue
            try:
                os.write(fd, b"!")
            except OSError:
                pass  # EAGAIN: its pipe is full, so it is awake already
            finally:
                os.close(fd)

    @contextlib.contextmanager
    def waiter(self) -> Iterator[_Waiter | _PollWaiter]:
        """A FIFO in ``waiters/`` that :meth:`notify` writes to; removed on exit.

        Windows has no FIFOs: the waiter there looks at the inbox every 50 ms.
        """
        if _platform.IS_WINDOWS:
            yield _PollWaiter()
            return
        path = self.waiters_dir / f"{os.getpid()}-{secrets.token_hex(4)}.fifo"
        try:
            os.mkfifo(path, 0o600)
            # O_RDWR: the reader never sees EOF when notifiers come and go.
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        except OSError as exc:
            raise MeshError(f"cannot create the waiter FIFO {path}: {exc.strerror}") from exc
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                raise MeshError(f"{path} is not a FIFO")
            yield _Waiter(fd)
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)

    def wait_take(self, timeout_s: float, max_count: int = _MAX_TAKE) -> list[Message]:
        """Take unread messages, waiting up to ``timeout_s`` for the first one to arrive."""
        if timeout_s <= 0:
            return self.take(max_count)
        deadline = time.monotonic() + timeout_s
        with self.waiter() as w:
            while True:
                msgs = self.take(max_count)
                remaining = deadline - time.monotonic()
                if msgs or remaining <= 0:
                    return msgs
                w.wait(remaining)


class _PollWaiter:
    """The Windows waiter: a short bounded sleep; the caller then looks at the inbox."""

    def wait(self, timeout_s: float) -> None:
        """Sleep ``timeout_s``, at most 50 ms."""
        time.sleep(min(max(0.0, timeout_s), 0.05))


@dataclass(frozen=True, slots=True)
class _Waiter:
    fd: int

    def wait(self, timeout_s: float) -> None:
        """Block until a notify byte arrives or ``timeout_s`` passes; drain the FIFO."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout_s))
        if ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self.fd, 4096):
                    pass
