"""``pipemesh bench --instructions``: instructions per 64 B hop, counted by callgrind.

Latency on a shared 2-core VM moves with the load; the number of instructions a hop
executes does not. This module runs `pipemesh.bench._hops` (a driver and its echo child)
under ``valgrind --tool=callgrind --trace-children=yes``, once with N measured round trips
and once with none (same start-up, same warm-up), sums the instructions of every traced
process from the callgrind output files, and reports::

    instructions per hop = (total with N round trips - total with 0) / (2 N)

A hop is one message one way: sent (encode, write), read, decoded, routed and handled by
the other side. Callgrind counts user-space instructions only: the kernel's part of a hop
(the pipe write and the wake-up, the raw-FIFO floor in time) is not in the count, which is
why the raw-FIFO row is small. It is a regression guard, not a latency: compare runs of
the same machine and Python.

If valgrind is not installed, `run_instructions` raises `ValgrindMissing`; the CLI prints
how to install it and exits 1. This module must not print.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from pipemesh.bench import _hops
from pipemesh.bench._hops import TRANSPORT_MESH, TRANSPORT_RAW

#: What the CLI prints when valgrind is missing (one line).
INSTALL_HINT: Final = (
    "valgrind is not installed: install it with 'apt-get install valgrind' (or 'make bench-setup')"
)

#: Round trips measured by default (2 hops each), and for --quick. Start-up varies by up
#: to ~0.1M instructions between runs (measured; not every source of it is time-driven:
#: ASLR changes where objects live, and with it dict probing), so even --quick measures
#: enough hops that the raw FIFO's ~2k per hop stands well above that noise.
DEFAULT_ROUND_TRIPS: Final = 1000
QUICK_ROUND_TRIPS: Final = 200
#: Unmeasured round trips in both runs (first-use costs: lazy imports, caches, peer lookup).
DEFAULT_WARMUP: Final = 50
QUICK_WARMUP: Final = 5

#: Upper bound on one valgrind run (Python under callgrind is ~50x slower).
_RUN_TIMEOUT_S: Final = 1800.0


class ValgrindMissing(Exception):
    """valgrind is not on PATH (the CLI turns it into `INSTALL_HINT` and exit 1)."""


class CountFailed(Exception):
    """A run under valgrind failed or wrote no callgrind output."""


@dataclass(frozen=True, slots=True)
class InstructionRow:
    """Instruction counts of one transport.

    Attributes:
        transport: ``raw-fifo`` or ``mesh``.
        size_bytes: body size of each hop.
        hops: measured hops (two per round trip).
        total: instructions of the run with the measured hops (all traced processes).
        baseline: instructions of the run with 0 measured hops.
        processes: callgrind output files summed in the measured run.
        per_hop: ``(total - baseline) / hops``.
    """

    transport: str
    size_bytes: int
    hops: int
    total: int
    baseline: int
    processes: int
    per_hop: float


@dataclass(frozen=True, slots=True)
class InstructionReport:
    """Rows per transport, plus what produced them."""

    rows: list[InstructionRow]
    valgrind: str
    python: str
    warmup_round_trips: int
    quick: bool

    def to_json(self) -> str:
        """The report as JSON (``rows`` with ``per_hop`` each)."""
        return json.dumps(asdict(self), indent=2)

    def format_table(self) -> str:
        """An aligned text table with a header saying how the numbers were made."""
        lines = [
            f"# pipemesh bench --instructions ({'quick' if self.quick else 'full'})"
            f" - {self.valgrind} --tool=callgrind --trace-children=yes, Python {self.python}",
            "# user-space instructions of every process (driver + echo), summed from the"
            " callgrind files; per_hop = (total - baseline) / hops, baseline = the same run"
            f" with 0 measured hops (start-up + {self.warmup_round_trips} warm-up round trips"
            " in both); a hop is one message one way. Kernel work is not counted.",
        ]
        grid = [["transport", "size", "hops", "total", "baseline", "per_hop", "x_raw"]]
        raw = next((r.per_hop for r in self.rows if r.transport == TRANSPORT_RAW), 0.0)
        for row in self.rows:
            grid.append(
                [
                    row.transport,
                    f"{row.size_bytes} B",
                    str(row.hops),
                    f"{row.total:,}",
                    f"{row.baseline:,}",
                    f"{row.per_hop:,.0f}",
                    f"{row.per_hop / raw:.1f}" if raw > 0 else "-",
                ]
            )
        widths = [max(len(line[i]) for line in grid) for i in range(len(grid[0]))]
        for line in grid:
            cells = [line[0].ljust(widths[0])]
            cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines) + "\n"


def callgrind_total(path: Path) -> int:
    """The instruction total of one callgrind output file (its ``totals:`` line).

    Raises:
        CountFailed: the file has no totals line (the process died before writing it).
    """
    summary = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("totals:"):
                return int(line.split()[1])
            if line.startswith("summary:"):
                summary = int(line.split()[1])
    if summary is not None:
        return summary
    raise CountFailed(f"{path.name} has no 'totals:' line; did the process die?")


@dataclass(slots=True)
class _Run:
    """One started valgrind run and the directory its callgrind files go to."""

    transport: str
    proc: subprocess.Popen[str]
    out: Path


def _start_run(
    valgrind: str, work: Path, transport: str, size: int, round_trips: int, warmup: int
) -> _Run:
    out = work / "cg"
    out.mkdir()
    argv = [
        valgrind,
        "--tool=callgrind",
        "--trace-children=yes",
        f"--callgrind-out-file={out}/callgrind.out.%p",
        sys.executable,
        _hops.__file__,  # by path: see the module docstring of _hops
        "--transport",
        transport,
        "--round-trips",
        str(round_trips),
        "--warmup",
        str(warmup),
        "--size",
        str(size),
        "--dir",
        str(work),
    ]
    # A fixed hash seed: with random ones, dict and set layouts (and so instruction
    # counts) differ a little from run to run, which is noise against the 0-hop run.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    with open(work / "stderr", "w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            env=env,
        )
    return _Run(transport, proc, out)


def _finish_run(run: _Run, timeout_s: float) -> tuple[int, int]:
    """Wait for `run`; return (instructions summed over its processes, processes)."""
    try:
        code = run.proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise CountFailed(f"{run.transport} under valgrind took over {timeout_s:g}s") from exc
    if code != 0:
        text = (run.out.parent / "stderr").read_text(encoding="utf-8", errors="replace")
        tail = " | ".join(text.strip().splitlines()[-4:])
        raise CountFailed(f"{run.transport} under valgrind exited {code}: {tail}")
    files = sorted(run.out.glob("callgrind.out.*"))
    if not files:
        raise CountFailed(f"{run.transport} under valgrind wrote no callgrind output")
    return sum(callgrind_total(f) for f in files), len(files)


def count_runs(
    valgrind: str,
    jobs: list[tuple[str, int]],
    *,
    size: int,
    warmup: int,
    parent: str | None,
    progress: Callable[[str], None] | None = None,
) -> list[tuple[int, int]]:
    """Run `pipemesh.bench._hops` under callgrind for each (transport, round trips) job.

    Two runs at a time: instruction counts do not depend on the load, and a run mostly
    waits on its other process. Killing a driver ends its echo child too (the child
    reads EOF). Returns (instructions, processes) per job, in order.

    Raises:
        CountFailed: a run failed, timed out, or left no callgrind output.
    """
    results: list[tuple[int, int]] = []
    with tempfile.TemporaryDirectory(prefix="pmi-", dir=parent) as tmp:
        for first in range(0, len(jobs), 2):
            runs: list[_Run] = []
            try:
                for i, (transport, n) in enumerate(jobs[first : first + 2], first):
                    if progress is not None:
                        progress(f"callgrind: {transport}, {n} round trips after {warmup} warm-up")
                    work = Path(tmp) / f"run-{i}"
                    work.mkdir()
                    runs.append(_start_run(valgrind, work, transport, size, n, warmup))
                results += [_finish_run(run, _RUN_TIMEOUT_S) for run in runs]
            finally:
                for run in runs:
                    if run.proc.poll() is None:
                        run.proc.kill()
                    run.proc.wait()
    return results


def run_instructions(
    *,
    round_trips: int = DEFAULT_ROUND_TRIPS,
    warmup: int = DEFAULT_WARMUP,
    size: int = 64,
    quick: bool = False,
    tmp_dir: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> InstructionReport:
    """Count instructions per hop for the raw FIFO and the mesh.

    Four valgrind runs: each transport with `round_trips` measured round trips and with
    none, both after `warmup` round trips (see `count_runs`).

    Raises:
        ValgrindMissing: valgrind is not on PATH.
        CountFailed: a run failed.
        ValueError: `round_trips` is not positive.
    """
    if round_trips <= 0:
        raise ValueError(f"round trips must be positive, got {round_trips}")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise ValgrindMissing(INSTALL_HINT)
    version = subprocess.run(
        [valgrind, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    jobs = [(t, n) for t in (TRANSPORT_RAW, TRANSPORT_MESH) for n in (round_trips, 0)]
    counts = count_runs(valgrind, jobs, size=size, warmup=warmup, parent=tmp_dir, progress=progress)
    rows = []
    for i, transport in enumerate((TRANSPORT_RAW, TRANSPORT_MESH)):
        (total, processes), (baseline, _) = counts[2 * i], counts[2 * i + 1]
        hops = 2 * round_trips
        rows.append(
            InstructionRow(
                transport=transport,
                size_bytes=size,
                hops=hops,
                total=total,
                baseline=baseline,
                processes=processes,
                per_hop=(total - baseline) / hops,
            )
        )
    import platform  # noqa: PLC0415  # only for the header

    return InstructionReport(
        rows=rows,
        valgrind=version or "valgrind",
        python=f"{platform.python_version()} ({platform.python_implementation()})",
        warmup_round_trips=warmup,
        quick=quick,
    )
