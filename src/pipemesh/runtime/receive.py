"""The receiving side: route one whole message, drop duplicates, run the handler.

The router thread (:mod:`pipemesh.runtime.router`) reads the pipe and decodes
frames; each whole message comes to :meth:`Receiving._route` (control frames,
replies to ``ask``, misrouted frames and duplicates are settled there), and
the rest to :meth:`Receiving._dispatch`, which runs
``on_message_received``. The default handler keeps messages for
:meth:`Receiving.receive` in a bounded queue (backpressure, never a drop).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from pipemesh.observe import _LatencyLine, _MessageLine  # the hot path queues records
from pipemesh.registry import (
    INACTIVE,
    AgentRecord,
)
from pipemesh.runtime.acks import Acknowledging
from pipemesh.runtime.durable import ACK_INTERVAL_S
from pipemesh.runtime.send import (
    ACK,
    CONTROL_PREFIX,
    HANDLED,
    JOIN,
    LEAVE,
    SPOOLED,
    SentFields,
    utf8_len,
)
from pipemesh.wire import Message

__all__ = ["Receiving"]


@dataclass(slots=True)
class _Pending:
    event: threading.Event = field(default_factory=threading.Event)
    reply: Message | None = None


class Receiving(Acknowledging):
    """AgentBase's routing, dedupe, handler dispatch, receive queue and history."""

    durable: bool
    max_queue: int
    duplicates: int
    received: int
    handler_errors: int
    history_limit: int
    _dedupe_window: int
    _seen: OrderedDict[tuple[str, str], None]
    _history: dict[str, deque[Message | SentFields]]
    _pending: dict[str, _Pending]
    _inbox_queue: deque[Message]
    _inbox_cond: threading.Condition
    _closing: bool

    def _report(self, event: str, error: str, fields: dict[str, object]) -> None:
        self.events.error(event, error, **fields)

    def _route(self, msg: Message, received_ns: int) -> bool:
        """Router thread: decide what happens to one whole message.

        The hot path: written out inline (no helper calls, positional log fields),
        because every Python call here costs more than the dict operations it wraps.
        """
        if msg.msg_type.startswith(CONTROL_PREFIX):
            return self._control(msg)
        to = msg.to
        if to and to != self.agent_name:
            self._misrouted(msg)
            return False
        sender = msg.sender
        key = (sender, msg.id)
        seen = self._seen
        if key in seen:
            self._duplicate(msg, key)
            return False
        seen[key] = None
        if len(seen) > self._dedupe_window:
            seen.popitem(False)  # the oldest (positional: keywords cost a parse per call)
        self.received += 1
        body = msg.body
        events = self.events
        if not events._closed:  # EventLog.message, inline (one Python call less)
            events._messages.append(
                _MessageLine(
                    time.time(),
                    "frame_received",
                    events.agent,
                    sender,
                    to,
                    msg.msg_type,
                    msg.priority,
                    msg.id,
                    msg.reply_to,
                    len(body) if body.isascii() else len(body.encode()),
                    "",  # the sender's frame_sent record holds the body: stored once
                )
            )
            if not events._woken:
                events._woken = True
                events._wake.set()
        hist = self._history.get(sender)
        if hist is not None:
            hist.append(msg)
        elif self.history_limit > 0:
            self._remember(sender, msg)
        if msg.reply_to:
            pending = self._pending.get(msg.reply_to)
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

    def _misrouted(self, msg: Message) -> None:
        self.events.error(
            "frame_misrouted",
            f"message {msg.id} from {msg.sender} is addressed to {msg.to}, not to "
            f"{self.agent_name}; ignored",
            id=msg.id,
            to=msg.to,
        )
        self.events.message(
            "frame_misrouted",
            msg.sender,
            msg.to,
            msg.msg_type,
            msg.priority,
            msg.id,
            msg.body,
            msg.reply_to,
            utf8_len(msg.body),
        )

    def _duplicate(self, msg: Message, key: tuple[str, str]) -> None:
        self.duplicates += 1
        self.events.message(
            "frame_duplicate",
            msg.sender,
            msg.to,
            msg.msg_type,
            msg.priority,
            msg.id,
            "",
            msg.reply_to,
            utf8_len(msg.body),
        )
        if key in self._inflight:
            if msg.ack:  # the first copy is still queued: ack once its handler returned
                self._inflight[key] = True
        else:
            if msg.ack and key not in self._from_spool:
                self._send_ack(msg)  # handled already; the first ack was lost
            if self._handled_log is not None:
                self._owe_report(msg.sender, msg.id)  # its sender may still keep it

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
            self._routes.pop(msg.sender, None)  # a send meanwhile may have cached the old record
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
            self._routes.pop(msg.sender, None)
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

    def _log_latency(self, event: str, msg: Message) -> None:
        if msg.sent_ns:
            body = msg.body
            self.events.latency(
                event,
                msg.sender,
                msg.msg_type,
                msg.priority,
                msg.id,
                (time.time_ns() - msg.sent_ns) // 100 / 10,  # to 0.1 us
                len(body) if body.isascii() else len(body.encode()),
            )

    def _dispatch(self, msg: Message, received_ns: int) -> None:
        """Router thread: run the handler, report its failures."""
        events = self.events
        if msg.sent_ns and not events._closed:  # _log_latency and EventLog.latency, inline
            body = msg.body
            events._latencies.append(
                _LatencyLine(
                    time.time(),
                    "message_handled",
                    events.agent,
                    msg.sender,
                    msg.msg_type,
                    msg.priority,
                    msg.id,
                    len(body) if body.isascii() else len(body.encode()),
                    (time.time_ns() - msg.sent_ns) // 100 / 10,  # to 0.1 us
                )
            )
            if not events._woken:
                events._woken = True
                events._wake.set()
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

    def _remember(self, peer: str, msg: Message | SentFields) -> None:
        hist = self._history.get(peer)
        if hist is None:
            if self.history_limit <= 0:
                return
            hist = self._history[peer] = deque(maxlen=self.history_limit)
        hist.append(msg)

    def _sent_hook(self, sent: SentFields) -> None:
        hist = self._history.get(sent[1])
        if hist is not None:
            hist.append(sent)
        elif self.history_limit > 0:
            self._remember(sent[1], sent)

    def _unsent_hook(self, sent: SentFields) -> None:
        hist = self._history.get(sent[1])
        if hist:
            with contextlib.suppress(ValueError):
                hist.remove(sent)

    def history(self, peer: str) -> list[Message]:
        """The last ``history_limit`` messages exchanged with ``peer``, oldest first."""
        # Sent messages are kept as their fields; the Message is built here, if asked.
        kept = list(self._history.get(peer, ()))  # one C call: the router may append meanwhile
        return [m if isinstance(m, Message) else Message(*m) for m in kept]
