"""In-process transport: the same contract as the FIFO transport, without the OS.

Useful for unit tests of agents (see :mod:`pipemesh.testing`) and as the second
implementation the transport conformance suite runs against. A
:class:`MemoryNetwork` is one "machine": transports made from the same network
reach each other. Each inbox holds at most ``capacity_bytes``, so a stalled
reader makes writers wait and then time out, as a full pipe does.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence

from pipemesh.errors import AgentOffline, PeerGone, SendTimeout, TransportClosed
from pipemesh.wire import PIPE_BUF

__all__ = ["MemoryInbox", "MemoryNetwork", "MemoryOutbox", "MemoryTransport"]


class MemoryInbox:
    """A bounded in-memory byte queue standing in for a FIFO."""

    def __init__(self, name: str, network: MemoryNetwork, capacity_bytes: int) -> None:
        self._name = name
        self._network = network
        self.capacity_bytes = capacity_bytes
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._cond = threading.Condition()
        self.closed = False

    @property
    def name(self) -> str:
        """The agent name this inbox belongs to."""
        return self._name

    def put(self, frame: bytes, deadline: float) -> None:
        """Append one frame, waiting for room until ``deadline``."""
        with self._cond:
            while True:
                if self.closed:
                    raise PeerGone(f"the reader of {self._name} went away", agent_id=self._name)
                if self._size + len(frame) <= self.capacity_bytes:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SendTimeout(
                        f"the inbox of {self._name} stayed full; the agent is not reading "
                        "fast enough",
                        agent_id=self._name,
                    )
                self._cond.wait(remaining)
            self._chunks.append(frame)
            self._size += len(frame)
            self._cond.notify_all()

    def _take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        self._cond.notify_all()
        return data

    def read(self, timeout_s: float | None = None) -> bytes:
        """Bytes waiting: block (``None``), or wait up to ``timeout_s``; b"" if none."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while not self._chunks:
                if self.closed:
                    raise TransportClosed(f"the inbox of {self._name} is closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return b""
                self._cond.wait(remaining)
            return self._take()

    def close(self) -> None:
        """Close the inbox; idempotent. Waiting writers get PeerGone."""
        with self._cond:
            self.closed = True
            self._chunks.clear()
            self._size = 0
            self._cond.notify_all()
        self._network.unbind(self)


class MemoryOutbox:
    """A writer into one :class:`MemoryInbox`."""

    def __init__(self, inbox: MemoryInbox) -> None:
        self._inbox: MemoryInbox | None = inbox

    def write_frames(self, frames: Sequence[bytes], timeout_s: float) -> None:
        """Write every frame whole within ``timeout_s``."""
        inbox = self._inbox
        if inbox is None:
            raise TransportClosed("this outbox is closed")
        deadline = time.monotonic() + timeout_s
        for frame in frames:
            if len(frame) > PIPE_BUF:
                raise ValueError(f"frame of {len(frame)} bytes is over PIPE_BUF={PIPE_BUF}")
            inbox.put(frame, deadline)

    def close(self) -> None:
        """Forget the inbox; idempotent."""
        self._inbox = None


class MemoryNetwork:
    """A namespace of in-memory inboxes, shared by the transports made from it."""

    def __init__(self, capacity_bytes: int = 64 * 1024) -> None:
        self.capacity_bytes = capacity_bytes
        self._inboxes: dict[str, MemoryInbox] = {}
        self._lock = threading.Lock()

    def bind(self, name: str) -> MemoryInbox:
        """Create the inbox of ``name``, replacing a closed one."""
        with self._lock:
            inbox = MemoryInbox(name, self, self.capacity_bytes)
            self._inboxes[name] = inbox
            return inbox

    def unbind(self, inbox: MemoryInbox) -> None:
        """Drop ``inbox`` if it is still the current one for its name."""
        with self._lock:
            if self._inboxes.get(inbox.name) is inbox:
                del self._inboxes[inbox.name]

    def lookup(self, name: str) -> MemoryInbox | None:
        """The live inbox of ``name``, if any."""
        with self._lock:
            return self._inboxes.get(name)


class MemoryTransport:
    """A transport whose endpoints live in a :class:`MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork | None = None) -> None:
        self.network = network if network is not None else MemoryNetwork()

    @property
    def max_frame_bytes(self) -> int:
        """Same as a FIFO, so framing behaves identically."""
        return PIPE_BUF

    def address(self, name: str) -> str:
        """A printable pseudo-address."""
        return f"memory:{name}"

    def bind(self, name: str) -> MemoryInbox:
        """Create the inbox of ``name``."""
        return self.network.bind(name)

    def connect(self, name: str) -> MemoryOutbox:
        """Open an outbox to ``name``; AgentOffline if nobody reads it."""
        inbox = self.network.lookup(name)
        if inbox is None or inbox.closed:
            raise AgentOffline(f"agent {name} is not reading its inbox", agent_id=name)
        return MemoryOutbox(inbox)

    def remove(self, name: str) -> None:
        """Nothing to remove: a memory inbox vanishes when closed."""
