"""Transports that carry encoded frames between agents: FIFO, Windows named pipes, memory."""

from __future__ import annotations

import sys
from pathlib import Path

from pipemesh.transport.base import Inbox, Outbox, Transport
from pipemesh.transport.fifo import FifoTransport
from pipemesh.transport.memory import MemoryNetwork, MemoryTransport
from pipemesh.transport.winpipe import WinPipeTransport, mesh_id

__all__ = [
    "FifoTransport",
    "Inbox",
    "MemoryNetwork",
    "MemoryTransport",
    "Outbox",
    "Transport",
    "WinPipeTransport",
    "platform_transport",
]


def platform_transport(home_root: Path, pipes_dir: Path) -> Transport:
    """The OS pipe transport of this platform for the mesh at ``home_root``.

    Windows: named pipes ``\\\\.\\pipe\\pipemesh-<mesh id>-<name>-public`` (the mesh id
    comes from the home's path). Elsewhere: FIFOs in ``pipes_dir``.
    """
    if sys.platform == "win32":
        return WinPipeTransport(mesh_id(home_root))
    return FifoTransport(pipes_dir)
