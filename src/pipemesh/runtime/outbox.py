"""The open outboxes of one client, by peer name: bounded, and closed when peers go.

Each open outbox to a FIFO holds a file descriptor, and keeps the peer's pipe
(and its buffer) alive even after the peer died. A long-lived agent that
answers many short-lived askers would otherwise keep one fd per asker forever
and end in EMFILE. So the cache:

* holds at most ``max_open`` outboxes and closes the least recently used one
  past that (the next send to it reopens the path: one ``open`` call);
* closes an outbox when its peer is known to be gone (:meth:`OutboxCache.forget`
  on ``PeerGone``/``AgentOffline`` and on leave frames, :meth:`OutboxCache.sweep`
  for peers whose process died without a word).

Closing never cuts a write short: :meth:`Outbox.close` waits for a write in
progress, and a sender that then finds its outbox closed reconnects.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from pipemesh.transport.base import Outbox

__all__ = ["DEFAULT_MAX_OPEN", "OutboxCache"]

DEFAULT_MAX_OPEN = 64
"""Outboxes one client keeps open at most (each holds one fd)."""


class OutboxCache:
    """Open outboxes by peer name, least recently used first; thread-safe.

    Args:
        connect: opens a new outbox to a name (raises what ``Transport.connect`` raises).
        max_open: outboxes kept open at most; the least recently used is closed past it.

    Raises:
        ValueError: ``max_open`` is below 1.
    """

    def __init__(self, connect: Callable[[str], Outbox], *, max_open: int = DEFAULT_MAX_OPEN):
        if max_open < 1:
            raise ValueError(f"max_open must be at least 1, got {max_open}")
        self._connect = connect
        self.max_open = max_open
        self._open: OrderedDict[str, Outbox] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, name: object) -> bool:
        return name in self._open

    def names(self) -> list[str]:
        """Peers with an open outbox, least recently used first."""
        return list(self._open)

    def get(self, name: str) -> Outbox:
        """The open outbox to ``name``, connecting (and evicting the LRU one) if needed.

        MeshClient._send inlines the first branch (an open outbox): keep them in step.
        """
        outbox = self._open.get(name)
        if outbox is not None:
            # One C call, atomic under the GIL; KeyError if forgotten meanwhile
            # (the caller's write then reports TransportClosed and reconnects).
            # try/except, not contextlib.suppress: this runs on every send.
            try:  # noqa: SIM105 - hot path, see above
                self._open.move_to_end(name)
            except KeyError:
                pass
            return outbox
        evicted: list[Outbox] = []
        with self._lock:
            outbox = self._open.get(name)
            if outbox is None:
                outbox = self._connect(name)
                self._open[name] = outbox
                while len(self._open) > self.max_open:
                    evicted.append(self._open.popitem(last=False)[1])
        for old in evicted:
            old.close()  # outside the lock: it may wait for a write in progress
        return outbox

    def forget(self, name: str) -> None:
        """Close the outbox to ``name``, if open."""
        with self._lock:
            outbox = self._open.pop(name, None)
        if outbox is not None:
            outbox.close()

    def sweep(self, is_gone: Callable[[str], bool]) -> list[str]:
        """Close the outboxes of peers for which ``is_gone(name)`` is true; return their names."""
        gone = [name for name in self.names() if is_gone(name)]
        for name in gone:
            self.forget(name)
        return gone

    def close(self) -> None:
        """Close every outbox; the cache stays usable (a later get reconnects)."""
        for name in self.names():
            self.forget(name)
