"""Agents: :class:`MeshClient` sends, :class:`AgentBase` also receives.

The runtime is split along the path of a message: :mod:`~pipemesh.runtime.client`
(send, encode, write), :mod:`~pipemesh.runtime.router` (read, decode),
:mod:`~pipemesh.runtime.receive` (route, dedupe, handler, receive queue),
:mod:`~pipemesh.runtime.acks` (acks, spool drain, handled reports), and this
module (``AgentBase``: joining and leaving, ask/reply, status, heartbeat,
lifetime). Everything public is re-exported here and from :mod:`pipemesh`.

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
import errno
import functools
import json
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from pipemesh import _platform
from pipemesh.codec import BINARY, FRAME_KINDS, TEXT, FrameKind
from pipemesh.errors import (
    MeshError,
    ReplyTimeout,
    TooManyOpenFiles,
)
from pipemesh.registry import (
    INACTIVE,
    AgentRecord,
    process_start_time,
    utc_now_iso,
)
from pipemesh.runtime import bodies
from pipemesh.runtime.client import MeshClient
from pipemesh.runtime.durable import ACK_INTERVAL_S, HandledLog
from pipemesh.runtime.lifecycle import ExitGuard, stop_signals
from pipemesh.runtime.outbox import DEFAULT_MAX_OPEN
from pipemesh.runtime.receive import Receiving, _Pending
from pipemesh.runtime.router import Router
from pipemesh.runtime.send import (
    ACK,
    CONTROL_PREFIX,
    DEFAULT_MSG_TYPE,
    HANDLED,
    JOIN,
    LEAVE,
    SPOOLED,
    WAKE,
    BroadcastResult,
    Delivery,
    SendResult,
)
from pipemesh.spool import DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGES, SpoolEntry
from pipemesh.transport.base import Inbox, Transport
from pipemesh.transport.fifo import FifoTransport, StatusPipe
from pipemesh.wire import (
    MAX_BODY_BYTES,
    Message,
)

__all__ = [
    "ACK",
    "CONTROL_PREFIX",
    "DEFAULT_MSG_TYPE",
    "HANDLED",
    "JOIN",
    "LEAVE",
    "SPOOLED",
    "WAKE",
    "AgentBase",
    "BroadcastResult",
    "Delivery",
    "MeshClient",
    "SendResult",
]


class AgentBase(Receiving):
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
        frames: ``"binary"`` (the default; ``$PIPEMESH_FRAMES`` when set) writes
            the binary frame to peers that read it and advertises that this
            agent reads it; ``"text"`` writes and advertises only the readable
            text frame, for debugging. Both kinds are always read (docs/frames.md).

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
        frames: FrameKind | None = None,
    ) -> None:
        if isinstance(agent_name, str) and "@" in agent_name:  # name@host: a gateway's entry
            raise ValueError(
                f"agent name {agent_name!r} holds '@', which marks an agent on another host "
                "(registered by 'pipemesh gateway'); pick a name without '@'"
            )
        if frames is None:
            env = os.environ.get("PIPEMESH_FRAMES", "") or BINARY
            if env not in FRAME_KINDS:
                raise ValueError(f"PIPEMESH_FRAMES must be 'text' or 'binary', got {env!r}")
            frames = env
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
            frames=frames,
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
        self._history.clear()  # made by MeshClient (its _send appends to it)
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
        # From here the entry is written: until the exit guard is armed, any exception
        # (TooManyOpenFiles, or a Ctrl-C landing right after the registry write) must
        # remove it, or it outlives the process (seen under Wine: a SIGINT raised as soon
        # as the entry appeared left it behind).
        try:
            self._inbox: Inbox = inbox
            # Our own outbox wakes the router on close (the path is unlinked by then).
            self._self_outbox = self.transport.connect(agent_name)
            self._exit_guard = ExitGuard(self)  # unregister even if the program never closes us
        except BaseException:  # leave no entry and no pipes behind
            guard: ExitGuard | None = getattr(self, "_exit_guard", None)
            if guard is not None:
                guard.disarm()
            outbox = getattr(self, "_self_outbox", None)
            if outbox is not None:
                outbox.close()
            self._abandon(inbox)
            raise
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
            take_body=(
                functools.partial(self._bodies.take, agent_name, max_body_bytes)
                if self._bodies is not None
                else None
            ),
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
        me: AgentRecord | None = None
        try:
            if self._bodies is not None:  # a previous run's body files: nobody will read them
                self._bodies.sweep(name)
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
                    frames=self._frames_read(),
                )
                fifo = self.transport if isinstance(self.transport, FifoTransport) else None
                self._name_lock.publish(me, fifo.path(name) if fifo else None)
                self._peers = {n: r.with_liveness() for n, r in records.items()}
        except BaseException as exc:
            # The registry is written whole or not at all, but an exception (a Ctrl-C)
            # may land after the write, while the transaction ends: remove our entry if
            # it is there (only ours: same name and pid). Then release the pipes made
            # for it (ours: we hold the name), so a failed start leaves no fds and no FIFOs.
            if me is not None:
                with contextlib.suppress(MeshError, OSError):
                    self.registry.unregister(name, os.getpid())
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

    def _frames_read(self) -> tuple[str, ...]:
        """What the registry record advertises: frame kinds, and body files on FIFOs."""
        if self.frames != BINARY:
            return (TEXT,)  # readable by hand: no binary frames, no body files
        return (*FRAME_KINDS, bodies.CAPABILITY) if self._bodies is not None else FRAME_KINDS

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
        # send_message's call of _send, inline (positional: one Python call less).
        return self._send(
            msg.sender,
            message,
            msg.priority if priority is None else priority,
            msg_type,
            msg.id,  # reply_to
            None,  # timeout_s
            None,  # msg_id
            False,  # ack
            10.0,  # ack_timeout_s
            True,  # queue
            False,  # sync
        )[0]

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
                    self._routes.pop(name, None)
            else:
                self.registry.unregister(name, os.getpid())
        except MeshError as exc:
            self.events.error("unregister_failed", str(exc))
        self.transport.remove(name)
        self._announce(LEAVE)
        # None when a signal closed us from the exit guard inside __init__, before the
        # router existed (the entry and pipes are removed all the same).
        router: Router | None = getattr(self, "_router", None)
        if router is not None:
            router.stop()
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
        if router is not None:
            router.join(timeout_s)
            if self._bodies is not None and not router.thread.is_alive():
                self._bodies.sweep(name)  # frames never read: their files go too
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
        if router is None or router.thread.ident is None:
            self._stopped.set()  # no router thread will ever set it
        elif threading.current_thread() is not router.thread:
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

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.agent_name!r} role={self.role!r}>"
