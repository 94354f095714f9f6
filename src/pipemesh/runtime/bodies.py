"""Large bodies out of band: the body in a file of the mesh home, a small frame in the pipe.

A FIFO write is atomic only up to PIPE_BUF (4 KiB on Linux), so a larger
message crosses the pipe as ``PART`` frames that the reader decodes and joins
one by one: 16 frames for 64 KiB, 256 for 1 MiB. Between pipemesh agents on a
FIFO mesh a body of at least :data:`DEFAULT_MIN_BYTES` instead goes to a
*body file*, and the pipe carries one frame with ``LEN:0`` and ``FILE:<bytes>``
(docs/frames.md)::

    <home>/bodies/<receiver>/<sender>.<id>      0600, O_CREAT|O_EXCL|O_NOFOLLOW
    <home>/bodies/<receiver>/                   0700, created by the first sender

The reader never takes a path from the frame: it derives it from its own name
and the frame's ``FROM`` and ``ID`` (whose charset has no ``/``), opens it
``O_NOFOLLOW``, checks that it is a regular file of its own uid, not readable
or writable by group or others, exactly ``FILE`` bytes long and within its
``max_body_bytes``, reads it in one go, unlinks it, and hands on an ordinary
:class:`~pipemesh.wire.Message`. Anything else is one ``message_rejected``
error (the file is removed, the router goes on).

Who uses it (negotiated like the binary frame, docs/frames.md): a receiver
advertises :data:`CAPABILITY` in its registry record's ``frames``; a sender
writes a body file only to such a receiver, only on a FIFO transport, and
otherwise (text-only peers, external writers, old records, Windows) writes
``PART`` frames as before. A sender that cannot write the file (disk full,
``EMFILE``, a retry of an ID whose file is still unread) falls back to
``PART`` frames and reports ``body_file_failed``; a sender whose frame write
fails removes its file.

Copies that outlive the pipe carry the body, never a reference: a spooled
message (durable peers, queued sends) and a durable sender's kept copy are
the ordinary ``PART`` frames (:func:`inline`).

Recycling: most of the cost of a fresh file on tmpfs is allocating its pages
(and freeing them at unlink): ~30 us for 64 KiB, ~400 us for 1 MiB here,
more than the copy. So a reader renames a body file of at most
:data:`RECYCLE_MAX_BYTES` it has read to ``.free-<sender>`` in its directory
instead of unlinking it, and that sender's next body file to it reuses the
file (one atomic rename to its message's name, so one taker only; never over
an unread body file of the same name): overwriting pages that exist costs no
allocation. The reader checks a reused file exactly as a fresh one. At most one such file is
kept per (receiver, sender), of at most :data:`RECYCLE_MAX_BYTES`, and at most
:data:`RECYCLE_BUDGET_BYTES` per receiver (it removes its least recently
used ones past that; it counts a file a sender took meanwhile too, so it
never keeps more); sweeps remove them with the rest.

Backlog: a reader that stops reading would otherwise collect one body file
per send (its pipe fills with small reference frames only after thousands),
so a sender writes a body file only while the recipient's pipe holds at most
:data:`MAX_UNREAD_BYTES` unread bytes (``FIONREAD``); past that it writes
``PART`` frames, which wait for room in the pipe like any message. Unread
body files per receiver therefore stay at ``MAX_UNREAD_BYTES`` / (the size of
one reference frame, 50-200 bytes) plus one per concurrent sender.

Sweeps, so a SIGKILL leaks nothing for long: an agent removes every file in
its own ``bodies/<name>/`` when it starts (holding its name lock, before it is
registered, so no sender can address it yet) and after its router stopped on
close; ``pipemesh gc`` removes the directories of names no live agent holds.
A file whose sender was killed between the file and the frame therefore stays
until the receiver restarts or goes (one file per killed send).

This module does file I/O and nothing else: no threads, no logging.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

from pipemesh import _platform, codec
from pipemesh.codec import FrameKind
from pipemesh.errors import DecodeError
from pipemesh.wire import Frame, Message, is_valid_name

__all__ = [
    "CAPABILITY",
    "DEFAULT_MIN_BYTES",
    "BodyRef",
    "BodyStore",
    "inline",
]

CAPABILITY: Final = "file"
"""What a registry record's ``frames`` lists when its agent takes body files."""

DEFAULT_MIN_BYTES: Final = 48 * 1024
"""Smallest body sent as a body file (see BENCHMARKS.md, "large bodies")."""

MAX_UNREAD_BYTES: Final = 1024
"""A sender writes a body file only while the recipient's pipe holds at most this many
unread bytes (5-20 reference frames of 50-200 bytes); past it, PART frames (see "Backlog")."""

RECYCLE_MAX_BYTES: Final = 1024 * 1024
"""Largest body file kept for reuse (``.free-<sender>``): see "Recycling" in the docstring."""

RECYCLE_BUDGET_BYTES: Final = 4 * 1024 * 1024
"""Bytes of recycled files one receiver keeps at most (the least recently used go first)."""

_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_REUSE_FLAGS: Final = os.O_WRONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | _platform.O_CLOEXEC
_WRITE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _platform.O_CLOEXEC
_READ_FLAGS: Final = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | _platform.O_CLOEXEC


class BodyRef(list[bytes]):
    """The one reference frame of a body sent as a body file, plus what it refers to.

    A ``list`` of frames like any other encoding, so it passes through the
    send path unchanged; :meth:`pipemesh.runtime.client.MeshClient._write`
    writes :attr:`body` to the receiver's body file before the frame.
    :meth:`inline` gives the same message as ordinary ``PART`` frames, for
    copies that outlive the pipe (spools) and for the fallback.
    """

    __slots__ = ("_inline", "body", "msg_id", "sender")

    def __init__(
        self,
        frame: bytes,
        body: bytes,
        sender: str,
        msg_id: str,
        make_inline: Callable[[], list[bytes]],
    ) -> None:
        super().__init__((frame,))
        self.body = body
        self.sender = sender
        self.msg_id = msg_id
        self._inline = make_inline

    def inline(self) -> list[bytes]:
        """The message as ordinary frames, the body inside them."""
        return self._inline()


def inline(frames: list[bytes]) -> list[bytes]:
    """``frames`` with a body file reference replaced by ordinary frames (for spools)."""
    return frames.inline() if type(frames) is BodyRef else frames


def reference(
    kind: FrameKind,
    sender: str,
    to: str,
    body: bytes,
    *,
    msg_id: str,
    priority: int,
    msg_type: str,
    sent_ns: int,
    reply_to: str,
    ack: bool,
    make_inline: Callable[[], list[bytes]],
) -> BodyRef:
    """The reference frame (``kind``) of a body sent as a body file."""
    frame = Frame(
        sender,
        to,
        priority,
        msg_type,
        msg_id,
        b"",
        sent_ns,
        reply_to,
        ack=ack,
        file_bytes=len(body),
    )
    return BodyRef(codec.encode_frame(kind, frame), body, sender, msg_id, make_inline)


class BodyStore:
    """The ``bodies/`` directory of one mesh home: write, take and sweep body files.

    Args:
        root: ``<home>/bodies`` (created 0700 and checked by
            :meth:`pipemesh.home.MeshHome.open`).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root = str(root)  # paths are built as text: pathlib costs microseconds a join
        self._uid = _platform.current_uid()  # None on Windows, where no store is made
        self._grabs = itertools.count()  # unique names for recycled files this process takes
        self._buf = bytearray()  # the reader's buffer (router thread only), reused
        self._free: OrderedDict[str, int] = OrderedDict()  # reader: sender -> recycled bytes
        self._free_bytes = 0

    def path(self, receiver: str, sender: str, msg_id: str) -> str:
        """Where the body of ``msg_id`` from ``sender`` to ``receiver`` is kept."""
        return f"{self._root}/{receiver}/{sender}.{msg_id}"

    # -- sender --

    def put(self, receiver: str, ref: BodyRef) -> str:
        """Write ``ref``'s body to ``receiver``'s body file; return its path.

        Raises:
            OSError: the file cannot be written (disk full, it exists already,
                the directory is not a private directory of ours); nothing is left.
        """
        directory = f"{self._root}/{receiver}"
        path = f"{directory}/{ref.sender}.{ref.msg_id}"
        fd = self._reuse(path, directory, ref.sender)
        reused = fd >= 0
        if not reused:
            try:
                fd = os.open(path, _WRITE_FLAGS, 0o600)
            except FileNotFoundError:
                self._make_dir(directory)
                fd = os.open(path, _WRITE_FLAGS, 0o600)
        try:
            view = memoryview(ref.body)
            offset = 0
            for _ in range(len(view) + 1):  # bounded: each write moves at least one byte
                if offset >= len(view):
                    break
                offset += os.pwrite(fd, view[offset:], offset)
            if reused:
                os.ftruncate(fd, offset)  # a recycled file may have been larger
        except BaseException:
            os.close(fd)
            self.discard(path)
            raise
        os.close(fd)
        return path

    def _reuse(self, path: str, directory: str, sender: str) -> int:
        """Take ``sender``'s recycled file in ``path``'s directory as ``path``; its fd or -1."""
        if os.path.lexists(path):
            return -1  # an unread body file of the same ID (a retry): O_EXCL decides
        try:
            os.rename(f"{directory}/.free-{sender}", path)  # atomic: one taker only
        except OSError:
            return -1  # none (or no directory yet): a fresh file
        try:
            return os.open(path, _REUSE_FLAGS)
        except OSError:
            self.discard(path)
            return -1

    def _make_dir(self, directory: str) -> None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)  # 0700 & ~umask is never wider
        st = os.lstat(directory)
        if (
            not stat.S_ISDIR(st.st_mode)
            or st.st_uid != self._uid
            or st.st_mode & (stat.S_IRWXG | stat.S_IRWXO)
        ):
            raise OSError(
                errno.EPERM,
                f"{directory} is not a private directory of uid {self._uid} "
                f"(mode {stat.S_IMODE(st.st_mode):o}, uid {st.st_uid})",
            )

    @staticmethod
    def discard(path: str | Path) -> None:
        """Remove a body file that will not be read (a directory or a vanished file stays)."""
        with contextlib.suppress(OSError):
            os.unlink(path)

    # -- receiver --

    def take(self, receiver: str, max_body_bytes: int, frame: Frame) -> Message:
        """Read, check and remove the body file ``frame`` refers to; the whole message.

        Raises:
            DecodeError: the file is missing, not a regular file of ours, readable
                by others, of another size than ``FILE``, over ``max_body_bytes``,
                or not UTF-8; or the frame is addressed to another agent. The file
                (whatever was at the expected path) is removed.
        """
        what = f"message {frame.id} from {frame.sender}"
        if frame.to and frame.to != receiver:
            raise DecodeError(
                f"{what} refers to a body file but is addressed to {frame.to}, not {receiver}; "
                "message dropped"
            )
        directory = f"{self._root}/{receiver}"
        path = f"{directory}/{frame.sender}.{frame.id}"
        size = frame.file_bytes
        if size > max_body_bytes:
            self.discard(path)
            raise DecodeError(
                f"{what} has a body file of {size} bytes, limit is {max_body_bytes}; "
                "message dropped"
            )
        try:
            fd = os.open(path, _READ_FLAGS)
        except FileNotFoundError:
            raise DecodeError(
                f"{what} refers to the body file {path}, which does not exist (its sender "
                "failed, or a sweep removed it); message dropped"
            ) from None
        except OSError as exc:  # ELOOP: a symlink; never followed
            self.discard(path)
            raise DecodeError(
                f"{what}: its body file {path} cannot be opened without following a link "
                f"({exc.strerror}); message dropped"
            ) from None
        try:
            st = os.fstat(fd)
            problem = ""
            if not stat.S_ISREG(st.st_mode):
                problem = "is not a regular file"
            elif st.st_uid != self._uid:
                problem = f"belongs to uid {st.st_uid}, not {self._uid}"
            elif st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                problem = f"has mode {stat.S_IMODE(st.st_mode):o}, not 0600"
            elif st.st_size != size:
                problem = f"holds {st.st_size} bytes, the frame says FILE:{size}"
            if problem:
                self.discard(path)
                raise DecodeError(f"{what}: its body file {path} {problem}; message dropped")
            if size <= RECYCLE_MAX_BYTES:
                if len(self._buf) < size:
                    self._buf = bytearray(size)
                data: bytes | memoryview = memoryview(self._buf)[: _read_into(fd, self._buf, size)]
            else:
                data = _read_all(fd, size)
        except OSError as exc:
            self.discard(path)
            raise DecodeError(
                f"{what}: its body file {path} cannot be read ({exc.strerror}); message dropped"
            ) from None
        finally:
            os.close(fd)
        if len(data) == size and size <= RECYCLE_MAX_BYTES:
            self._recycle(path, directory, frame.sender, size)
        else:
            self.discard(path)
        if len(data) != size:
            raise DecodeError(
                f"{what}: its body file {path} ended after {len(data)} of {size} bytes; "
                "message dropped"
            )
        try:
            text = str(data, "utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(
                f"{what} has a body that is not UTF-8 (bad byte at {exc.start})"
            ) from None
        return Message(
            frame.sender,
            frame.to,
            frame.priority,
            frame.msg_type,
            frame.id,
            text,
            frame.sent_ns,
            frame.reply_to,
            frame.ack,
        )

    def _recycle(self, path: str, directory: str, sender: str, size: int) -> None:
        """Keep a read body file as ``.free-<sender>``, within the budget (see "Recycling")."""
        try:
            os.rename(path, f"{directory}/.free-{sender}")  # replaces an older one
        except OSError:
            self.discard(path)
            return
        self._free_bytes += size - self._free.pop(sender, 0)
        self._free[sender] = size
        while self._free_bytes > RECYCLE_BUDGET_BYTES:
            oldest, kept = self._free.popitem(last=False)
            self._free_bytes -= kept
            self.discard(f"{directory}/.free-{oldest}")

    def sweep(self, receiver: str) -> int:
        """Remove every body file addressed to ``receiver``; return how many.

        Call it only while holding ``receiver``'s name lock with no router reading
        its pipe (at start before registering, on close after the router stopped).
        """
        directory = self.root / receiver
        removed = 0
        try:
            names = os.listdir(directory)
        except OSError:
            return 0
        for name in names:
            with contextlib.suppress(OSError):  # a directory, or gone meanwhile
                os.unlink(directory / name)
                removed += 1
        return removed

    def sweep_unowned(self, try_name: Callable[[str], _Releasable | None]) -> dict[str, int]:
        """``pipemesh gc``: empty and remove the body directories of names nobody holds.

        Args:
            try_name: takes a name's lock if no live agent holds it (never waits),
                else returns None (``Registry._try_name``).

        Returns:
            receiver name -> body files removed, for the directories removed.
        """
        removed: dict[str, int] = {}
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return removed
        for name in names:
            if not is_valid_name(name):
                continue
            lock = try_name(name)
            if lock is None:
                continue  # a live agent reads (or is about to read) this directory
            try:
                count = self.sweep(name)
                with contextlib.suppress(OSError):
                    os.rmdir(self.root / name)
                removed[name] = count
            finally:
                lock.release()
        return removed


class _Releasable(Protocol):
    def release(self) -> None: ...


def _read_into(fd: int, buf: bytearray, size: int) -> int:
    """Read up to ``size`` bytes of ``fd`` into ``buf``; how many."""
    view = memoryview(buf)
    got = 0
    for _ in range(size + 1):  # each read returns at least one byte, or ends the loop
        if got >= size:
            break
        n = os.readv(fd, [view[got:size]])
        if not n:
            break
        got += n
    return got


def _read_all(fd: int, size: int) -> bytes:
    """Up to ``size`` bytes of ``fd`` (one read for a regular file; bounded loop otherwise)."""
    parts = []
    got = 0
    for _ in range(size + 1):  # each read returns at least one byte, or ends the loop
        chunk = os.read(fd, size - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
        if got >= size:
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)
