"""Know, without polling, when the process that started us is gone.

A hook or MCP server started by Claude Code, Gemini CLI or Codex must not outlive
its session: a ``hook stop --wait`` or ``hook wake`` orphaned by a crashed CLI would
otherwise go on waiting (and taking messages) for nobody. :class:`ParentWatch`
gives file descriptors that become readable the moment the parent exits, so a
waiter adds them to its ``select`` and needs no timer:

- Linux: ``pidfd_open`` on the parent (readable when it exits). When the parent
  is a shell that ran our command line (``sh -c '...'``), its parent (the CLI) is
  watched too: a shell waiting for us outlives a CLI that was killed.
- macOS and the BSDs: a ``kqueue`` with ``EVFILT_PROC``/``NOTE_EXIT`` on the parent.
- Elsewhere (or when both fail): no descriptor, so the caller's own timeout bounds
  the wait, as before.

A parent that is gone before the watch is set up (we were re-parented meanwhile)
counts as gone at once; a process started with parent pid 0 or 1 (by init, or as a
container's first process) has nothing to watch.

This module must not import the runtime.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
from typing import Any, Final

from pipemesh import _platform

__all__ = ["ParentWatch"]

_SHELLS: Final = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox", "fish"})


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(command name, parent pid) of ``pid`` from /proc, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    left, right = data.find(b"("), data.rfind(b")")
    if left < 0 or right < 0:
        return None
    fields = data[right + 2 :].split()
    try:
        return data[left + 1 : right].decode(errors="replace"), int(fields[1])
    except (IndexError, ValueError):
        return None


def _watched_pids(ppid: int) -> list[int] | None:
    """The parent, and the CLI above it when the parent is a shell; None when that shell
    was orphaned already (its parent is init: the CLI that started it is gone)."""
    pids = [ppid]
    info = _proc_stat(ppid)
    if info is not None and info[0] in _SHELLS:
        if info[1] == 1:
            return None
        if info[1] > 1:
            pids.append(info[1])
    return pids


class ParentWatch:
    """Descriptors that turn readable when our parent (or the CLI above its shell) exits.

    Use as a context manager; :attr:`fds` go into ``select``; :meth:`gone` says whether
    a watched process has exited (without blocking).

    Args:
        init_parent_is_gone: a parent pid of 1 at start means we were orphaned already
            (right for hooks, which a CLI always starts; not for a server that may run
            under a container's init).
    """

    def __init__(self, *, init_parent_is_gone: bool = False) -> None:
        self.initial_ppid = _platform.parent_pid()
        self.fds: list[int] = []
        self._kqueue: Any = None
        self._parent_started = 0
        self._gone_at_start = init_parent_is_gone and self.initial_ppid == 1
        if self.initial_ppid <= 1:
            return  # started by init or as a container's first process: nothing to watch
        if _platform.IS_WINDOWS:
            # No re-parenting and no descriptor to wait on: gone() asks whether the
            # parent (same pid, same start time) still runs; no select-able fds.
            self._parent_started = _platform.process_start_time(self.initial_ppid)
            return
        pids = _watched_pids(self.initial_ppid)
        if pids is None:
            self._gone_at_start = True
            return
        if sys.platform == "linux":
            for pid in pids:
                try:
                    self.fds.append(os.pidfd_open(pid))
                except ProcessLookupError:
                    self._gone_at_start = True
                except OSError:
                    pass  # an old kernel: fall back to the caller's timeout
        elif sys.platform == "darwin" or sys.platform.startswith("freebsd"):  # pragma: no cover
            kq = select.kqueue()
            try:
                kq.control(
                    [
                        select.kevent(
                            self.initial_ppid,
                            filter=select.KQ_FILTER_PROC,
                            flags=select.KQ_EV_ADD | select.KQ_EV_ONESHOT,
                            fflags=select.KQ_NOTE_EXIT,
                        )
                    ],
                    0,
                )
            except OSError:
                self._gone_at_start = True
            self._kqueue = kq
            self.fds.append(kq.fileno())
        # Re-parented between our start and the watch: the parent is gone already.
        if self.initial_ppid > 1 and os.getppid() != self.initial_ppid:
            self._gone_at_start = True

    def gone(self) -> bool:
        """True when a watched process has exited (never blocks)."""
        if _platform.IS_WINDOWS:
            return self._gone_at_start or (
                self.initial_ppid > 1
                and not _platform.pid_alive(self.initial_ppid, self._parent_started)
            )
        if self._gone_at_start or (self.initial_ppid > 1 and os.getppid() != self.initial_ppid):
            return True
        if not self.fds:
            return False
        ready, _, _ = select.select(self.fds, [], [], 0)
        return bool(ready)

    def close(self) -> None:
        """Close the descriptors (idempotent)."""
        if self._kqueue is not None:
            self._kqueue.close()
            self._kqueue = None
        else:
            for fd in self.fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fds = []

    def __enter__(self) -> ParentWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
