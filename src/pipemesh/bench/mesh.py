"""Mesh endpoints of the benchmark: pipemesh agents as worker processes.

Each function here is one process of one mesh scenario, started by
``python -m pipemesh.bench._mesh_worker`` (the parent half is in
`pipemesh.bench.scenarios`). Every endpoint is a real `AgentBase` (or, for fan-in
senders, a `MeshClient`) on a private mesh home, with logging as the user gets it
(on) unless the scenario says otherwise, and uses only the public API:
``send_message``, ``reply``, ``ask``, ``broadcast_message``, ``on_message_received``.

Roles:

- ``echo``: replies to every message with the same body (``reply``).
- ``ping``: the measuring client that keeps the whole loop on its router thread: the
  reply's ``on_message_received`` stamps the round trip and sends the next ping, so no
  thread hand-off is timed. The main thread only starts the loop and waits for its end.
- ``ask``: the measuring client that calls ``ask()`` from the main thread (the router
  thread sets the event the main thread waits on: one hand-off per round trip).
- ``idle``: joins the mesh and blocks; it handles whatever arrives (nothing, in a run).
- ``fanin-rx`` / ``fanin-tx``: one sink agent; N `MeshClient` senders in a loop (with
  ``--agent-sender``: `AgentBase` senders; with ``--durable``: a durable sink, whose
  senders keep each message until the sink reports it handled).
- ``bcast-rx`` / ``bcast-tx``: receivers ack every broadcast with how long after the
  send stamp their handler ran; the broadcaster waits for every ack before the next
  broadcast, and one sample is the latest receiver's delay.
- ``observer`` / ``joiner``: the joiner process creates and closes agents in a loop;
  the observer tells it when it saw each join and leave.

The agents are clock-stamped with ``time.time_ns()`` (the mesh's ``TS`` field), which
one machine shares across processes. This module imports no harness code.
"""

from __future__ import annotations

import contextlib
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from pipemesh.bench._proto import (
    KIND_ONE_WAY,
    KIND_ROUND_TRIP,
    WorkerResult,
    measure_round_trips,
    pin_to_cpu,
    signal_ready,
    steady_rate,
    wait_go,
)
from pipemesh.errors import MeshError
from pipemesh.runtime.agent import JOIN, LEAVE, AgentBase, MeshClient
from pipemesh.wire import Message

ROLE_ECHO: Final = "echo"
ROLE_PING: Final = "ping"
ROLE_ASK: Final = "ask"
ROLE_IDLE: Final = "idle"
ROLE_FAN_IN_RX: Final = "fanin-rx"
ROLE_FAN_IN_TX: Final = "fanin-tx"
ROLE_BCAST_RX: Final = "bcast-rx"
ROLE_BCAST_TX: Final = "bcast-tx"
ROLE_OBSERVER: Final = "observer"
ROLE_JOINER: Final = "joiner"
ROLES: Final = (
    ROLE_ECHO,
    ROLE_PING,
    ROLE_ASK,
    ROLE_IDLE,
    ROLE_FAN_IN_RX,
    ROLE_FAN_IN_TX,
    ROLE_BCAST_RX,
    ROLE_BCAST_TX,
    ROLE_OBSERVER,
    ROLE_JOINER,
)

#: Seconds a client waits for the mesh to be complete (peers registered) before failing.
SETUP_TIMEOUT_S: Final = 60.0

_SEEN_JOIN: Final = "bench-seen-join"
_SEEN_LEAVE: Final = "bench-seen-leave"


@dataclass(frozen=True, slots=True)
class MeshArgs:
    """A mesh worker's parsed command line (see ``pipemesh.bench._mesh_worker``)."""

    role: str
    home: str
    name: str
    peer: str
    size: int
    count: int
    warmup: int
    time_limit_s: float
    peers: int
    log: bool
    ready_fd: int
    go_fd: int
    out: str
    durable: bool = False
    agent_sender: bool = False
    cpu: int = -1
    parts: bool = False  # large bodies as PART frames, never body files (the old path)


NO_BODY_FILES: Final = 1 << 62
"""``body_file_min_bytes`` that keeps every body in PART frames (``--parts``)."""


def run_mesh_worker(args: MeshArgs) -> int:
    """Run one mesh endpoint until its part of the scenario is done; return 0."""
    pin_to_cpu(args.cpu)  # before the agent starts its threads: they inherit the mask
    _ROLES[args.role](args)
    return 0


def _body(size: int) -> str:
    return "x" * size


def _block_forever(agent: AgentBase) -> None:
    # The harness kills non-measuring workers when the scenario ends.
    agent.run_forever()


# --------------------------------------------------------------------------- ping-pong


class _Echo(AgentBase):
    def on_message_received(self, msg: Message) -> None:
        self.reply(msg, msg.body)


def _echo(args: MeshArgs) -> None:
    agent = _Echo(args.name, "bench-echo", args.home, log_messages=args.log)
    if args.parts:
        agent.body_file_min_bytes = NO_BODY_FILES
    signal_ready(args.ready_fd)
    _block_forever(agent)


class _Pinger(AgentBase):
    """Measures round trips entirely on the router thread (handler sends the next ping)."""

    def start(self, peer: str, body: str, warmup: int, count: int, time_limit_s: float) -> None:
        self._peer, self._ping_body = peer, body
        self._warmup, self._count, self._limit_ns = warmup, count, int(time_limit_s * 1e9)
        self._replies = 0
        self._errors = 0
        self._samples = array("q")
        self._done = threading.Event()
        self._start_ns = time.perf_counter_ns()
        self._deadline_ns = self._start_ns + self._limit_ns
        self._t0 = time.perf_counter_ns()
        self._ping()

    def _ping(self) -> None:
        # The ID is set before the send: the reply may be handled before send_message returns.
        self._expect = self.next_id()
        self.send_message(self._peer, self._ping_body, msg_id=self._expect)

    def on_message_received(self, msg: Message) -> None:
        now = time.perf_counter_ns()
        if msg.reply_to != self._expect or len(msg.body) != len(self._ping_body):
            self._errors += 1
        self._replies += 1
        if self._replies > self._warmup:
            self._samples.append(now - self._t0)
            if len(self._samples) >= self._count or now >= self._deadline_ns:
                self._done.set()
                return
        elif self._replies == self._warmup:
            self._start_ns = now  # the measured phase starts with the next ping
            self._deadline_ns = now + self._limit_ns
        self._t0 = time.perf_counter_ns()
        self._ping()

    def result(self, timeout_s: float) -> WorkerResult:
        if not self._done.wait(timeout_s):
            raise TimeoutError(f"ping loop did not finish within {timeout_s:g}s")
        return WorkerResult(
            kind=KIND_ROUND_TRIP,
            samples_ns=self._samples.tolist(),
            messages=2 * len(self._samples),
            elapsed_ns=time.perf_counter_ns() - self._start_ns,
            errors=self._errors,
        )


def _wait_for_peers(agent: MeshClient, complete: Callable[[set[str]], bool]) -> None:
    """Poll the registry until `complete` accepts the active names (set-up, never measured)."""
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    while True:
        active = {name for name, rec in agent.refresh_peers().items() if rec.is_active}
        if complete(active):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"mesh incomplete after {SETUP_TIMEOUT_S:g}s: {sorted(active)}")
        time.sleep(0.01)


def _ping(args: MeshArgs) -> None:
    agent = _Pinger(args.name, "bench-ping", args.home, log_messages=args.log)
    if args.parts:
        agent.body_file_min_bytes = NO_BODY_FILES
    _wait_for_peers(agent, lambda active: args.peer in active)
    signal_ready(args.ready_fd)
    wait_go(args.go_fd)
    agent.start(args.peer, _body(args.size), args.warmup, args.count, args.time_limit_s)
    result = agent.result(args.time_limit_s + 60.0)
    agent.close()
    result.dump(args.out)


def _ask(args: MeshArgs) -> None:
    agent = AgentBase(args.name, "bench-ask", args.home, log_messages=args.log)
    _wait_for_peers(agent, lambda active: args.peer in active)
    signal_ready(args.ready_fd)
    body = _body(args.size)
    errors = 0

    def round_trip() -> None:
        nonlocal errors
        if len(agent.ask(args.peer, body, timeout_s=30.0).body) != len(body):
            errors += 1

    wait_go(args.go_fd)
    result = measure_round_trips(
        round_trip, warmup=args.warmup, count=args.count, time_limit_s=args.time_limit_s
    )
    agent.close()
    WorkerResult(result.kind, result.samples_ns, result.messages, result.elapsed_ns, errors).dump(
        args.out
    )


def _idle(args: MeshArgs) -> None:
    agent = AgentBase(args.name, "bench-idle", args.home, log_messages=args.log)
    signal_ready(args.ready_fd)
    _block_forever(agent)


# --------------------------------------------------------------------------- fan-in


class _Sink(AgentBase):
    """Counts messages and their send-stamp-to-handler delay; stops at `expected`."""

    def prepare(self, expected: int, size: int) -> None:
        self.expected, self.size = expected, size
        self.latency = array("q")
        self.marks_ns = array("q")
        self.done = threading.Event()
        self.errors = 0

    def on_message_received(self, msg: Message) -> None:
        now = time.time_ns()
        self.latency.append(now - msg.sent_ns)
        self.marks_ns.append(now)
        if len(msg.body) != self.size:
            self.errors += 1
        if len(self.latency) >= self.expected:
            self.done.set()


def _fan_in_rx(args: MeshArgs) -> None:
    agent = _Sink(args.name, "bench-sink", args.home, log_messages=args.log, durable=args.durable)
    agent.prepare(args.count, args.size)  # before any sender starts
    signal_ready(args.ready_fd)
    wait_go(args.go_fd)
    # Senders stop at their own time limit; what arrived by then is the result.
    agent.done.wait(args.time_limit_s + 10.0)
    agent.close()
    latency, marks = agent.latency, agent.marks_ns
    messages, elapsed = steady_rate(marks, range(1, len(marks) + 1))
    whole = (marks[-1] - marks[0]) if len(marks) > 1 else 0
    extra = {"msgs_per_s_whole": (len(marks) - 1) / (whole / 1e9)} if whole > 0 else {}
    extra["received"] = float(len(latency))
    WorkerResult(
        kind=KIND_ONE_WAY,
        samples_ns=latency.tolist(),
        messages=messages,
        elapsed_ns=elapsed,
        errors=agent.errors,
        extra=extra,
    ).dump(args.out)


def _fan_in_tx(args: MeshArgs) -> None:
    client = (
        AgentBase(args.name, "bench-source", args.home, log_messages=args.log)
        if args.agent_sender
        else MeshClient(args.name, args.home, log_messages=args.log)
    )
    client.refresh_peers()
    body = _body(args.size)
    signal_ready(args.ready_fd)
    wait_go(args.go_fd)
    send = client.send_message
    deadline = time.monotonic() + args.time_limit_s
    try:
        for seq in range(args.count):
            send(args.peer, body)
            if not seq & 255 and time.monotonic() > deadline:
                break
    except MeshError:
        pass  # the sink stopped first (count reached); what it counted stands
    finally:
        client.close()


# --------------------------------------------------------------------------- broadcast


class _BroadcastReceiver(AgentBase):
    def on_message_received(self, msg: Message) -> None:
        delay_ns = time.time_ns() - msg.sent_ns
        # The first 12 characters of a benchmark broadcast are its sequence number.
        self.reply(msg, f"{msg.body[:12]} {delay_ns}", msg_type="ack")


def _bcast_rx(args: MeshArgs) -> None:
    agent = _BroadcastReceiver(args.name, "bench-bcast-rx", args.home, log_messages=args.log)
    signal_ready(args.ready_fd)
    _block_forever(agent)


class _Broadcaster(AgentBase):
    """Collects the acks of one broadcast; `latest_ns` is the slowest receiver's delay."""

    def expect(self, token: str, acks: int) -> None:
        # Set before the broadcast goes out: the first acks come back while it is still
        # being written to the later receivers.
        self.latest_ns = 0
        self.all_acked = threading.Event()
        self._token, self._left = token, acks

    def on_message_received(self, msg: Message) -> None:
        token, _, delay = msg.body.partition(" ")
        if msg.msg_type != "ack" or token != self._token:
            return
        self.latest_ns = max(self.latest_ns, int(delay))
        self._left -= 1
        if self._left == 0:
            self.all_acked.set()


def _bcast_tx(args: MeshArgs) -> None:
    agent = _Broadcaster(args.name, "bench-bcast-tx", args.home, log_messages=args.log)
    _wait_for_peers(agent, lambda active: len(active) - 1 >= args.peers)
    agent.expect("", 0)
    signal_ready(args.ready_fd)
    samples = array("q")
    errors = 0
    wait_go(args.go_fd)
    started = time.perf_counter_ns()
    deadline = started + int(args.time_limit_s * 1e9)
    for i in range(args.warmup + args.count):
        token = f"{i:012d}"
        agent.expect(token, args.peers)
        result = agent.broadcast_message(token.ljust(args.size, "x"), msg_type="bench")
        if len(result.delivered) != args.peers:
            errors += 1
        if not agent.all_acked.wait(30.0):
            raise TimeoutError(f"broadcast {i}: not every receiver acked within 30s")
        if i < args.warmup:
            started = time.perf_counter_ns()
            deadline = started + int(args.time_limit_s * 1e9)
            continue
        samples.append(agent.latest_ns)
        if time.perf_counter_ns() >= deadline:
            break
    elapsed = time.perf_counter_ns() - started
    agent.close()
    WorkerResult(
        kind=KIND_ONE_WAY,
        samples_ns=samples.tolist(),
        messages=len(samples) * args.peers,
        elapsed_ns=elapsed,
        errors=errors,
    ).dump(args.out)


# --------------------------------------------------------------------------- join/leave


class _Observer(AgentBase):
    """Tells each joiner when its join, and later its leave, became visible here.

    "Visible" means this agent's router has handled the ``mesh.join`` (or
    ``mesh.leave``) control frame, i.e. its peer cache has the change. Control
    frames never reach ``on_message_received``, so this hooks the runtime's
    control handler (``AgentBase._control``) and calls it first.
    """

    def _control(self, msg: Message) -> bool:
        queue = super()._control(msg)
        seen_ns = time.time_ns()
        if msg.sender.startswith("bench-joiner-") and msg.msg_type in (JOIN, LEAVE):
            # Join: tell the new agent itself. Leave: it is gone; tell its driver.
            to = msg.sender if msg.msg_type == JOIN else "bench-join-driver"
            kind = _SEEN_JOIN if msg.msg_type == JOIN else _SEEN_LEAVE
            # If the joiner died, its driver times out and reports it.
            with contextlib.suppress(MeshError):
                self.send_message(to, f"{msg.sender} {seen_ns}", msg_type=kind)
        return queue


def _observer(args: MeshArgs) -> None:
    agent = _Observer(args.name, "bench-observer", args.home, log_messages=args.log)
    signal_ready(args.ready_fd)
    _block_forever(agent)


class _Seen(AgentBase):
    """Keeps the observer's seen-stamps, by joiner name."""

    def __init__(self, name: str, role: str, home: str, *, log_messages: bool) -> None:
        # Before the base constructor: it starts the router, which may run the handler.
        self.stamps: dict[str, int] = {}
        self.seen = threading.Event()
        super().__init__(name, role, home, log_messages=log_messages)

    def arm(self) -> None:
        """Wait for a new stamp from here on."""
        self.seen = threading.Event()

    def on_message_received(self, msg: Message) -> None:
        if msg.msg_type in (_SEEN_JOIN, _SEEN_LEAVE):
            name, stamp = msg.body.split()
            self.stamps[name] = int(stamp)
            self.seen.set()


def _joiner(args: MeshArgs) -> None:
    driver = _Seen("bench-join-driver", "bench-driver", args.home, log_messages=args.log)
    _wait_for_peers(driver, lambda active: args.peer in active)
    signal_ready(args.ready_fd)
    wait_go(args.go_fd)
    join = array("q")
    leave = array("q")
    started = time.perf_counter_ns()
    deadline = started + int(args.time_limit_s * 1e9)
    for i in range(args.warmup + args.count):
        name = f"bench-joiner-{i}"
        t0 = time.time_ns()
        agent = _Seen(name, "bench-joiner", args.home, log_messages=args.log)
        if not agent.seen.wait(30.0):
            raise TimeoutError(f"{name}: the observer did not see the join within 30s")
        join_ns = agent.stamps[name] - t0
        driver.arm()
        t1 = time.time_ns()
        agent.close()
        if not driver.seen.wait(30.0):
            raise TimeoutError(f"{name}: the observer did not see the leave within 30s")
        leave_ns = driver.stamps[name] - t1
        if i >= args.warmup:
            join.append(join_ns)
            leave.append(leave_ns)
            if time.perf_counter_ns() >= deadline:
                break
    elapsed = time.perf_counter_ns() - started
    driver.close()
    leave_sorted = sorted(leave)
    WorkerResult(
        kind=KIND_ONE_WAY,
        samples_ns=join.tolist(),
        messages=len(join),
        elapsed_ns=elapsed,
        extra={
            "leave_p50_us": leave_sorted[len(leave_sorted) // 2] / 1000 if leave else 0.0,
            "leave_max_us": leave_sorted[-1] / 1000 if leave else 0.0,
        },
    ).dump(args.out)


_ROLES: Final[dict[str, Callable[[MeshArgs], None]]] = {
    ROLE_ECHO: _echo,
    ROLE_PING: _ping,
    ROLE_ASK: _ask,
    ROLE_IDLE: _idle,
    ROLE_FAN_IN_RX: _fan_in_rx,
    ROLE_FAN_IN_TX: _fan_in_tx,
    ROLE_BCAST_RX: _bcast_rx,
    ROLE_BCAST_TX: _bcast_tx,
    ROLE_OBSERVER: _observer,
    ROLE_JOINER: _joiner,
}
