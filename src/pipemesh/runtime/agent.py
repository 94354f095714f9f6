"""Agents: :class:`MeshClient` sends, :class:`AgentBase` also receives.

``AgentBase`` is the seed's parent class: subclass it, override
:meth:`AgentBase.on_message_received`, and use ``send_message``,
``broadcast_message``, ``ask`` and ``reply``. Each agent owns a public pipe
(its inbox, read by the router thread) and a private pipe (heartbeat and
status for monitors), and is listed in ``agent_registry.json``.

Discovery without a registry read per send: an agent reads the registry when
it starts, then learns of joins and leaves from ``mesh.join`` / ``mesh.leave``
control frames that every agent sends to the others when it starts and stops.
A send to a name it has not heard of re-reads the registry once before it
raises ``UnknownAgent``; a crashed peer shows up as ``AgentOffline`` on the
next send to it.

Threads (all daemon, all joined by ``close()``): router (reads the pipe),
dispatcher (runs the handler), log writer, heartbeat.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import json
import os
import secrets
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Self

from pipemesh.errors import (
    AgentOffline,
    DeliveryError,
    EncodeError,
    MeshError,
    MessageTooLarge,
    PeerGone,
    ReplyTimeout,
    SendTimeout,
    TransportClosed,
    UnknownAgent,
)
from pipemesh.home import MeshHome
from pipemesh.observe import EventLog
from pipemesh.registry import AgentRecord, Registry, process_start_time, utc_now_iso
from pipemesh.runtime.router import Router
from pipemesh.transport.base import Inbox, Outbox, Transport
from pipemesh.transport.fifo import FifoTransport, StatusPipe
from pipemesh.wire import (
    MAX_BODY_BYTES,
    Message,
    encode_message,
    is_valid_id,
    validate_name,
    validate_type,
)

__all__ = ["AgentBase", "BroadcastResult", "Delivery", "MeshClient"]

_PRIORITIES: Final = frozenset((0, 1, 2, 3))
CONTROL_PREFIX: Final = "mesh."
JOIN: Final = "mesh.join"
LEAVE: Final = "mesh.leave"
WAKE: Final = "mesh.wake"


class Delivery(enum.StrEnum):
    """What happened to one recipient of a message."""

    DELIVERED = "delivered"
    OFFLINE = "offline"
    TIMEOUT = "timeout"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    """Per-recipient outcome of :meth:`MeshClient.broadcast_message`.

    Attributes:
        id: the message ID (the same for every recipient).
        outcomes: recipient name -> :class:`Delivery`.
        errors: recipient name -> the error sentence, for those not delivered.
    """

    id: str
    outcomes: dict[str, Delivery] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def delivered(self) -> list[str]:
        """Recipients whose pipe took the whole message."""
        return [n for n, d in self.outcomes.items() if d is Delivery.DELIVERED]

    @property
    def failed(self) -> list[str]:
        """Recipients that did not get it."""
        return [n for n, d in self.outcomes.items() if d is not Delivery.DELIVERED]


class MeshClient:
    """Sends messages on a mesh without joining it (no inbox, no registry entry).

    :class:`AgentBase` builds on it. Use it directly for one-shot senders such
    as ``pipemesh send``.

    Args:
        agent_name: the FROM of every message sent.
        home: mesh home directory (default: see :mod:`pipemesh.home`).
        transport: where frames go (default: FIFOs in the home's ``pipes/``).
        send_timeout_s: how long a send waits on a full pipe before SendTimeout.
        max_body_bytes: largest body accepted, in bytes of UTF-8.
        log_messages: write the mesh logs (off for benchmarks of the bare path).
    """

    def __init__(
        self,
        agent_name: str,
        home: str | os.PathLike[str] | None = None,
        *,
        transport: Transport | None = None,
        send_timeout_s: float = 10.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        log_messages: bool = True,
        registry_lock_timeout_s: float = 5.0,
    ) -> None:
        self.agent_name = validate_name(agent_name)
        self.home = MeshHome.open(home)
        self.registry = Registry(
            self.home.registry_path,
            self.home.lock_path,
            lock_timeout_s=registry_lock_timeout_s,
        )
        self.transport: Transport = (
            transport if transport is not None else FifoTransport(self.home.pipes_dir)
        )
        self.send_timeout_s = send_timeout_s
        self.max_body_bytes = max_body_bytes
        self.events = EventLog(self.home.logs_dir, agent_name, enabled=log_messages)
        self._peers: dict[str, AgentRecord] = {}
        self._outboxes: dict[str, Outbox] = {}
        self._connect_lock = threading.Lock()
        self._id_prefix = secrets.token_hex(4) + "-"
        self._ids = itertools.count(1)
        self._closed = False
        self._valid: set[str] = {agent_name}  # names and types already validated
        self.sent = 0

    # -- peers --

    def refresh_peers(self) -> dict[str, AgentRecord]:
        """Re-read the registry into the peer cache and return it."""
        peers = self.registry.read()
        self._peers = peers
        return peers

    def peers(self) -> dict[str, AgentRecord]:
        """The cached view of the registry (kept fresh by join/leave frames)."""
        return dict(self._peers)

    def _forget(self, name: str) -> None:
        outbox = self._outboxes.pop(name, None)
        if outbox is not None:
            outbox.close()

    def _outbox(self, name: str) -> Outbox:
        outbox = self._outboxes.get(name)
        if outbox is not None:
            return outbox
        with self._connect_lock:
            outbox = self._outboxes.get(name)
            if outbox is not None:
                return outbox
            if name not in self._peers and name not in self.refresh_peers():
                raise UnknownAgent(
                    f"no agent named {name} is registered; see 'pipemesh agents'",
                    agent_id=name,
                )
            outbox = self.transport.connect(name)
            self._outboxes[name] = outbox
            return outbox

    # -- sending --

    def next_id(self) -> str:
        """A new message ID, unique across processes and restarts."""
        return f"{self._id_prefix}{next(self._ids):x}"

    def _encode(
        self,
        *,
        to: str,
        message: str,
        priority: int,
        msg_type: str,
        msg_id: str,
        reply_to: str,
        sent_ns: int,
    ) -> tuple[list[bytes], int]:
        if not isinstance(message, str):
            raise TypeError(f"message must be str, got {type(message).__name__}")
        body = message.encode("utf-8", "surrogatepass")
        if len(body) > self.max_body_bytes:
            raise MessageTooLarge(
                f"body is {len(body)} bytes, limit is {self.max_body_bytes} "
                "(raise max_body_bytes or split the message)",
                agent_id=to,
                message_id=msg_id,
            )
        try:
            frames = encode_message(
                self.agent_name,
                to,
                body,
                msg_id=msg_id,
                priority=priority,
                msg_type=msg_type,
                sent_ns=sent_ns,
                reply_to=reply_to,
                max_frame_bytes=self.transport.max_frame_bytes,
                check=False,
            )
        except EncodeError as exc:
            raise ValueError(str(exc)) from None
        return frames, len(body)

    def _check_args(self, priority: int, msg_type: str) -> None:
        if self._closed:
            raise TransportClosed(f"agent {self.agent_name} is closed")
        if priority not in _PRIORITIES or isinstance(priority, bool):
            raise ValueError(f"priority must be 0, 1, 2 or 3, got {priority!r}")
        if msg_type not in self._valid:
            validate_type(msg_type)
            self._remember_valid(msg_type)

    def _check_name(self, name: str) -> None:
        if name not in self._valid:
            validate_name(name, "recipient name")
            self._remember_valid(name)

    def _remember_valid(self, value: str) -> None:
        if len(self._valid) > 10_000:
            self._valid.clear()  # bounded: a client sending to endless new names
        self._valid.add(value)

    def _write(self, to: str, frames: list[bytes], timeout_s: float) -> None:
        outbox = self._outbox(to)
        try:
            outbox.write_frames(frames, timeout_s)
        except (PeerGone, TransportClosed):
            # The reader went away (or restarted): reopen the path once.
            self._forget(to)
            self._outbox(to).write_frames(frames, timeout_s)

    def send_message(
        self,
        to_agent: str,
        message: str,
        priority: int = 1,
        msg_type: str = "response",
        *,
        reply_to: str = "",
        timeout_s: float | None = None,
        msg_id: str | None = None,
    ) -> str:
        """Send ``message`` to ``to_agent``'s public pipe and return the message ID.

        Args:
            to_agent: the recipient's name.
            message: the body text (any UTF-8, any content).
            priority: 0 low, 1 normal, 2 urgent, 3 critical.
            msg_type: question, response, status, directive, ...
            reply_to: ID of the message this one answers.
            timeout_s: how long to wait on a full pipe (default ``send_timeout_s``).
            msg_id: use this ID instead of a fresh one (for retries).

        Returns:
            The message ID.

        Raises:
            UnknownAgent: no agent of that name is registered.
            AgentOffline: it is registered but nobody reads its pipe.
            SendTimeout: its pipe stayed full for ``timeout_s``.
            MessageTooLarge: the body is over ``max_body_bytes``.
            ValueError: a bad name, type or priority.
        """
        self._check_name(to_agent)
        self._check_args(priority, msg_type)
        if msg_type.startswith(CONTROL_PREFIX):
            raise ValueError(f"message types starting with {CONTROL_PREFIX!r} are reserved")
        if msg_id is None:
            msg_id = self.next_id()
        elif not is_valid_id(msg_id):
            raise ValueError(f"message id {msg_id!r} is not valid")
        if reply_to and not is_valid_id(reply_to):
            raise ValueError(f"reply_to {reply_to!r} is not a valid message id")
        sent_ns = time.time_ns()
        frames, size = self._encode(
            to=to_agent,
            message=message,
            priority=priority,
            msg_type=msg_type,
            msg_id=msg_id,
            reply_to=reply_to,
            sent_ns=sent_ns,
        )
        timeout = self.send_timeout_s if timeout_s is None else timeout_s
        try:
            self._write(to_agent, frames, timeout)
        except DeliveryError as exc:
            exc.message_id = msg_id
            self.events.error("send_failed", str(exc), to=to_agent, id=msg_id, type=msg_type)
            raise
        self.sent += 1
        self.events.message(
            "frame_sent",
            sender=self.agent_name,
            to=to_agent,
            msg_type=msg_type,
            priority=priority,
            msg_id=msg_id,
            body=message,
            reply_to=reply_to,
            size=size,
        )
        self._sent_hook(
            Message(
                self.agent_name, to_agent, priority, msg_type, msg_id, message, sent_ns, reply_to
            )
        )
        return msg_id

    def _sent_hook(self, msg: Message) -> None:
        """Called after each successful send (AgentBase keeps history)."""

    def broadcast_message(
        self,
        message: str,
        priority: int = 1,
        msg_type: str = "broadcast",
        *,
        timeout_s: float | None = None,
    ) -> BroadcastResult:
        """Send ``message`` with an empty TO to every other active agent.

        Never fails on the first dead peer: each recipient's outcome is in the
        result (delivered, offline, timeout, failed).

        Raises:
            MessageTooLarge: the body is over ``max_body_bytes``.
            ValueError: a bad type or priority.
        """
        self._check_args(priority, msg_type)
        if msg_type.startswith(CONTROL_PREFIX):
            raise ValueError(f"message types starting with {CONTROL_PREFIX!r} are reserved")
        msg_id = self.next_id()
        sent_ns = time.time_ns()
        frames, size = self._encode(
            to="",
            message=message,
            priority=priority,
            msg_type=msg_type,
            msg_id=msg_id,
            reply_to="",
            sent_ns=sent_ns,
        )
        result = self._fan_out(frames, timeout_s, msg_id)
        self.sent += 1
        self.events.message(
            "frame_sent",
            sender=self.agent_name,
            to="",
            msg_type=msg_type,
            priority=priority,
            msg_id=msg_id,
            body=message,
            size=size,
        )
        for name, error in result.errors.items():
            self.events.error("send_failed", error, to=name, id=msg_id, type=msg_type)
        return result

    def _fan_out(
        self, frames: list[bytes], timeout_s: float | None, msg_id: str
    ) -> BroadcastResult:
        timeout = self.send_timeout_s if timeout_s is None else timeout_s
        result = BroadcastResult(msg_id)
        for name, rec in list(self._peers.items()):
            if name == self.agent_name or not rec.is_active:
                continue
            try:
                self._write(name, frames, timeout)
            except AgentOffline as exc:
                result.outcomes[name], result.errors[name] = Delivery.OFFLINE, str(exc)
            except SendTimeout as exc:
                result.outcomes[name], result.errors[name] = Delivery.TIMEOUT, str(exc)
            except MeshError as exc:
                result.outcomes[name], result.errors[name] = Delivery.FAILED, str(exc)
            else:
                result.outcomes[name] = Delivery.DELIVERED
        return result

    def _send_control(self, to: str, msg_type: str, body: str, timeout_s: float) -> None:
        frames, _ = self._encode(
            to=to,
            message=body,
            priority=3,
            msg_type=msg_type,
            msg_id=self.next_id(),
            reply_to="",
            sent_ns=time.time_ns(),
        )
        self._write(to, frames, timeout_s)

    def close(self) -> None:
        """Close every outbox and flush the logs; idempotent."""
        if self._closed:
            return
        self._closed = True
        for name in list(self._outboxes):
            self._forget(name)
        self.events.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(slots=True)
class _Pending:
    event: threading.Event = field(default_factory=threading.Event)
    reply: Message | None = None


class AgentBase(MeshClient):
    """The seed's parent class: a named agent with a public and a private pipe.

    Subclass it and override :meth:`on_message_received`. Use it as a context
    manager (or call :meth:`close`) so it unregisters and removes its pipes.

    Args:
        agent_name: unique name on the mesh (1-64 of ``A-Z a-z 0-9 _ . -``).
        role: free text shown in the registry (architect, executor, ...).
        home: mesh home directory (default: see :mod:`pipemesh.home`).
        transport: where frames go (default: FIFOs in the home's ``pipes/``).
        send_timeout_s: how long a send waits on a full pipe.
        max_body_bytes: largest body accepted, sent or received.
        history_limit: messages kept per peer in :meth:`history`.
        max_queue: received messages held for the handler before the router
            stops reading (then the pipe fills and senders time out).
        heartbeat_s: seconds between heartbeats on the private pipe.
        log_messages: write the mesh logs.
        registry_lock_timeout_s: how long to wait for the registry lock.
        partial_timeout_s: parts of a large message that stop coming for this
            long (their sender died or gave up) are dropped and reported.

    Raises:
        NameTaken: a live agent already holds ``agent_name``.
        RegistryLockTimeout: the registry stayed locked.
        UsageError: the mesh home is unsafe or cannot be created.
    """

    def __init__(
        self,
        agent_name: str,
        role: str = "agent",
        home: str | os.PathLike[str] | None = None,
        *,
        transport: Transport | None = None,
        send_timeout_s: float = 10.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        history_limit: int = 200,
        max_queue: int = 10_000,
        heartbeat_s: float = 5.0,
        log_messages: bool = True,
        registry_lock_timeout_s: float = 30.0,
        partial_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(
            agent_name,
            home,
            transport=transport,
            send_timeout_s=send_timeout_s,
            max_body_bytes=max_body_bytes,
            log_messages=log_messages,
            registry_lock_timeout_s=registry_lock_timeout_s,
        )
        self.role = role.replace("\n", " ")[:200]
        self.history_limit = history_limit
        self.received = 0
        self.handler_errors = 0
        self._history: dict[str, deque[Message]] = {}
        self._pending: dict[str, _Pending] = {}
        self._inbox_queue: deque[Message] = deque()
        self._inbox_cond = threading.Condition()
        self._closing = False
        self._stopped = threading.Event()
        self._started_at = time.monotonic()
        self._status_pipe: StatusPipe | None = None
        self._heartbeat_s = heartbeat_s
        self._heartbeat_stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        try:
            inbox = self._register()
        except BaseException:
            self.events.close()
            raise
        self._inbox: Inbox = inbox
        # Our own outbox wakes the router on close (the path is unlinked by then).
        self._self_outbox = self.transport.connect(agent_name)
        self._router = Router(
            inbox,
            self._route,
            self._dispatch,
            self._report,
            max_body_bytes=max_body_bytes,
            max_frame_body_bytes=self.transport.max_frame_bytes,
            max_queue=max_queue,
            partial_timeout_s=partial_timeout_s,
            name=f"pipemesh-router-{agent_name}",
            on_exit=self._stopped.set,  # run_forever returns, so `with` closes the agent
        )
        self._router.start()
        self._announce(JOIN)
        if isinstance(self.transport, FifoTransport) and heartbeat_s > 0:
            self._heartbeat = threading.Thread(
                target=self._beat, name=f"pipemesh-heartbeat-{agent_name}", daemon=True
            )
            self._heartbeat.start()

    # -- joining and leaving --

    def _register(self) -> Inbox:
        name = self.agent_name
        with self.registry.transaction() as records:
            self.registry.check_available(records, name)
            inbox = self.transport.bind(name)
            if isinstance(self.transport, FifoTransport):
                self._status_pipe = StatusPipe(self.home.private_pipe(name))
            pid = os.getpid()
            records[name] = AgentRecord(
                name=name,
                role=self.role,
                pid=pid,
                registered_at=utc_now_iso(),
                public_pipe=self.transport.address(name),
                private_pipe=str(self.home.private_pipe(name)) if self._status_pipe else "",
                pid_start=process_start_time(pid),
            )
            self._peers = {n: r.with_liveness() for n, r in records.items()}
        return inbox

    def _announce(self, kind: str) -> None:
        me = self._peers.get(self.agent_name)
        body = json.dumps(me.to_json() if me is not None else {})
        for name, rec in list(self._peers.items()):
            if name == self.agent_name or not rec.is_active:
                continue
            try:
                self._send_control(name, kind, body, 0.5)
            except MeshError:
                continue  # offline or slow peers learn on their next send or read

    # -- receiving --

    def _report(self, event: str, error: str, fields: dict[str, object]) -> None:
        self.events.error(event, error, **fields)

    def _route(self, msg: Message, received_ns: int) -> bool:
        """Router thread: decide what happens to one whole message."""
        if msg.msg_type.startswith(CONTROL_PREFIX):
            return self._control(msg)
        if msg.to and msg.to != self.agent_name:
            self.events.error(
                "frame_misrouted",
                f"message {msg.id} from {msg.sender} is addressed to {msg.to}, not to "
                f"{self.agent_name}; ignored",
                id=msg.id,
                to=msg.to,
            )
            self.events.message(
                "frame_misrouted",
                sender=msg.sender,
                to=msg.to,
                msg_type=msg.msg_type,
                priority=msg.priority,
                msg_id=msg.id,
                body=msg.body,
                reply_to=msg.reply_to,
                size=len(msg.body),
            )
            return False
        self.received += 1
        self.events.message(
            "frame_received",
            sender=msg.sender,
            to=msg.to,
            msg_type=msg.msg_type,
            priority=msg.priority,
            msg_id=msg.id,
            body=msg.body,
            reply_to=msg.reply_to,
            size=len(msg.body),
        )
        self._remember(msg.sender, msg)
        pending = self._pending.get(msg.reply_to) if msg.reply_to else None
        if pending is not None and pending.reply is None:
            self._log_latency("reply_received", msg)
            pending.reply = msg
            pending.event.set()
            return False
        return True

    def _control(self, msg: Message) -> bool:
        if msg.msg_type == JOIN:
            self._forget(msg.sender)  # a restarted peer may have a new pipe
            # The frame carries the joiner's registry record: no registry read,
            # so 100 agents joining at once cost O(N) each, not a registry storm.
            try:
                self._peers[msg.sender] = AgentRecord.from_json(msg.sender, json.loads(msg.body))
            except ValueError as exc:
                self.events.error("join_rejected", f"join frame from {msg.sender}: {exc}")
        elif msg.msg_type == LEAVE:
            self._forget(msg.sender)
            self._peers.pop(msg.sender, None)
        return False  # WAKE needs nothing: the read it ended was the point

    def _log_latency(self, event: str, msg: Message) -> None:
        if msg.sent_ns:
            self.events.latency(
                event,
                sender=msg.sender,
                msg_type=msg.msg_type,
                priority=msg.priority,
                msg_id=msg.id,
                latency_us=(time.time_ns() - msg.sent_ns) / 1000,
                size=len(msg.body),
            )

    def _dispatch(self, msg: Message, received_ns: int) -> None:
        """Router thread: run the handler, report its failures."""
        self._log_latency("message_handled", msg)
        try:
            self.on_message_received(msg)
        except Exception as exc:  # a handler bug must not stop the agent
            self.handler_errors += 1
            self.events.error(
                "handler_failed",
                f"{type(exc).__name__}: {exc}",
                id=msg.id,
                traceback="".join(traceback.format_exception(exc)[-3:]),
            )

    def on_message_received(self, msg: Message) -> None:
        """Handle one message addressed to this agent or broadcast.

        Runs on the router thread, one message at a time, highest priority
        first. The default keeps the message for :meth:`receive`. Exceptions
        are logged to ``mesh_errors.log`` and never stop the agent.
        """
        with self._inbox_cond:
            if len(self._inbox_queue) >= 10_000:
                dropped = self._inbox_queue.popleft()
                self.events.error(
                    "inbox_overflow",
                    f"10000 messages unread by receive(); dropped the oldest ({dropped.id})",
                    id=dropped.id,
                )
            self._inbox_queue.append(msg)
            self._inbox_cond.notify_all()

    def receive(self, timeout_s: float | None = None) -> Message | None:
        """Next message kept by the default handler, or None after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._inbox_cond:
            while not self._inbox_queue:
                remaining = None if deadline is None else deadline - time.monotonic()
                if (remaining is not None and remaining <= 0) or self._stopped.is_set():
                    return None
                self._inbox_cond.wait(remaining if remaining is not None else 1.0)
            return self._inbox_queue.popleft()

    def messages(self, timeout_s: float | None = None) -> Iterator[Message]:
        """Iterate over received messages until ``timeout_s`` passes with none, or close."""
        while True:
            msg = self.receive(timeout_s)
            if msg is None:
                return
            yield msg

    # -- conversations --

    def _remember(self, peer: str, msg: Message) -> None:
        hist = self._history.get(peer)
        if hist is None:
            hist = self._history[peer] = deque(maxlen=self.history_limit)
        hist.append(msg)

    def _sent_hook(self, msg: Message) -> None:
        self._remember(msg.to, msg)

    def history(self, peer: str) -> list[Message]:
        """The last ``history_limit`` messages exchanged with ``peer``, oldest first."""
        return list(self._history.get(peer, ()))

    def ask(
        self,
        to_agent: str,
        message: str,
        timeout_s: float = 30.0,
        *,
        priority: int = 1,
        msg_type: str = "question",
    ) -> Message:
        """Send a question and wait for the reply that names its ID in ``RE``.

        Safe to call from inside :meth:`on_message_received`: the router
        thread then reads the reply itself and queues other messages.

        Raises:
            ReplyTimeout: no reply within ``timeout_s``.
            plus everything :meth:`send_message` raises.
        """
        msg_id = self.next_id()
        pending = _Pending()
        self._pending[msg_id] = pending
        try:
            self.send_message(to_agent, message, priority, msg_type, msg_id=msg_id)
            if threading.current_thread() is self._router.thread:
                self._router.pump(pending.event.is_set, timeout_s)
            elif not self._stopped.is_set():
                pending.event.wait(timeout_s)
            if pending.reply is None:
                raise ReplyTimeout(
                    f"{to_agent} did not reply to {msg_id} within {timeout_s:g}s; "
                    "is it handling messages? (see 'pipemesh tail')",
                    agent_id=to_agent,
                    message_id=msg_id,
                )
            return pending.reply
        finally:
            self._pending.pop(msg_id, None)

    def reply(
        self,
        msg: Message,
        message: str,
        *,
        msg_type: str = "response",
        priority: int | None = None,
    ) -> str:
        """Answer ``msg``: send to its sender with ``RE`` set to its ID."""
        return self.send_message(
            msg.sender,
            message,
            msg.priority if priority is None else priority,
            msg_type,
            reply_to=msg.id,
        )

    # -- status --

    def status(self) -> dict[str, object]:
        """Counters for monitors: the private pipe carries this as JSON."""
        return {
            "agent": self.agent_name,
            "role": self.role,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self._started_at, 3),
            "sent": self.sent,
            "received": self.received,
            "backlog": self._router.backlog,
            "handler_errors": self.handler_errors,
            "rejected_frames": self._router.rejected,
            "log_dropped": self.events.dropped,
        }

    def _beat(self) -> None:
        while not self._heartbeat_stop.wait(self._heartbeat_s):
            self._publish_status("heartbeat")

    def _publish_status(self, kind: str) -> None:
        pipe = self._status_pipe
        if pipe is None:
            return
        frames, _ = self._encode(
            to="",
            message=json.dumps(self.status()),
            priority=0,
            msg_type=kind,
            msg_id=self.next_id(),
            reply_to="",
            sent_ns=time.time_ns(),
        )
        pipe.publish(frames)

    # -- lifetime --

    @property
    def is_running(self) -> bool:
        """True until :meth:`close` starts."""
        return not self._closing

    def run_forever(self, poll_s: float | None = None) -> None:
        """Block until :meth:`close` is called (from a handler or another thread).

        KeyboardInterrupt and SystemExit pass through, so ``with agent:`` then
        closes the agent cleanly.
        """
        while not self._stopped.wait(poll_s):
            pass

    def close(self, timeout_s: float = 5.0) -> None:
        """Unregister, remove the pipes, let queued messages be handled, stop threads.

        Idempotent; safe to call from a handler.
        """
        if self._closing:
            return
        self._closing = True
        name = self.agent_name
        try:
            self.registry.unregister(name, os.getpid())
        except MeshError as exc:
            self.events.error("unregister_failed", str(exc))
        self.transport.remove(name)
        self._announce(LEAVE)
        self._router.stop()
        wake, _ = self._encode(
            to=name,
            message="",
            priority=3,
            msg_type=WAKE,
            msg_id=self.next_id(),
            reply_to="",
            sent_ns=time.time_ns(),
        )
        # If the pipe is full, the router sees _closing once the dispatcher frees it.
        with contextlib.suppress(MeshError):
            self._self_outbox.write_frames(wake, min(timeout_s, 1.0))
        self._router.join(timeout_s)
        self._heartbeat_stop.set()
        if self._heartbeat is not None and threading.current_thread() is not self._heartbeat:
            self._heartbeat.join(timeout_s)
        if self._status_pipe is not None:
            self._status_pipe.close()
        self._self_outbox.close()
        self._stopped.set()
        with self._inbox_cond:
            self._inbox_cond.notify_all()
        for pending in list(self._pending.values()):
            pending.event.set()
        super().close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.agent_name!r} role={self.role!r}>"
