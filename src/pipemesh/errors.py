"""The whole exception hierarchy of pipemesh.

Every error the package raises on purpose is defined here. Messages are one
sentence that says what was expected, what was found, and what to do next.

```
MeshError
├── WireError
│   ├── EncodeError        caller built a frame the format cannot carry
│   └── DecodeError        bytes from a peer are malformed or over a limit
├── TransportError
│   ├── TransportClosed    this process already closed the transport
│   ├── PeerGone           the other end vanished; __cause__ holds the OSError
│   └── TooManyOpenFiles   EMFILE/ENFILE: no fd left to open a pipe
├── RegistryError
│   ├── RegistryLockTimeout
│   ├── RegistryCorrupt
│   ├── NameTaken          a live agent already holds that name
│   └── UnknownAgent
├── DeliveryError
│   ├── AgentOffline       registered, but nobody reads its pipe
│   ├── SendTimeout        the pipe stayed full past the timeout
│   ├── ReplyTimeout       ask() got no reply in time
│   ├── AckTimeout         send(ack=True) got no acknowledgement in time
│   ├── SpoolError         a message for an offline agent could not be queued
│   │   └── SpoolFull      its spool is at its message/byte limit, or the disk is full
│   └── MessageTooLarge
└── UsageError             bad CLI input or configuration (CLI exit code 2)
```

This module must not import anything from the rest of the package.
"""

from __future__ import annotations

__all__ = [
    "AckTimeout",
    "AgentOffline",
    "DecodeError",
    "DeliveryError",
    "EncodeError",
    "MeshError",
    "MessageTooLarge",
    "NameTaken",
    "PeerGone",
    "RegistryCorrupt",
    "RegistryError",
    "RegistryLockTimeout",
    "ReplyTimeout",
    "SendTimeout",
    "SpoolError",
    "SpoolFull",
    "TooManyOpenFiles",
    "TransportClosed",
    "TransportError",
    "UnknownAgent",
    "UsageError",
    "WireError",
]


class MeshError(Exception):
    """Base class of every error pipemesh raises on purpose."""


class WireError(MeshError):
    """The wire format was violated, on the way out or on the way in."""


class EncodeError(WireError):
    """The caller built a frame that the wire format cannot carry."""


class DecodeError(WireError):
    """Bytes from a peer are malformed or over a limit.

    Attributes:
        offset: stream offset (bytes fed so far) where the bad data started.
        skipped: how many bytes the decoder discarded to resynchronise.
    """

    def __init__(self, message: str, *, offset: int = 0, skipped: int = 0) -> None:
        super().__init__(message)
        self.offset = offset
        self.skipped = skipped


class TransportError(MeshError):
    """A transport could not do what was asked."""


class TransportClosed(TransportError):
    """This process already closed the transport."""


class PeerGone(TransportError):
    """The other end vanished; ``__cause__`` holds the OS error."""

    def __init__(self, message: str, *, agent_id: str = "") -> None:
        super().__init__(message)
        self.agent_id = agent_id


class TooManyOpenFiles(TransportError):
    """No file descriptor was left to open a pipe (EMFILE or ENFILE).

    Attributes:
        agent_id: the agent whose pipe could not be opened.
    """

    def __init__(self, message: str, *, agent_id: str = "") -> None:
        super().__init__(message)
        self.agent_id = agent_id


class RegistryError(MeshError):
    """The agent registry could not be read or changed."""


class RegistryLockTimeout(RegistryError):
    """The registry lock was not acquired in time."""


class RegistryCorrupt(RegistryError):
    """The registry file is not the JSON document pipemesh writes."""


class NameTaken(RegistryError):
    """A live agent already holds that name."""

    def __init__(self, message: str, *, agent_id: str = "", pid: int = 0) -> None:
        super().__init__(message)
        self.agent_id = agent_id
        self.pid = pid


class UnknownAgent(RegistryError):
    """No agent of that name is registered."""

    def __init__(self, message: str, *, agent_id: str = "") -> None:
        super().__init__(message)
        self.agent_id = agent_id


class DeliveryError(MeshError):
    """A message could not be delivered."""

    def __init__(self, message: str, *, agent_id: str = "", message_id: str = "") -> None:
        super().__init__(message)
        self.agent_id = agent_id
        self.message_id = message_id


class AgentOffline(DeliveryError):
    """The agent is registered, but nobody reads its pipe."""


class SendTimeout(DeliveryError):
    """The pipe stayed full past the timeout; the reader never gets a partial message."""


class ReplyTimeout(DeliveryError):
    """ask() sent the question, but no reply came back in time."""


class AckTimeout(DeliveryError):
    """send(ack=True) wrote the message, but no acknowledgement came back in time.

    The message may or may not have been handled: retry with the same
    ``message_id`` (receivers drop duplicates) to get it handled once.
    """


class SpoolError(DeliveryError):
    """A message for an offline durable agent could not be queued in its spool.

    Nothing was half-written: the spool holds whole messages only.
    """


class SpoolFull(SpoolError):
    """The agent's spool is at its message or byte limit, or the disk is full."""


class MessageTooLarge(DeliveryError):
    """The body is over the configured size limit."""


class UsageError(MeshError):
    """Bad CLI input or configuration; the CLI exits with code 2."""
