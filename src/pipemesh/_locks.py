"""Advisory file locks: the few platform-specific calls the registry and name locks use.

POSIX ``flock``: a lock belongs to an open file description, so it is dropped
by the kernel when its holder dies (no stale locks after SIGKILL), and a second
``open`` in the same process conflicts with the first. Windows: ``LockFileEx``
on a byte past the file's data (:func:`pipemesh._platform.win_byte_lock`),
which has the same two properties (released when the holder's handle closes or
the process ends; per handle, so a second ``open`` conflicts); the file has no
owner uid to check there.

Lock files are opened with ``O_NOFOLLOW`` and must be regular files: a symlink
planted at a lock path must never make pipemesh create or lock some other file.
These functions raise ``OSError``; callers translate it into the errors.py
hierarchy with the path in the message.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

from pipemesh import _platform

__all__ = ["is_same_file", "lock_within", "open_lock_file", "try_lock", "unlock"]


def open_lock_file(path: Path, *, create: bool = True) -> int:
    """Open (and create, 0600) the lock file ``path``; never follows a symlink.

    Raises:
        OSError: ``ELOOP`` for a symlink, ``EISDIR`` for a directory (or
            ``EINVAL`` for another non-regular file), or the open's own error.
    """
    if _platform.IS_WINDOWS:
        flags = os.O_RDWR | _platform.O_CLOEXEC | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags | (os.O_CREAT if create else 0), 0o600)
    else:
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
        fd = os.open(path, flags | os.O_NONBLOCK, 0o600)  # a FIFO planted here never hangs
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if _platform.current_uid() is not None and st.st_uid != _platform.current_uid():
            raise OSError(errno.EPERM, "owned by another user", str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


def try_lock(fd: int, *, shared: bool = False) -> bool:
    """Take the lock on ``fd`` if it is free now; True if taken."""
    if _platform.IS_WINDOWS:
        return _platform.win_byte_lock(fd, shared=shared)
    import fcntl  # noqa: PLC0415 - POSIX only

    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def lock_within(fd: int, timeout_s: float, *, shared: bool = False) -> bool:
    """Take the lock on ``fd`` within ``timeout_s``; False if it stayed held."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    delay = 0.0005
    while not try_lock(fd, shared=shared):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))  # held only around short critical sections
        delay = min(delay * 2, 0.02)
    return True


def unlock(fd: int) -> None:
    """Release the lock on ``fd`` (closing the fd releases it too)."""
    if _platform.IS_WINDOWS:
        _platform.win_byte_lock(fd, release=True)
        return
    import fcntl  # noqa: PLC0415 - POSIX only

    fcntl.flock(fd, fcntl.LOCK_UN)


def is_same_file(fd: int, path: Path) -> bool:
    """True if ``path`` still names the file open on ``fd`` (not removed or replaced)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)
