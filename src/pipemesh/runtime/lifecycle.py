"""How an agent's process ends without stranding its name and pipes.

* :class:`ExitGuard` closes an agent at interpreter exit if the program did not
  (a script that ends, or raises, without ``close()``). It holds the agent by
  weak reference, and does nothing in a forked child (the pipes are the
  parent's).
* :func:`stop_signals` turns SIGINT and SIGTERM into :class:`Stopped` for the
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
from types import FrameType
from typing import Protocol

__all__ = ["ExitGuard", "Stopped", "stop_signals"]


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


@contextmanager
def stop_signals() -> Iterator[None]:
    """Raise :class:`Stopped` on SIGINT (and SIGTERM if unhandled) inside the block.

    Does nothing outside the main thread. Inside the block the first signal
    raises; later ones are ignored so the close that follows is not cut short.
    The previous handlers are restored when the block ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}

    def stop(signum: int, frame: FrameType | None) -> None:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # one stop; a second signal waits for the close
        raise Stopped(signum)

    wanted: list[int] = [signal.SIGINT]
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        wanted.append(signal.SIGTERM)
    for sig in wanted:
        current = signal.getsignal(sig)
        if sig == signal.SIGINT and current is not signal.default_int_handler:
            continue  # the program chose its own SIGINT handling (or ignores it)
        previous[sig] = current
        signal.signal(sig, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
