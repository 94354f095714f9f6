"""Spools: messages kept on disk for a durable agent that is not reading its pipe.

Layout, one directory per agent, one file per message::

    <home>/spool/<name>/<ns:020d>-<pid:08d>-<seq:010d>-<bytes:010d>-<id>.msg
    <home>/spool/<name>/.tmp-<pid>-<seq>-<random>      (a write in progress)

A file holds the message exactly as it would have crossed the pipe: its
encoded frames (see :mod:`pipemesh.wire`), so the reader decodes it with the
same decoder and limits. Names sort in the order one sender queued them: ``ns``
is the sender's wall clock, forced to grow within a process, and ``seq`` breaks
ties. The byte count in the name lets a directory scan measure a spool without
a ``stat`` per file.

A message is written to a temporary file (``O_EXCL``, 0600), flushed with
``fsync`` (optional), and renamed into place: a reader sees a whole message or
nothing, and a writer killed or out of disk leaves at most a ``.tmp-`` file,
which readers ignore and the owning agent removes when it starts.

Bounds (messages and bytes per agent) are checked against a directory scan
that each writer caches for a short time, so many writers at once may overshoot
a bound by the few messages they queue within that time; a scan always happens
before a message is refused.

This module only stores and lists bytes; the runtime decides when to spool
and drains a spool into its router.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pipemesh import _platform
from pipemesh.errors import SpoolError, SpoolFull
from pipemesh.registry import pid_alive

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_MESSAGES", "Spool", "SpoolEntry"]

DEFAULT_MAX_MESSAGES: Final = 10_000
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
SUFFIX: Final = ".msg"
_O_FLAGS: Final = _platform.O_CLOEXEC | _platform.O_BINARY
TMP_PREFIX: Final = ".tmp-"
_SCAN_TTL_S: Final = 0.25


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One queued message file."""

    path: Path
    size: int


@dataclass(slots=True)
class _Usage:
    count: int
    size: int
    scanned_at: float


class Spool:
    """The spools of one mesh home.

    Args:
        root: the ``spool`` directory of the mesh home.
        max_messages: messages one agent's spool may hold.
        max_bytes: bytes one agent's spool may hold.
        fsync: flush each message to disk before it counts as queued (a
            process crash never loses a queued message either way; fsync also
            covers a machine crash).
    """

    def __init__(
        self,
        root: Path,
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        fsync: bool = True,
    ) -> None:
        self.root = Path(root)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.fsync = fsync
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._last_ns = 0
        self._usage: dict[str, _Usage] = {}

    def directory(self, name: str) -> Path:
        """The spool directory of ``name`` (a validated agent name)."""
        return self.root / name

    # -- writing (any sender) --

    def put(
        self,
        name: str,
        data: bytes,
        msg_id: str,
        *,
        fsync: bool | None = None,
        limits: bool = True,
    ) -> Path:
        """Queue one encoded message for ``name``; return its file.

        ``fsync`` overrides the spool's setting for this message; ``limits=False``
        skips the message and byte bounds (not the disk's).

        Raises:
            SpoolFull: the spool is at ``max_messages`` or ``max_bytes``, or the
                disk is full.
            SpoolError: the spool directory cannot be written.
        """
        directory = self.directory(name)
        with self._lock:
            ns = max(time.time_ns(), self._last_ns + 1)
            self._last_ns = ns
            seq = next(self._seq)
            if limits:
                self._check_room(name, directory, len(data), msg_id)
        final = (
            directory / f"{ns:020d}-{os.getpid():08d}-{seq:010d}-{len(data):010d}-{msg_id}{SUFFIX}"
        )
        tmp = directory / f"{TMP_PREFIX}{os.getpid()}-{seq}-{secrets.token_hex(4)}"
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_FLAGS, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync if fsync is None else fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SpoolFull(
                    f"no space left for the spool of {name} in {directory}: {exc.strerror}; "
                    "free disk space or start the agent",
                    agent_id=name,
                    message_id=msg_id,
                ) from exc
            raise SpoolError(
                f"cannot queue message {msg_id} for {name} in {directory}: {exc.strerror}; "
                "check that the mesh home is writable",
                agent_id=name,
                message_id=msg_id,
            ) from exc
        with self._lock:
            usage = self._usage.get(name)
            if usage is not None:
                usage.count += 1
                usage.size += len(data)
        return final

    def put_many(self, name: str, items: list[tuple[bytes, str]]) -> int:
        """Queue several encoded messages for ``name`` in this order; return how many.

        For messages a sender kept in memory for a peer that died: they are
        written without ``fsync`` (they survive a process crash; a machine
        crash would have lost the sender's memory anyway), and the spool's
        bounds do not refuse them (their sender was told "delivered" already;
        it bounds what it keeps per peer). Only a full disk refuses them.

        Raises:
            SpoolFull, SpoolError: as :meth:`put`; the exception's ``written``
                attribute says how many of ``items`` were queued before it.
        """
        done = 0
        for data, msg_id in items:
            try:
                self.put(name, data, msg_id, fsync=False, limits=False)
            except (SpoolFull, SpoolError) as exc:
                exc.written = done  # type: ignore[attr-defined]
                raise
            done += 1
        return done

    def _check_room(self, name: str, directory: Path, size: int, msg_id: str) -> None:
        usage = self._usage.get(name)
        now = time.monotonic()
        if (
            usage is None
            or now - usage.scanned_at > _SCAN_TTL_S
            or usage.count + 1 > self.max_messages
            or usage.size + size > self.max_bytes
        ):
            count, total = self.usage(name)
            usage = self._usage[name] = _Usage(count, total, now)
        if usage.count + 1 > self.max_messages or usage.size + size > self.max_bytes:
            raise SpoolFull(
                f"the spool of {name} holds {usage.count} messages and {usage.size} bytes, "
                f"limit is {self.max_messages} messages and {self.max_bytes} bytes; "
                f"start {name} so it drains, or raise the spool limits",
                agent_id=name,
                message_id=msg_id,
            )

    # -- reading (the owning agent) --

    def usage(self, name: str) -> tuple[int, int]:
        """(messages, bytes) queued for ``name``."""
        count = total = 0
        for entry in self.entries(name):
            count += 1
            total += entry.size
        return count, total

    def entries(self, name: str) -> list[SpoolEntry]:
        """Queued messages of ``name``, oldest first."""
        out = []
        try:
            it = os.scandir(self.directory(name))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise SpoolError(
                f"cannot list the spool of {name}: {exc.strerror}", agent_id=name
            ) from exc
        with it:
            for entry in it:
                fname = entry.name
                if not fname.endswith(SUFFIX):
                    continue
                fields = fname.split("-", 4)
                if len(fields) != 5 or not fields[3].isdigit():
                    continue
                out.append(SpoolEntry(Path(entry.path), int(fields[3])))
        out.sort(key=lambda e: e.path.name)
        return out

    def remove_stale_tmp(self, name: str) -> int:
        """Remove ``.tmp-`` files left by writers that died; return how many."""
        removed = 0
        try:
            it = os.scandir(self.directory(name))
        except OSError:
            return 0
        with it:
            for entry in it:
                if not entry.name.startswith(TMP_PREFIX):
                    continue
                pid_text = entry.name[len(TMP_PREFIX) :].split("-", 1)[0]
                if pid_text.isdigit() and pid_alive(int(pid_text)):
                    continue
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    @staticmethod
    def read(entry: SpoolEntry) -> bytes | None:
        """The bytes of one queued message, or None if it is gone."""
        try:
            return entry.path.read_bytes()
        except FileNotFoundError:
            return None

    @staticmethod
    def remove(entry: SpoolEntry) -> None:
        """Delete one queued message (after it was handled); idempotent."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
