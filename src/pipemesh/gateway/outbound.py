"""Outbound: local pipes -> NATS.

The readers of the ``name@host`` entries' FIFOs (:mod:`.remote`) hand whole messages
here; each is published as one binary frame on its target's subject, a broadcast once
per (sender, id), a ``mesh.handled`` report turned into JetStream acks, and messages
to durable entries handed to :mod:`.durable`. Local control frames do not cross.
"""

from __future__ import annotations

from typing import Final

import nats.errors

from pipemesh.errors import MeshError
from pipemesh.gateway import subjects
from pipemesh.gateway._base import nats_frame
from pipemesh.gateway.durable import Durable
from pipemesh.gateway.remote import split_remote
from pipemesh.runtime.send import ACK, CONTROL_PREFIX, HANDLED
from pipemesh.wire import Message

__all__ = ["Outbound"]

_BROADCAST_MEMORY: Final = 4096


class Outbound(Durable):
    """Messages read from remote entries' FIFOs, published on NATS."""

    async def _outbound(self) -> None:
        while True:
            name, msgs = await self._outq.get()
            durable = self.remote.is_durable(name)
            kept: list[Message] = []  # to a durable remote agent: JetStream, pipelined
            for msg in msgs:
                if durable and msg.to and not msg.msg_type.startswith(CONTROL_PREFIX):
                    kept.append(msg)
                    continue
                try:
                    await self._send_out(name, msg)
                except (MeshError, nats.errors.Error, TimeoutError, ValueError) as exc:
                    self._drop("outbound failed", f"{msg.sender} -> {name} {msg.id}: {exc!r}")
            if kept:
                try:
                    await self._publish_durable(name, kept)
                except (MeshError, ValueError) as exc:
                    self._drop("outbound failed", f"{len(kept)} durable to {name}: {exc!r}")

    async def _send_out(self, name: str, msg: Message) -> None:
        agent, host = split_remote(name)
        nc = self._nc
        if msg.to == "":
            key = (msg.sender, msg.id)
            if key in self._broadcasts or msg.msg_type.startswith(CONTROL_PREFIX):
                return  # one copy per broadcast (it reached every remote entry); no join/leave
            self._broadcasts[key] = None
            if len(self._broadcasts) > _BROADCAST_MEMORY:
                self._broadcasts.popitem(last=False)
            if nc is None or not nc.is_connected:
                self._drop("NATS down", f"broadcast {msg.id} from {msg.sender}")
                return
            await nc.publish(subjects.broadcast(self.mesh, self.host), nats_frame(msg, ""))
            self.stats.published += 1
            return
        if msg.msg_type == HANDLED:
            await self._handled(agent_from=msg.sender, sender=name, ids=msg.body.split())
            return
        if msg.msg_type.startswith(CONTROL_PREFIX) and msg.msg_type != ACK:
            return  # join/leave/spooled/wake mean nothing on another host
        payload = nats_frame(msg, agent)
        if nc is None or not nc.is_connected:
            self._drop("NATS down", f"{msg.id} from {msg.sender} to {name}")
            return
        await nc.publish(subjects.direct(self.mesh, self.host, host, agent), payload)
        self.stats.published += 1
