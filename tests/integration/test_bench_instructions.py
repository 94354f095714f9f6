"""``pipemesh bench --instructions``: instructions per hop under callgrind, or how to get valgrind.

The counts themselves are not checked against figures (they belong to BENCHMARKS.md);
only that a tiny run reports a positive count per hop for both transports, that the mesh
hop costs more than the raw-FIFO one, and that a missing valgrind is one clear line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")
def test_bench_instructions_reports_positive_counts_per_hop() -> None:
    """A --quick run counts both transports; each reports a positive number per hop."""
    argv = [sys.executable, "-m", "pipemesh", "bench", "--instructions", "--quick", "--json", "-q"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, err = proc.communicate(timeout=780)
        except subprocess.TimeoutExpired:
            # SIGTERM: the bench kills its valgrind runs (their echo children then exit).
            proc.terminate()
            out, err = proc.communicate(timeout=60)
            pytest.fail(f"--instructions --quick took over 780s: {err[-2000:]}")
    assert proc.returncode == 0, err + out
    report = json.loads(out)
    rows = {row["transport"]: row for row in report["rows"]}
    assert set(rows) == {"raw-fifo", "mesh"}
    for row in rows.values():
        assert row["hops"] == 400  # 200 round trips in --quick
        assert row["size_bytes"] == 64
        assert row["processes"] >= 2  # the driver and its traced echo child
        assert row["total"] > row["baseline"] > 0, row
        assert row["per_hop"] > 0, row
        assert row["per_hop"] == pytest.approx((row["total"] - row["baseline"]) / row["hops"])
    assert rows["mesh"]["per_hop"] > rows["raw-fifo"]["per_hop"]


def test_bench_instructions_without_valgrind_says_how_to_install(tmp_path: Path) -> None:
    """With valgrind off PATH: exit 1 and one line saying how to install it."""
    env = {**os.environ, "PATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "pipemesh.bench", "--instructions", "--quick"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: valgrind is not installed")
    assert "apt-get install valgrind" in lines[0]
