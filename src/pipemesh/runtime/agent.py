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

Durability (see docs/delivery.md): an agent started with ``durable=True``
marks its registry entry durable and keeps it (``inactive``) when it stops.
A send to such an agent while nobody reads its pipe goes to its spool and
reports :attr:`Delivery.QUEUED`; the agent drains its spool into its router
when it starts (before it reads its pipe, so each sender's order is kept) and
whenever a sender that queued something finds it reading (``mesh.spooled``).
A plain send to a durable agent that is reading survives its SIGKILL: the
sender keeps the message until the agent reports it handled (``mesh.handled``)
and moves it to the agent's spool if the agent dies first; the agent records
what it handled and drops replays (:mod:`pipemesh.runtime.durable`). Sends to
non-durable agents do none of this.

Acknowledgements: ``send(..., ack=True)`` marks the frame ``ACK:1`` and waits
for a ``mesh.ack`` frame (``RE`` = the message ID), which the receiver sends
once its handler has returned. Receivers drop duplicates by (sender, ID) in a
bounded window, so a retry with the same ID is handled once.

Threads (all daemon, all joined by ``close()``): router (reads the pipe),
dispatcher (runs the handler), log writer, heartbeat.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import functools
import itertools
import json
import os
import secrets
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from pipemesh import _platform
from pipemesh.errors import (
    AckTimeout,
    AgentOffline,
    DecodeError,
    DeliveryError,
    EncodeError,
    MeshError,
    MessageTooLarge,
    PeerGone,
    ReplyTimeout,
    SendTimeout,
    TooManyOpenFiles,
    TransportClosed,
    UnknownAgent,
)
from pipemesh.home import MeshHome
from pipemesh.observe import EventLog
from pipemesh.registry import (
    INACTIVE,
    AgentRecord,
    Registry,
    pid_alive,
    process_start_time,
    utc_now_iso,
)
from pipemesh.runtime.durable import ACK_BATCH, ACK_INTERVAL_S, HandledLog, Unacked
from pipemesh.runtime.lifecycle import ExitGuard, stop_signals
from pipemesh.runtime.outbox import DEFAULT_MAX_OPEN, OutboxCache
from pipemesh.runtime.router import Router
from pipemesh.spool import DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGES, Spool, SpoolEntry
from pipemesh.transport import platform_transport
from pipemesh.transport.base import Inbox, Outbox, Transport
from pipemesh.transport.fifo import FifoTransport, StatusPipe
from pipemesh.wire import (
    MAX_BODY_BYTES,
    FrameDecoder,
    Message,
    NeedData,
    Reassembler,
    encode_message,
    is_valid_id,
    validate_name,
    validate_type,
)

__all__ = [
    "DEFAULT_MSG_TYPE",
    "AgentBase",
    "BroadcastResult",
    "Delivery",
    "MeshClient",
    "SendResult",
]

DEFAULT_MSG_TYPE: Final = "directive"
"""The TYPE of ``send``/``send_message`` (and ``pipemesh send``) when none is given."""

_PRIORITIES: Final = frozenset((0, 1, 2, 3))
CONTROL_PREFIX: Final = "mesh."
JOIN: Final = "mesh.join"
LEAVE: Final = "mesh.leave"
WAKE: Final = "mesh.wake"
ACK: Final = "mesh.ack"
SPOOLED: Final = "mesh.spooled"
HANDLED: Final = "mesh.handled"
_MAX_OWED: Final = 4096  # handled IDs owed to one sender whose pipe stays full
_REPORT_BYTES: Final = 3500  # IDs in one mesh.handled frame (with its header: under PIPE_BUF)


class Delivery(enum.StrEnum):
    """What happened to one recipient of a message."""

    DELIVERED = "delivered"
    """Written whole to the recipient's pipe (with ``ack=True``: handled by it)."""
    QUEUED = "queued"
    """The recipient is durable and not reading: the message waits in its spool."""
    OFFLINE = "offline"
    TIMEOUT = "timeout"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SendResult:
    """Outcome of :meth:`MeshClient.send`.

    Attributes:
        id: the message ID.
        delivery: :attr:`Delivery.DELIVERED` or :attr:`Delivery.QUEUED`.
        acked: True when the recipient acknowledged it (``ack=True`` sends).
    """

    id: str
    delivery: Delivery
    acked: bool = False


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
    def queued(self) -> list[str]:
        """Durable recipients that were not reading: the message waits in their spool."""
        return [n for n, d in self.outcomes.items() if d is Delivery.QUEUED]

    @property
    def failed(self) -> list[str]:
        """Recipients that did not get it and will not (not delivered, not queued)."""
        return [
            n
            for n, d in self.outcomes.items()
            if d is not Delivery.DELIVERED and d is not Delivery.QUEUED
        ]


class MeshClient:
    """Sends messages on a mesh without joining it (no inbox, no registry entry).

    :class:`AgentBase` builds on it. Use it directly for one-shot senders such
    as ``pipemesh send``.

    Args:
        agent_name: the FROM of every message sent.
        home: mesh home directory (default: see :mod:`pipemesh.home`).
        transport: where frames go (default: FIFOs in ``pipes/``; named pipes on Windows).
        send_timeout_s: how long a send waits on a full pipe before SendTimeout.
        max_body_bytes: largest body accepted, in bytes of UTF-8.
        log_messages: write the mesh logs (off for benchmarks of the bare path).
        spool_max_messages: messages one durable agent's spool may hold.
        spool_max_bytes: bytes one durable agent's spool may hold.
        spool_fsync: fsync each queued message (survives a machine crash too).
        max_open_outboxes: pipes to peers kept open at most (one fd each); the
            least recently used is closed past it and reopened when needed.
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
        spool_max_messages: int = DEFAULT_MAX_MESSAGES,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        spool_fsync: bool = True,
        max_open_outboxes: int = DEFAULT_MAX_OPEN,
    ) -> None:
        self.agent_name = validate_name(agent_name)
        self.home = MeshHome.open(home)
        self.registry = Registry(
            self.home.registry_path,
            self.home.lock_path,
            lock_timeout_s=registry_lock_timeout_s,
        )
        self.transport: Transport = (
            transport
            if transport is not None
            else platform_transport(self.home.root, self.home.pipes_dir)
        )
        self.send_timeout_s = send_timeout_s
        self.max_body_bytes = max_body_bytes
        self.events = EventLog(self.home.logs_dir, agent_name, enabled=log_messages)
        self.spool = Spool(
            self.home.spool_dir,
            max_messages=spool_max_messages,
            max_bytes=spool_max_bytes,
            fsync=spool_fsync,
        )
        self._peers: dict[str, AgentRecord] = {}
        self._outboxes = OutboxCache(self._connect, max_open=max_open_outboxes)
        self._id_prefix = secrets.token_hex(4) + "-"
        self._ids = itertools.count(1)
        self._closed = False
        self._unacked: Unacked | None = None  # AgentBase: sent to durable peers, not yet handled
        self._unacked_lock = threading.Lock()  # makes _unacked once, from any sending thread
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
        self._outboxes.forget(name)

    def _outbox(self, name: str) -> Outbox:
        return self._outboxes.get(name)

    def _connect(self, name: str) -> Outbox:
        """Open an outbox to ``name`` (the cache calls it under its lock)."""
        if name not in self._peers and name not in self.refresh_peers():
            raise UnknownAgent(
                f"no agent named {name} is registered; see 'pipemesh agents'",
                agent_id=name,
            )
        return self.transport.connect(name)

    def _peer_gone(self, name: str) -> bool:
        """True when ``name`` left, or its process is dead (its pipe is then useless)."""
        rec = self._peers.get(name)
        return rec is None or not pid_alive(rec.pid, rec.pid_start)

    def _check_fits(self, to: str, size: int, msg_id: str) -> None:
        """Raise MessageTooLarge if ``to`` advertises a smaller body limit than ``size``.

        Uses the cached peer record (one registry read for a name not yet known).
        """
        rec = self._peers.get(to)
        if rec is None:
            rec = self.refresh_peers().get(to)
        if rec is not None and size > rec.max_body_bytes:
            raise MessageTooLarge(
                f"body is {size} bytes, {to} accepts at most {rec.max_body_bytes} "
                "(split the message, or start that agent with a larger max_body_bytes)",
                agent_id=to,
                message_id=msg_id,
            )

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
        ack: bool = False,
    ) -> tuple[list[bytes], int]:
        if not isinstance(message, str):
            raise TypeError(f"message must be str, got {type(message).__name__}")
        try:
            body = message.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"message is not valid text: {exc.reason} at position {exc.start} "
                "(a lone surrogate cannot be sent as UTF-8)"
            ) from None
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
                ack=ack,
            )
        except EncodeError as exc:
            raise ValueError(str(exc)) from None
        return frames, len(body)

    def _check_args(self, priority: int, msg_type: str) -> None:
        if self._closed:
            raise TransportClosed(f"agent {self.agent_name} is closed")
        # 1.0 == 1 and True == 1: only real ints go on the wire as PRIORITY:0..3.
        if (
            not isinstance(priority, int)
            or isinstance(priority, bool)
            or priority not in _PRIORITIES
        ):
            raise ValueError(
                f"priority must be the int 0, 1, 2 or 3, got {priority!r} "
                f"({type(priority).__name__})"
            )
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
            try:
                self._outbox(to).write_frames(frames, timeout_s)
            except PeerGone:
                self._forget(to)  # gone for good: do not keep its fd and pipe buffer
                raise

    def send_message(
        self,
        to_agent: str,
        message: str,
        priority: int = 1,
        msg_type: str = DEFAULT_MSG_TYPE,
        *,
        reply_to: str = "",
        timeout_s: float | None = None,
        msg_id: str | None = None,
        ack: bool = False,
        ack_timeout_s: float = 10.0,
        sync: bool = False,
    ) -> str:
        """Send ``message`` to ``to_agent`` and return the message ID.

        The same as :meth:`send` but returns only the ID (a queued message
        returns its ID too; use :meth:`send` to learn which happened).
        """
        return self.send(
            to_agent,
            message,
            priority,
            msg_type,
            reply_to=reply_to,
            timeout_s=timeout_s,
            msg_id=msg_id,
            ack=ack,
            ack_timeout_s=ack_timeout_s,
            sync=sync,
        ).id

    def send(
        self,
        to_agent: str,
        message: str,
        priority: int = 1,
        msg_type: str = DEFAULT_MSG_TYPE,
        *,
        reply_to: str = "",
        timeout_s: float | None = None,
        msg_id: str | None = None,
        ack: bool = False,
        ack_timeout_s: float = 10.0,
        queue: bool = True,
        sync: bool = False,
    ) -> SendResult:
        """Send ``message`` to ``to_agent``'s public pipe, or queue it for a durable agent.

        Args:
            to_agent: the recipient's name.
            message: the body text (any UTF-8, any content).
            priority: 0 low, 1 normal, 2 urgent, 3 critical.
            msg_type: question, response, status, directive, ...
            reply_to: ID of the message this one answers.
            timeout_s: how long to wait on a full pipe (default ``send_timeout_s``).
            msg_id: use this ID instead of a fresh one (for retries: receivers
                drop a message whose (sender, ID) they have already taken).
            ack: wait until the recipient's handler has taken the message
                (needs an inbox for the ``mesh.ack`` frame: an :class:`AgentBase`).
            ack_timeout_s: how long to wait for the acknowledgement.
            queue: spool the message when the recipient is durable and not
                reading (False: raise AgentOffline instead, and send it
                at-most-once, like to a non-durable agent).
            sync: for a durable recipient: write the message to its spool
                first (fsynced with ``spool_fsync``), then tell it; the
                message then survives this process dying too. A bare
                MeshClient (no inbox for the recipient's reports) always
                sends to durable agents this way.

        Returns:
            The ID and :attr:`Delivery.DELIVERED` (with ``ack=True``: handled)
            or :attr:`Delivery.QUEUED` (in the recipient's spool; it is handled
            when the recipient starts again; no ack is awaited). To a durable
            agent, DELIVERED also means: kept until the agent reports it
            handled, and moved to its spool if the agent dies first.

        Raises:
            UnknownAgent: no agent of that name is registered.
            AgentOffline: it is registered, not durable, and nobody reads its pipe.
            SpoolFull: it is durable and offline, and its spool is full.
            SpoolError: it is durable and offline, and its spool cannot be written.
            SendTimeout: its pipe stayed full for ``timeout_s``.
            AckTimeout: ``ack=True`` and no acknowledgement came in ``ack_timeout_s``;
                retry with ``msg_id=exc.message_id``.
            MessageTooLarge: the body is over ``max_body_bytes``.
            ValueError: a bad name, type or priority; ``ack=True`` on a bare MeshClient.
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
            ack=ack,
        )
        self._check_fits(to_agent, size, msg_id)
        timeout = self.send_timeout_s if timeout_s is None else timeout_s
        rec = self._peers.get(to_agent)
        if rec is None:
            rec = self.refresh_peers().get(to_agent)  # once per new name: is it durable?
        durable = queue and rec is not None and rec.durable
        waiter = self._expect_ack(to_agent, msg_id) if ack else None
        acked = False
        # History first: a fast reply must never be recorded before its question.
        sent = Message(
            self.agent_name, to_agent, priority, msg_type, msg_id, message, sent_ns, reply_to
        )
        self._sent_hook(sent)
        try:
            delivery = Delivery.DELIVERED
            if durable:
                delivery = self._send_durable(to_agent, frames, msg_id, timeout, sync)
            else:
                try:
                    self._write(to_agent, frames, timeout)
                except (AgentOffline, PeerGone):
                    if not (queue and self._is_durable(to_agent)):
                        raise
                    self._queue(to_agent, frames, msg_id)
                    delivery = Delivery.QUEUED
            if waiter is not None and delivery is Delivery.DELIVERED:
                self._wait_ack(waiter, ack_timeout_s)
                acked = waiter.is_set()
                if not acked:
                    raise AckTimeout(
                        f"{to_agent} did not acknowledge {msg_id} within {ack_timeout_s:g}s; "
                        "it may or may not have handled it: retry with the same msg_id "
                        "(duplicates are dropped)",
                        agent_id=to_agent,
                        message_id=msg_id,
                    )
        except (DeliveryError, PeerGone) as exc:
            if isinstance(exc, DeliveryError):
                exc.message_id = msg_id
            if not isinstance(exc, AckTimeout):
                self._unsent_hook(sent)
            self.events.error("send_failed", str(exc), to=to_agent, id=msg_id, type=msg_type)
            raise
        finally:
            if waiter is not None:
                self._drop_ack(msg_id)
        self.sent += 1
        self.events.message(
            "frame_sent" if delivery is Delivery.DELIVERED else "frame_queued",
            sender=self.agent_name,
            to=to_agent,
            msg_type=msg_type,
            priority=priority,
            msg_id=msg_id,
            body=message,
            reply_to=reply_to,
            size=size,
        )
        return SendResult(msg_id, delivery, acked)

    def _sent_hook(self, msg: Message) -> None:
        """Called before each send (AgentBase keeps history)."""

    def _unsent_hook(self, msg: Message) -> None:
        """Called when that send failed."""

    # -- acknowledgements and the spool (slow paths) --

    def _expect_ack(self, to: str, msg_id: str) -> threading.Event:
        raise ValueError(
            "ack=True needs an inbox to receive the acknowledgement: send from an "
            "AgentBase, not a bare MeshClient"
        )

    def _wait_ack(self, waiter: threading.Event, timeout_s: float) -> None:
        waiter.wait(timeout_s)

    def _drop_ack(self, msg_id: str) -> None:
        """Forget the ack waiter of ``msg_id`` (AgentBase keeps them)."""

    def _is_durable(self, name: str) -> bool:
        """True if ``name``'s registry entry is durable (re-read once if not cached so)."""
        rec = self._peers.get(name)
        if rec is None or not rec.durable:
            rec = self.refresh_peers().get(name)
        return rec is not None and rec.durable

    def _unacked_for_send(self) -> Unacked | None:
        """Where messages to durable peers are kept until handled (None: no inbox, sync)."""
        return None

    def _send_durable(
        self, to: str, frames: list[bytes], msg_id: str, timeout_s: float, sync: bool
    ) -> Delivery:
        """Send to a durable peer so that its SIGKILL loses nothing (docs/delivery.md)."""
        data = b"".join(frames)
        unacked = self._unacked_for_send()
        if sync or unacked is None:
            path = self.spool.put(to, data, msg_id)
            return Delivery.DELIVERED if self._notify_spooled(to, path.name) else Delivery.QUEUED
        for attempt in (0, 1):
            unacked.keep(to, msg_id, data)  # before the write: its report may come at once
            try:
                self._outbox(to).write_frames(frames, timeout_s)
                return Delivery.DELIVERED
            except (AgentOffline, PeerGone, TransportClosed) as exc:
                unacked.forget(to, msg_id)
                self._forget(to)
                # The reader we wrote to is gone: what it had not handled goes to its spool.
                unacked.move_to_spool(to)
                if attempt or isinstance(exc, AgentOffline):
                    break
            except BaseException:
                unacked.forget(to, msg_id)
                raise
        unacked.move_to_spool(to, (msg_id, data))
        return Delivery.QUEUED

    def _notify_spooled(self, to: str, file_name: str = "") -> bool:
        """Tell ``to`` that its spool has something new; True if it is reading."""
        try:  # (a cached outbox to a reader that died raises PeerGone: _write reopens it)
            self._send_control(to, SPOOLED, file_name, min(self.send_timeout_s, 1.0))
        except MeshError:
            return False
        return True

    def _queue(self, to: str, frames: list[bytes], msg_id: str) -> None:
        self.spool.put(to, b"".join(frames), msg_id)
        # If the agent started reading meanwhile, its start-up drain may have
        # run before our file existed: tell it to look again. Without a reader
        # the open fails at once, and the drain at its start will see the file.
        self._forget(to)
        with contextlib.suppress(MeshError):
            self._send_control(to, SPOOLED, "", min(self.send_timeout_s, 1.0))

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
        result (delivered, queued, offline, timeout, failed). Durable agents
        that are not reading get the message in their spool (queued).

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
        result = self._fan_out(frames, timeout_s, msg_id, size)
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
        self, frames: list[bytes], timeout_s: float | None, msg_id: str, size: int = 0
    ) -> BroadcastResult:
        timeout = self.send_timeout_s if timeout_s is None else timeout_s
        result = BroadcastResult(msg_id)
        for name, rec in list(self._peers.items()):
            if name == self.agent_name or not (rec.is_active or rec.durable):
                continue
            try:
                if size > rec.max_body_bytes:
                    self._check_fits(name, size, msg_id)
                try:
                    self._write(name, frames, timeout)
                except (AgentOffline, PeerGone):
                    if not rec.durable:
                        raise
                    self._queue(name, frames, msg_id)
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

    def _send_control(
        self, to: str, msg_type: str, body: str, timeout_s: float, reply_to: str = ""
    ) -> None:
        frames, _ = self._encode(
            to=to,
            message=body,
            priority=3,
            msg_type=msg_type,
            msg_id=self.next_id(),
            reply_to=reply_to,
            sent_ns=time.time_ns(),
        )
        self._write(to, frames, timeout_s)

    def close(self) -> None:
        """Close every outbox and flush the logs; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._outboxes.close()
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


def _fewer(unacked: Unacked, than: int) -> bool:
    return unacked.count() < than


def _utf8_len(text: str) -> int:
    """Bytes of ``text`` on the wire, as the send side logs them (no encode for ASCII)."""
    return len(text) if text.isascii() else len(text.encode())


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
        transport: where frames go (default: FIFOs in ``pipes/``; named pipes on Windows).
        send_timeout_s: how long a send waits on a full pipe.
        max_body_bytes: largest body accepted, sent or received.
        history_limit: messages kept per peer in :meth:`history`.
        max_queue: received messages held for the handler before the router
            stops reading (then the pipe fills and senders time out); the
            default handler also keeps at most this many unread by
            :meth:`receive`, and past that waits (nothing is dropped).
        heartbeat_s: seconds between heartbeats on the private pipe.
        log_messages: write the mesh logs.
        registry_lock_timeout_s: how long to wait for the registry lock.
        partial_timeout_s: parts of a large message that stop coming for this
            long (their sender died or gave up) are dropped and reported.
        durable: mark the registry entry durable: senders queue messages in
            this agent's spool while it is not reading, and a clean
            :meth:`close` keeps the entry (``inactive``) instead of removing it.
        dedupe_window: how many recent (sender, ID) pairs are remembered to
            drop duplicates (retries after a lost ack).
        seen_ids: (sender, ID) pairs already handled in an earlier run (for
            handlers that store them with their effects, to get exactly-once
            effects across a crash); the last ``dedupe_window`` are kept.
        spool_max_messages, spool_max_bytes, spool_fsync, max_open_outboxes:
            see :class:`MeshClient`.

    An agent not closed by the program is closed at interpreter exit
    (``atexit``); :meth:`run_forever` also closes it on SIGINT and SIGTERM.

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
        durable: bool = False,
        dedupe_window: int = 16_384,
        seen_ids: Iterable[tuple[str, str]] = (),
        spool_max_messages: int = DEFAULT_MAX_MESSAGES,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        spool_fsync: bool = True,
        max_open_outboxes: int = DEFAULT_MAX_OPEN,
    ) -> None:
        super().__init__(
            agent_name,
            home,
            transport=transport,
            send_timeout_s=send_timeout_s,
            max_body_bytes=max_body_bytes,
            log_messages=log_messages,
            registry_lock_timeout_s=registry_lock_timeout_s,
            spool_max_messages=spool_max_messages,
            spool_max_bytes=spool_max_bytes,
            spool_fsync=spool_fsync,
            max_open_outboxes=max_open_outboxes,
        )
        self.durable = durable
        self.max_queue = max(1, max_queue)
        self.duplicates = 0
        self._dedupe_window = max(1, dedupe_window)
        # Insertion-ordered; the oldest pair is evicted first: O(1) per message.
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        for key in seen_ids:
            self._seen[key] = None
            if len(self._seen) > self._dedupe_window:
                self._seen.popitem(last=False)
        self._acks: dict[str, tuple[str, threading.Event]] = {}
        # (sender, ID) routed to the handler and not handled yet -> a duplicate asked for an ack.
        self._inflight: dict[tuple[str, str], bool] = {}
        # Spooled message -> its file, and the message object if it is the copy to handle.
        self._from_spool: dict[tuple[str, str], tuple[SpoolEntry, Message | None]] = {}
        self._spool_injected: set[Path] = set()
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
        # Durable: the record of handled messages, and the reports owed to their senders.
        self._handled_log: HandledLog | None = None
        self._owed: dict[str, list[str]] = {}
        self._owed_at = time.monotonic()
        if durable:
            try:
                self._handled_log = HandledLog(self.spool.root, agent_name, dedupe_window)
            except BaseException:
                self.events.close()
                raise
            for key in self._handled_log.recent_keys():
                self._seen[key] = None
                self._seen.move_to_end(key)
                if len(self._seen) > self._dedupe_window:
                    self._seen.popitem(last=False)
        try:
            inbox = self._register()
        except BaseException:
            if self._handled_log is not None:
                self._handled_log.close()
            self.events.close()
            raise
        self._inbox: Inbox = inbox
        # Our own outbox wakes the router on close (the path is unlinked by then).
        try:
            self._self_outbox = self.transport.connect(agent_name)
        except BaseException:  # e.g. TooManyOpenFiles: leave no entry and no pipes behind
            self._abandon(inbox)
            raise
        self._exit_guard = ExitGuard(self)  # unregister even if the program never closes us
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
            on_exit=self._router_exited,  # run_forever returns, so `with` closes the agent
        )
        self._router.idle_delay_s = ACK_INTERVAL_S
        # Before the first pipe read: what waited in the spool goes first.
        self.spool.remove_stale_tmp(agent_name)
        self._drain_spool()
        self._router.start()
        self._announce(JOIN)
        if isinstance(self.transport, FifoTransport) and heartbeat_s > 0:
            self._heartbeat = threading.Thread(
                target=self._beat, name=f"pipemesh-heartbeat-{agent_name}", daemon=True
            )
            self._heartbeat.start()

    # -- joining and leaving --

    def _abandon(self, inbox: Inbox) -> None:
        """Undo :meth:`_register` when the constructor fails after it."""
        inbox.close()
        with contextlib.suppress(MeshError):
            self.registry.unregister(self.agent_name, os.getpid())
        self.transport.remove(self.agent_name)
        if self._status_pipe is not None:
            self._status_pipe.close()
        self._name_lock.release()
        self.events.close()

    def _register(self) -> Inbox:
        name = self.agent_name
        # The name lock first (held until close): it decides who owns the name,
        # even if the registry file is gone, and guards our pipes from sweepers.
        self._name_lock = self.registry.lock_name(name)
        inbox: Inbox | None = None
        try:
            with self.registry.transaction() as records:
                self.registry.check_available(records, name)
                self.registry.sweep(records, skip=name)  # dead entries whose names are free
                inbox = self.transport.bind(name)
                if isinstance(self.transport, FifoTransport):
                    self._status_pipe = StatusPipe(self.home.private_pipe(name))
                pid = os.getpid()
                records[name] = me = AgentRecord(
                    name=name,
                    role=self.role,
                    pid=pid,
                    registered_at=utc_now_iso(),
                    public_pipe=self.transport.address(name),
                    private_pipe=str(self.home.private_pipe(name)) if self._status_pipe else "",
                    pid_start=process_start_time(pid),
                    durable=self.durable,
                    max_body_bytes=self.max_body_bytes,
                )
                fifo = self.transport if isinstance(self.transport, FifoTransport) else None
                self._name_lock.publish(me, fifo.path(name) if fifo else None)
                self._peers = {n: r.with_liveness() for n, r in records.items()}
        except BaseException as exc:
            # Not registered (the registry is written whole or not at all): release
            # the pipes made for it (ours: we hold the name), so a failed start leaves
            # no fds and no FIFOs.
            if inbox is not None:
                inbox.close()
                self.transport.remove(name)
            if self._status_pipe is not None:
                self._status_pipe.close()
                self._status_pipe = None
            self._name_lock.release()
            if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
                # The registry lets this one through; say what to do, as the transport does.
                raise TooManyOpenFiles(
                    f"cannot register {name}: no file descriptor left "
                    f"({errno.errorcode[exc.errno]}); close agents and clients this process "
                    "no longer needs, or raise the limit ('ulimit -n')",
                    agent_id=name,
                ) from exc
            raise
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
                size=_utf8_len(msg.body),
            )
            return False
        key = (msg.sender, msg.id)
        seen = self._seen
        if key in seen:
            self.duplicates += 1
            self.events.message(
                "frame_duplicate",
                sender=msg.sender,
                to=msg.to,
                msg_type=msg.msg_type,
                priority=msg.priority,
                msg_id=msg.id,
                body="",
                reply_to=msg.reply_to,
                size=_utf8_len(msg.body),
            )
            if key in self._inflight:
                if msg.ack:  # the first copy is still queued: ack once its handler returned
                    self._inflight[key] = True
            else:
                if msg.ack and key not in self._from_spool:
                    self._send_ack(msg)  # handled already; the first ack was lost
                if self._handled_log is not None:
                    self._owe_report(msg.sender, msg.id)  # its sender may still keep it
            return False
        seen[key] = None
        if len(seen) > self._dedupe_window:
            seen.popitem(last=False)
        self.received += 1
        self.events.message(
            "frame_received",
            sender=msg.sender,
            to=msg.to,
            msg_type=msg.msg_type,
            priority=msg.priority,
            msg_id=msg.id,
            body="",  # the sender's frame_sent record holds the body: stored once
            reply_to=msg.reply_to,
            size=_utf8_len(msg.body),
        )
        self._remember(msg.sender, msg)
        pending = self._pending.get(msg.reply_to) if msg.reply_to else None
        if pending is not None and pending.reply is None:
            self._log_latency("reply_received", msg)
            pending.reply = msg
            pending.event.set()
            if self._handled_log is not None:
                self._mark_handled(msg)
            if msg.ack:
                self._send_ack(msg)
            return False
        self._inflight[key] = False
        return True

    def _control(self, msg: Message) -> bool:
        if msg.msg_type == JOIN:
            self._forget(msg.sender)  # a restarted peer may have a new pipe
            unacked = self._unacked
            if unacked is not None and unacked.count(msg.sender):
                # It restarted: what its previous run had not handled goes to its spool.
                unacked.move_to_spool(msg.sender)
            # The frame carries the joiner's registry record: no registry read,
            # so 100 agents joining at once cost O(N) each, not a registry storm.
            try:
                self._peers[msg.sender] = AgentRecord.from_json(msg.sender, json.loads(msg.body))
            except ValueError as exc:
                self.events.error("join_rejected", f"join frame from {msg.sender}: {exc}")
        elif msg.msg_type == LEAVE:
            self._forget(msg.sender)
            # A durable agent's leave carries its record: keep it, inactive,
            # so sends to it are queued; anything else is forgotten.
            try:
                rec = AgentRecord.from_json(msg.sender, json.loads(msg.body))
            except ValueError:
                rec = None
            if rec is not None and rec.durable:
                self._peers[msg.sender] = replace(rec, status=INACTIVE)
            else:
                self._peers.pop(msg.sender, None)
            unacked = self._unacked
            if unacked is not None and unacked.count(msg.sender):
                # It stops: what it does not handle before it exits waits in its spool
                # (it drops the copies it did handle when it starts again).
                unacked.move_to_spool(msg.sender)
        elif msg.msg_type == ACK:
            waiter = self._acks.get(msg.reply_to)
            if waiter is not None and waiter[0] == msg.sender:
                waiter[1].set()
        elif msg.msg_type == HANDLED:
            if self._unacked is not None:
                self._unacked.handled(msg.sender, msg.body.split())
        elif msg.msg_type == SPOOLED:
            self._drain_spool(msg.body)
        return False  # WAKE needs nothing: the read it ended was the point

    # -- acknowledgements, duplicates and the spool --

    def _unacked_for_send(self) -> Unacked | None:
        unacked = self._unacked
        if unacked is None:
            with self._unacked_lock:
                if self._unacked is None:
                    self._unacked = Unacked(
                        self.spool,
                        self._notify_spooled,
                        self.events.error,
                    )
                    self._unacked.watch(self._peer_gone)
                unacked = self._unacked
        return unacked

    def _peer_gone(self, name: str) -> bool:
        """Watcher thread: True if no process of ``name``'s registry entry runs any more."""
        rec = self._peers.get(name)
        if rec is None:
            rec = self.refresh_peers().get(name)
        return rec is None or not pid_alive(rec.pid, rec.pid_start)

    def _expect_ack(self, to: str, msg_id: str) -> threading.Event:
        event = threading.Event()
        self._acks[msg_id] = (to, event)
        return event

    def _wait_ack(self, waiter: threading.Event, timeout_s: float) -> None:
        if threading.current_thread() is self._router.thread:
            self._router.pump(waiter.is_set, timeout_s)  # we are the reader of the ack
        elif not self._stopped.is_set():
            waiter.wait(timeout_s)

    def _drop_ack(self, msg_id: str) -> None:
        self._acks.pop(msg_id, None)

    def _send_ack(self, msg: Message) -> None:
        try:
            self._send_control(msg.sender, ACK, "", min(self.send_timeout_s, 1.0), msg.id)
        except MeshError as exc:
            self.events.error("ack_failed", str(exc), to=msg.sender, id=msg.id)

    def _drain_spool(self, file_name: str = "") -> None:
        """Route every message waiting in our spool, oldest first (router thread or start).

        With ``file_name`` (a sender's ``mesh.spooled`` names the file it
        queued) only that file, if it is one of ours; otherwise the whole spool.
        """
        try:
            entries = self._spool_entries(file_name)
        except MeshError as exc:
            self.events.error("spool_unreadable", str(exc))
            return
        now_ns = time.time_ns()
        for entry in entries:
            if entry.path in self._spool_injected:
                continue  # already in the router's queue
            msg = self._read_spooled(entry)
            if msg is None:
                continue
            key = (msg.sender, msg.id)
            if key in self._from_spool:
                Spool.remove(entry)  # the same message queued twice (a retry): one is enough
                continue
            self._from_spool[key] = (entry, msg)
            self._spool_injected.add(entry.path)
            if not self._router.inject(msg, now_ns):
                if key in self._inflight:
                    # Another copy (from the pipe) waits for the handler: keep the file
                    # until that copy is handled, so a crash meanwhile loses nothing.
                    self._from_spool[key] = (entry, None)
                else:
                    self._spooled_done(key)

    def _spool_entries(self, file_name: str) -> list[SpoolEntry]:
        if file_name:
            directory = self.spool.directory(self.agent_name)
            fields = file_name.split("-", 4)
            path = directory / file_name
            if (
                "/" not in file_name
                and file_name.endswith(".msg")
                and len(fields) == 5
                and fields[3].isdigit()
            ):  # gone already: a full drain took it
                return [SpoolEntry(path, int(fields[3]))] if path.exists() else []
        return self.spool.entries(self.agent_name)

    def _read_spooled(self, entry: SpoolEntry) -> Message | None:
        data = Spool.read(entry)
        if data is None:
            return None
        decoder = FrameDecoder(max_frame_body_bytes=self.transport.max_frame_bytes)
        assembler = Reassembler(max_body_bytes=self.max_body_bytes)
        decoder.feed(data)
        decoder.feed(b"")
        msg: Message | None = None
        error = ""
        try:
            while msg is None:
                frame = decoder.next_frame()
                if isinstance(frame, NeedData):
                    break
                msg = assembler.add(frame, 0.0)
        except DecodeError as exc:
            error = str(exc)
        if msg is not None and (msg.msg_type.startswith(CONTROL_PREFIX) or msg.sender == ""):
            error = f"control message {msg.msg_type} in a spool file"
            msg = None
        if msg is None:
            bad = entry.path.with_name(entry.path.name + ".rejected")
            with contextlib.suppress(OSError):
                os.replace(entry.path, bad)
            self.events.error(
                "spool_rejected",
                f"{entry.path.name} is not one whole message ({error or 'no frame'}); "
                f"kept as {bad.name}",
            )
        return msg

    def _spooled_done(self, key: tuple[str, str]) -> None:
        spooled = self._from_spool.pop(key, None)
        if spooled is not None:
            self._spool_injected.discard(spooled[0].path)
            Spool.remove(spooled[0])

    # -- durable: the record of handled messages and the reports to their senders --

    def _mark_handled(self, msg: Message) -> None:
        """Record (sender, ID) as handled, before anything acknowledges it."""
        log = self._handled_log
        if log is None:
            return
        try:
            log.record(msg.sender, msg.id)
        except OSError as exc:
            self.events.error(
                "handled_record_failed",
                f"cannot record message {msg.id} as handled in {log.path}: {exc.strerror}; "
                "it may be handled again after a crash",
                id=msg.id,
            )
        self._owe_report(msg.sender, msg.id)

    def _owe_report(self, sender: str, msg_id: str) -> None:
        rec = self._peers.get(sender)
        if rec is None or not rec.is_active:
            return  # a bare client (it spooled first) or a sender that is gone: nobody to tell
        owed = self._owed.get(sender)
        if owed is None:
            owed = self._owed[sender] = []
        owed.append(msg_id)
        if len(owed) >= ACK_BATCH:
            self._send_reports(sender)

    def _send_reports(self, only: str = "") -> None:
        """Tell senders which of their messages were handled (``mesh.handled``, batched)."""
        for name in [only] if only else list(self._owed):
            ids = self._owed.pop(name, None)
            start = 0
            while ids and start < len(ids):
                # One frame per report (a write of one frame is all or nothing), no waiting.
                end, size = start, 0
                while end < len(ids) and size + len(ids[end]) < _REPORT_BYTES:
                    size += len(ids[end]) + 1
                    end += 1
                try:
                    self._send_control(name, HANDLED, " ".join(ids[start:end]), 0.0)
                except SendTimeout:
                    # Its pipe is full (a stopped process?): retry with the next batch,
                    # bounded; what it never hears of it keeps, and we drop its replays.
                    self._owed[name] = (ids[start:] + self._owed.get(name, []))[-_MAX_OWED:]
                    break
                except MeshError:
                    break  # gone: what it kept went (or goes) to our spool; replays are dropped
                start = end
        self._owed_at = time.monotonic()

    def _log_latency(self, event: str, msg: Message) -> None:
        if msg.sent_ns:
            self.events.latency(
                event,
                sender=msg.sender,
                msg_type=msg.msg_type,
                priority=msg.priority,
                msg_id=msg.id,
                latency_us=(time.time_ns() - msg.sent_ns) / 1000,
                size=_utf8_len(msg.body),
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
        key = (msg.sender, msg.id)
        dup_ack = self._inflight.pop(key, False)
        if self._handled_log is not None:
            self._mark_handled(msg)
        spooled = self._from_spool.get(key) if self._from_spool else None
        if spooled is not None:
            self._spooled_done(key)
        # A spooled copy's sender was told "queued": no ack for it; a live duplicate
        # that asked for one while this copy waited gets it now.
        if (msg.ack and (spooled is None or spooled[1] is not msg)) or dup_ack:
            self._send_ack(msg)
        if self._owed:
            if time.monotonic() - self._owed_at > ACK_INTERVAL_S:
                self._send_reports()
            else:
                self._router.idle_hook = self._send_reports  # once the pipe stays empty

    def on_message_received(self, msg: Message) -> None:
        """Handle one message addressed to this agent or broadcast.

        Runs on the router thread, one message at a time, highest priority
        first. The default keeps the message for :meth:`receive`. Exceptions
        are logged to ``mesh_errors.log`` and never stop the agent.
        """
        with self._inbox_cond:
            # Full: wait for receive() to take one. The router is held here, so
            # it stops reading; the pipe fills and senders get SendTimeout
            # (backpressure, never a silent drop). On close, the drain appends.
            waited = False
            while len(self._inbox_queue) >= self.max_queue and not self._closing:
                if not waited:
                    waited = True
                    self.events.error(
                        "receive_queue_full",
                        f"{len(self._inbox_queue)} messages unread by receive(); "
                        "not reading the pipe until receive() takes one",
                        id=msg.id,
                    )
                self._inbox_cond.wait(1.0)
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
            msg = self._inbox_queue.popleft()
            self._inbox_cond.notify_all()  # a handler may wait for room
            return msg

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

    def _unsent_hook(self, msg: Message) -> None:
        hist = self._history.get(msg.to)
        if hist:
            with contextlib.suppress(ValueError):
                hist.remove(msg)

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
                hint = "is it handling messages? (see 'pipemesh tail')"
                if len(self._inbox_queue) >= self.max_queue:
                    hint = (
                        f"{len(self._inbox_queue)} messages wait unread by receive(), so this "
                        "agent stopped reading its pipe and a reply cannot be seen: call receive()"
                    )
                raise ReplyTimeout(
                    f"{to_agent} did not reply to {msg_id} within {timeout_s:g}s; {hint}",
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
            # Peers that died without a leave frame: release their fds and pipes.
            self._outboxes.sweep(self._peer_gone)

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

        Called from the main thread, Ctrl-C (SIGINT) and SIGTERM close the
        agent and then raise ``SystemExit(130)`` / ``SystemExit(143)``: the
        program ends without a traceback and leaves no registry entry or pipe.
        SIGTERM is only handled where the program has no SIGTERM handler of its
        own; the previous handlers are restored on return.
        """
        if poll_s is None and _platform.IS_WINDOWS:
            poll_s = 0.5  # Windows Pythons before 3.13 cannot interrupt a lock wait on Ctrl-C
        with stop_signals(self.close) as stop:
            while not self._stopped.wait(poll_s):
                pass
        if stop.signum:
            raise SystemExit(128 + stop.signum)

    def close(self, timeout_s: float = 5.0) -> None:
        """Unregister, remove the pipes, let queued messages be handled, stop threads.

        A durable agent keeps its registry entry, marked ``inactive``, so that
        messages sent while it is away are queued in its spool; remove it with
        ``Registry.unregister`` (or ``pipemesh gc`` will not: it keeps durable
        entries). Idempotent; safe to call from a handler.
        """
        if self._closing:
            return
        self._closing = True
        self._exit_guard.disarm()
        with self._inbox_cond:
            self._inbox_cond.notify_all()  # a handler waiting for room in the receive queue
        name = self.agent_name
        self._settle_unacked(timeout_s)
        self._name_lock.closing()  # a joiner of our name now waits for release() below
        try:
            if self.durable:
                self.registry.mark_stopped(name, os.getpid())
                me = self._peers.get(name)
                if me is not None:
                    self._peers[name] = replace(me, status=INACTIVE)
            else:
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
        if self._unacked is not None:  # sent by handlers while the router drained
            self._spool_unacked(self._unacked)
        self._heartbeat_stop.set()
        if self._heartbeat is not None and threading.current_thread() is not self._heartbeat:
            self._heartbeat.join(timeout_s)
        if self._status_pipe is not None:
            self._status_pipe.close()
        me = self._peers.get(name)
        if self.durable and me is not None:
            self._name_lock.stopped(me)  # kept, so a lost registry can be rebuilt with it
        self._name_lock.release()  # after both pipes are gone: a successor's are safe
        self._self_outbox.close()
        if threading.current_thread() is not self._router.thread:
            self._stopped.set()  # (from a handler: the router sets it once it drained)
        with self._inbox_cond:
            self._inbox_cond.notify_all()
        for pending in list(self._pending.values()):
            pending.event.set()
        super().close()

    def _router_exited(self) -> None:
        """Router thread, at its end: last reports to senders, close the record, stopped."""
        if self._handled_log is not None:
            self._send_reports()
            self._handled_log.close()
        self._stopped.set()

    def _settle_unacked(self, timeout_s: float) -> None:
        """On close: wait a little for durable peers' reports, then spool what they still lack.

        A peer that is merely slow handles its pipe copy and drops the spooled
        one; a peer that dies later finds the message in its spool.
        """
        unacked = self._unacked
        if unacked is None:
            return
        deadline = time.monotonic() + timeout_s
        left = unacked.count()
        while left and time.monotonic() < deadline:  # as long as the peers make progress
            if threading.current_thread() is self._router.thread:
                self._router.pump(functools.partial(_fewer, unacked, left), 1.0)
            else:
                unacked.wait_empty(1.0)
            now_left = unacked.count()
            if now_left >= left:
                break
            left = now_left
        self._spool_unacked(unacked)
        unacked.close()

    def _spool_unacked(self, unacked: Unacked) -> None:
        for peer in unacked.peers():
            try:
                unacked.move_to_spool(peer)
            except MeshError as exc:
                self.events.error("unacked_not_spooled", str(exc), to=peer)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.agent_name!r} role={self.role!r}>"
