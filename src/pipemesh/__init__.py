"""pipemesh: a brokerless many-to-many message mesh for AI agents on named pipes.

Quick start::

    from pipemesh import AgentBase

    class Echo(AgentBase):
        def on_message_received(self, msg):
            self.reply(msg, msg.body.upper())

    with Echo("echo", role="tool") as agent:
        agent.run_forever()
"""

from __future__ import annotations

from pipemesh.errors import (
    AckTimeout,
    AgentOffline,
    DecodeError,
    DeliveryError,
    EncodeError,
    MeshError,
    MessageTooLarge,
    NameTaken,
    PeerGone,
    RegistryCorrupt,
    RegistryError,
    RegistryLockTimeout,
    ReplyTimeout,
    SendTimeout,
    SpoolError,
    SpoolFull,
    TooManyOpenFiles,
    TransportClosed,
    TransportError,
    UnknownAgent,
    UsageError,
    WireError,
)
from pipemesh.home import MeshHome
from pipemesh.registry import AgentRecord, Registry
from pipemesh.runtime import AgentBase, BroadcastResult, Delivery, MeshClient, SendResult
from pipemesh.wire import Message, Priority

__version__ = "0.1.0"

__all__ = [
    "AckTimeout",
    "AgentBase",
    "AgentOffline",
    "AgentRecord",
    "BroadcastResult",
    "DecodeError",
    "Delivery",
    "DeliveryError",
    "EncodeError",
    "MeshClient",
    "MeshError",
    "MeshHome",
    "Message",
    "MessageTooLarge",
    "NameTaken",
    "PeerGone",
    "Priority",
    "Registry",
    "RegistryCorrupt",
    "RegistryError",
    "RegistryLockTimeout",
    "ReplyTimeout",
    "SendResult",
    "SendTimeout",
    "SpoolError",
    "SpoolFull",
    "TooManyOpenFiles",
    "TransportClosed",
    "TransportError",
    "UnknownAgent",
    "UsageError",
    "WireError",
    "__version__",
]
