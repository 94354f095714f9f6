"""How an agent's process ends without stranding its name and pipes.

* :class:`ExitGuard` closes an agent at interpreter exit if the program did not
  (a script that ends, or raises, without ``close()``). It holds the agent by
  weak reference, and does nothing in a forked child (the pipes are the
  parent's).
* :func:`stop_signals` turns SIGINT and SIGTERM into a clean stop for the
  duration of ``run_forever()``: the agent is then closed and the program exits
  130 or 143 without a traceback. Handlers are only installed from the main
  thread (Python delivers signals there), SIGTERM only where nobody installed a
  handler of their own, and the previous handlers are always put back.

No module-level state: each guard and each handler context owns its own.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Protocol

__all__ = ["ExitGuard", "StopInfo", "Stopped", "stop_signals"]


class _Closable(Protocol):
    def close(self) -> None: ...


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived while ``run_forever()`` waited.

    A ``BaseException`` like ``KeyboardInterrupt``, so ``except Exception`` in
    user code does not swallow it.

    Attributes:
        signum: the signal number.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


class ExitGuard:
    """Closes an object at interpreter exit unless :meth:`disarm` was called first.

    Args:
        target: the object to close (held by weak reference).
    """

    def __init__(self, target: _Closable) -> None:
        self._ref = weakref.ref(target)
        self._pid = os.getpid()
        self._armed = True
        atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        target = self._ref()
        if not self._armed or target is None or os.getpid() != self._pid:
            return
        self._armed = False
        target.close()

    def disarm(self) -> None:
        """Forget the exit hook (the object was closed); idempotent."""
        if self._armed:
            self._armed = False
            atexit.unregister(self._at_exit)


@dataclass(slots=True)
class StopInfo:
    """What :func:`stop_signals` saw: ``signum`` is 0 when no signal came."""

    signum: int = 0


@contextmanager
def stop_signals(on_stop: Callable[[], None]) -> Iterator[StopInfo]:
    """Turn SIGINT (and SIGTERM if unhandled) inside the block into a clean stop.

    The first signal ends the block: ``on_stop()`` runs while further SIGINT and
    SIGTERM are ignored (so a second Ctrl-C cannot cut the close short), then the
    previous handlers are restored and the yielded :class:`StopInfo` holds the
    signal number. Does nothing outside the main thread.
    """
    info = StopInfo()
    if threading.current_thread() is not threading.main_thread():
        yield info
        return
    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}

    def stop(signum: int, frame: FrameType | None) -> None:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # one stop; a second signal waits for the close
        raise Stopped(signum)

    try:
        # Windows adds SIGBREAK: Ctrl-Break, and what closing the console sends.
        extra = [signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else []
        for sig in (signal.SIGINT, signal.SIGTERM, *extra):
            current = signal.getsignal(sig)
            if sig == signal.SIGINT and current is not signal.default_int_handler:
                continue  # the program chose its own SIGINT handling (or ignores it)
            if sig != signal.SIGINT and current not in (signal.SIG_DFL, None):
                continue  # the program handles SIGTERM itself (the CLI does)
            previous[sig] = current
            signal.signal(sig, stop)
        yield info
    except Stopped as exc:
        info.signum = exc.signum
        on_stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
