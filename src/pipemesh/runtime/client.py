"""The sending side: :class:`MeshClient` (peers, ids, encode, write, broadcast).

A message's path starts here: :meth:`MeshClient.send` checks its arguments,
encodes the frames (:mod:`pipemesh.wire`), writes them whole to the
recipient's pipe through a cached outbox (:mod:`pipemesh.runtime.outbox`), or
for a durable recipient keeps them until handled or queues them in its spool
(:mod:`pipemesh.runtime.durable`, docs/delivery.md). The receiving side is
:mod:`pipemesh.runtime.receive`.
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self

from pipemesh import codec, wire
from pipemesh.codec import BINARY, TEXT, FrameKind
from pipemesh.errors import (
    AckTimeout,
    AgentOffline,
    DeliveryError,
    EncodeError,
    MessageTooLarge,
    PeerGone,
    TransportClosed,
    UnknownAgent,
)
from pipemesh.home import MeshHome
from pipemesh.observe import EventLog, _MessageLine  # the hot path queues its record
from pipemesh.registry import (
    AgentRecord,
    Registry,
    pid_alive,
)
from pipemesh.runtime import bodies, body_send, broadcast, durable_send
from pipemesh.runtime.durable import Unacked
from pipemesh.runtime.outbox import DEFAULT_MAX_OPEN, OutboxCache
from pipemesh.runtime.send import (
    CONTROL_PREFIX,
    DEFAULT_MSG_TYPE,
    BroadcastResult,
    Delivery,
    SendResult,
    SentFields,
)
from pipemesh.spool import DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGES, Spool
from pipemesh.transport import platform_transport
from pipemesh.transport.base import Outbox, Transport
from pipemesh.transport.fifo import FifoTransport
from pipemesh.wire import (
    MAX_BODY_BYTES,
    Message,
    is_valid_id,
    validate_name,
    validate_type,
)

__all__ = ["MeshClient"]

_PRIORITIES: Final = frozenset((0, 1, 2, 3))
# Enum members as module constants: on Python 3.11 every ``Delivery.X`` lookup goes
# through EnumType.__getattr__ (~8x a global load), three times per send.
_ID_MATCH: Final = wire._ID_RE.fullmatch  # is_valid_id without its call, for str IDs
_DELIVERED: Final = Delivery.DELIVERED
_QUEUED: Final = Delivery.QUEUED


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
        frames: ``"text"`` (the default here: what ``pipemesh send`` writes) or
            ``"binary"``: write binary frames to peers whose registry record
            says they read them (docs/frames.md).
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
        frames: FrameKind = TEXT,
    ) -> None:
        self.agent_name = validate_name(agent_name)
        if "@" in agent_name:  # name@host: a gateway's entry for an agent on another host
            raise ValueError(
                f"sender name {agent_name!r} holds '@', which marks an agent on another host "
                "(registered by 'pipemesh gateway'); pick a name without '@'"
            )
        if frames not in codec.FRAME_KINDS:
            raise ValueError(f"frames must be 'text' or 'binary', got {frames!r}")
        self.frames: FrameKind = frames
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
        # Sent and received messages per peer (AgentBase's history(); a bare client keeps
        # none). _send appends to a peer's deque inline; _sent_hook starts one.
        self._history: dict[str, deque[Message | SentFields]] = {}
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
        # Names and types already validated, apart: a valid name need not be a valid
        # type ("1a", "a..b"), so one set would let either skip the other's check.
        self._valid_names: set[str] = {agent_name}
        self._valid_types: set[str] = set()
        # Per peer, from its cached record: (write binary frames?, its body limit, durable?).
        # One dict lookup per send; dropped whenever the record may change (_forget,
        # refresh_peers, join and leave frames).
        self._routes: dict[str, tuple[bool, int, bool]] = {}
        self._max_frame = self.transport.max_frame_bytes
        self.sent = 0
        # Large bodies: a body file in the home and one small frame, to peers that take
        # them, on FIFOs only (a Windows pipe message has no size limit): runtime/bodies.py.
        self._bodies: bodies.BodyStore | None = (
            bodies.BodyStore(self.home.bodies_dir)
            if isinstance(self.transport, FifoTransport)
            else None
        )
        self.body_file_min_bytes = bodies.DEFAULT_MIN_BYTES

    # -- peers --

    def refresh_peers(self) -> dict[str, AgentRecord]:
        """Re-read the registry into the peer cache and return it."""
        peers = self.registry.read()
        self._peers = peers
        self._routes.clear()
        return peers

    def peers(self) -> dict[str, AgentRecord]:
        """The cached view of the registry (kept fresh by join/leave frames)."""
        return dict(self._peers)

    def _forget(self, name: str) -> None:
        self._routes.pop(name, None)
        self._outboxes.forget(name)

    def _route_to(self, name: str) -> tuple[bool, int, bool] | None:
        """The cached route to ``name`` from its peer record (one registry read if unknown)."""
        rec = self._peers.get(name)
        if rec is None:
            rec = self.refresh_peers().get(name)
            if rec is None:
                return None
        route = (self.frames == BINARY and BINARY in rec.frames, rec.max_body_bytes, rec.durable)
        self._routes[name] = route
        if self._peers.get(name) is not rec:
            # The router thread changed the record since we read it (a join or leave
            # frame) and may have dropped the cached route before we stored ours.
            self._routes.pop(name, None)
        return route

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
        kind: FrameKind | None = None,
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
        if kind is None:  # the kind the recipient reads, from its cached record
            rec = None
            if self.frames == BINARY and to:
                rec = self._peers.get(to)
                if rec is None:  # a name not yet known: one registry read, as _check_fits does
                    rec = self.refresh_peers().get(to)
            kind = BINARY if rec is not None and BINARY in rec.frames else TEXT
        if len(body) >= self.body_file_min_bytes and to and self._bodies is not None:
            # -- hook: large body -> body file reference (runtime/bodies.py) --
            ref = self._body_ref(kind, to, body, msg_id, priority, msg_type, sent_ns, reply_to, ack)
            if ref is not None:
                return ref, len(body)
        try:
            frames = codec.encode_message(
                kind,
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

    # Large bodies go through body files (runtime/body_send.py); these are its hooks.

    def _body_ref(
        self,
        kind: FrameKind,
        to: str,
        body: bytes,
        msg_id: str,
        priority: int,
        msg_type: str,
        sent_ns: int,
        reply_to: str,
        ack: bool,
    ) -> bodies.BodyRef | None:
        return body_send.body_ref(
            self, kind, to, body, msg_id, priority, msg_type, sent_ns, reply_to, ack
        )

    def _write_body(
        self,
        to: str,
        ref: bodies.BodyRef,
        timeout_s: float,
        write: Callable[[str, list[bytes], float], None],
    ) -> None:
        body_send.write_body(self, to, ref, timeout_s, write)

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
        if msg_type not in self._valid_types:
            validate_type(msg_type)
            _remember_valid(self._valid_types, msg_type)

    def _check_name(self, name: str) -> None:
        if name not in self._valid_names:
            validate_name(name, "recipient name")
            _remember_valid(self._valid_names, name)

    def _write(self, to: str, frames: list[bytes], timeout_s: float) -> None:
        if type(frames) is bodies.BodyRef:  # hook: the body goes in a body file first
            self._write_body(to, frames, timeout_s, self._write)
            return
        outbox = self._outbox(to)
        try:
            outbox.write_frames(frames, timeout_s)
        except (PeerGone, TransportClosed):
            self._write_again(to, frames, timeout_s)

    def _write_again(self, to: str, frames: list[bytes], timeout_s: float) -> None:
        """After PeerGone or TransportClosed (nothing was written): reopen the path once."""
        # The reader went away (or restarted).
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
        return self._send(
            to_agent,
            message,
            priority,
            msg_type,
            reply_to,
            timeout_s,
            msg_id,
            ack,
            ack_timeout_s,
            True,
            sync,
        )[0]

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
        msg_id, delivery, acked = self._send(
            to_agent,
            message,
            priority,
            msg_type,
            reply_to,
            timeout_s,
            msg_id,
            ack,
            ack_timeout_s,
            queue,
            sync,
        )
        return SendResult(msg_id, delivery, acked)

    def _send(
        self,
        to_agent: str,
        message: str,
        priority: int,
        msg_type: str,
        reply_to: str,
        timeout_s: float | None,
        msg_id: str | None,
        ack: bool,
        ack_timeout_s: float,
        queue: bool,
        sync: bool,
    ) -> tuple[str, Delivery, bool]:
        """The hot path of :meth:`send` and :meth:`send_message` (positional, no result object).

        To a known peer with valid arguments seen before: one route lookup, one
        encode (a binary frame, in C), one write; everything else (first sight of a
        name or type, text frames, parts, durable peers, acks) takes the general path.
        """
        if (
            self._closed
            or to_agent not in self._valid_names
            or msg_type not in self._valid_types
            or priority.__class__ is not int
            or not 0 <= priority <= 3
        ):
            self._check_name(to_agent)
            self._check_args(priority, msg_type)
        if msg_type.startswith(CONTROL_PREFIX):
            raise ValueError(f"message types starting with {CONTROL_PREFIX!r} are reserved")
        if msg_id is None:
            msg_id = f"{self._id_prefix}{next(self._ids):x}"
        elif not is_valid_id(msg_id):
            raise ValueError(f"message id {msg_id!r} is not valid")
        if (
            reply_to
            and (reply_to.__class__ is not str or _ID_MATCH(reply_to) is None)  # is_valid_id
            and not is_valid_id(reply_to)
        ):
            raise ValueError(f"reply_to {reply_to!r} is not a valid message id")
        sent_ns = time.time_ns()
        route = self._routes.get(to_agent)
        if route is None:
            route = self._route_to(to_agent)
        fast = False
        body = b""
        if route is not None and route[0] and message.__class__ is str:
            try:
                body = message.encode()
            except UnicodeEncodeError:
                pass  # the general path below raises the error
            else:
                size = len(body)
                fast = (
                    size + 400 <= self._max_frame  # one frame, as codec.encode_message decides
                    and size <= self.max_body_bytes
                    and size <= route[1]
                    and size < self.body_file_min_bytes  # (48 KiB unless lowered)
                )
        if fast:
            frames = [
                codec.encode_whole(
                    self.agent_name,
                    to_agent,
                    priority,
                    msg_type,
                    msg_id,
                    sent_ns,
                    reply_to,
                    ack,
                    body,
                )
            ]
        else:
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
            route = self._routes.get(to_agent) or self._route_to(to_agent)
        timeout = self.send_timeout_s if timeout_s is None else timeout_s
        durable = queue and route is not None and route[2]
        waiter = self._expect_ack(to_agent, msg_id) if ack else None
        acked = False
        # History first: a fast reply must never be recorded before its question.
        # A tuple: the Message is built only if history() asks for it.
        sent = (self.agent_name, to_agent, priority, msg_type, msg_id, message, sent_ns, reply_to)
        hist = self._history.get(to_agent)
        if hist is not None:
            hist.append(sent)  # _sent_hook, inline: the peer has a history already
        else:
            self._sent_hook(sent)
        try:
            delivery = _DELIVERED
            if durable:
                delivery = self._send_durable(to_agent, frames, msg_id, timeout, sync)
            else:
                try:
                    if fast:  # _write, inline: one frame, never a large body
                        try:
                            outboxes = self._outboxes
                            outbox = outboxes._open.get(to_agent)  # OutboxCache.get, inline
                            if outbox is None:
                                outbox = outboxes.get(to_agent)
                            else:
                                # KeyError if forgotten meanwhile: the write then reports
                                # TransportClosed and reconnects (as OutboxCache.get).
                                try:  # noqa: SIM105 - hot path, no contextlib call
                                    outboxes._open.move_to_end(to_agent)
                                except KeyError:
                                    pass
                            outbox.write_frames(frames, timeout)
                        except (PeerGone, TransportClosed):
                            self._write_again(to_agent, frames, timeout)
                    else:
                        self._write(to_agent, frames, timeout)
                except (AgentOffline, PeerGone):
                    if not (queue and self._is_durable(to_agent)):
                        raise
                    self._queue(to_agent, frames, msg_id)
                    delivery = _QUEUED
            if waiter is not None and delivery is _DELIVERED:
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
        events = self.events
        if not events._closed:  # EventLog.message, inline (one Python call less)
            cut = len(message) > events.max_body_chars
            events._messages.append(
                _MessageLine(
                    time.time(),
                    "frame_sent" if delivery is _DELIVERED else "frame_queued",
                    events.agent,
                    self.agent_name,
                    to_agent,
                    msg_type,
                    priority,
                    msg_id,
                    reply_to,
                    size,
                    message[: events.max_body_chars] if cut else message,
                    cut,
                )
            )
            if not events._woken:
                events._woken = True
                events._wake.set()
        return msg_id, delivery, acked

    def _sent_hook(self, sent: SentFields) -> None:
        """Called before a send to a peer with no history deque (AgentBase starts one)."""

    def _unsent_hook(self, sent: SentFields) -> None:
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

    def _unacked_for_send(self) -> Unacked | None:
        """Where messages to durable peers are kept until handled (None: no inbox, sync)."""
        return None

    # The durable sends live in durable_send.py (docs/delivery.md); these are their hooks.

    def _is_durable(self, name: str) -> bool:
        return durable_send.is_durable(self, name)

    def _send_durable(
        self, to: str, frames: list[bytes], msg_id: str, timeout_s: float, sync: bool
    ) -> Delivery:
        return durable_send.send_durable(self, to, frames, msg_id, timeout_s, sync)

    def _write_once(self, to: str, frames: list[bytes], timeout_s: float) -> None:
        self._outbox(to).write_frames(frames, timeout_s)

    def _notify_spooled(self, to: str, file_name: str = "") -> bool:
        return durable_send.notify_spooled(self, to, file_name)

    def _queue(self, to: str, frames: list[bytes], msg_id: str) -> None:
        durable_send.queue(self, to, frames, msg_id)

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
        return broadcast.broadcast(self, message, priority, msg_type, timeout_s)

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


def _remember_valid(known: set[str], value: str) -> None:
    if len(known) > 10_000:
        known.clear()  # bounded: a client sending to endless new names
    known.add(value)
