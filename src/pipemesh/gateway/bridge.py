"""The gateway process: one per host, between the local mesh and a NATS server.

Outbound, it reads the FIFOs of the ``name@host`` entries (:mod:`.remote`) and
publishes each whole message as one binary frame (:mod:`pipemesh.codec`) on
the target's subject (:mod:`.subjects`); inbound, it checks each frame from
NATS, rewrites its FROM to ``sender@origin-host`` and writes it into the local
agent's pipe, so replies, acks and reports route back the same way. Durable
targets go through a JetStream stream (de-duplicated by message id) and are
acknowledged only once delivered durably here. See docs/gateway.md.

The parts live in modules named for their job: :mod:`.connection` (NATS
connection and subscriptions), :mod:`.outbound` (local pipes -> NATS),
:mod:`.inbound` (NATS -> local pipes: checks and FROM rewriting),
:mod:`.durable` (JetStream publishes and acks), :mod:`.liveness` (heartbeats
and remote hosts' liveness), on :mod:`._base` (shared state, local pipe writes).

Local-to-local traffic never passes here. The gateway opens no listening
socket: its only connection is the outbound one to NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from pipemesh.errors import MeshError
from pipemesh.gateway._base import GatewayStats
from pipemesh.gateway.connection import Connection, quiet_ssl_eof
from pipemesh.home import MeshHome

__all__ = ["Gateway", "GatewayStats"]


class Gateway(Connection):
    """Bridge the mesh in ``home`` to the other hosts on a NATS server.

    Args:
        nats_url: the NATS server (``nats://host:4222``, ``tls://...``).
        mesh: the mesh name shared by the gateways that bridge together.
        host: this host's name (default: the machine's host name).
        home: the local mesh home.
        config: credentials (:func:`pipemesh.gateway.config.load_config`).
        heartbeat_s: how often this host's agents are announced.
        host_timeout_s: a host silent this long is unreachable (default 4 heartbeats).
        ack_wait_s: how long JetStream waits for a durable delivery's ack before re-delivering.
        max_message_bytes: largest frame taken from NATS (and the NATS server's own
            ``max_payload`` applies): larger ones are logged and dropped.
    """

    # -- running --

    def run(self) -> None:
        """Run until SIGINT/SIGTERM (the CLI) or :meth:`stop`.

        Raises:
            UsageError: the config's TLS files or nkey seed cannot be used.
        """
        with quiet_ssl_eof():
            asyncio.run(self.main())

    def stop(self) -> None:
        """Ask a running gateway to stop (thread-safe; also before it started running)."""
        self._stop_asked = True
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._stop.set)

    async def main(self) -> None:
        """The gateway's life: connect, bridge, and clean up at the end."""
        self._loop = asyncio.get_running_loop()
        if self._stop_asked:
            self._stop.set()
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._connect()
            if self._stop.is_set():
                return
            tasks = [
                asyncio.create_task(self._heartbeats()),
                asyncio.create_task(self._outbound()),
                asyncio.create_task(self._durable_inbound()),
                asyncio.create_task(self._drain_spools()),
            ]
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            told = await asyncio.get_running_loop().run_in_executor(None, self.remote.close)
            with contextlib.suppress(RuntimeError):
                self._announce(told)
            if self._nc is not None:
                with contextlib.suppress(Exception):  # flushes what is buffered; bounded
                    await asyncio.wait_for(self._nc.close(), 3.0)
            self._updates.shutdown(wait=True)  # after close, an update changes nothing
            self._writer.shutdown(wait=True)
            for outbox in self._outboxes.values():
                with contextlib.suppress(MeshError):
                    outbox.close()
            self.events.close()


def gateway_home(home: str | os.PathLike[str] | None) -> MeshHome:
    """The mesh home a gateway bridges."""
    return MeshHome.open(Path(home) if home is not None else None)
