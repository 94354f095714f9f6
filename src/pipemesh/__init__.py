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

import importlib
from typing import TYPE_CHECKING, Final

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

if TYPE_CHECKING:  # the same names, imported on first use at run time (see __getattr__)
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

# Where each lazily imported name lives. The runtime, registry and wire modules take tens of
# milliseconds to import, and a CLI command such as 'pipemesh history' needs none of them:
# importing them only when a name is first used keeps the CLI's start-up short (issue 13).
_LAZY: Final[dict[str, str]] = {
    "MeshHome": "pipemesh.home",
    "AgentRecord": "pipemesh.registry",
    "Registry": "pipemesh.registry",
    "AgentBase": "pipemesh.runtime",
    "BroadcastResult": "pipemesh.runtime",
    "Delivery": "pipemesh.runtime",
    "MeshClient": "pipemesh.runtime",
    "SendResult": "pipemesh.runtime",
    "Message": "pipemesh.wire",
    "Priority": "pipemesh.wire",
}


if not TYPE_CHECKING:  # hidden from type checkers: they see the imports above, and a
    # module __getattr__ would make them accept any name (a typo would type-check)

    def __getattr__(name: str) -> object:
        """Import a public name on first use (PEP 562); later uses find it in the module."""
        module = _LAZY.get(name)
        if module is None:
            # A submodule (pipemesh.runtime, pipemesh.wire, ...): the eager imports this
            # module once made bound them, and code and docs use them dotted.
            try:
                return importlib.import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{__name__}.{name}":
                    raise  # the submodule exists; something it imports is missing
            raise AttributeError(f"module 'pipemesh' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
