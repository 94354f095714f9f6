"""FIFO transport: each agent's inbox is a named pipe ``<pipes_dir>/<name>.public``.

Why it is built this way (see shared/FIFO-FACTS.md):

* Writes of at most PIPE_BUF are atomic, larger ones from concurrent writers
  tear. PIPE_BUF is the platform's (``os.pathconf(dir, "PC_PIPE_BUF")``, else
  ``select.PIPE_BUF``): 4096 B on Linux, 512 B on macOS. Every frame handed to
  :meth:`FifoOutbox.write_frames` is at most that, so one ``write`` is one whole
  frame, never interleaved.
* Writers open with ``O_WRONLY | O_NONBLOCK``: with no reader the open fails at
  once with ENXIO (a blocking open would hang), which becomes ``AgentOffline``.
  A non-blocking write of at most PIPE_BUF either writes everything or fails
  with EAGAIN, so a full pipe never yields half a frame; we wait with ``poll``
  up to the caller's deadline, then raise ``SendTimeout``.
* The reader opens its FIFO ``O_RDWR``: it then never sees EOF when writers
  come and go (an ``O_RDONLY`` reader would get EOF and endless POLLHUP), and
  its blocking ``read`` costs no CPU while idle.
* A writer whose reader vanished gets EPIPE (SIGPIPE is ignored by Python),
  which becomes ``PeerGone``; the runtime then reopens the path, which picks up
  a restarted receiver.
* The pipe buffer is raised with F_SETPIPE_SZ, but modestly (256 KiB by
  default): an unprivileged user has 64 MiB of pipe buffers in all, and 100+
  agents must not exhaust it. Failure to raise it is not an error.

* EMFILE/ENFILE on any open become :class:`~pipemesh.errors.TooManyOpenFiles`
  with advice, never a raw ``OSError``.

Linux and macOS both allow ``O_RDWR`` on a FIFO; macOS lacks F_SETPIPE_SZ.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import stat
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from pipemesh import _platform
from pipemesh.errors import (
    AgentOffline,
    DeliveryError,
    PeerGone,
    SendTimeout,
    TooManyOpenFiles,
    TransportClosed,
    TransportError,
)

__all__ = [
    "DEFAULT_PIPE_SIZE",
    "FifoInbox",
    "FifoOutbox",
    "FifoTransport",
    "StatusPipe",
    "platform_pipe_buf",
]

DEFAULT_PIPE_SIZE: Final = 256 * 1024
_F_SETPIPE_SZ: Final = 1031  # fcntl.F_SETPIPE_SZ on Linux (fcntl is imported lazily:
_F_GETPIPE_SZ: Final = 1032  # this module must import on Windows, where it is not used)


_POSIX_PIPE_BUF: Final = 512  # the smallest PIPE_BUF POSIX allows


def platform_pipe_buf(path: Path | str | None = None) -> int:
    """The largest FIFO write this platform keeps whole (Linux 4096, macOS 512).

    Asks the file system holding ``path`` first (``PC_PIPE_BUF``), then the
    ``select.PIPE_BUF`` constant, else the POSIX minimum of 512.
    """
    if path is not None:
        with contextlib.suppress(OSError, ValueError):
            value = os.pathconf(path, "PC_PIPE_BUF")
            if value >= _POSIX_PIPE_BUF:
                return int(value)
    return int(getattr(select, "PIPE_BUF", _POSIX_PIPE_BUF))


def _fd_limit_error(exc: OSError, name: str, path: Path) -> TooManyOpenFiles | None:
    """TooManyOpenFiles for EMFILE/ENFILE, with what to do; None for other errors."""
    if exc.errno == errno.EMFILE:
        import resource  # noqa: PLC0415 - POSIX only; this module is imported on Windows too

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return TooManyOpenFiles(
            f"cannot open the pipe of {name} at {path}: this process has all its {soft} "
            "file descriptors open (EMFILE); close agents and clients it no longer needs, "
            "or raise the limit ('ulimit -n')",
            agent_id=name,
        )
    if exc.errno == errno.ENFILE:
        return TooManyOpenFiles(
            f"cannot open the pipe of {name} at {path}: the system's open-file table is "
            "full (ENFILE); stop processes that hold many files, or raise fs.file-max",
            agent_id=name,
        )
    return None


def _make_fifo(path: Path) -> None:
    """Create ``path`` as a 0600 FIFO, replacing a stale non-FIFO or foreign one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISFIFO(st.st_mode) and st.st_uid == _platform.current_uid():
            # Reuse the inode: writers that still hold it open keep working,
            # and bytes they left in it (FIFO-FACTS 5) are resynchronised past.
            os.chmod(path, 0o600)
            return
        os.unlink(path)
    os.mkfifo(path, 0o600)


def _open_fifo(path: Path, flags: int) -> int:
    """Open ``path`` only if it is a FIFO itself: never through a symlink, never a file."""
    fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW)
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a FIFO", str(path))
    return fd


class FifoInbox:
    """The reading end of an agent's public FIFO.

    Two fds on the same FIFO: a blocking ``O_RDWR`` one for the idle wait (no
    CPU while nothing arrives, never EOF), and a non-blocking ``O_RDONLY`` one
    for reads with a timeout, so the fd's flags never change under a reader.
    """

    def __init__(self, name: str, path: Path, pipe_size_bytes: int) -> None:
        self._name = name
        self.path = path
        self._fd = self._nb_fd = -1
        try:
            _make_fifo(path)
            self._fd = _open_fifo(path, os.O_RDWR)
            self._nb_fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            self.close()
            limit = _fd_limit_error(exc, name, path)
            if limit is not None:
                raise limit from exc
            raise TransportError(
                f"cannot create the pipe {path}: {exc.strerror}; check the mesh home permissions"
            ) from exc
        self._poll = select.poll()
        self._poll.register(self._nb_fd, select.POLLIN)
        self.pipe_size = self._set_pipe_size(pipe_size_bytes)
        self._read_size = max(self.pipe_size, 64 * 1024)

    def _set_pipe_size(self, size: int) -> int:
        import fcntl  # noqa: PLC0415 - POSIX only; see the module docstring

        # Raising the size may fail (EPERM once the user's pipe budget is
        # spent, EBUSY if data is buffered); the default size still works.
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._fd, _F_SETPIPE_SZ, size)
        try:
            return int(fcntl.fcntl(self._fd, _F_GETPIPE_SZ))
        except OSError:
            return 64 * 1024

    @property
    def name(self) -> str:
        """The agent name this inbox belongs to."""
        return self._name

    def read(self, timeout_s: float | None = None) -> bytes:
        """Bytes from the pipe: block (``None``), or wait up to ``timeout_s``; b"" if none."""
        fd = self._fd
        if fd < 0:
            raise TransportClosed(f"the inbox of {self._name} is closed")
        try:
            if timeout_s is None:
                return os.read(fd, self._read_size)
            if timeout_s > 0 and not self._poll.poll(max(1, int(timeout_s * 1000))):
                return b""
            return os.read(self._nb_fd, self._read_size)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise TransportError(f"reading {self.path} failed: {exc.strerror}") from exc

    def close(self) -> None:
        """Close both fds; idempotent."""
        fd, self._fd = self._fd, -1  # -1 first, so a second close never hits a reused fd
        nb_fd, self._nb_fd = self._nb_fd, -1
        if nb_fd >= 0:
            os.close(nb_fd)
        if fd >= 0:
            os.close(fd)


class FifoOutbox:
    """A non-blocking writer to one agent's public FIFO."""

    def __init__(self, name: str, path: Path, fd: int, max_frame_bytes: int) -> None:
        self.name = name
        self.path = path
        self._fd = fd
        self._max_frame = max_frame_bytes
        self._lock = threading.Lock()
        self._poll = select.poll()
        self._poll.register(fd, select.POLLOUT)

    def write_frames(self, frames: Sequence[bytes], timeout_s: float) -> None:
        """Write every frame whole within ``timeout_s``; see :class:`Outbox`."""
        deadline = 0.0  # computed on the first EAGAIN only: the common case never waits
        # One message's parts go out together: the lock keeps a concurrent
        # close() from freeing the fd under us (parts may interleave with
        # other processes' parts anyway; the reader reassembles by ID).
        if not self._lock.acquire(True, max(timeout_s, 0.0)):  # positional: no keyword parse
            raise SendTimeout(
                f"another thread kept the pipe to {self.name} busy for {timeout_s:g}s",
                agent_id=self.name,
            )
        try:
            fd = self._fd
            if fd < 0:
                raise TransportClosed(f"the outbox to {self.name} is closed")
            write = os.write
            limit = self._max_frame
            for frame in frames:
                if len(frame) > limit:
                    raise ValueError(f"frame of {len(frame)} bytes is over PIPE_BUF={limit}")
                while True:
                    try:
                        write(fd, frame)
                        break
                    except BlockingIOError:
                        if not deadline:
                            deadline = time.monotonic() + timeout_s
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise SendTimeout(
                                f"the pipe of {self.name} stayed full for {timeout_s:g}s; "
                                "the agent is not reading fast enough (raise timeout_s or "
                                "check that agent)",
                                agent_id=self.name,
                            ) from None
                        self._poll.poll(max(1, int(remaining * 1000)))
                    except BrokenPipeError as exc:
                        raise PeerGone(
                            f"the reader of {self.name} went away", agent_id=self.name
                        ) from exc
                    except OSError as exc:
                        raise PeerGone(
                            f"writing to {self.path} failed: {exc.strerror}", agent_id=self.name
                        ) from exc
        finally:
            self._lock.release()

    def unread_bytes(self) -> int:
        """Bytes written to the pipe and not read yet (FIONREAD; 0 if it cannot be told)."""
        import fcntl  # noqa: PLC0415 - POSIX only; see the module docstring
        import termios  # noqa: PLC0415

        buf = bytearray(4)
        try:
            fcntl.ioctl(self._fd, termios.FIONREAD, buf)
        except (OSError, ValueError):  # closed meanwhile, or a platform without it
            return 0
        return int.from_bytes(buf, sys.byteorder)

    def close(self) -> None:
        """Close the fd; idempotent and safe while another thread writes."""
        with self._lock:
            fd, self._fd = self._fd, -1
            if fd >= 0:
                self._poll.unregister(fd)
                os.close(fd)


class FifoTransport:
    """Inboxes and outboxes on FIFOs in one directory.

    Args:
        pipes_dir: directory holding ``<name>.public`` FIFOs (created 0700).
        pipe_size_bytes: buffer size requested for each inbox.
        suffix: file suffix of inbox FIFOs.
        max_frame_bytes: largest frame written (and accepted) in one write;
            default and maximum: the platform's PIPE_BUF. A smaller value (at
            least 512, the POSIX minimum) tests the chunking of other platforms.

    Raises:
        ValueError: ``max_frame_bytes`` is under 512 or over the platform's PIPE_BUF.
    """

    def __init__(
        self,
        pipes_dir: Path | str,
        *,
        pipe_size_bytes: int = DEFAULT_PIPE_SIZE,
        suffix: str = ".public",
        max_frame_bytes: int | None = None,
    ) -> None:
        self.pipes_dir = Path(pipes_dir)
        self.pipe_size_bytes = pipe_size_bytes
        self.suffix = suffix
        self.pipes_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        pipe_buf = platform_pipe_buf(self.pipes_dir)
        if max_frame_bytes is None:
            max_frame_bytes = pipe_buf
        elif not _POSIX_PIPE_BUF <= max_frame_bytes <= pipe_buf:
            raise ValueError(
                f"max_frame_bytes must be {_POSIX_PIPE_BUF}..{pipe_buf} (this platform's "
                f"PIPE_BUF), got {max_frame_bytes}"
            )
        self._max_frame_bytes = max_frame_bytes

    @property
    def max_frame_bytes(self) -> int:
        """PIPE_BUF (or the smaller value asked for): the largest write a FIFO keeps whole."""
        return self._max_frame_bytes

    def path(self, name: str) -> Path:
        """The FIFO path of ``name``'s inbox."""
        return self.pipes_dir / f"{name}{self.suffix}"

    def address(self, name: str) -> str:
        """The FIFO path of ``name``'s inbox, as text."""
        return str(self.path(name))

    def bind(self, name: str) -> FifoInbox:
        """Create (or take over) ``name``'s FIFO and open it for reading."""
        return FifoInbox(name, self.path(name), self.pipe_size_bytes)

    def connect(self, name: str) -> FifoOutbox:
        """Open ``name``'s FIFO for writing without blocking.

        Raises:
            AgentOffline: no FIFO, or no process reads it.
            DeliveryError: the path is not a FIFO, or permission is denied.
        """
        path = self.path(name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            limit = _fd_limit_error(exc, name, path)
            if limit is not None:
                raise limit from exc
            if exc.errno in (errno.ENXIO, errno.ENOENT):
                raise AgentOffline(
                    f"agent {name} is not reading its pipe (no reader on {path}); "
                    "start it, or check 'pipemesh agents'",
                    agent_id=name,
                ) from exc
            raise DeliveryError(
                f"cannot open the pipe of {name} at {path}: {exc.strerror}", agent_id=name
            ) from exc
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise DeliveryError(
                f"{path} is not a FIFO; remove it and restart agent {name}", agent_id=name
            )
        return FifoOutbox(name, path, fd, self._max_frame_bytes)

    def remove(self, name: str) -> None:
        """Unlink ``name``'s FIFO if present."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(name))


class StatusPipe:
    """The writing end of an agent's private FIFO: heartbeats and status for monitors.

    Only the owning agent writes it. Nothing is written while nobody reads it
    (the non-blocking open fails with ENXIO), and a status that does not fit
    in the pipe is dropped and counted: monitoring must never slow the agent.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dropped = 0
        self._fd = -1
        try:
            _make_fifo(path)
        except OSError as exc:
            raise TransportError(f"cannot create the pipe {path}: {exc.strerror}") from exc

    def publish(self, frames: Sequence[bytes]) -> bool:
        """Write ``frames`` if a monitor reads the pipe; True if they were written."""
        if self._fd < 0:
            try:
                self._fd = _open_fifo(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                return False  # ENXIO: no monitor reading; ENOENT: removed; not a FIFO
        try:
            for frame in frames:
                os.write(self._fd, frame)
        except BlockingIOError:
            self.dropped += 1
            return False
        except OSError:
            self._close_fd()  # EPIPE: the monitor left
            return False
        return True

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def close(self) -> None:
        """Stop publishing and remove the FIFO; idempotent."""
        self._close_fd()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
