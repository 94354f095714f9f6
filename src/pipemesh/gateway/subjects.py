"""NATS subjects of a bridged mesh: a pure mapping, no I/O (docs/gateway.md).

Every subject starts ``pm.<mesh>.<kind>.<source host>``, so a NATS account can
let each host's credentials publish only under its own host token
(``pm.<mesh>.*.<host>.>``) and a host can never speak for another one:

=============================================  ========================================
``pm.<mesh>.m.<src>.<dst>.<agent>``            a message from host ``src`` to ``agent`` on ``dst``
``pm.<mesh>.d.<src>.<dst>.<agent>``            the same, durable: kept by the JetStream stream
``pm.<mesh>.b.<src>``                          a broadcast from ``src``: once per host
``pm.<mesh>.hb.<src>``                         ``src``'s heartbeat: its agents and their state
=============================================  ========================================

Names allow ``.``, which separates NATS tokens, and never ``~``, so a name's
``.`` becomes ``~`` in its token; every other name character is a valid token
character, and the mapping is one-to-one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pipemesh.wire import is_valid_name

__all__ = [
    "Route",
    "broadcast",
    "direct",
    "durable",
    "durable_filter",
    "heartbeat",
    "heartbeat_all",
    "host_token",
    "inbound_broadcasts",
    "inbound_direct",
    "parse",
    "stream_name",
    "stream_subjects",
    "token_name",
]

ROOT: Final = "pm"
DIRECT: Final = "m"
DURABLE: Final = "d"
BROADCAST: Final = "b"
HEARTBEAT: Final = "hb"


def host_token(name: str) -> str:
    """``name`` (an agent, host or mesh name without ``@``) as one subject token.

    Raises:
        ValueError: ``name`` is not a valid local name.
    """
    if not is_valid_name(name) or "@" in name:
        raise ValueError(
            f"{name[:80]!r} is not a valid name for a subject: use 1-64 characters of "
            "A-Z a-z 0-9 _ . -, starting with a letter or digit"
        )
    return name.replace(".", "~")


def token_name(token: str) -> str | None:
    """The name a subject token stands for, or None if it stands for none."""
    if "." in token:
        return None
    name = token.replace("~", ".")
    return name if is_valid_name(name) and "@" not in name else None


def direct(mesh: str, src: str, dst: str, agent: str) -> str:
    """Subject of a message from host ``src`` to ``agent`` on host ``dst``."""
    return _message(DIRECT, mesh, src, dst, agent)


def durable(mesh: str, src: str, dst: str, agent: str) -> str:
    """Subject of a durable message (stored by the mesh's JetStream stream)."""
    return _message(DURABLE, mesh, src, dst, agent)


def _message(kind: str, mesh: str, src: str, dst: str, agent: str) -> str:
    tokens = (host_token(mesh), kind, host_token(src), host_token(dst), host_token(agent))
    return ".".join((ROOT, *tokens))


def broadcast(mesh: str, src: str) -> str:
    """Subject of a broadcast from host ``src``."""
    return f"{ROOT}.{host_token(mesh)}.{BROADCAST}.{host_token(src)}"


def heartbeat(mesh: str, src: str) -> str:
    """Subject of host ``src``'s heartbeat."""
    return f"{ROOT}.{host_token(mesh)}.{HEARTBEAT}.{host_token(src)}"


def heartbeat_all(mesh: str) -> str:
    """What a gateway subscribes to for every host's heartbeat."""
    return f"{ROOT}.{host_token(mesh)}.{HEARTBEAT}.*"


def inbound_direct(mesh: str, host: str) -> str:
    """What host ``host``'s gateway subscribes to for messages to its agents."""
    return f"{ROOT}.{host_token(mesh)}.{DIRECT}.*.{host_token(host)}.*"


def inbound_broadcasts(mesh: str) -> str:
    """What a gateway subscribes to for broadcasts (its own are skipped by source)."""
    return f"{ROOT}.{host_token(mesh)}.{BROADCAST}.*"


def durable_filter(mesh: str, host: str) -> str:
    """The filter of host ``host``'s durable JetStream consumer."""
    return f"{ROOT}.{host_token(mesh)}.{DURABLE}.*.{host_token(host)}.*"


def stream_subjects(mesh: str) -> str:
    """The subjects the mesh's JetStream stream keeps."""
    return f"{ROOT}.{host_token(mesh)}.{DURABLE}.>"


def stream_name(mesh: str) -> str:
    """The JetStream stream of a mesh (stream names allow no ``.``); also, with ``gw_``
    before it, a host's durable consumer.

    One-to-one: ``_`` becomes ``__`` and ``.`` becomes ``_d_``, so ``a.b`` and ``a_d_b``
    never share a stream (or two hosts a consumer).
    """
    return "PM_" + host_token(mesh).replace("_", "__").replace("~", "_d_")


@dataclass(frozen=True, slots=True)
class Route:
    """What a subject says: its kind, source host, and for a message its target."""

    kind: str
    src: str
    dst: str = ""
    agent: str = ""


def parse(mesh: str, subject: str) -> Route | None:
    """The route of ``subject`` in ``mesh``, or None if it is not one of ours."""
    parts = subject.split(".")
    if len(parts) < 4 or parts[0] != ROOT or parts[1] != host_token(mesh):
        return None
    kind = parts[2]
    names = [token_name(t) for t in parts[3:]]
    if any(n is None for n in names):
        return None
    if kind in (DIRECT, DURABLE) and len(names) == 3:
        return Route(kind, str(names[0]), str(names[1]), str(names[2]))
    if kind in (BROADCAST, HEARTBEAT) and len(names) == 1:
        return Route(kind, str(names[0]))
    return None
