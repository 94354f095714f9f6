"""Sends to a durable agent: kept until handled, or queued in its spool (the slow paths).

:class:`~pipemesh.runtime.client.MeshClient` sends to a durable peer through
these functions (its ``_send_durable``/``_queue``/``_notify_spooled`` hooks call
them), so that a SIGKILL of either side loses nothing: docs/delivery.md. The
hot path of ordinary sends stays in :mod:`pipemesh.runtime.client`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from pipemesh.errors import AgentOffline, MeshError, PeerGone, TransportClosed
from pipemesh.runtime import bodies
from pipemesh.runtime.send import SPOOLED, Delivery

if TYPE_CHECKING:
    from pipemesh.runtime.client import MeshClient

__all__ = ["is_durable", "notify_spooled", "queue", "send_durable"]


def is_durable(client: MeshClient, name: str) -> bool:
    """True if ``name``'s registry entry is durable (re-read once if not cached so)."""
    rec = client._peers.get(name)
    if rec is None or not rec.durable:
        rec = client.refresh_peers().get(name)
    return rec is not None and rec.durable


def send_durable(
    client: MeshClient, to: str, frames: list[bytes], msg_id: str, timeout_s: float, sync: bool
) -> Delivery:
    """Send to a durable peer so that its SIGKILL loses nothing (docs/delivery.md)."""
    data = b"".join(bodies.inline(frames))  # a kept copy carries its body, never a reference
    unacked = client._unacked_for_send()
    if sync or unacked is None:
        path = client.spool.put(to, data, msg_id)
        return Delivery.DELIVERED if client._notify_spooled(to, path.name) else Delivery.QUEUED
    for attempt in (0, 1):
        unacked.keep(to, msg_id, data)  # before the write: its report may come at once
        try:
            if type(frames) is bodies.BodyRef:  # the body goes in a body file first
                client._write_body(to, frames, timeout_s, client._write_once)
            else:
                client._outbox(to).write_frames(frames, timeout_s)
            return Delivery.DELIVERED
        except (AgentOffline, PeerGone, TransportClosed) as exc:
            unacked.forget(to, msg_id)
            client._forget(to)
            # The reader we wrote to is gone: what it had not handled goes to its spool.
            unacked.move_to_spool(to)
            if attempt or isinstance(exc, AgentOffline):
                break
        except BaseException:
            unacked.forget(to, msg_id)
            raise
    unacked.move_to_spool(to, (msg_id, data))
    return Delivery.QUEUED


def notify_spooled(client: MeshClient, to: str, file_name: str = "") -> bool:
    """Tell ``to`` that its spool has something new; True if it is reading."""
    try:  # (a cached outbox to a reader that died raises PeerGone: _write reopens it)
        client._send_control(to, SPOOLED, file_name, min(client.send_timeout_s, 1.0))
    except MeshError:
        return False
    return True


def queue(client: MeshClient, to: str, frames: list[bytes], msg_id: str) -> None:
    """Put ``frames`` in ``to``'s spool (it is durable and not reading), then tell it."""
    client.spool.put(to, b"".join(bodies.inline(frames)), msg_id)  # never a reference
    # If the agent started reading meanwhile, its start-up drain may have
    # run before our file existed: tell it to look again. Without a reader
    # the open fails at once, and the drain at its start will see the file.
    client._forget(to)
    with contextlib.suppress(MeshError):
        client._send_control(to, SPOOLED, "", min(client.send_timeout_s, 1.0))
