"""What differs between POSIX and Windows, in one place, for the rest of the package.

Nothing here is imported from a POSIX-only module at import time: ``fcntl`` is
imported inside the functions that need it, and ``msvcrt``/``_winapi`` only on
Windows. Callers use these helpers instead of ``os.getuid``, ``fcntl.flock``,
``os.O_CLOEXEC`` or ``/proc``, so ``import pipemesh`` works under Windows CPython.

Windows file semantics this module absorbs:

* a file open in another process cannot be renamed or deleted unless it was
  opened with ``FILE_SHARE_DELETE``; :func:`open_append` and
  :func:`open_shared_read` open with it, so log rotation can rename a log that
  other agents keep open (their handles follow the renamed file, as on POSIX);
* :func:`replace` retries ``os.replace`` for a bounded time when the target is
  briefly open without that share flag (a reader such as an editor or a virus
  scanner), instead of failing a registry write at once;
* there is no ``flock``: :func:`try_lock` takes an exclusive ``LockFileEx``
  lock on the first byte whatever was asked (see there why).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Final

__all__ = [
    "IS_WINDOWS",
    "LOCK_EX",
    "LOCK_SH",
    "O_BINARY",
    "O_CLOEXEC",
    "current_uid",
    "open_append",
    "open_retrying",
    "open_shared_read",
    "parent_pid",
    "pid_alive",
    "pread",
    "process_start_time",
    "pwrite",
    "read_bytes",
    "replace",
    "stop_signals",
    "try_lock",
    "unlock",
    "user_data_dir",
    "win_byte_lock",
]

IS_WINDOWS: Final = sys.platform == "win32"

# O_CLOEXEC is POSIX; Windows' equivalent (a handle not inherited by children) is O_NOINHERIT.
O_CLOEXEC: Final[int] = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOINHERIT", 0)
_O_BINARY: Final[int] = getattr(os, "O_BINARY", 0)
O_BINARY: Final[int] = _O_BINARY  # Windows: no CRLF translation in os.read/os.write

LOCK_SH: Final = 1  # same values as fcntl.LOCK_SH / LOCK_EX
LOCK_EX: Final = 2

_REPLACE_RETRY_S: Final = 2.0


def current_uid() -> int | None:
    """This process's uid, or None where there are no uids (Windows)."""
    getuid: Callable[[], int] | None = getattr(os, "getuid", None)
    return getuid() if getuid is not None else None


def _win_lock(fd: int, flags: int, *, unlock: bool = False, high: bool = False) -> bool:
    """LockFileEx / UnlockFileEx on one byte of ``fd`` (ctypes: _winapi lacks them).

    Byte 0, or with ``high`` a byte far past any content (offset 2**62), so the
    lock never blocks another process reading or writing the file's data.
    """
    if sys.platform != "win32":
        raise OSError("LockFileEx is Windows-only")
    import ctypes  # noqa: PLC0415 - Windows only
    import msvcrt  # noqa: PLC0415 - Windows only
    from ctypes import wintypes  # noqa: PLC0415 - Windows only

    class Overlapped(ctypes.Structure):
        _fields_ = (
            ("Internal", ctypes.c_void_p),
            ("InternalHigh", ctypes.c_void_p),
            ("Offset", wintypes.DWORD),
            ("OffsetHigh", wintypes.DWORD),
            ("hEvent", wintypes.HANDLE),
        )

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = wintypes.HANDLE(msvcrt.get_osfhandle(fd))
    ov = Overlapped()
    if high:
        ov.OffsetHigh = 0x40000000
    if unlock:
        return bool(kernel32.UnlockFileEx(handle, 0, 1, 0, ctypes.byref(ov)))
    return bool(kernel32.LockFileEx(handle, flags, 0, 1, 0, ctypes.byref(ov)))


def try_lock(fd: int, op: int) -> bool:
    """Take the lock ``op`` (LOCK_SH or LOCK_EX) on ``fd`` without waiting; False if held.

    POSIX: ``flock``. Windows: an exclusive ``LockFileEx`` lock on the file's
    first byte, even for LOCK_SH: appends are atomic only under O_APPEND on POSIX;
    on Windows (and measurably under Wine) two processes appending at once can
    overwrite each other, so appenders there take turns.
    """
    if IS_WINDOWS:
        fail_immediately, exclusive = 0x1, 0x2
        return _win_lock(fd, fail_immediately | exclusive)
    import fcntl  # noqa: PLC0415 - POSIX only

    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def win_byte_lock(fd: int, *, shared: bool = False, release: bool = False) -> bool:
    """Windows: lock (or release) a byte past the data of ``fd`` without waiting; True if done.

    For lock files whose content other processes read while it is held
    (:mod:`pipemesh._locks`); a shared lock admits other shared holders.
    """
    if release:
        return _win_lock(fd, 0, unlock=True, high=True)
    fail_immediately, exclusive = 0x1, 0x2
    return _win_lock(fd, fail_immediately | (0 if shared else exclusive), high=True)


def unlock(fd: int) -> None:
    """Release the lock taken by :func:`try_lock`."""
    if IS_WINDOWS:
        _win_lock(fd, 0, unlock=True)
        return
    import fcntl  # noqa: PLC0415 - POSIX only

    fcntl.flock(fd, fcntl.LOCK_UN)


def _win_open(path: str | os.PathLike[str], access: int, disposition: int, flags: int) -> int:
    """CreateFile with every share flag (delete too), as a C runtime fd."""
    if sys.platform != "win32":
        raise OSError("CreateFile is Windows-only")
    import _winapi  # noqa: PLC0415 - Windows only
    import msvcrt  # noqa: PLC0415 - Windows only

    share = 0x1 | 0x2 | 0x4  # FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
    try:
        handle = _winapi.CreateFile(
            os.fspath(path),
            access,
            share,
            0,
            disposition,
            0x80,
            0,  # FILE_ATTRIBUTE_NORMAL
        )
    except OSError as exc:
        if getattr(exc, "winerror", 0) in (2, 3):  # file or path not found
            raise FileNotFoundError(exc.errno, exc.strerror, os.fspath(path)) from None
        raise
    return msvcrt.open_osfhandle(handle, flags)


def open_append(path: str | os.PathLike[str], *, nofollow: bool = False) -> int:
    """Open ``path`` for appending (created 0600 on POSIX) and return the fd.

    On Windows the file is opened with ``FILE_SHARE_DELETE``, so another
    process may rename it (log rotation) while this fd stays open. ``nofollow``
    (POSIX): refuse a symlink at ``path`` (``ELOOP``).
    """
    if IS_WINDOWS:
        file_append_data = 0x0004
        open_always = 4
        fd = _win_open(path, file_append_data | 0x00100000, open_always, os.O_APPEND)
        os.lseek(fd, 0, os.SEEK_END)
        return fd
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | O_CLOEXEC | _O_BINARY
    if nofollow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    return os.open(path, flags, 0o600)


def open_shared_read(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for binary reading without blocking its rename on Windows."""
    if IS_WINDOWS:
        generic_read = 0x80000000
        open_existing = 3
        fd = _win_open(path, generic_read, open_existing, os.O_RDONLY)
        return os.fdopen(fd, "rb")
    return open(path, "rb")


def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """``os.replace``; on Windows retried for up to 2 s while ``dst`` is held open."""
    if not IS_WINDOWS:
        os.replace(src, dst)
        return
    deadline = time.monotonic() + _REPLACE_RETRY_S
    while True:
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            # Sharing violation: a process holds dst open without FILE_SHARE_DELETE.
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def open_retrying(path: str | os.PathLike[str], flags: int) -> int:
    """``os.open(path, flags)``; on Windows retried for up to 2 s while it is being replaced."""
    if not IS_WINDOWS:
        return os.open(path, flags)
    deadline = time.monotonic() + _REPLACE_RETRY_S
    while True:
        try:
            return os.open(path, flags | _O_BINARY)
        except PermissionError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.002)


def pread(fd: int, size: int, offset: int) -> bytes:
    """``os.pread``; on Windows (which has none) a seek and a read."""
    if not IS_WINDOWS:
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, size)


def pwrite(fd: int, data: bytes, offset: int) -> int:
    """``os.pwrite``; on Windows (which has none) a seek and a write."""
    if not IS_WINDOWS:
        return os.pwrite(fd, data, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.write(fd, data)


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The file's bytes; on Windows retried for up to 2 s while it is being replaced.

    Opening a file that another process is replacing (``os.replace``) fails on
    Windows with a sharing violation or access denied for a moment.
    """
    if not IS_WINDOWS:
        return Path(path).read_bytes()
    deadline = time.monotonic() + _REPLACE_RETRY_S
    while True:
        try:
            return Path(path).read_bytes()
        except PermissionError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.002)


# Linux: /proc/<pid>/stat is read directly, 3-4x cheaper than psutil (measured: ~50 us
# against ~185 us per pid on the loaded CI VM); liveness runs for every registry entry
# inside the registry lock, so this is the hot path of 100 agents joining at once.
_HAS_PROC: Final = sys.platform.startswith("linux") and os.path.isdir("/proc/self")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) from /proc; ("X", 0) if gone; None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return ("X", 0)
    except OSError:
        return None
    # The command name may hold spaces and ')'; fields resume after the last ')'.
    rest = data[data.rfind(b")") + 2 :].split()
    try:
        return rest[0].decode("ascii", "replace"), int(rest[19])
    except (IndexError, ValueError):
        return None


def process_start_time(pid: int) -> int:
    """A number that changes when ``pid`` is reused (its start time), 0 if unknown.

    Linux: clock ticks since boot from /proc; elsewhere: milliseconds since the
    epoch from psutil. Only ever compared with values from this same function.
    """
    if _HAS_PROC:
        st = _proc_stat(pid)
        return st[1] if st else 0
    import psutil  # noqa: PLC0415 - imported on first use: it costs ~10 ms

    try:
        return int(psutil.Process(pid).create_time() * 1000)
    except (psutil.Error, OSError, ValueError):
        return 0


def pid_alive(pid: int, start_time: int = 0) -> bool:
    """True if ``pid`` runs (not a zombie) and, if ``start_time`` is known, is the same process.

    ``start_time`` is a value from :func:`process_start_time`; a reused pid has another.
    """
    if pid <= 0:
        return False
    if _HAS_PROC:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, OverflowError):
            return False
        except PermissionError:
            pass  # alive, owned by someone else
        st = _proc_stat(pid)
        if st is None:
            return True
        state, started = st
        if state in ("Z", "X"):
            return False
        return not (start_time and started and started != start_time)
    import psutil  # noqa: PLC0415 - imported on first use: it costs ~10 ms

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        started = int(proc.create_time() * 1000)
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, OSError):
        return True  # exists, but we may not look at it (another user's process)
    return not (start_time and started and abs(started - start_time) > 1)


def parent_pid() -> int:
    """``os.getppid()``; on Windows through psutil.

    Windows CPython 3.13's ``os.getppid`` calls ``PssCaptureSnapshot``, which
    Wine 8 lacks (the process aborts); psutil reads the same parent pid with
    ``NtQuerySystemInformation``. 0 if unknown.
    """
    if not IS_WINDOWS:
        return os.getppid()
    import psutil  # noqa: PLC0415 - imported on first use: it costs ~10 ms

    try:
        return int(psutil.Process().ppid())
    except (psutil.Error, OSError):
        return 0


def stop_signals() -> list[signal.Signals]:
    """The signals that ask a pipemesh process to stop cleanly on this platform.

    SIGTERM everywhere; on Windows also SIGBREAK (Ctrl-Break in a console, and
    what a console close sends). Ctrl-C arrives as KeyboardInterrupt anyway.
    """
    names = ("SIGTERM", "SIGBREAK", "SIGHUP") if IS_WINDOWS else ("SIGTERM",)
    return [getattr(signal, n) for n in names if hasattr(signal, n)]


def user_data_dir() -> Path | None:
    """``%LOCALAPPDATA%`` on Windows (per-user, owner-only by its inherited ACL), else None."""
    if not IS_WINDOWS:
        return None
    local = os.environ.get("LOCALAPPDATA")
    return Path(local) if local else None


def exit_on_stop_signals(code: int | None = None) -> None:
    """Make every stop signal raise SystemExit (once), so ``with agent:`` closes cleanly.

    The exit code is ``code``, or 128 + the signal number. A second signal while
    the agent closes is ignored, so it cannot interrupt the clean close. On
    Windows this covers Ctrl-Break (SIGBREAK) and closing the console window;
    Ctrl-C is KeyboardInterrupt, which callers already turn into a clean close.
    """
    stops = stop_signals()

    def stop(signum: int, frame: object) -> None:
        for sig in stops:
            signal.signal(sig, signal.SIG_IGN)
        raise SystemExit(128 + signum if code is None else code)

    for sig in stops:
        signal.signal(sig, stop)


def kill_process_tree(pid: int) -> None:
    """Kill ``pid`` and everything it started, at once (no cleanup is asked of them).

    POSIX: the process group of ``pid`` (start it with ``start_new_session=True``).
    Windows has no process groups to signal: the tree is walked with psutil and
    each process is terminated (TerminateProcess). A vanished process is no error.
    """
    if not IS_WINDOWS:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        return
    import psutil  # noqa: PLC0415 - imported on first use: it costs ~10 ms

    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.Error:
        return
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
