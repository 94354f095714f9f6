"""The benchmark harness runs a tiny configuration and produces a well-formed table and JSON.

Speed is not tested here (the benchmark itself measures it); only that every expected row
is present, measured rows carry positive numbers, and rows that cannot run say why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

PING_PONG_TRANSPORTS = (
    "raw-fifo",
    "raw-fifo-big-pipe",
    "unix-socket",
    "mp-pipe",
    "zmq-pair",
    "zmq-dealer-router",
    "redis-pubsub",
)
PING_PONG_SIZES = (64, 4096, 65536, 1 << 20)
QUICK_FAN_IN_SENDERS = (2, 4)
QUICK_IDLE_AGENTS = 3
QUICK_BROADCAST_TO = (2, 4)
FAN_IN_SIZES = (64, 4096)
REGIMES = ("ping-pong-same-core", "ping-pong-cross-core")
#: With one usable CPU the cross-core rows are unavailable (test_bench_one_core_...).
MULTI_CORE = len(os.sched_getaffinity(0)) >= 2
TABLE_COLUMNS = (
    "scenario",
    "transport",
    "size",
    "n",
    "p50_us",
    "p90_us",
    "p99_us",
    "max_us",
    "msgs_per_s",
    "ratio",
    "x_same",
    "x_cross",
)
NUMBERS = ("p50_us", "p90_us", "p99_us", "max_us", "msgs_per_s", "ratio")


def _bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # The whole quick run starts ~200 Python processes: minutes on a loaded 2-core VM.
    argv = [sys.executable, "-m", "pipemesh.bench", "--quick", "-q", *args]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            out, err = proc.communicate(timeout=420)
        except subprocess.TimeoutExpired:
            # SIGTERM, not subprocess.run's SIGKILL: the bench unwinds and kills and reaps
            # its workers (a SIGKILL left them running, orphaned, after a timeout).
            proc.terminate()
            out, err = proc.communicate(timeout=60)
            pytest.fail(f"pipemesh bench --quick took over 420s: {err[-2000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _check_row(row: dict[str, Any]) -> None:
    assert row["status"] in ("ok", "unavailable"), row
    if row["status"] == "unavailable":
        assert row["note"], row
        assert all(row[name] is None for name in NUMBERS), row
        return
    assert row["n"] > 0, row
    for name in NUMBERS:
        assert isinstance(row[name], float), row
        assert row[name] > 0, row
    assert row["p50_us"] <= row["p90_us"] <= row["p99_us"] <= row["max_us"], row
    if row["scenario"].startswith("ping-pong"):
        # Against both pinned raw-FIFO floors of the same size, same run.
        assert row["x_same_core"] > 0, row
        assert row["x_cross_core"] > 0 if MULTI_CORE else row["x_cross_core"] is None, row


@pytest.fixture(scope="module")
def quick_report() -> dict[str, Any]:
    """One quick run of every scenario, shared by the tests that read its JSON."""
    proc = _bench("--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


@pytest.mark.timeout(480)
def test_bench_quick_json_has_every_baseline_row(quick_report: dict[str, Any]) -> None:
    """A quick run exits 0 and reports every baseline row, measured or with a reason."""
    report = quick_report
    assert report["quick"] is True
    assert report["machine"]["cores"] >= 1
    assert report["machine"]["kernel"]
    rows = {row["key"]: row for row in report["rows"] if not row["transport"].startswith("mesh")}
    expected = [
        ("ping-pong", transport, size)
        for size in PING_PONG_SIZES
        for transport in PING_PONG_TRANSPORTS
    ] + [(f"fan-in-{n}", "raw-fifo", size) for n in QUICK_FAN_IN_SENDERS for size in FAN_IN_SIZES]
    expected += [(regime, "raw-fifo", size) for regime in REGIMES for size in PING_PONG_SIZES]
    expected += [(regime, "zmq-pair", 64) for regime in REGIMES]
    expected += [(f"broadcast-{n}", "raw-fifo", 64) for n in QUICK_BROADCAST_TO]
    assert len(rows) == len(expected)
    for scenario, transport, size in expected:
        matches = [
            r
            for r in rows.values()
            if (r["scenario"], r["transport"], r["size_bytes"]) == (scenario, transport, size)
        ]
        assert len(matches) == 1, (scenario, transport, size)
        _check_row(matches[0])
        if scenario == "ping-pong-cross-core" and not MULTI_CORE:
            assert matches[0]["status"] == "unavailable"
            continue
        if transport == "raw-fifo":
            assert matches[0]["status"] == "ok"
            assert matches[0]["ratio"] == pytest.approx(1.0)
        if (scenario, transport) == ("ping-pong-same-core", "raw-fifo"):
            assert matches[0]["x_same_core"] == pytest.approx(1.0)
        if (scenario, transport) == ("ping-pong-cross-core", "raw-fifo"):
            assert matches[0]["x_cross_core"] == pytest.approx(1.0)
    assert report["machine"]["cpus"], "the CPUs the pinned rows use are reported"


@pytest.mark.timeout(480)
def test_bench_quick_json_has_every_mesh_row(quick_report: dict[str, Any]) -> None:
    """The mesh rows are all there and measured: ping-pong (handler loop, ask, no log),
    ping-pong among idle agents with their CPU and RSS, fan-in, broadcast, join/leave."""
    rows = [r for r in quick_report["rows"] if r["transport"].startswith("mesh")]
    got = {(r["scenario"], r["transport"], r["size_bytes"]): r for r in rows}
    expected = [
        *[("ping-pong", t, size) for size in PING_PONG_SIZES for t in ("mesh", "mesh-ask")],
        ("ping-pong", "mesh-nolog", 64),
        *[  # large bodies: the PART-frame path body files replace, and no logs
            ("ping-pong", t, size)
            for size in PING_PONG_SIZES
            if size >= 64 * 1024
            for t in ("mesh-parts", "mesh-nolog")
        ],
        *[(regime, t, 64) for regime in REGIMES for t in ("mesh", "mesh-ask")],
        *[(f"ping-pong-{QUICK_IDLE_AGENTS}-idle", "mesh", size) for size in PING_PONG_SIZES],
        *[(f"fan-in-{n}", "mesh", size) for n in QUICK_FAN_IN_SENDERS for size in FAN_IN_SIZES],
        *[(f"broadcast-{n}", "mesh", 64) for n in QUICK_BROADCAST_TO],
        ("join-leave", "mesh", None),
        ("throughput-1", "mesh", 64),
        ("throughput-1", "mesh-durable", 64),
    ]
    assert sorted(got, key=str) == sorted(expected, key=str)
    for key, row in got.items():
        if key[0] == "ping-pong-cross-core" and not MULTI_CORE:
            assert row["status"] == "unavailable", row
            continue
        assert row["status"] == "ok", row
        assert row["n"] > 0, row
        assert row["p50_us"] <= row["p90_us"] <= row["p99_us"] <= row["max_us"], row
        assert row["msgs_per_s"] > 0, row
        scenario = key[0]
        if scenario.startswith(("ping-pong", "fan-in", "broadcast")):
            assert row["ratio"] > 0, row  # against the raw-FIFO row of the same run
        else:
            assert row["ratio"] is None, row  # no raw-FIFO floor for these
        if scenario.startswith("ping-pong"):
            assert row["x_same_core"] > 0, row
            assert row["x_cross_core"] > 0 if MULTI_CORE else row["x_cross_core"] is None, row
        else:
            assert row["x_same_core"] is None, row
        if scenario.endswith("-idle"):
            assert row["extra"]["idle_cpu_ms"] >= 0, row
            assert row["extra"]["idle_rss_mib_mean"] > 0, row
        if scenario == "join-leave":
            assert row["extra"]["idle_rss_mib"] > 0, row
            assert row["extra"]["leave_p50_us"] > 0, row


def test_pipemesh_bench_command_passes_arguments_through() -> None:
    """`pipemesh bench` runs the harness with the same flags as `python -m pipemesh.bench`."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipemesh", "bench", "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    keys = proc.stdout.split()
    assert "ping-pong/mesh/64B" in keys
    assert "join-leave/mesh/-" in keys
    bad = subprocess.run(
        [sys.executable, "-m", "pipemesh", "bench", "--only", "no-such-row"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ")


def test_bench_quick_table_is_aligned() -> None:
    """The table has the machine header, the column header, and one aligned line per row."""
    proc = _bench("--only", "ping-pong/unix-socket/64B")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = proc.stdout.splitlines()
    header = [line for line in lines if line.startswith("#")]
    table = [line for line in lines if not line.startswith("#")]
    assert "cores" in header[0]
    assert "Linux" in header[0]
    assert "Python" in header[0]
    assert tuple(table[0].split()[: len(TABLE_COLUMNS)]) == TABLE_COLUMNS
    # Column header, the selected row, its raw-FIFO floor and the two pinned floors.
    assert len(table) == 5
    ratio_end = table[0].index("ratio") + len("ratio")
    for line in table[1:]:
        cells = line.split()
        assert cells[0] in ("ping-pong", *REGIMES)
        assert cells[1] in ("unix-socket", "raw-fifo")
        assert line[ratio_end - 1] != " "  # right-aligned under its header
        if MULTI_CORE or cells[0] != "ping-pong-cross-core":
            assert float(cells[-3]) > 0  # ratio
            assert float(cells[-2]) > 0  # x_same
        if MULTI_CORE:
            assert float(cells[-1]) > 0  # x_cross
    assert any("pinned rows: same core = cpu" in line for line in header)
    assert any("load average" in line for line in header)


def test_bench_without_redis_server_says_unavailable(tmp_path: Path) -> None:
    """With redis-server off PATH, the Redis rows say why instead of showing numbers."""
    env = {**os.environ, "PATH": str(tmp_path)}
    proc = _bench("--json", "--only", "redis-pubsub", env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rows = json.loads(proc.stdout)["rows"]
    redis_rows = [r for r in rows if r["transport"] == "redis-pubsub"]
    assert len(redis_rows) == len(PING_PONG_SIZES)
    for row in redis_rows:
        assert row["status"] == "unavailable"
        assert "redis-server" in row["note"]
        _check_row(row)
    floors = [r for r in rows if r["transport"] == "raw-fifo"]
    assert len(floors) == len(PING_PONG_SIZES) * (1 + len(REGIMES))


def test_bench_unknown_only_pattern_is_usage_error() -> None:
    """A --only pattern that selects nothing exits 2 with an error on stderr."""
    proc = _bench("--only", "no-such-transport")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ")
    assert proc.stdout == ""


def test_bench_one_core_says_so_and_skips_cross_core() -> None:
    """Pinned to one CPU, the cross-core rows say the machine has one core; same-core runs."""
    code = (
        "import os, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from pipemesh.bench.cli import main; "
        "sys.exit(main(['--quick', '-q', '--only', 'ping-pong-cross-core/raw-fifo/64B']))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=150, check=False
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "this machine has one core" in proc.stdout  # the header
    rows = [line for line in proc.stdout.splitlines() if line.startswith("ping-pong")]
    cross = [line for line in rows if line.startswith("ping-pong-cross-core")]
    same = [line for line in rows if line.startswith("ping-pong-same-core")]
    assert len(cross) == 1
    assert "unavailable: this machine has one core" in cross[0]
    assert len(same) == 1
    assert "unavailable" not in same[0]
