"""Pure parts of the benchmark harness: percentiles, sizes, scenario selection, ratios."""

from __future__ import annotations

import pytest

from pipemesh.bench._proto import steady_rate
from pipemesh.bench.harness import (
    CROSS_CORE,
    SAME_CORE,
    BenchConfig,
    BenchRow,
    Measurement,
    Scenario,
    ScenarioContext,
    Unavailable,
    add_ratios,
    format_size,
    percentile,
    select_scenarios,
    summarize,
)
from pipemesh.errors import UsageError


def _never(ctx: ScenarioContext) -> Measurement | Unavailable:
    return Unavailable("not run in unit tests")


def _scenario(
    scenario: str,
    transport: str,
    size: int,
    floor: str | None = None,
    *,
    regimes: bool = False,
    rate: bool = False,
) -> Scenario:
    return Scenario(
        scenario,
        transport,
        size,
        _never,
        count=10,
        floor_scenario=floor,
        regimes=regimes,
        ratio_of="rate" if rate else "p50",
    )


def test_percentile_nearest_rank() -> None:
    """Nearest rank: p50 of 1..100 is 50, p99 is 99, p100 is the maximum."""
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7


def test_format_size_uses_binary_units() -> None:
    """Sizes print as B, KiB or MiB, compact without the space."""
    assert format_size(64) == "64 B"
    assert format_size(4096) == "4 KiB"
    assert format_size(1 << 20, compact=True) == "1MiB"
    assert format_size(1000) == "1000 B"


def test_summarize_halves_nothing_and_rates_messages() -> None:
    """A one-way measurement becomes microsecond percentiles and messages per second."""
    row = summarize(
        _scenario("ping-pong", "raw-fifo", 64),
        Measurement([1000.0, 2000.0, 3000.0, 4000.0], messages=8, elapsed_ns=2_000_000_000),
    )
    assert row.status == "ok"
    assert (row.n, row.p50_us, row.max_us) == (4, 2.0, 4.0)
    assert row.msgs_per_s == pytest.approx(4.0)


def test_select_scenarios_adds_the_floor_rows() -> None:
    """Selecting a row also runs the raw-FIFO row its ratio divides by."""
    scenarios = [
        _scenario("ping-pong", "raw-fifo", 64),
        _scenario("ping-pong", "zmq-pair", 64),
        _scenario("ping-pong", "raw-fifo", 4096),
        _scenario("ping-pong-100-idle", "mesh", 64, floor="ping-pong"),
    ]
    chosen = select_scenarios(BenchConfig(only=("mesh",)), scenarios)
    assert [s.key for s in chosen] == ["ping-pong/raw-fifo/64B", "ping-pong-100-idle/mesh/64B"]


def test_select_scenarios_rejects_a_pattern_that_matches_nothing() -> None:
    """An --only pattern with no match is a usage error, not an empty run."""
    with pytest.raises(UsageError, match="matches no scenario"):
        select_scenarios(BenchConfig(only=("nope",)), [_scenario("ping-pong", "raw-fifo", 64)])


def test_add_ratios_divides_by_the_floor_of_the_same_size() -> None:
    """Each row's ratio is its p50 over the raw-FIFO p50 of its floor scenario and size."""
    scenarios = [
        _scenario("ping-pong", "raw-fifo", 64),
        _scenario("ping-pong", "zmq-pair", 64),
        _scenario("ping-pong", "zmq-pair", 4096),
    ]
    rows = [
        BenchRow(s.key, s.scenario, s.transport, s.size_bytes, "ok", n=1, p50_us=p50)
        for s, p50 in zip(scenarios, (10.0, 45.0, 50.0), strict=True)
    ]
    ratios = [row.ratio for row in add_ratios(rows, scenarios)]
    assert ratios == [1.0, 4.5, None]


def test_steady_rate_trims_start_and_end() -> None:
    """The rate window runs from the read that crossed 10% to the one that crossed 90%."""
    marks_ns = [0, 100, 200, 300, 10_000]
    marks_count = [1, 10, 50, 90, 100]
    assert steady_rate(marks_ns, marks_count) == (80, 200)


def test_steady_rate_falls_back_to_the_whole_log() -> None:
    """A log too short to trim gives the whole window; an empty one gives nothing."""
    assert steady_rate([5], [3]) == (3, 0)
    assert steady_rate([], []) == (0, 0)


def test_select_scenarios_adds_the_pinned_floors_of_a_regimes_row() -> None:
    """A row with regimes also runs the same-core and cross-core raw-FIFO rows of its size."""
    scenarios = [
        _scenario("ping-pong", "raw-fifo", 64, regimes=True),
        _scenario(SAME_CORE, "raw-fifo", 64, regimes=True),
        _scenario(CROSS_CORE, "raw-fifo", 64, regimes=True),
        _scenario(SAME_CORE, "raw-fifo", 4096, regimes=True),
        _scenario("ping-pong", "mesh", 64, regimes=True),
        _scenario("fan-in-10", "mesh", 64, rate=True),
    ]
    chosen = select_scenarios(BenchConfig(only=("ping-pong/mesh",)), scenarios)
    assert [s.key for s in chosen] == [
        "ping-pong/raw-fifo/64B",
        f"{SAME_CORE}/raw-fifo/64B",
        f"{CROSS_CORE}/raw-fifo/64B",
        "ping-pong/mesh/64B",
    ]


def test_add_ratios_against_both_pinned_floors() -> None:
    """x_same_core / x_cross_core divide the p50 by the pinned raw-FIFO p50s of its size."""
    scenarios = [
        _scenario(SAME_CORE, "raw-fifo", 64, regimes=True),
        _scenario(CROSS_CORE, "raw-fifo", 64, regimes=True),
        _scenario("ping-pong", "raw-fifo", 64, regimes=True),
        _scenario("ping-pong", "mesh", 64, regimes=True),
        _scenario("ping-pong", "zmq-pair", 64),  # no regimes: no x ratios
    ]
    rows = [
        BenchRow(s.key, s.scenario, s.transport, s.size_bytes, "ok", n=1, p50_us=p50)
        for s, p50 in zip(scenarios, (4.0, 16.0, 8.0, 40.0, 20.0), strict=True)
    ]
    out = {row.key: row for row in add_ratios(rows, scenarios)}
    mesh = out["ping-pong/mesh/64B"]
    assert (mesh.ratio, mesh.x_same_core, mesh.x_cross_core) == (5.0, 10.0, 2.5)
    assert out[f"{SAME_CORE}/raw-fifo/64B"].x_same_core == 1.0
    assert out[f"{CROSS_CORE}/raw-fifo/64B"].x_cross_core == 1.0
    zmq = out["ping-pong/zmq-pair/64B"]
    assert (zmq.ratio, zmq.x_same_core, zmq.x_cross_core) == (2.5, None, None)


def test_add_ratios_of_a_throughput_row_divides_rates() -> None:
    """A fan-in row's ratio is the raw-FIFO msgs/s over its own (above 1: slower)."""
    scenarios = [
        _scenario("fan-in-10", "raw-fifo", 64, rate=True),
        _scenario("fan-in-10", "mesh", 64, rate=True),
    ]
    rows = [
        BenchRow(s.key, s.scenario, s.transport, s.size_bytes, "ok", n=1, p50_us=1.0, msgs_per_s=r)
        for s, r in zip(scenarios, (800_000.0, 40_000.0), strict=True)
    ]
    assert [row.ratio for row in add_ratios(rows, scenarios)] == [1.0, 20.0]
