"""Broadcast: one message to every other active or durable agent, each getting its kind.

:meth:`MeshClient.broadcast_message <pipemesh.runtime.client.MeshClient.broadcast_message>`
calls :func:`broadcast`: the message is encoded once per frame kind in use and
written to each peer in the cached peer table; a durable peer that is not
reading gets it in its spool. One peer's failure never stops the others: each
outcome is in the :class:`~pipemesh.runtime.send.BroadcastResult`.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from pipemesh.codec import BINARY, TEXT, FrameKind
from pipemesh.errors import AgentOffline, MeshError, PeerGone, SendTimeout
from pipemesh.runtime import bodies
from pipemesh.runtime.send import CONTROL_PREFIX, BroadcastResult, Delivery

if TYPE_CHECKING:
    from pipemesh.runtime.client import MeshClient

__all__ = ["broadcast", "fan_out"]


def broadcast(
    client: MeshClient, message: str, priority: int, msg_type: str, timeout_s: float | None
) -> BroadcastResult:
    """The body of :meth:`MeshClient.broadcast_message` (see there)."""
    client._check_args(priority, msg_type)
    if msg_type.startswith(CONTROL_PREFIX):
        raise ValueError(f"message types starting with {CONTROL_PREFIX!r} are reserved")
    msg_id = client.next_id()
    sent_ns = time.time_ns()
    frames, size = client._encode(
        to="",
        message=message,
        priority=priority,
        msg_type=msg_type,
        msg_id=msg_id,
        reply_to="",
        sent_ns=sent_ns,
    )
    binary = None
    if client.frames == BINARY:  # one more encoding, for the peers that read binary
        binary, _ = client._encode(
            to="",
            message=message,
            priority=priority,
            msg_type=msg_type,
            msg_id=msg_id,
            reply_to="",
            sent_ns=sent_ns,
            kind=BINARY,
        )
    refs = None
    if size >= client.body_file_min_bytes and client._bodies is not None:
        # One body file per receiver that takes them (runtime/bodies.py).
        body = message.encode("utf-8")
        kinds: tuple[tuple[FrameKind, list[bytes]], ...] = (
            (TEXT, frames),
            (BINARY, binary or frames),
        )
        refs = {
            kind: bodies.reference(
                kind,
                client.agent_name,
                "",
                body,
                msg_id=msg_id,
                priority=priority,
                msg_type=msg_type,
                sent_ns=sent_ns,
                reply_to="",
                ack=False,
                make_inline=functools.partial(list, inline_frames),
            )
            for kind, inline_frames in kinds
        }
    result = fan_out(client, frames, timeout_s, msg_id, size, binary, refs)
    client.sent += 1
    client.events.message(
        "frame_sent",
        sender=client.agent_name,
        to="",
        msg_type=msg_type,
        priority=priority,
        msg_id=msg_id,
        body=message,
        size=size,
    )
    for name, error in result.errors.items():
        client.events.error("send_failed", error, to=name, id=msg_id, type=msg_type)
    return result


def fan_out(
    client: MeshClient,
    text: list[bytes],
    timeout_s: float | None,
    msg_id: str,
    size: int = 0,
    binary: list[bytes] | None = None,
    refs: dict[FrameKind, bodies.BodyRef] | None = None,
) -> BroadcastResult:
    """Write ``text`` (or ``binary``, to peers that read it) to every other peer; each outcome."""
    timeout = client.send_timeout_s if timeout_s is None else timeout_s
    result = BroadcastResult(msg_id)
    for name, rec in list(client._peers.items()):
        if name == client.agent_name or not (rec.is_active or rec.durable):
            continue
        frames = binary if binary is not None and BINARY in rec.frames else text
        if refs is not None and bodies.CAPABILITY in rec.frames:  # a body file
            frames = refs[BINARY if frames is binary else TEXT]
        try:
            if size > rec.max_body_bytes:
                client._check_fits(name, size, msg_id)
            try:
                client._write(name, frames, timeout)
            except (AgentOffline, PeerGone):
                if not rec.durable:
                    raise
                client._queue(name, frames, msg_id)
                result.outcomes[name] = Delivery.QUEUED
                continue
        except AgentOffline as exc:
            result.outcomes[name], result.errors[name] = Delivery.OFFLINE, str(exc)
        except SendTimeout as exc:
            result.outcomes[name], result.errors[name] = Delivery.TIMEOUT, str(exc)
        except MeshError as exc:
            result.outcomes[name], result.errors[name] = Delivery.FAILED, str(exc)
        else:
            result.outcomes[name] = Delivery.DELIVERED
    return result
