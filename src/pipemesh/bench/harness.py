"""Benchmark harness: scenarios, generic runs, statistics, and the run itself.

Its worker processes live in `pipemesh.bench._pool` and its table and JSON output in
`pipemesh.bench._report`; this module re-exports their names, so everything the harness
offers is importable from here.

The harness runs every scenario's endpoints as separate worker processes and turns what
they measured into rows of one table. It knows nothing about any transport: the baselines
(`pipemesh.bench.baselines`) and, later, the mesh scenarios plug in as `Scenario` values.

Why `subprocess` and not `multiprocessing` (spawn context): a worker is a plain interpreter
started as ``[sys.executable, "-m", module, ...flags]``. Nothing is pickled on the way in
(the project does not use pickle), nothing depends on ``__main__`` being importable, and
the worker's argv is exactly what a person can paste into a shell to reproduce one end of a
scenario. File descriptors a worker needs (the start-barrier pipes, a
``multiprocessing.Pipe`` end) are handed over with ``pass_fds``; `subprocess.Popen` gives
exact control over killing and reaping, which a stuck FIFO open makes essential.

Plugging in a scenario (how the mesh rows are added)::

    def _mesh_ping_pong(ctx: ScenarioContext) -> Measurement | Unavailable:
        worker = "pipemesh.bench._mesh_worker"
        return run_ping_pong(
            ctx,
            server=WorkerSpec(worker, ("--role", "echo", "--size", str(ctx.scenario.size_bytes))),
            client=WorkerSpec(worker, ("--role", "ping", "--size", str(ctx.scenario.size_bytes))),
        )

    Scenario("ping-pong", "mesh", 64, _mesh_ping_pong, count=20_000, warmup=1_000)

and list it in `pipemesh.bench.scenarios.default_scenarios`. A worker module accepts
the flags of `pipemesh.bench._proto.add_protocol_args`, signals ready, waits for go,
measures (`measure_round_trips` for a ping-pong client) and writes a `WorkerResult` to
``--out``. `run_fan_in` does the same for N senders into one receiver. Other shapes
compose from the pool: start 100 idle agents with ``ctx.pool.spawn`` and
``ctx.pool.wait_ready(100, ...)``, then call `run_ping_pong` for the ``100 idle`` row
(give it ``floor_scenario="ping-pong"``); read an agent's memory with `rss_bytes` and
return it in ``Measurement.extra``. Helper processes that do not speak the protocol go
through ``ctx.pool.spawn_command`` (the Redis baseline starts ``redis-server`` that way),
so the harness kills and reaps them with the rest.

This module must not print: results go back as a `BenchReport`; progress goes through
the caller's callback. Workers and temporary directories never outlive a scenario.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Literal

from pipemesh.bench._pool import Worker, WorkerFailed, WorkerPool, WorkerSpec, rss_bytes
from pipemesh.bench._proto import KIND_ROUND_TRIP, WorkerResult
from pipemesh.bench._report import (
    BenchReport,
    BenchRow,
    MachineInfo,
    Status,
    format_size,
    format_table,
    machine_info,
    usable_cpus,
)
from pipemesh.errors import UsageError

# The processes (`_pool`) and the report (`_report`) live in their own modules; their names
# are part of this module's interface too.
__all__ = [
    "CROSS_CORE",
    "FLOOR_TRANSPORT",
    "FULL_FAN_IN",
    "FULL_PING_PONG",
    "QUICK_FAN_IN",
    "QUICK_PING_PONG",
    "SAME_CORE",
    "BenchConfig",
    "BenchReport",
    "BenchRow",
    "MachineInfo",
    "Measurement",
    "Scenario",
    "ScenarioContext",
    "SizePlan",
    "Status",
    "Unavailable",
    "Worker",
    "WorkerFailed",
    "WorkerPool",
    "WorkerSpec",
    "add_ratios",
    "format_size",
    "format_table",
    "machine_info",
    "percentile",
    "rss_bytes",
    "run_bench",
    "run_fan_in",
    "run_ping_pong",
    "run_scenario",
    "select_scenarios",
    "summarize",
    "usable_cpus",
]

#: The transport whose ping-pong p50 is the floor every ``ratio`` is measured against.
FLOOR_TRANSPORT: Final = "raw-fifo"

#: The ping-pong floors pinned by ``os.sched_setaffinity`` in the workers: both ends on one
#: core (the stable regime on a 2-core VM) and one end per core. Every row that declares
#: ``regimes`` also gets its p50 over these (``x_same_core``, ``x_cross_core``).
SAME_CORE: Final = "ping-pong-same-core"
CROSS_CORE: Final = "ping-pong-cross-core"

#: Extra seconds a measuring worker gets past its own time limit (warm-up, result file).
_GRACE_S: Final = 15.0


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class SizePlan:
    """How many messages of one body size a scenario sends.

    Attributes:
        size_bytes: body size.
        count: upper bound on measured messages (round trips for ping-pong, messages in
            total for fan-in).
        warmup: unmeasured round trips before measuring.
    """

    size_bytes: int
    count: int
    warmup: int


#: Full run: about two minutes on 2 cores for all baselines. Big bodies get fewer
#: messages so every row stays within the time limit on the slowest transport.
FULL_PING_PONG: Final = (
    SizePlan(64, 20_000, 1_000),
    SizePlan(4096, 20_000, 1_000),
    SizePlan(65536, 5_000, 200),
    SizePlan(1 << 20, 500, 20),
)
FULL_FAN_IN: Final = (SizePlan(64, 400_000, 0), SizePlan(4096, 100_000, 0))

#: Quick run (tests): every row present, tiny counts.
QUICK_PING_PONG: Final = (
    SizePlan(64, 40, 5),
    SizePlan(4096, 40, 5),
    SizePlan(65536, 20, 2),
    SizePlan(1 << 20, 5, 1),
)
QUICK_FAN_IN: Final = (SizePlan(64, 200, 0), SizePlan(4096, 100, 0))


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What one benchmark run measures, and how long it may take.

    Attributes:
        ping_pong: body sizes and message counts for the ping-pong scenarios.
        fan_in: body sizes and total message counts for the fan-in scenarios.
        fan_in_senders: sender process counts for the fan-in scenarios.
        idle_agents: idle agent processes running during the ``ping-pong-N-idle`` rows.
        broadcast_to: receiver counts for the broadcast scenarios.
        broadcast: body size, broadcasts measured and warm-up of the broadcast rows.
        join_leave: joins measured and warm-up of the join/leave row (size unused).
        time_limit_s: upper bound on one scenario's measured phase.
        startup_timeout_s: upper bound on starting one scenario's processes.
        only: substrings of scenario keys (``ping-pong/raw-fifo/64B``) to run; empty runs
            all. The raw-FIFO floor rows the selection needs for its ratios always run.
        quick: tiny counts, for tests; the numbers mean nothing.
        tmp_dir: parent of the per-scenario temporary directories (default: system temp).
    """

    ping_pong: tuple[SizePlan, ...] = FULL_PING_PONG
    fan_in: tuple[SizePlan, ...] = FULL_FAN_IN
    fan_in_senders: tuple[int, ...] = (10, 100)
    idle_agents: int = 100
    broadcast_to: tuple[int, ...] = (10, 100)
    broadcast: SizePlan = SizePlan(64, 2_000, 20)
    join_leave: SizePlan = SizePlan(0, 200, 5)
    time_limit_s: float = 4.0
    startup_timeout_s: float = 60.0
    only: tuple[str, ...] = ()
    quick: bool = False
    tmp_dir: str | None = None

    @classmethod
    def quick_run(cls) -> BenchConfig:
        """A tiny configuration that only checks the harness works (seconds, not minutes).

        The default `BenchConfig()` is the full run (a few minutes on 2 cores).
        """
        return cls(
            ping_pong=QUICK_PING_PONG,
            fan_in=QUICK_FAN_IN,
            fan_in_senders=(2, 4),
            idle_agents=3,
            broadcast_to=(2, 4),
            broadcast=SizePlan(64, 20, 2),
            join_leave=SizePlan(0, 5, 1),
            time_limit_s=2.0,
            startup_timeout_s=30.0,
            quick=True,
        )


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True, slots=True)
class Measurement:
    """What a scenario measured, before statistics.

    Attributes:
        one_way_ns: one latency sample per measured message (one-way, nanoseconds).
        messages: messages delivered in the measured phase.
        elapsed_ns: duration of the measured phase.
        errors: malformed messages seen (wrong size, torn frame).
        extra: other named numbers for the JSON output (RSS, join time, ...).
    """

    one_way_ns: list[float]
    messages: int
    elapsed_ns: int
    errors: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_result(cls, result: WorkerResult) -> Measurement:
        """Convert a worker's result; round trips are halved into one-way latencies."""
        if result.kind == KIND_ROUND_TRIP:
            one_way = [s / 2 for s in result.samples_ns]
        else:
            one_way = [float(s) for s in result.samples_ns]
        return cls(one_way, result.messages, result.elapsed_ns, result.errors, dict(result.extra))


@dataclass(frozen=True, slots=True)
class Unavailable:
    """A scenario that cannot run here; the row says why instead of showing numbers."""

    reason: str


@dataclass(frozen=True, slots=True)
class Scenario:
    """One row of the benchmark table.

    Attributes:
        scenario: what is measured (``ping-pong``, ``fan-in-10``, ...).
        transport: what carries the messages (``raw-fifo``, ``zmq-pair``, ``mesh``, ...).
        size_bytes: body size, or None when the scenario has no body size.
        run: starts the workers through ``ctx.pool`` and returns what they measured.
        count: upper bound on measured messages (the scenario decides what a message is).
        warmup: unmeasured messages first.
        floor_scenario: the raw-FIFO scenario this row's ratio divides by (default: the
            same scenario name; a ``ping-pong-100-idle`` row would name ``ping-pong``).
        ratio_of: ``"p50"``: ratio = p50 / floor p50 (latency rows); ``"rate"``: ratio =
            floor msgs/s / this row's msgs/s (throughput rows: fan-in). Either way a
            ratio above 1 means slower than the raw FIFO.
        regimes: also divide the p50 by the pinned raw-FIFO ping-pong floors of the same
            size (`SAME_CORE`, `CROSS_CORE`): latency rows of the ping-pong family.
    """

    scenario: str
    transport: str
    size_bytes: int | None
    run: Callable[[ScenarioContext], Measurement | Unavailable]
    count: int = 0
    warmup: int = 0
    floor_scenario: str | None = None
    ratio_of: Literal["p50", "rate"] = "p50"
    regimes: bool = False

    @property
    def key(self) -> str:
        """A unique, filterable name: ``scenario/transport/size``."""
        size = "-" if self.size_bytes is None else format_size(self.size_bytes, compact=True)
        return f"{self.scenario}/{self.transport}/{size}"

    @property
    def floor_key(self) -> str | None:
        """Key of the floor row this row's ratio uses, or None when there is none."""
        if self.size_bytes is None:
            return None
        size = format_size(self.size_bytes, compact=True)
        return f"{self.floor_scenario or self.scenario}/{FLOOR_TRANSPORT}/{size}"

    @property
    def regime_floor_keys(self) -> tuple[str, str] | None:
        """Keys of the same-core and cross-core floor rows, or None without `regimes`."""
        if not self.regimes or self.size_bytes is None:
            return None
        size = format_size(self.size_bytes, compact=True)
        return (f"{SAME_CORE}/{FLOOR_TRANSPORT}/{size}", f"{CROSS_CORE}/{FLOOR_TRANSPORT}/{size}")


@dataclass(frozen=True, slots=True)
class ScenarioContext:
    """Everything a scenario function gets: its plan, a private directory, a worker pool."""

    config: BenchConfig
    scenario: Scenario
    workdir: Path
    pool: WorkerPool

    @property
    def time_limit_s(self) -> float:
        """Upper bound on the measured phase."""
        return self.config.time_limit_s

    def measure_args(self) -> tuple[str, ...]:
        """Flags a measuring worker takes: ``--count``, ``--warmup``, ``--time-limit-s``."""
        return (
            "--count",
            str(self.scenario.count),
            "--warmup",
            str(self.scenario.warmup),
            "--time-limit-s",
            str(self.time_limit_s),
        )


# --------------------------------------------------------------------------- generic runs


def run_ping_pong(ctx: ScenarioContext, *, server: WorkerSpec, client: WorkerSpec) -> Measurement:
    """Run an echo `server` worker and a measuring `client` worker; return the client's samples.

    The client gets ``ctx.measure_args()`` appended and must write a round-trip result;
    the server is killed once the client is done.

    Raises:
        WorkerFailed: a worker crashed or overran its time.
    """
    startup = ctx.config.startup_timeout_s
    ctx.pool.spawn("server", server)
    ctx.pool.wait_ready(1, startup)
    measuring = WorkerSpec(client.module, (*client.args, *ctx.measure_args()), client.pass_fds)
    worker = ctx.pool.spawn("client", measuring, measuring=True)
    ctx.pool.wait_ready(1, startup)
    ctx.pool.go()
    ctx.pool.wait_exit(worker, ctx.time_limit_s + _GRACE_S)
    return Measurement.from_result(worker.result())


def run_fan_in(
    ctx: ScenarioContext, *, receiver: WorkerSpec, senders: Sequence[WorkerSpec]
) -> Measurement:
    """Run one measuring `receiver` and N `senders` released together; return the receiver's result.

    Every sender gets ``--time-limit-s`` appended and must stop by then; the receiver
    must write a one-way result whose `messages` / `elapsed_ns` is the rate it handled
    (the baselines use `pipemesh.bench._proto.steady_rate`: the middle 80% of receipts).

    Raises:
        WorkerFailed: a worker crashed or overran its time.
    """
    startup = ctx.config.startup_timeout_s
    rx = ctx.pool.spawn("receiver", receiver, measuring=True)
    ctx.pool.wait_ready(1, startup)
    limit = ("--time-limit-s", str(ctx.time_limit_s))
    started = [
        ctx.pool.spawn(f"sender-{i}", WorkerSpec(s.module, (*s.args, *limit), s.pass_fds))
        for i, s in enumerate(senders)
    ]
    ctx.pool.wait_ready(len(senders), startup)
    ctx.pool.go()
    ctx.pool.wait_exit(rx, ctx.time_limit_s + _GRACE_S)
    for worker in started:
        ctx.pool.wait_exit(worker, _GRACE_S)
    return Measurement.from_result(rx.result())


# --------------------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(scenario: Scenario, measured: Measurement) -> BenchRow:
    """Turn a measurement into a row (ratio is filled in once the whole run is done)."""
    values = sorted(measured.one_way_ns)
    if not values:
        return _error_row(scenario, "no message was measured")
    rate = measured.messages / (measured.elapsed_ns / 1e9) if measured.elapsed_ns > 0 else None
    extra = dict(measured.extra)
    status: Status = "ok"
    note = ""
    if measured.errors:
        extra["errors"] = float(measured.errors)
        status, note = "error", f"{measured.errors} malformed messages"
    return BenchRow(
        key=scenario.key,
        scenario=scenario.scenario,
        transport=scenario.transport,
        size_bytes=scenario.size_bytes,
        status=status,
        n=len(values),
        p50_us=percentile(values, 50) / 1000,
        p90_us=percentile(values, 90) / 1000,
        p99_us=percentile(values, 99) / 1000,
        max_us=values[-1] / 1000,
        msgs_per_s=rate,
        note=note,
        extra=extra,
    )


def _error_row(scenario: Scenario, note: str, status: Status = "error") -> BenchRow:
    return BenchRow(
        key=scenario.key,
        scenario=scenario.scenario,
        transport=scenario.transport,
        size_bytes=scenario.size_bytes,
        status=status,
        note=note,
    )


# --------------------------------------------------------------------------- running


def select_scenarios(config: BenchConfig, scenarios: Sequence[Scenario]) -> list[Scenario]:
    """The scenarios `config.only` asks for, plus the floor rows their ratios need.

    Raises:
        UsageError: a pattern in `config.only` matches no scenario.
    """
    if not config.only:
        return list(scenarios)
    for pattern in config.only:
        if not any(pattern in s.key for s in scenarios):
            raise UsageError(
                f"--only {pattern!r} matches no scenario (keys look like "
                f"{scenarios[0].key if scenarios else 'ping-pong/raw-fifo/64B'}; try --list)"
            )
    wanted = {s.key for s in scenarios if any(p in s.key for p in config.only)}
    chosen = [s for s in scenarios if s.key in wanted]
    wanted |= {s.floor_key for s in chosen if s.floor_key is not None}
    wanted |= {k for s in chosen for k in s.regime_floor_keys or ()}
    return [s for s in scenarios if s.key in wanted]


@contextmanager
def _scenario_context(config: BenchConfig, scenario: Scenario) -> Iterator[ScenarioContext]:
    # Short prefix: AF_UNIX and ipc:// paths must stay under 108 bytes.
    with (
        tempfile.TemporaryDirectory(prefix="pmb-", dir=config.tmp_dir) as tmp,
        WorkerPool(Path(tmp)) as pool,
    ):
        yield ScenarioContext(config, scenario, Path(tmp), pool)


def run_scenario(config: BenchConfig, scenario: Scenario) -> BenchRow:
    """Run one scenario in its own directory and worker pool; never leaves a process behind."""
    with _scenario_context(config, scenario) as ctx:
        try:
            outcome = scenario.run(ctx)
        except WorkerFailed as exc:
            return _error_row(scenario, str(exc))
        except (OSError, ValueError) as exc:
            return _error_row(scenario, f"{type(exc).__name__}: {exc}")
    if isinstance(outcome, Unavailable):
        return _error_row(scenario, outcome.reason, status="unavailable")
    return summarize(scenario, outcome)


def add_ratios(rows: Sequence[BenchRow], scenarios: Sequence[Scenario]) -> list[BenchRow]:
    """Fill in each row's ratios to the raw-FIFO floor rows of the same run."""
    by_key = {row.key: row for row in rows}
    by_scenario = {s.key: s for s in scenarios}

    def p50_over(row: BenchRow, floor_key: str | None) -> float | None:
        floor = by_key.get(floor_key) if floor_key else None
        if row.p50_us is None or floor is None or not floor.p50_us:
            return None
        return row.p50_us / floor.p50_us

    out = []
    for row in rows:
        scenario = by_scenario.get(row.key)
        if scenario is None:
            out.append(row)
            continue
        if scenario.ratio_of == "rate":
            floor = by_key.get(scenario.floor_key) if scenario.floor_key else None
            ratio = (
                floor.msgs_per_s / row.msgs_per_s
                if floor is not None and floor.msgs_per_s and row.msgs_per_s
                else None
            )
        else:
            ratio = p50_over(row, scenario.floor_key)
        same, cross = scenario.regime_floor_keys or (None, None)
        out.append(
            replace(
                row,
                ratio=ratio,
                x_same_core=p50_over(row, same),
                x_cross_core=p50_over(row, cross),
            )
        )
    return out


def run_bench(
    config: BenchConfig,
    scenarios: Sequence[Scenario] | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Run the benchmark and return its report.

    Args:
        config: what to run; `BenchConfig()` (full) or `BenchConfig.quick_run()`.
        scenarios: the scenarios to choose from (default:
            `pipemesh.bench.scenarios.default_scenarios`).
        progress: called with one line per scenario as it starts (the CLI prints them
            to stderr).

    Returns:
        Machine facts and one row per scenario, in run order, with ratios filled in.

    Raises:
        UsageError: `config.only` selects nothing.
    """
    started = time.monotonic()
    load_start = os.getloadavg()
    if scenarios is None:
        # The registry imports this module for its types; import it only when needed.
        from pipemesh.bench.scenarios import default_scenarios  # noqa: PLC0415

        scenarios = default_scenarios(config)
    pool = list(scenarios)
    chosen = select_scenarios(config, pool)
    rows = []
    for i, scenario in enumerate(chosen, 1):
        if progress is not None:
            progress(f"[{i}/{len(chosen)}] {scenario.key}")
        rows.append(run_scenario(config, scenario))
    return BenchReport(
        machine=machine_info(),
        rows=add_ratios(rows, chosen),
        duration_s=time.monotonic() - started,
        quick=config.quick,
        load_start=load_start,
        load_end=os.getloadavg(),
    )
