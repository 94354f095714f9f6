"""The transport interface: how frames move between agents, whatever carries them.

A transport owns endpoints by agent name. ``bind(name)`` creates the agent's
inbox (its public pipe) and returns an :class:`Inbox` that the router thread
reads; ``connect(name)`` opens an :class:`Outbox` to another agent's inbox.

Frames handed to an outbox are already encoded by :mod:`pipemesh.wire` and
each is at most ``max_frame_bytes`` long, so the transport never splits them.
Transports translate OS errors into :mod:`pipemesh.errors` at one boundary;
raw ``OSError`` never leaves this package.

This module holds no implementation; see ``fifo.py`` and ``memory.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["Inbox", "Outbox", "Transport"]


class Inbox(Protocol):
    """The reading end of one agent's public endpoint; read by one thread only."""

    @property
    def name(self) -> str:
        """The agent name this inbox belongs to."""
        ...

    def read(self, timeout_s: float | None = None) -> bytes:
        """Return the bytes that arrived.

        With ``timeout_s=None`` block until bytes arrive; otherwise wait at
        most ``timeout_s`` (0: do not wait) and return ``b""`` if none came.
        To stop a blocked reader, write a frame to the inbox (the runtime sends
        itself a wake frame); closing from another thread is not allowed.

        Raises:
            TransportClosed: the inbox is closed.
        """
        ...

    def close(self) -> None:
        """Release the endpoint; idempotent. Call from the reading thread."""
        ...


class Outbox(Protocol):
    """The writing end towards one agent's inbox; safe to share between threads."""

    def write_frames(self, frames: Sequence[bytes], timeout_s: float) -> None:
        """Write every frame whole, in order, within ``timeout_s`` in total.

        Raises:
            SendTimeout: the endpoint stayed full past the timeout; frames
                already written are parts the reader will discard.
            PeerGone: the reader went away; reconnect and retry.
            TransportClosed: this outbox was closed.
        """
        ...

    def close(self) -> None:
        """Release the connection; idempotent."""
        ...


class Transport(Protocol):
    """A factory of inboxes and outboxes, keyed by agent name."""

    @property
    def max_frame_bytes(self) -> int:
        """The largest frame this transport carries atomically."""
        ...

    def bind(self, name: str) -> Inbox:
        """Create (or take over) the inbox of ``name`` and return it."""
        ...

    def connect(self, name: str) -> Outbox:
        """Open an outbox to ``name``.

        Raises:
            AgentOffline: nobody reads that inbox right now.
        """
        ...

    def address(self, name: str) -> str:
        """A printable address of the inbox of ``name`` (a path for FIFOs)."""
        ...

    def remove(self, name: str) -> None:
        """Remove the endpoint of ``name`` if it exists; idempotent."""
        ...
