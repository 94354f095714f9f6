"""Scenario definitions: what each benchmark row runs, on the parent side.

For every baseline this module prepares what a scenario needs inside its private
directory (FIFOs, a socket path, a ``multiprocessing.Pipe`` pair, a ``redis-server`` on
127.0.0.1 with no persistence) and hands the harness the worker specs to start. The
endpoints themselves are in `pipemesh.bench.baselines`; process handling, statistics and
output are in `pipemesh.bench.harness`.

The raw-FIFO floors run in three regimes: unpinned (``ping-pong``), both ends pinned to
one core (``ping-pong-same-core``) and one end per core (``ping-pong-cross-core``); the
workers pin themselves with ``os.sched_setaffinity`` (``--cpu``). On a one-core machine
the cross-core rows are unavailable and say so. Fan-in (N writers into one FIFO) and
broadcast (one writer to N FIFO readers, acks on a shared FIFO) have raw-FIFO rows too,
so every mesh row has a same-run ratio.

`default_scenarios` is the registry of a run: the baseline rows, then the mesh rows
(ping-pong full stack with the handler loop and with ``ask()``, unpinned and in both
pinned regimes, the same with 100 idle agent processes, fan-in, broadcast, join/leave),
whose agents are in `pipemesh.bench.mesh`. A missing pyzmq, redis-py or redis-server
gives an `Unavailable` row, never a number.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Final

from pipemesh.bench._proto import PIPE_BUF
from pipemesh.bench.baselines import (
    FRAME_HEAD,
    MP_PIPE,
    RAW_FIFO,
    RAW_FIFO_BIG_PIPE,
    REDIS_PUBSUB,
    REDIS_TIMEOUT_S,
    ROLE_BCAST_RECEIVER,
    ROLE_BCAST_WRITER,
    ROLE_CLIENT,
    ROLE_FAN_IN_RECEIVER,
    ROLE_FAN_IN_SENDER,
    ROLE_SERVER,
    UNIX_SOCKET,
    ZMQ_DEALER_ROUTER,
    ZMQ_PAIR,
)
from pipemesh.bench.harness import (
    CROSS_CORE,
    SAME_CORE,
    BenchConfig,
    Measurement,
    Scenario,
    ScenarioContext,
    SizePlan,
    Unavailable,
    Worker,
    WorkerFailed,
    WorkerSpec,
    rss_bytes,
    run_fan_in,
    run_ping_pong,
    usable_cpus,
)
from pipemesh.bench.mesh import (
    ROLE_ASK,
    ROLE_BCAST_RX,
    ROLE_BCAST_TX,
    ROLE_ECHO,
    ROLE_FAN_IN_RX,
    ROLE_FAN_IN_TX,
    ROLE_IDLE,
    ROLE_JOINER,
    ROLE_OBSERVER,
    ROLE_PING,
)

#: The worker entry point every baseline endpoint runs in.
WORKER_MODULE: Final = "pipemesh.bench._worker"
#: The worker entry point every mesh agent runs in.
MESH_WORKER_MODULE: Final = "pipemesh.bench._mesh_worker"

#: Mesh rows: the handler loop (no thread hand-off timed), ``ask()`` from the main
#: thread, and the handler loop with logging off (what the logs cost).
MESH: Final = "mesh"
MESH_ASK: Final = "mesh-ask"
MESH_NO_LOG: Final = "mesh-nolog"
MESH_DURABLE: Final = "mesh-durable"
#: Large bodies: the old path (PART frames, no body files) and the body file path without
#: logs, same run (BENCHMARKS.md, "Large bodies out of band").
MESH_PARTS: Final = "mesh-parts"

#: How long idle agents must stay without CPU time before their CPU is sampled.
_SETTLE_S: Final = 10.0

#: The pinned regimes, by scenario name: (server CPU index, client CPU index) into the
#: CPUs this process may use.
REGIMES: Final = {SAME_CORE: (0, 0), CROSS_CORE: (0, 1)}

_UNAVAILABLE_ZMQ: Final = "pyzmq is not installed (pip install 'pipemesh[bench]')"
_UNAVAILABLE_REDIS_PY: Final = "redis-py is not installed (pip install 'pipemesh[bench]')"
_UNAVAILABLE_REDIS_SERVER: Final = (
    "redis-server is not on PATH (Debian: apt-get install redis-server; or make bench-setup)"
)


def default_scenarios(config: BenchConfig) -> list[Scenario]:
    """Every scenario of a run, in run order (the registry the harness runs from)."""
    return [*baseline_scenarios(config), *mesh_scenarios(config)]


def baseline_scenarios(config: BenchConfig) -> list[Scenario]:
    """Every baseline row for `config`: ping-pong per size and transport, then fan-in."""
    ping_pong: tuple[tuple[str, Callable[[ScenarioContext], Measurement | Unavailable]], ...] = (
        (RAW_FIFO, partial(_ping_pong_raw_fifo, transport=RAW_FIFO)),
        (RAW_FIFO_BIG_PIPE, partial(_ping_pong_raw_fifo, transport=RAW_FIFO_BIG_PIPE)),
        (UNIX_SOCKET, _ping_pong_unix_socket),
        (MP_PIPE, _ping_pong_mp_pipe),
        (ZMQ_PAIR, partial(_ping_pong_zmq, transport=ZMQ_PAIR)),
        (ZMQ_DEALER_ROUTER, partial(_ping_pong_zmq, transport=ZMQ_DEALER_ROUTER)),
        (REDIS_PUBSUB, _ping_pong_redis),
    )
    out = [
        Scenario("ping-pong", name, plan.size_bytes, run, plan.count, plan.warmup, regimes=True)
        for plan in config.ping_pong
        for name, run in ping_pong
    ]
    # The pinned floors, every size; ZeroMQ PAIR pinned too at the smallest size (the
    # issue-10 goal compares the mesh with it in the same regime).
    small = config.ping_pong[0]
    pinned: list[tuple[SizePlan, str, Callable[..., Measurement | Unavailable]]] = [
        (plan, RAW_FIFO, partial(_ping_pong_raw_fifo, transport=RAW_FIFO))
        for plan in config.ping_pong
    ]
    pinned.append((small, ZMQ_PAIR, partial(_ping_pong_zmq, transport=ZMQ_PAIR)))
    out += [
        Scenario(
            regime,
            name,
            plan.size_bytes,
            partial(_pinned, run=run, regime=regime),
            plan.count,
            plan.warmup,
            regimes=True,
        )
        for regime in REGIMES
        for plan, name, run in pinned
    ]
    out += [
        Scenario(
            f"fan-in-{n}",
            RAW_FIFO,
            plan.size_bytes,
            partial(_fan_in_raw_fifo, n_senders=n),
            plan.count,
            ratio_of="rate",
        )
        for n in config.fan_in_senders
        for plan in config.fan_in
    ]
    plan = config.broadcast
    out += [
        Scenario(
            f"broadcast-{n}",
            RAW_FIFO,
            plan.size_bytes,
            partial(_broadcast_raw_fifo, n_receivers=n),
            plan.count,
            plan.warmup,
        )
        for n in config.broadcast_to
    ]
    return out


def regime_cpus(regime: str) -> tuple[int, int] | Unavailable:
    """(server CPU, client CPU) for a pinned regime, or why this machine cannot run it."""
    cpus = usable_cpus()
    server, client = REGIMES[regime]
    if max(server, client) >= len(cpus):
        return Unavailable(
            f"this machine has one core (cpu {cpus[0]} is all os.sched_getaffinity allows):"
            " no cross-core regime"
        )
    return cpus[server], cpus[client]


def _pinned(
    ctx: ScenarioContext,
    *,
    run: Callable[..., Measurement | Unavailable],
    regime: str,
) -> Measurement | Unavailable:
    """Run a ping-pong scenario with its two ends pinned as `regime` says."""
    cpus = regime_cpus(regime)
    if isinstance(cpus, Unavailable):
        return cpus
    return run(ctx, cpus=cpus)


def _pin(spec: WorkerSpec, cpu: int | None) -> WorkerSpec:
    """`spec` with ``--cpu`` added (the worker pins itself first thing)."""
    if cpu is None:
        return spec
    return WorkerSpec(spec.module, (*spec.args, "--cpu", str(cpu)), spec.pass_fds)


def _spec(ctx: ScenarioContext, transport: str, role: str, *args: str) -> WorkerSpec:
    size = ctx.scenario.size_bytes or 0
    return WorkerSpec(
        WORKER_MODULE, ("--transport", transport, "--role", role, "--size", str(size), *args)
    )


_NO_CPUS: Final = (None, None)


def _ping_pong_raw_fifo(
    ctx: ScenarioContext, *, transport: str, cpus: tuple[int | None, int | None] = _NO_CPUS
) -> Measurement:
    to_server, to_client = ctx.workdir / "c2s.fifo", ctx.workdir / "s2c.fifo"
    os.mkfifo(to_server, 0o600)
    os.mkfifo(to_client, 0o600)
    addr = ("--addr", str(to_server), "--addr", str(to_client))
    return run_ping_pong(
        ctx,
        server=_pin(_spec(ctx, transport, ROLE_SERVER, *addr), cpus[0]),
        client=_pin(_spec(ctx, transport, ROLE_CLIENT, *addr), cpus[1]),
    )


def _ping_pong_unix_socket(ctx: ScenarioContext) -> Measurement:
    addr = ("--addr", str(ctx.workdir / "uds.sock"))
    return run_ping_pong(
        ctx,
        server=_spec(ctx, UNIX_SOCKET, ROLE_SERVER, *addr),
        client=_spec(ctx, UNIX_SOCKET, ROLE_CLIENT, *addr),
    )


def _ping_pong_mp_pipe(ctx: ScenarioContext) -> Measurement:
    # multiprocessing.Pipe() (duplex) is a socketpair wrapped in Connection objects; each
    # worker gets one end by fd number and wraps it in a Connection again.
    server_end, client_end = multiprocessing.Pipe(duplex=True)
    try:
        server = _spec(ctx, MP_PIPE, ROLE_SERVER, "--fd", str(server_end.fileno()))
        client = _spec(ctx, MP_PIPE, ROLE_CLIENT, "--fd", str(client_end.fileno()))
        return run_ping_pong(
            ctx,
            server=WorkerSpec(server.module, server.args, (server_end.fileno(),)),
            client=WorkerSpec(client.module, client.args, (client_end.fileno(),)),
        )
    finally:
        server_end.close()
        client_end.close()


def _ping_pong_zmq(
    ctx: ScenarioContext, *, transport: str, cpus: tuple[int | None, int | None] = _NO_CPUS
) -> Measurement | Unavailable:
    if importlib.util.find_spec("zmq") is None:
        return Unavailable(_UNAVAILABLE_ZMQ)
    addr = ("--addr", f"ipc://{ctx.workdir / 'zmq.sock'}")
    return run_ping_pong(
        ctx,
        server=_pin(_spec(ctx, transport, ROLE_SERVER, *addr), cpus[0]),
        client=_pin(_spec(ctx, transport, ROLE_CLIENT, *addr), cpus[1]),
    )


def _ping_pong_redis(ctx: ScenarioContext) -> Measurement | Unavailable:
    if importlib.util.find_spec("redis") is None:
        return Unavailable(_UNAVAILABLE_REDIS_PY)
    port = _start_redis(ctx)
    if isinstance(port, Unavailable):
        return port
    addr = ("--addr", f"127.0.0.1:{port}")
    return run_ping_pong(
        ctx,
        server=_spec(ctx, REDIS_PUBSUB, ROLE_SERVER, *addr),
        client=_spec(ctx, REDIS_PUBSUB, ROLE_CLIENT, *addr),
    )


def _fan_in_raw_fifo(ctx: ScenarioContext, *, n_senders: int) -> Measurement | Unavailable:
    size = ctx.scenario.size_bytes or 0
    if not FRAME_HEAD.size <= size <= PIPE_BUF:
        # Bigger writes tear with concurrent writers (FIFO-FACTS.md, fact 4): no floor there.
        return Unavailable(f"fan-in frames must be {FRAME_HEAD.size}..{PIPE_BUF} bytes")
    fifo = ctx.workdir / "fan-in.fifo"
    os.mkfifo(fifo, 0o600)
    per_sender = max(1, ctx.scenario.count // n_senders)
    addr = ("--addr", str(fifo))
    receiver = _spec(
        ctx, RAW_FIFO, ROLE_FAN_IN_RECEIVER, *addr, "--count", str(per_sender * n_senders)
    )
    senders = [
        _spec(
            ctx,
            RAW_FIFO,
            ROLE_FAN_IN_SENDER,
            *addr,
            "--count",
            str(per_sender),
            "--sender-id",
            str(i),
        )
        for i in range(n_senders)
    ]
    return run_fan_in(ctx, receiver=receiver, senders=senders)


def _broadcast_raw_fifo(ctx: ScenarioContext, *, n_receivers: int) -> Measurement | Unavailable:
    """One writer, N receiver processes each on its own FIFO, acks on one shared FIFO."""
    size = ctx.scenario.size_bytes or 0
    if not FRAME_HEAD.size <= size <= PIPE_BUF:
        return Unavailable(f"broadcast frames must be {FRAME_HEAD.size}..{PIPE_BUF} bytes")
    ack = ctx.workdir / "ack.fifo"
    os.mkfifo(ack, 0o600)
    data = [ctx.workdir / f"rx-{i}.fifo" for i in range(n_receivers)]
    for i, path in enumerate(data):
        os.mkfifo(path, 0o600)
        spec = _spec(ctx, RAW_FIFO, ROLE_BCAST_RECEIVER, "--addr", str(path), "--addr", str(ack))
        ctx.pool.spawn(f"rx-{i}", spec)
    startup = ctx.config.startup_timeout_s
    ctx.pool.wait_ready(n_receivers, startup + n_receivers * 0.5)
    addrs = [arg for path in data for arg in ("--addr", str(path))]
    spec = _spec(ctx, RAW_FIFO, ROLE_BCAST_WRITER, "--addr", str(ack), *addrs, *ctx.measure_args())
    worker = ctx.pool.spawn("writer", spec, measuring=True)
    ctx.pool.wait_ready(1, startup)
    ctx.pool.go()
    ctx.pool.wait_exit(worker, ctx.time_limit_s + 30.0)
    return Measurement.from_result(worker.result())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start_redis(ctx: ScenarioContext) -> int | Unavailable:
    """Start redis-server on a free 127.0.0.1 port (no persistence); return the port."""
    exe = shutil.which("redis-server")
    if exe is None:
        return Unavailable(_UNAVAILABLE_REDIS_SERVER)
    # The free port can be taken between probe and bind; try a few before giving up.
    tails = []
    for attempt in range(3):
        port = _free_port()
        argv = [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(ctx.workdir),
            "--loglevel",
            "warning",
        ]
        worker = ctx.pool.spawn_command(f"redis-server-{attempt}", argv)
        if _wait_redis(worker.proc, port, REDIS_TIMEOUT_S):
            return port
        ctx.pool.discard(worker)  # its exit code must not fail the next wait_ready
        tails.append(f"port {port}: {worker.stderr_tail(200) or 'no output'}")
    raise WorkerFailed(f"redis-server did not answer PING: {'; '.join(tails)}")


def _wait_redis(proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> bool:
    """Poll until redis answers PING, it exits, or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    return True
        except OSError:
            pass  # not listening yet
        try:
            proc.wait(timeout=0.02)
        except subprocess.TimeoutExpired:
            continue
    return False


# --------------------------------------------------------------------------- mesh rows


def mesh_scenarios(config: BenchConfig) -> list[Scenario]:
    """Every mesh row for `config`: ping-pong, with idle agents, fan-in, broadcast, join."""
    out = [
        Scenario(
            "ping-pong", transport, plan.size_bytes, run, plan.count, plan.warmup, regimes=True
        )
        for plan in config.ping_pong
        for transport, run in (
            (MESH, partial(_mesh_ping_pong, role=ROLE_PING)),
            (MESH_ASK, partial(_mesh_ping_pong, role=ROLE_ASK)),
        )
    ]
    small = config.ping_pong[0]
    out.append(
        Scenario(
            "ping-pong",
            MESH_NO_LOG,
            small.size_bytes,
            partial(_mesh_ping_pong, role=ROLE_PING, log=False),
            small.count,
            small.warmup,
            regimes=True,
        )
    )
    # Large bodies (body files since issue 10): the PART-frame path they replace, and
    # the body file path without logs (the body is logged once per hop when logs are on).
    out += [
        Scenario(
            "ping-pong", transport, plan.size_bytes, run, plan.count, plan.warmup, regimes=True
        )
        for plan in config.ping_pong
        if plan.size_bytes >= 64 * 1024
        for transport, run in (
            (MESH_PARTS, partial(_mesh_ping_pong, role=ROLE_PING, parts=True)),
            (MESH_NO_LOG, partial(_mesh_ping_pong, role=ROLE_PING, log=False)),
        )
    ]
    # The issue-10 goals: the mesh (handler loop, and the public-API shape with ask())
    # in each pinned regime, against the raw FIFO pinned the same way.
    out += [
        Scenario(
            regime,
            transport,
            small.size_bytes,
            partial(_pinned, run=partial(_mesh_ping_pong, role=role), regime=regime),
            small.count,
            small.warmup,
            regimes=True,
        )
        for regime in REGIMES
        for transport, role in ((MESH, ROLE_PING), (MESH_ASK, ROLE_ASK))
    ]
    n_idle = config.idle_agents
    out += [
        Scenario(
            f"ping-pong-{n_idle}-idle",
            MESH,
            plan.size_bytes,
            partial(_mesh_ping_pong, role=ROLE_PING, n_idle=n_idle),
            plan.count,
            plan.warmup,
            floor_scenario="ping-pong",
            regimes=True,
        )
        for plan in config.ping_pong
    ]
    out += [
        Scenario(
            f"fan-in-{n}",
            MESH,
            plan.size_bytes,
            partial(_mesh_fan_in, n_senders=n),
            plan.count,
            ratio_of="rate",
        )
        for n in config.fan_in_senders
        for plan in config.fan_in
    ]
    # One AgentBase sender into one sink, durable or not, same run: the cost of durability.
    plan = config.fan_in[0]
    out += [
        Scenario(
            "throughput-1",
            transport,
            plan.size_bytes,
            partial(_mesh_throughput, durable=durable),
            plan.count // 4,
        )
        for transport, durable in ((MESH, False), (MESH_DURABLE, True))
    ]
    plan = config.broadcast
    out += [
        Scenario(
            f"broadcast-{n}",
            MESH,
            plan.size_bytes,
            partial(_mesh_broadcast, n_receivers=n),
            plan.count,
            plan.warmup,
        )
        for n in config.broadcast_to
    ]
    out.append(
        Scenario(
            "join-leave",
            MESH,
            None,
            _mesh_join_leave,
            config.join_leave.count,
            config.join_leave.warmup,
        )
    )
    return out


def _mesh_spec(ctx: ScenarioContext, role: str, name: str, *args: str) -> WorkerSpec:
    home = ctx.workdir / "mesh"
    size = ctx.scenario.size_bytes or 0
    return WorkerSpec(
        MESH_WORKER_MODULE,
        ("--role", role, "--home", str(home), "--name", name, "--size", str(size), *args),
    )


def _mesh_ping_pong(
    ctx: ScenarioContext,
    *,
    role: str,
    log: bool = True,
    n_idle: int = 0,
    cpus: tuple[int | None, int | None] = _NO_CPUS,
    parts: bool = False,
) -> Measurement:
    """Echo agent B and measuring agent A (handler loop or ``ask``), maybe among idle agents.

    With `cpus`, B (and its threads) is pinned to the first and A to the second.
    """
    flags = (*(() if log else ("--no-log",)), *(("--parts",) if parts else ()))
    idle = [
        ctx.pool.spawn(f"idle-{i}", _mesh_spec(ctx, ROLE_IDLE, f"idle-{i}")) for i in range(n_idle)
    ]
    startup = ctx.config.startup_timeout_s
    if idle:
        ctx.pool.wait_ready(len(idle), startup + n_idle * 0.5)
    ctx.pool.spawn("server", _pin(_mesh_spec(ctx, ROLE_ECHO, "echo", *flags), cpus[0]))
    ctx.pool.wait_ready(1, startup)
    client = _pin(
        _mesh_spec(ctx, role, "client", "--peer", "echo", *flags, *ctx.measure_args()), cpus[1]
    )
    worker = ctx.pool.spawn("client", client, measuring=True)
    ctx.pool.wait_ready(1, startup)
    before = _settled_cpu_ticks(idle) if idle else 0
    ctx.pool.go()
    ctx.pool.wait_exit(worker, ctx.time_limit_s + 30.0)
    measured = Measurement.from_result(worker.result())
    if not idle:
        return measured
    cpu_ms = (_cpu_ticks(idle) - before) * 1000 / os.sysconf("SC_CLK_TCK")
    rss = [rss_bytes(w.proc.pid) / (1 << 20) for w in idle]
    extra = {
        **measured.extra,
        "idle_cpu_ms": cpu_ms,
        "idle_rss_mib_mean": sum(rss) / len(rss),
        "idle_rss_mib_max": max(rss),
    }
    return Measurement(
        measured.one_way_ns, measured.messages, measured.elapsed_ns, measured.errors, extra
    )


def _cpu_ticks(workers: Sequence[Worker]) -> int:
    """utime + stime of `workers`, in clock ticks, from /proc/<pid>/stat."""
    total = 0
    for worker in workers:
        with open(f"/proc/{worker.proc.pid}/stat", "rb") as fh:
            data = fh.read()
        # The command name may hold spaces; fields resume after the last ')'.
        fields = data[data.rfind(b")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # stat fields 14 and 15
    return total


def _settled_cpu_ticks(workers: Sequence[Worker]) -> int:
    """CPU ticks of `workers` once they stopped using CPU (joins of later agents done).

    Every agent that joins sends ``mesh.join`` to the others, and each re-reads the
    registry; that set-up work must not be counted as idle cost. Waits until two
    samples 200 ms apart agree, at most `_SETTLE_S`.
    """
    deadline = time.monotonic() + _SETTLE_S
    ticks = _cpu_ticks(workers)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = _cpu_ticks(workers)
        if now == ticks:
            break
        ticks = now
    return ticks


def _mesh_fan_in(ctx: ScenarioContext, *, n_senders: int) -> Measurement:
    """N `MeshClient` sender processes into one sink agent, logging on at both ends."""
    per_sender = max(1, ctx.scenario.count // n_senders)
    total = per_sender * n_senders
    receiver = _mesh_spec(
        ctx,
        ROLE_FAN_IN_RX,
        "sink",
        "--count",
        str(total),
        "--time-limit-s",
        str(ctx.time_limit_s),
    )
    senders = [
        _mesh_spec(ctx, ROLE_FAN_IN_TX, f"src-{i}", "--peer", "sink", "--count", str(per_sender))
        for i in range(n_senders)
    ]
    return run_fan_in(ctx, receiver=receiver, senders=senders)


def _mesh_throughput(ctx: ScenarioContext, *, durable: bool) -> Measurement:
    """One `AgentBase` sender into one sink agent, logging on; the sink durable or not."""
    flags = ("--durable",) if durable else ()
    count = str(ctx.scenario.count)
    receiver = _mesh_spec(
        ctx,
        ROLE_FAN_IN_RX,
        "sink",
        "--count",
        count,
        "--time-limit-s",
        str(ctx.time_limit_s),
        *flags,
    )
    sender = _mesh_spec(
        ctx, ROLE_FAN_IN_TX, "src", "--peer", "sink", "--count", count, "--agent-sender", *flags
    )
    return run_fan_in(ctx, receiver=receiver, senders=[sender])


def _mesh_broadcast(ctx: ScenarioContext, *, n_receivers: int) -> Measurement:
    """One broadcaster, N receiver agents; a sample is the slowest receiver's delay."""
    startup = ctx.config.startup_timeout_s
    for i in range(n_receivers):
        ctx.pool.spawn(f"rx-{i}", _mesh_spec(ctx, ROLE_BCAST_RX, f"rx-{i}"))
    ctx.pool.wait_ready(n_receivers, startup + n_receivers * 0.5)
    spec = _mesh_spec(
        ctx, ROLE_BCAST_TX, "caster", "--peers", str(n_receivers), *ctx.measure_args()
    )
    worker = ctx.pool.spawn("caster", spec, measuring=True)
    ctx.pool.wait_ready(1, startup)
    ctx.pool.go()
    ctx.pool.wait_exit(worker, ctx.time_limit_s + 30.0)
    return Measurement.from_result(worker.result())


def _mesh_join_leave(ctx: ScenarioContext) -> Measurement:
    """Agents joining and leaving next to an observer; plus the RSS of an idle agent."""
    startup = ctx.config.startup_timeout_s
    ctx.pool.spawn("observer", _mesh_spec(ctx, ROLE_OBSERVER, "observer"))
    idle = ctx.pool.spawn("idle", _mesh_spec(ctx, ROLE_IDLE, "idle"))
    ctx.pool.wait_ready(2, startup)
    spec = _mesh_spec(ctx, ROLE_JOINER, "joiner", "--peer", "observer", *ctx.measure_args())
    worker = ctx.pool.spawn("joiner", spec, measuring=True)
    ctx.pool.wait_ready(1, startup)
    ctx.pool.go()
    ctx.pool.wait_exit(worker, ctx.time_limit_s + 60.0)
    measured = Measurement.from_result(worker.result())
    extra = {**measured.extra, "idle_rss_mib": rss_bytes(idle.proc.pid) / (1 << 20)}
    return Measurement(
        measured.one_way_ns, measured.messages, measured.elapsed_ns, measured.errors, extra
    )
