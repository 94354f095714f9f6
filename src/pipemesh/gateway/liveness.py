"""Heartbeats: this host's agents announced, other hosts' agents turned into entries.

Each host publishes its agent list every ``heartbeat_s``; a heard host's agents
become ``name@host`` entries (:mod:`.remote`), and a host silent past
``host_timeout_s`` has them read inactive. A sender not yet in its host's last
heartbeat gets its entry from its first message (:meth:`Liveness._know_sender`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Final

import nats.errors
from nats.aio.msg import Msg

from pipemesh.errors import MeshError
from pipemesh.gateway import subjects
from pipemesh.gateway._base import GatewayBase
from pipemesh.gateway.remote import RemoteAgent
from pipemesh.wire import is_valid_name

__all__ = ["MAX_HEARTBEAT_BYTES", "Liveness"]

MAX_HEARTBEAT_BYTES: Final = 1024 * 1024
# Each remote host costs dict slots, each active remote agent a FIFO and a reader thread:
# whoever can publish heartbeats must not make them without end.
MAX_REMOTE_HOSTS: Final = 256
MAX_REMOTE_AGENTS: Final = 4096


class Liveness(GatewayBase):
    """Heartbeats out and in; remote hosts' liveness."""

    async def _heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                local = await loop.run_in_executor(None, self._read_local)
            except MeshError as exc:
                self._log(f"cannot read the registry: {exc}")
                local = self._local
            self._local = local
            # What our inbound check takes (a frame's header fits in the 4 KiB left over).
            nc = self._nc
            taken = min(nc.max_payload if nc is not None else 1 << 20, self.max_message_bytes)
            body_cap = max(1, taken - 4096)
            doc = {
                "v": 1,
                "agents": {
                    name: {
                        "active": rec.is_active,
                        "durable": rec.durable,
                        "role": rec.role[:200],
                        "max_body_bytes": min(rec.max_body_bytes, body_cap),
                    }
                    for name, rec in local.items()
                    if rec.is_active or rec.durable
                },
            }
            if nc is not None and nc.is_connected:
                with contextlib.suppress(nats.errors.Error):
                    await nc.publish(
                        subjects.heartbeat(self.mesh, self.host), json.dumps(doc).encode()
                    )
            now = time.monotonic()
            for host, seen in list(self._seen_hosts.items()):
                if now - seen > self.host_timeout_s:
                    del self._seen_hosts[host]
                    self._log(f"host {host} is silent; its agents read inactive")
                    agents = self._host_agents.get(host, [])
                    await self._update_host_soon(host, agents, False)
            await asyncio.sleep(self.heartbeat_s)

    async def _on_heartbeat(self, msg: Msg) -> None:
        route = subjects.parse(self.mesh, msg.subject)
        if route is None or route.kind != subjects.HEARTBEAT or route.src == self.host:
            return
        try:
            agents = _parse_heartbeat(msg.data)
        except ValueError as exc:
            self._drop("bad heartbeat", f"from {route.src}: {exc}")
            return
        if not self._room_for(route.src, len(agents)):
            return
        fresh = route.src not in self._seen_hosts
        self._seen_hosts[route.src] = time.monotonic()
        if fresh or agents != self._host_agents.get(route.src):
            self._host_agents[route.src] = agents
            if fresh:
                self._log(f"host {route.src} is here with {len(agents)} agent(s)")
            await self._update_host_soon(route.src, agents, True)

    async def _know_sender(self, src: str, sender: str) -> None:
        """Make sure ``sender@src`` has an entry here, so replies and acks find their way.

        A sender that started on its host after that host's last heartbeat is not
        listed yet; its first message adds it (the next heartbeat confirms it).
        """
        agents = self._host_agents.get(src, [])
        if any(a.name == sender for a in agents) or not self._room_for(src, len(agents) + 1):
            return
        agents = [*agents, RemoteAgent(sender, active=True)]
        self._host_agents[src] = agents
        # Watched for silence like a host heard by heartbeat, or its entries stay active
        # for good (a reply to one would go into our FIFO and to nobody on NATS).
        self._seen_hosts.setdefault(src, time.monotonic())
        await self._update_host_soon(src, agents, True)

    def _room_for(self, host: str, n_agents: int) -> bool:
        """True if ``host`` may have ``n_agents`` entries here (else logged and dropped)."""
        if host not in self._host_agents and len(self._host_agents) >= MAX_REMOTE_HOSTS:
            self._drop("too many hosts", f"{host}: {MAX_REMOTE_HOSTS} hosts known already")
            return False
        others = sum(len(a) for h, a in self._host_agents.items() if h != host)
        if others + n_agents > MAX_REMOTE_AGENTS:
            self._drop(
                "too many remote agents",
                f"{host} lists {n_agents}, {others} known elsewhere; limit {MAX_REMOTE_AGENTS}",
            )
            return False
        return True


def _parse_heartbeat(data: bytes) -> list[RemoteAgent]:
    """The agents a heartbeat lists; ValueError if it is not a heartbeat."""
    if len(data) > MAX_HEARTBEAT_BYTES:
        raise ValueError(f"{len(data)} bytes, limit {MAX_HEARTBEAT_BYTES}")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON ({str(exc)[:80]})") from None
    agents = doc.get("agents") if isinstance(doc, dict) else None
    if not isinstance(agents, dict) or len(agents) > 10_000:
        raise ValueError('no "agents" object (or over 10,000 agents)')
    out: list[RemoteAgent] = []
    for name, info in sorted(agents.items()):
        if not isinstance(name, str) or not is_valid_name(name) or "@" in name:
            raise ValueError(f"agent name {str(name)[:80]!r} is not valid")
        if not isinstance(info, dict):
            raise ValueError(f"agent {name} is not an object")
        active, durable = info.get("active"), info.get("durable", False)
        role, size = info.get("role", ""), info.get("max_body_bytes", 16 * 1024 * 1024)
        if not isinstance(active, bool) or not isinstance(durable, bool):
            raise ValueError(f"agent {name}: active/durable are not true or false")
        if not isinstance(role, str) or len(role) > 200:
            raise ValueError(f"agent {name}: role is not a short string")
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 2**62:
            raise ValueError(f"agent {name}: max_body_bytes is not a positive integer")
        role = "".join(c if c.isprintable() else "?" for c in role)
        out.append(RemoteAgent(name, active, durable, role, size))
    return out
