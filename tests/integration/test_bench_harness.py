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
FAN_IN_SIZES = (64, 4096)
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
)
NUMBERS = ("p50_us", "p90_us", "p99_us", "max_us", "msgs_per_s", "ratio")


def _bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipemesh.bench", "--quick", "-q", *args],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
        check=False,
    )


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


@pytest.mark.timeout(180)
def test_bench_quick_json_has_every_baseline_row() -> None:
    """A quick run exits 0 and reports every baseline row, measured or with a reason."""
    proc = _bench("--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    report = json.loads(proc.stdout)
    assert report["quick"] is True
    assert report["machine"]["cores"] >= 1
    assert report["machine"]["kernel"]
    rows = {row["key"]: row for row in report["rows"]}
    expected = [
        ("ping-pong", transport, size)
        for size in PING_PONG_SIZES
        for transport in PING_PONG_TRANSPORTS
    ] + [(f"fan-in-{n}", "raw-fifo", size) for n in QUICK_FAN_IN_SENDERS for size in FAN_IN_SIZES]
    assert len(rows) == len(report["rows"]) == len(expected)
    for scenario, transport, size in expected:
        matches = [
            r
            for r in rows.values()
            if (r["scenario"], r["transport"], r["size_bytes"]) == (scenario, transport, size)
        ]
        assert len(matches) == 1, (scenario, transport, size)
        _check_row(matches[0])
        if transport == "raw-fifo":
            assert matches[0]["status"] == "ok"
            assert matches[0]["ratio"] == pytest.approx(1.0)


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
    assert len(table) == 3  # column header, the selected row, and its raw-FIFO floor
    ratio_end = table[0].index("ratio") + len("ratio")
    for line in table[1:]:
        cells = line.split()
        assert cells[0] == "ping-pong"
        assert cells[1] in ("unix-socket", "raw-fifo")
        assert line[ratio_end - 1] != " "  # right-aligned under its header
        assert float(cells[-1]) > 0


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
    assert len(floors) == len(PING_PONG_SIZES)


def test_bench_unknown_only_pattern_is_usage_error() -> None:
    """A --only pattern that selects nothing exits 2 with an error on stderr."""
    proc = _bench("--only", "no-such-transport")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ")
    assert proc.stdout == ""
