"""The gateway process: one per host, between the local mesh and a NATS server.

Outbound, it reads the FIFOs of the ``name@host`` entries (:mod:`.remote`) and
publishes each whole message as one binary frame (:mod:`pipemesh.codec`) on
the target's subject (:mod:`.subjects`); inbound, it checks each frame from
NATS, rewrites its FROM to ``sender@origin-host`` and writes it into the local
agent's pipe, so replies, acks and reports route back the same way. Durable
targets go through a JetStream stream (de-duplicated by message id) and are
acknowledged only once delivered durably here. See docs/gateway.md.

Local-to-local traffic never passes here. The gateway opens no listening
socket: its only connection is the outbound one to NATS.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import itertools
import json
import os
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import nats
import nats.errors
import nats.js.api
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from pipemesh import codec
from pipemesh.codec import BINARY, TEXT, AnyFrameDecoder, FrameKind
from pipemesh.errors import DecodeError, MeshError, PeerGone, TransportClosed, UsageError
from pipemesh.gateway import subjects
from pipemesh.gateway.config import GatewayConfig
from pipemesh.gateway.remote import (
    Announcement,
    RemoteAgent,
    RemoteTable,
    remote_name,
    split_remote,
)
from pipemesh.home import MeshHome
from pipemesh.observe import EventLog
from pipemesh.registry import AgentRecord, Registry
from pipemesh.runtime.durable import HANDLED_DIR
from pipemesh.runtime.send import ACK, CONTROL_PREFIX, HANDLED, JOIN, LEAVE, SPOOLED
from pipemesh.spool import Spool, SpoolEntry
from pipemesh.transport.base import Outbox
from pipemesh.transport.fifo import FifoTransport
from pipemesh.wire import NEED_DATA, Frame, Message, Reassembler, is_valid_name

__all__ = ["Gateway", "GatewayStats"]

HEARTBEAT_S: Final = 1.0
MAX_HEARTBEAT_BYTES: Final = 1024 * 1024
_WRITE_TIMEOUT_S: Final = 2.0
_QUEUE_MAX: Final = 4096
_BROADCAST_MEMORY: Final = 4096
_PENDING_MAX: Final = 100_000


@dataclass(slots=True)
class GatewayStats:
    """Counters, for tests, the log and the bench."""

    published: int = 0
    published_durable: int = 0
    delivered: int = 0
    spooled: int = 0
    dropped: int = 0
    js_acked: int = 0
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)


class Gateway:
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

    def __init__(
        self,
        nats_url: str,
        *,
        mesh: str = "default",
        host: str | None = None,
        home: MeshHome | None = None,
        config: GatewayConfig | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        host_timeout_s: float | None = None,
        ack_wait_s: float = 10.0,
        max_message_bytes: int = 1 << 20,
    ) -> None:
        host = host or os.uname().nodename.split(".")[0]
        for what, value in (("mesh", mesh), ("host", host)):
            try:
                subjects.host_token(value)
            except ValueError as exc:
                raise UsageError(f"--{what}: {exc}") from None
        self.nats_url = nats_url
        self.mesh = mesh
        self.host = host
        self.home = home or MeshHome.open()
        self.config = config or GatewayConfig()
        self.heartbeat_s = heartbeat_s
        self.host_timeout_s = host_timeout_s or 4 * heartbeat_s + 1.0
        self.ack_wait_s = ack_wait_s
        self.max_message_bytes = max_message_bytes
        self.stats = GatewayStats()
        self.events = EventLog(self.home.logs_dir, f"gateway@{host}")
        self.registry = Registry(
            self.home.registry_path,
            self.home.lock_path,
            names_dir=self.home.names_dir,
            pipes_dir=self.home.pipes_dir,
        )
        self.transport = FifoTransport(self.home.pipes_dir)
        self.spool = Spool(self.home.spool_dir)
        self.remote = RemoteTable(self.home, self._from_reader, self._reader_error)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc: NatsClient | None = None
        self._js: Any = None
        self._outq: asyncio.Queue[tuple[str, list[Message]]] = asyncio.Queue(_QUEUE_MAX)
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gw-write")
        self._outboxes: dict[str, Outbox] = {}
        self._outbox_lock = threading.Lock()  # the loop and the writer thread share them
        self._busy: dict[str, int] = {}  # writes to each target still in the writer thread
        self._local: dict[str, AgentRecord] = {}
        self._seen_hosts: dict[str, float] = {}
        self._host_agents: dict[str, list[RemoteAgent]] = {}
        self._broadcasts: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        # (local agent, sender@host, id) -> the JetStream message acked once it reports handled
        self._pending: dict[tuple[str, str, str], Msg] = {}
        self._ids = itertools.count(1)  # ids of the gateway's own control frames
        self._stop = asyncio.Event()
        self.connected = threading.Event()
        self._last_error = ""
        self._stop_asked = False

    # -- logging --

    def _log(self, text: str) -> None:
        print(f"pipemesh gateway {self.host}: {text}", file=sys.stderr, flush=True)

    def _drop(self, reason: str, detail: str) -> None:
        self.stats.dropped += 1
        self.stats.reasons[reason] += 1
        self.events.error("gateway_dropped", f"{reason}: {detail}")
        self._log(f"dropped ({reason}): {detail}")

    # -- running --

    def run(self) -> None:
        """Run until SIGINT/SIGTERM (the CLI) or :meth:`stop`."""
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
            self._writer.shutdown(wait=True)
            for outbox in self._outboxes.values():
                with contextlib.suppress(MeshError):
                    outbox.close()
            self.events.close()

    def _tls(self) -> ssl.SSLContext | None:
        cfg = self.config
        if not (cfg.tls_ca or cfg.tls_cert or self.nats_url.startswith("tls://")):
            return None
        ctx = ssl.create_default_context(cafile=cfg.tls_ca or None)
        if cfg.tls_cert:
            ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        return ctx

    async def _connect(self) -> None:
        """Connect to NATS, retrying until it answers or the gateway is stopped."""
        cfg = self.config
        options: dict[str, Any] = {
            "name": f"pipemesh-gateway-{self.host}",
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "connect_timeout": 2,
            "ping_interval": 2,
            "max_outstanding_pings": 2,
            "disconnected_cb": self._on_disconnect,
            "reconnected_cb": self._on_reconnect,
            "error_cb": self._on_error,
        }
        if cfg.user:
            options["user"], options["password"] = cfg.user, cfg.password
        if cfg.token:
            options["token"] = cfg.token
        if cfg.nkey_seed_file:
            options["nkeys_seed"] = cfg.nkey_seed_file
        tls = self._tls()
        if tls is not None:
            options["tls"] = tls
        while not self._stop.is_set():
            # nats-py retries a failed first connect itself (forever: max_reconnect_attempts
            # is -1); each failure reaches _on_error, which says it once. SIGTERM ends the wait.
            connecting = asyncio.create_task(nats.connect(self.nats_url, **options))
            stopping = asyncio.create_task(self._stop.wait())
            await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await connecting
                break
            try:
                self._nc = connecting.result()
                break
            except (OSError, nats.errors.Error, TimeoutError) as exc:
                await self._on_error(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)
        if self._nc is None:
            return
        nc = self._nc
        self.remote.max_body_cap = max(1024, min(nc.max_payload, self.max_message_bytes) - 4096)
        self._js = nc.jetstream(timeout=5.0)
        await self._ensure_stream()
        await nc.subscribe(subjects.heartbeat_all(self.mesh), cb=self._on_heartbeat)
        await nc.subscribe(subjects.inbound_direct(self.mesh, self.host), cb=self._on_direct)
        await nc.subscribe(subjects.inbound_broadcasts(self.mesh), cb=self._on_broadcast)
        self.connected.set()
        self._log(f"connected to {self.nats_url} as host {self.host} in mesh {self.mesh}")

    async def _ensure_stream(self) -> None:
        config = nats.js.api.StreamConfig(
            name=subjects.stream_name(self.mesh),
            subjects=[subjects.stream_subjects(self.mesh)],
            storage=nats.js.api.StorageType.FILE,
            # A message is gone from the stream once its host's gateway acked it: the
            # hosts' consumers filter disjoint subjects, as a work queue requires.
            retention=nats.js.api.RetentionPolicy.WORK_QUEUE,
            duplicate_window=120.0,
        )
        try:
            try:
                await self._js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self._js.update_stream(config)
        except (nats.errors.Error, TimeoutError) as exc:
            self._log(
                f"no JetStream stream {config.name} ({str(exc)[:160] or type(exc).__name__}): "
                "messages to durable remote agents wait in their spools here; "
                "start nats-server with -js"
            )

    async def _on_disconnect(self) -> None:
        self.connected.clear()
        if self._stop.is_set():
            return  # our own close()
        self._log("lost NATS; remote agents read inactive until it returns")
        await asyncio.get_running_loop().run_in_executor(None, self.remote.set_all_unreachable)
        self._seen_hosts.clear()

    async def _on_reconnect(self) -> None:
        self.connected.set()
        self._last_error = ""
        self._log("NATS is back")

    async def _on_error(self, exc: Exception) -> None:
        text = str(exc) or type(exc).__name__
        self.events.error("gateway_nats_error", text[:300])
        if not self.connected.is_set() and text != self._last_error:
            self._last_error = text  # once per distinct error while not connected
            self._log(f"cannot reach NATS at {self.nats_url} ({text[:200]}); retrying")

    # -- heartbeats: our agents out, theirs in --

    async def _heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                local = await loop.run_in_executor(None, self._read_local)
            except MeshError as exc:
                self._log(f"cannot read the registry: {exc}")
                local = self._local
            self._local = local
            doc = {
                "v": 1,
                "agents": {
                    name: {
                        "active": rec.is_active,
                        "durable": rec.durable,
                        "role": rec.role[:200],
                        "max_body_bytes": rec.max_body_bytes,
                    }
                    for name, rec in local.items()
                    if rec.is_active or rec.durable
                },
            }
            nc = self._nc
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
                    await loop.run_in_executor(None, self._update_host, host, agents, False)
            await asyncio.sleep(self.heartbeat_s)

    def _read_local(self) -> dict[str, AgentRecord]:
        return {n: r for n, r in self.registry.read().items() if not r.gateway}

    def _update_host(self, host: str, agents: list[RemoteAgent], reachable: bool) -> None:
        self._announce(self.remote.update(host, agents, reachable=reachable))

    def _announce(self, told: list[Announcement]) -> None:
        """Tell every local agent about remote entries that came or went (join/leave frames)."""
        if not told:
            return
        try:
            local = self._read_local()
        except MeshError:
            local = self._local
        for name, kind, body in told:
            for to, rec in local.items():
                if not rec.is_active:
                    continue
                frames = codec.encode_message(
                    TEXT,
                    name,
                    to,
                    body.encode(),
                    msg_id=f"gw{os.getpid():x}j{next(self._ids):x}",
                    priority=3,
                    msg_type=JOIN if kind == "join" else LEAVE,
                    sent_ns=time.time_ns(),
                    max_frame_bytes=self.transport.max_frame_bytes,
                )
                self._writer.submit(self._write_blocking, to, frames)

    async def _on_heartbeat(self, msg: Msg) -> None:
        route = subjects.parse(self.mesh, msg.subject)
        if route is None or route.kind != subjects.HEARTBEAT or route.src == self.host:
            return
        try:
            agents = _parse_heartbeat(msg.data)
        except ValueError as exc:
            self._drop("bad heartbeat", f"from {route.src}: {exc}")
            return
        fresh = route.src not in self._seen_hosts
        self._seen_hosts[route.src] = time.monotonic()
        if fresh or agents != self._host_agents.get(route.src):
            self._host_agents[route.src] = agents
            if fresh:
                self._log(f"host {route.src} is here with {len(agents)} agent(s)")
            await asyncio.get_running_loop().run_in_executor(
                None, self._update_host, route.src, agents, True
            )

    # -- outbound: local agents -> NATS --

    def _reader_error(self, name: str, text: str) -> None:
        self.events.error("gateway_read_failed", text, agent=name)

    def _from_reader(self, name: str, msgs: list[Message], stopping: threading.Event) -> None:
        loop, queue = self._loop, self._outq
        if loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(queue.put((name, msgs)), loop)
        while True:  # backpressure: a full queue stops the reader, the pipe fills
            try:
                fut.result(timeout=0.5)
                return
            except concurrent.futures.TimeoutError:
                if stopping.is_set() or loop.is_closed():
                    fut.cancel()
                    return
            except (concurrent.futures.CancelledError, RuntimeError):
                return

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
            await nc.publish(subjects.broadcast(self.mesh, self.host), _frame(msg, ""))
            self.stats.published += 1
            return
        if msg.msg_type == HANDLED:
            await self._handled(agent_from=msg.sender, sender=name, ids=msg.body.split())
            return
        if msg.msg_type.startswith(CONTROL_PREFIX) and msg.msg_type != ACK:
            return  # join/leave/spooled/wake mean nothing on another host
        payload = _frame(msg, agent)
        if nc is None or not nc.is_connected:
            self._drop("NATS down", f"{msg.id} from {msg.sender} to {name}")
            return
        await nc.publish(subjects.direct(self.mesh, self.host, host, agent), payload)
        self.stats.published += 1

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
                    _frame(msg, agent),
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
                    _frame(msg, agent),
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

    # -- inbound: NATS -> local agents --

    def _check(self, route: subjects.Route, data: bytes, what: str) -> Frame | None:
        """The one frame ``data`` holds, if it is acceptable from ``route.src``."""
        nc = self._nc
        limit = min(nc.max_payload if nc is not None else 1 << 20, self.max_message_bytes)
        if route.src == self.host:
            if what != "broadcast":  # our own broadcasts come back by design; nothing else does
                self._drop("spoofed origin", f"{what} claims to come from this host")
            return None
        if len(data) > limit:
            self._drop("oversized", f"{what} from {route.src}: {len(data)} bytes")
            return None
        decoder = AnyFrameDecoder(max_frame_body_bytes=limit)
        decoder.feed(data)
        decoder.feed(b"")
        try:
            frame = decoder.next_frame()
            extra = decoder.next_frame() if frame is not NEED_DATA else NEED_DATA
        except DecodeError as exc:
            self._drop("malformed", f"{what} from {route.src}: {exc}")
            return None
        if not isinstance(frame, Frame) or extra is not NEED_DATA or frame.parts != 1:
            self._drop("malformed", f"{what} from {route.src}: not exactly one whole frame")
            return None
        if "@" in frame.sender:
            self._drop("spoofed FROM", f"{what} from {route.src} claims FROM {frame.sender}")
            return None
        try:
            frame.body.decode("utf-8")
        except UnicodeDecodeError:
            self._drop("malformed", f"{what} from {route.src}: body is not UTF-8")
            return None
        return frame

    async def _on_direct(self, msg: Msg) -> None:
        route = subjects.parse(self.mesh, msg.subject)
        if route is None or route.kind != subjects.DIRECT or route.dst != self.host:
            return
        frame = self._check(route, msg.data, "message")
        if frame is None:
            return
        if frame.to != route.agent:
            self._drop("malformed", f"TO {frame.to} does not match subject agent {route.agent}")
            return
        await self._deliver(route.src, frame, frame.to)

    async def _on_broadcast(self, msg: Msg) -> None:
        route = subjects.parse(self.mesh, msg.subject)
        if route is None or route.kind != subjects.BROADCAST:
            return
        frame = self._check(route, msg.data, "broadcast")
        if frame is None or frame.to != "":
            return
        for name, rec in list(self._local.items()):
            if rec.is_active and await self._deliver(route.src, frame, name, broadcast=True):
                continue
            if rec.durable:  # as a local broadcast does: queued for a durable agent away
                frames = self._encode_for(route.src, frame, "", rec)
                try:
                    await self._queue_local(name, frames, frame.id)
                except MeshError as exc:
                    self._drop("not queued", f"broadcast {frame.id} for {name}: {exc}")

    async def _queue_local(self, name: str, frames: list[bytes], msg_id: str) -> Path:
        """Put a message in a local durable agent's spool (raises SpoolFull/SpoolError)."""
        data = b"".join(frames)
        path = await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.spool.put(name, data, msg_id)
        )
        self.stats.spooled += 1
        return path

    def _local_record(self, name: str) -> AgentRecord | None:
        rec = self._local.get(name)
        if rec is None:
            with contextlib.suppress(MeshError):
                self._local = self._read_local()
                rec = self._local.get(name)
        return rec

    def _encode_for(self, src: str, frame: Frame, to: str, rec: AgentRecord) -> list[bytes]:
        kind: FrameKind = BINARY if BINARY in rec.frames else TEXT
        return codec.encode_message(
            kind,
            remote_name(frame.sender, src),
            to,
            frame.body,
            msg_id=frame.id,
            priority=frame.priority,
            msg_type=frame.msg_type,
            sent_ns=frame.sent_ns,
            reply_to=frame.reply_to,
            ack=frame.ack,
            max_frame_bytes=self.transport.max_frame_bytes,
        )

    async def _know_sender(self, src: str, sender: str) -> None:
        """Make sure ``sender@src`` has an entry here, so replies and acks find their way.

        A sender that started on its host after that host's last heartbeat is not
        listed yet; its first message adds it (the next heartbeat confirms it).
        """
        agents = self._host_agents.get(src, [])
        if any(a.name == sender for a in agents) or len(agents) >= 10_000:
            return
        agents = [*agents, RemoteAgent(sender, active=True)]
        self._host_agents[src] = agents
        await asyncio.get_running_loop().run_in_executor(None, self._update_host, src, agents, True)

    async def _deliver(self, src: str, frame: Frame, to: str, *, broadcast: bool = False) -> bool:
        await self._know_sender(src, frame.sender)
        rec = self._local.get(to) or await asyncio.get_running_loop().run_in_executor(
            None, self._local_record, to
        )
        if rec is None:
            if not broadcast:
                self._drop("unknown agent", f"{frame.id} from {frame.sender}@{src} to {to}")
            return False
        frames = self._encode_for(src, frame, "" if broadcast else to, rec)
        return await self._write_local(to, frames, quiet=broadcast and rec.durable)

    async def _write_local(self, to: str, frames: list[bytes], *, quiet: bool = False) -> bool:
        """Write a message whole to a local pipe, in order per target; False (logged) if not.

        A one-frame message to a pipe with room is written here, in the loop: one
        non-blocking write that never waits. Anything else (several parts, a full
        pipe, a reopen) goes to the writer thread, and so does every later message
        to that target until the thread is done with it, so order is kept.
        """
        if len(frames) == 1 and not self._busy.get(to) and self._write_now(to, frames):
            self.stats.delivered += 1
            return True
        self._busy[to] = self._busy.get(to, 0) + 1
        try:
            loop = asyncio.get_running_loop()
            error = await loop.run_in_executor(self._writer, self._write_blocking, to, frames)
        finally:
            left = self._busy[to] - 1
            if left:
                self._busy[to] = left
            else:
                del self._busy[to]
        if error is None:
            self.stats.delivered += 1
            return True
        if not quiet:
            self._drop("not delivered", error)
        return False

    def _write_now(self, to: str, frames: list[bytes]) -> bool:
        """One frame into an open pipe that has room, without waiting; False if not done."""
        with self._outbox_lock:
            outbox = self._outboxes.get(to)
        if outbox is None:
            return False
        try:
            outbox.write_frames(frames, 0.0)  # one frame: written whole or not at all
        except MeshError:
            return False
        return True

    def _write_blocking(self, to: str, frames: list[bytes]) -> str | None:
        """Write whole frames to a local pipe; the error as text, or None."""
        for attempt in range(2):
            with self._outbox_lock:
                outbox = self._outboxes.get(to)
            try:
                if outbox is None:
                    outbox = self.transport.connect(to)
                    with self._outbox_lock:
                        old, self._outboxes[to] = self._outboxes.get(to), outbox
                    if old is not None:
                        old.close()
                outbox.write_frames(frames, _WRITE_TIMEOUT_S)
                return None
            except (PeerGone, TransportClosed) as exc:
                self._forget_outbox(to)
                if attempt:
                    return str(exc)
            except MeshError as exc:
                self._forget_outbox(to)
                return str(exc)
        return None  # pragma: no cover - the loop always returns

    def _forget_outbox(self, to: str) -> None:
        with self._outbox_lock:
            outbox = self._outboxes.pop(to, None)
        if outbox is not None:
            with contextlib.suppress(MeshError):
                outbox.close()

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


def _frame(msg: Message, to: str) -> bytes:
    """``msg`` as one binary frame for NATS (the local sender's name, the target's local name)."""
    return codec.encode_binary(
        Frame(
            msg.sender,
            to,
            msg.priority,
            msg.msg_type,
            msg.id,
            msg.body.encode(),
            msg.sent_ns,
            msg.reply_to,
            1,
            1,
            msg.ack,
        )
    )


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


def gateway_home(home: str | os.PathLike[str] | None) -> MeshHome:
    """The mesh home a gateway bridges."""
    return MeshHome.open(Path(home) if home is not None else None)
