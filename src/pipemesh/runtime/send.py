"""What a send says and returns: the mesh's own message types, and the results.

The path of a message through the runtime, one module per step:
:mod:`~pipemesh.runtime.client` (send: ids, peers, encode, write to the
transport), :mod:`~pipemesh.runtime.router` (read and decode),
:mod:`~pipemesh.runtime.receive` (route, dedupe, handler, receive queue),
:mod:`~pipemesh.runtime.acks` (acknowledgements, the spool, handled reports),
:mod:`~pipemesh.runtime.agent` (``AgentBase``: lifetime, heartbeat, ask/reply).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final, TypeAlias

__all__ = [
    "ACK",
    "CONTROL_PREFIX",
    "DEFAULT_MSG_TYPE",
    "HANDLED",
    "JOIN",
    "LEAVE",
    "SPOOLED",
    "WAKE",
    "BroadcastResult",
    "Delivery",
    "SendResult",
    "SentFields",
    "utf8_len",
]

DEFAULT_MSG_TYPE: Final = "directive"
"""The TYPE of ``send``/``send_message`` (and ``pipemesh send``) when none is given."""

CONTROL_PREFIX: Final = "mesh."
JOIN: Final = "mesh.join"
LEAVE: Final = "mesh.leave"
WAKE: Final = "mesh.wake"
ACK: Final = "mesh.ack"
SPOOLED: Final = "mesh.spooled"
HANDLED: Final = "mesh.handled"


class Delivery(enum.StrEnum):
    """What happened to one recipient of a message."""

    DELIVERED = "delivered"
    """Written whole to the recipient's pipe (with ``ack=True``: handled by it)."""
    QUEUED = "queued"
    """The recipient is durable and not reading: the message waits in its spool."""
    OFFLINE = "offline"
    TIMEOUT = "timeout"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SendResult:
    """Outcome of :meth:`MeshClient.send`.

    Attributes:
        id: the message ID.
        delivery: :attr:`Delivery.DELIVERED` or :attr:`Delivery.QUEUED`.
        acked: True when the recipient acknowledged it (``ack=True`` sends).
    """

    id: str
    delivery: Delivery
    acked: bool = False


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    """Per-recipient outcome of :meth:`MeshClient.broadcast_message`.

    Attributes:
        id: the message ID (the same for every recipient).
        outcomes: recipient name -> :class:`Delivery`.
        errors: recipient name -> the error sentence, for those not delivered.
    """

    id: str
    outcomes: dict[str, Delivery] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def delivered(self) -> list[str]:
        """Recipients whose pipe took the whole message."""
        return [n for n, d in self.outcomes.items() if d is Delivery.DELIVERED]

    @property
    def queued(self) -> list[str]:
        """Durable recipients that were not reading: the message waits in their spool."""
        return [n for n, d in self.outcomes.items() if d is Delivery.QUEUED]

    @property
    def failed(self) -> list[str]:
        """Recipients that did not get it and will not (not delivered, not queued)."""
        return [
            n
            for n, d in self.outcomes.items()
            if d is not Delivery.DELIVERED and d is not Delivery.QUEUED
        ]


SentFields: TypeAlias = tuple[str, str, int, str, str, str, int, str]
"""A sent message as kept for history: the first eight :class:`~pipemesh.wire.Message` fields."""


def utf8_len(text: str) -> int:
    """Bytes of ``text`` on the wire, as the send side logs them (no encode for ASCII)."""
    return len(text) if text.isascii() else len(text.encode())
