"""Shared state of the gateway, and its local side: the registry view and pipe writes.

The base of the gateway's parts (:mod:`.liveness`, :mod:`.inbound`, :mod:`.durable`,
:mod:`.outbound`, :mod:`.connection`, joined in :mod:`.bridge`): the counters, the
log, the local agents as the registry lists them, join/leave announcements, and
whole-message writes into local pipes (in order per target, never half a message).
It does not publish, subscribe or touch JetStream.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import itertools
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from pipemesh import codec
from pipemesh.codec import BINARY, TEXT, FrameKind
from pipemesh.errors import MeshError, PeerGone, TransportClosed, UsageError
from pipemesh.gateway import subjects
from pipemesh.gateway.config import GatewayConfig
from pipemesh.gateway.remote import Announcement, RemoteAgent, RemoteTable, remote_name
from pipemesh.home import MeshHome
from pipemesh.observe import EventLog
from pipemesh.registry import AgentRecord, Registry
from pipemesh.runtime.send import JOIN, LEAVE
from pipemesh.spool import Spool
from pipemesh.transport.base import Outbox
from pipemesh.transport.fifo import FifoTransport
from pipemesh.wire import Frame, Message

__all__ = ["HEARTBEAT_S", "GatewayBase", "GatewayStats", "nats_frame"]


HEARTBEAT_S: Final = 1.0
_WRITE_TIMEOUT_S: Final = 2.0
_QUEUE_MAX: Final = 4096


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


class GatewayBase:
    """The state every part of the gateway shares; see :class:`.bridge.Gateway` for the args.

    The parts subclass one another in a line (``Liveness`` <- ``Inbound`` <- ``Durable`` <-
    ``Outbound`` <- ``Connection`` <- ``Gateway``), so each calls only what is below it
    and mypy checks every call; they share this one state.
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
        # Remote entries change in the order the loop asked (heartbeat, silence, NATS lost):
        # in parallel threads a host's "unreachable" could land after its "reachable" again.
        self._updates = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gw-update")
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

    # -- the FIFO readers' hand-off to the loop --

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

    # -- the local side: registry view, join/leave announcements, pipe writes --

    def _read_local(self) -> dict[str, AgentRecord]:
        return {n: r for n, r in self.registry.read().items() if not r.gateway}

    def _update_host(self, host: str, agents: list[RemoteAgent], reachable: bool) -> None:
        self._announce(self.remote.update(host, agents, reachable=reachable))

    async def _update_host_soon(
        self, host: str, agents: list[RemoteAgent], reachable: bool
    ) -> None:
        """:meth:`_update_host` off the loop, after every update asked for before it."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._updates, self._update_host, host, agents, reachable)

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


def nats_frame(msg: Message, to: str) -> bytes:
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
