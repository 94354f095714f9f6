"""Durable remote agents: JetStream publishes, pulls and acks (docs/gateway.md).

Outbound, messages to a durable remote entry are published into the mesh's stream
(de-duplicated by ``host.sender.id``), and the sender is told ``mesh.handled`` once
JetStream stored them (or our spool holds them, NATS away; spools are forwarded when
it returns). Inbound, this host's durable consumer is pulled and each message acked
only once the local agent reported it handled, or it is in the agent's spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Final

import nats.errors
import nats.js.api
from nats.aio.msg import Msg

from pipemesh import codec
from pipemesh.codec import BINARY, TEXT, AnyFrameDecoder
from pipemesh.errors import DecodeError, MeshError
from pipemesh.gateway import subjects
from pipemesh.gateway._base import nats_frame
from pipemesh.gateway.inbound import Inbound
from pipemesh.gateway.remote import remote_name, split_remote
from pipemesh.runtime.durable import HANDLED_DIR
from pipemesh.runtime.send import CONTROL_PREFIX, HANDLED, SPOOLED
from pipemesh.spool import Spool, SpoolEntry
from pipemesh.wire import Frame, Message, Reassembler

__all__ = ["Durable"]

_PENDING_MAX: Final = 100_000


class Durable(Inbound):
    """JetStream both ways for durable agents."""

    # -- durable outbound: local senders -> JetStream (or the entry's spool here) --

    async def _publish_durable(self, name: str, msgs: list[Message]) -> None:
        """Into JetStream (de-duplicated by sender and id); then tell each sender it is safe.

        The publishes of one batch are pipelined on the connection (their order is kept);
        one that fails (NATS away) goes to the remote entry's spool here, for later.
        """
        agent, host = split_remote(name)
        subject = subjects.durable(self.mesh, self.host, host, agent)
        results = await asyncio.gather(
            *(
                self._js.publish(
                    subject,
                    nats_frame(msg, agent),
                    headers={"Nats-Msg-Id": f"{self.host}.{msg.sender}.{msg.id}"},
                    timeout=5.0,
                )
                for msg in msgs
            ),
            return_exceptions=True,
        )
        safe: dict[str, list[str]] = {}
        for msg, result in zip(msgs, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, (nats.errors.Error, TimeoutError, OSError)):
                    raise result
                await self._spool_out(name, msg)  # NATS is away
            else:
                self.stats.published_durable += 1
            safe.setdefault(msg.sender, []).append(msg.id)
        # Kept by JetStream (or our spool): the senders may forget them.
        for sender, ids in safe.items():
            for start in range(0, len(ids), 100):  # ~100 IDs: one frame under PIPE_BUF
                await self._report_handled(sender, name, ids[start : start + 100])

    async def _spool_out(self, name: str, msg: Message) -> None:
        data = b"".join(
            codec.encode_message(
                BINARY,
                msg.sender,
                name,
                msg.body.encode(),
                msg_id=msg.id,
                priority=msg.priority,
                msg_type=msg.msg_type,
                sent_ns=msg.sent_ns,
                reply_to=msg.reply_to,
                ack=msg.ack,
                max_frame_bytes=self.transport.max_frame_bytes,
            )
        )
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.spool.put(name, data, msg.id, limits=False)
        )
        self.stats.spooled += 1

    async def _report_handled(self, to: str, sender: str, ids: list[str]) -> None:
        frames = codec.encode_message(
            TEXT,
            sender,
            to,
            " ".join(ids).encode(),
            msg_id=f"gw{os.getpid():x}h{next(self._ids):x}",
            priority=3,
            msg_type=HANDLED,
            sent_ns=time.time_ns(),
            max_frame_bytes=self.transport.max_frame_bytes,
        )
        await self._write_local(to, frames, quiet=True)

    async def _handled(self, agent_from: str, sender: str, ids: list[str]) -> None:
        """A local durable agent handled messages a remote sender sent: ack them in JetStream."""
        for msg_id in ids:
            js_msg = self._pending.pop((agent_from, sender, msg_id), None)
            if js_msg is not None:
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    await js_msg.ack()
                    self.stats.js_acked += 1

    async def _drain_spools(self) -> None:
        """Forward what waits in the spools of durable remote entries (NATS was away)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.heartbeat_s)
            nc, remote = self._nc, self.remote
            if nc is None or not nc.is_connected:
                continue
            for name, agent in remote.names().items():
                if agent.durable:
                    entries = await loop.run_in_executor(None, self.spool.entries, name)
                    for start in range(0, len(entries), 256):
                        if not await self._forward_spooled(name, entries[start : start + 256]):
                            break  # NATS went away again: the rest waits

    async def _forward_spooled(self, name: str, entries: list[SpoolEntry]) -> bool:
        """Publish spooled messages (pipelined); remove each file once all of it is stored."""
        agent, host = split_remote(name)
        subject = subjects.durable(self.mesh, self.host, host, agent)
        batch = [(entry, _messages(Spool.read(entry) or b"")) for entry in entries]
        results = await asyncio.gather(
            *(
                self._js.publish(
                    subject,
                    nats_frame(msg, agent),
                    headers={"Nats-Msg-Id": f"{self.host}.{msg.sender}.{msg.id}"},
                    timeout=5.0,
                )
                for _, msgs in batch
                for msg in msgs
                if not msg.msg_type.startswith(CONTROL_PREFIX)
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, (nats.errors.Error, TimeoutError, OSError)
            ):
                raise result
        if any(isinstance(r, BaseException) for r in results):
            return False  # kept: re-published later (JetStream drops the copies it has)
        self.stats.published_durable += len(results)
        for entry, _ in batch:
            Spool.remove(entry)
        return True

    # -- durable inbound: JetStream -> local durable agents --

    def _handled_by(self, agent: str, sender: str, msg_id: str) -> bool:
        """True if ``agent``'s record of handled messages holds (sender, id)."""
        path = self.home.spool_dir / HANDLED_DIR / agent
        try:
            with open(path, "rb") as f:
                data = f.read(64 * 1024 * 1024)
        except OSError:
            return False
        line = f"{sender} {msg_id}\n".encode()
        return data.startswith(line) or b"\n" + line in data

    async def _durable_inbound(self) -> None:
        """Pull this host's durable messages; ack each once delivered durably here."""
        sub = None
        while True:
            nc = self._nc
            if nc is None or not nc.is_connected:
                await asyncio.sleep(0.5)
                continue
            try:
                if sub is None:
                    sub = await self._js.pull_subscribe(
                        subjects.durable_filter(self.mesh, self.host),
                        durable="gw_" + subjects.stream_name(self.host),
                        stream=subjects.stream_name(self.mesh),
                        config=nats.js.api.ConsumerConfig(
                            ack_wait=self.ack_wait_s, max_ack_pending=_PENDING_MAX
                        ),
                    )
                msgs = await sub.fetch(batch=256, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except (nats.errors.Error, OSError) as exc:
                self.events.error("gateway_fetch_failed", repr(exc)[:300])
                sub = None  # made again: the server may have lost it (or has no JetStream)
                await asyncio.sleep(2.0)
                continue
            for js_msg in msgs:
                await self._durable_one(js_msg)

    async def _durable_one(self, js_msg: Msg) -> None:
        route = subjects.parse(self.mesh, js_msg.subject)
        frame = None
        if route is not None and route.kind == subjects.DURABLE and route.dst == self.host:
            frame = self._check(route, js_msg.data, "durable message")
        if route is None or frame is None or frame.to != route.agent:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await js_msg.term()  # never deliverable: do not re-deliver it
            return
        loop = asyncio.get_running_loop()
        rec = self._local.get(frame.to) or await loop.run_in_executor(
            None, self._local_record, frame.to
        )
        if rec is not None and not rec.is_active:  # it may have just started: look again
            with contextlib.suppress(MeshError):
                self._local = await loop.run_in_executor(None, self._read_local)
                rec = self._local.get(frame.to, rec)
        if rec is None:
            self._drop("unknown agent", f"durable {frame.id} to {frame.to}")
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await js_msg.term()
            return
        sender = remote_name(frame.sender, route.src)
        await self._know_sender(route.src, frame.sender)
        redelivered = _deliveries(js_msg) > 1
        if redelivered and rec.durable:
            # Its report may have been lost (our restart, or its sender left meanwhile):
            # the agent's own record of handled messages says whether it is done.
            done = await loop.run_in_executor(None, self._handled_by, frame.to, sender, frame.id)
            if done:
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    await js_msg.ack()
                    self.stats.js_acked += 1
                return
        frames = self._encode_for(route.src, frame, frame.to, rec)
        if rec.is_active and await self._write_local(frame.to, frames, quiet=True):
            if rec.durable:
                if len(self._pending) < _PENDING_MAX:
                    self._pending[(frame.to, sender, frame.id)] = js_msg  # acked on its report
                return
        elif rec.durable:
            try:
                path = await self._queue_local(frame.to, frames, frame.id)
            except MeshError as exc:
                self._log(f"cannot queue {frame.id} for {frame.to}: {exc}; JetStream keeps it")
                return  # not acked: re-delivered after ack_wait
            # As any sender does: tell the agent, in case it started meanwhile.
            told = codec.encode_message(
                TEXT,
                sender,
                frame.to,
                path.name.encode(),
                msg_id=f"gw{os.getpid():x}s{next(self._ids):x}",
                priority=3,
                msg_type=SPOOLED,
                sent_ns=time.time_ns(),
                max_frame_bytes=self.transport.max_frame_bytes,
            )
            await self._write_local(frame.to, told, quiet=True)
        else:
            self._drop("not delivered", f"durable {frame.id} to {frame.to}: agent offline")
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await js_msg.ack()
            self.stats.js_acked += 1


def _deliveries(js_msg: Msg) -> int:
    """How many times JetStream delivered ``js_msg`` (1 the first time)."""
    try:
        return int(js_msg.metadata.num_delivered)
    except (nats.errors.Error, AttributeError, ValueError, TypeError):
        return 1


def _messages(data: bytes) -> list[Message]:
    """The whole messages in spooled bytes (frames of either kind); bad ones skipped."""
    decoder = AnyFrameDecoder()
    joiner = Reassembler()
    decoder.feed(data)
    decoder.feed(b"")
    out: list[Message] = []
    for _ in range(100_000):
        try:
            frame = decoder.next_frame()
        except DecodeError:
            continue
        if not isinstance(frame, Frame):
            break
        try:
            msg = joiner.add(frame, 0.0)
        except DecodeError:
            continue
        if msg is not None:
            out.append(msg)
    return out
