"""Transports that carry encoded frames between agents: FIFO (the real one) and memory."""

from __future__ import annotations

from pipemesh.transport.base import Inbox, Outbox, Transport
from pipemesh.transport.fifo import FifoTransport
from pipemesh.transport.memory import MemoryNetwork, MemoryTransport

__all__ = ["FifoTransport", "Inbox", "MemoryNetwork", "MemoryTransport", "Outbox", "Transport"]
