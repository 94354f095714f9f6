"""The rows and report of a benchmark run: machine facts, the text table, the JSON.

Part of the harness (`pipemesh.bench.harness` re-exports every name here); it knows
nothing about scenarios or processes, only how a finished run is written down. This
module must not print: `BenchReport.format_table` and `BenchReport.to_json` return text.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Final, Literal

__all__ = [
    "BenchReport",
    "BenchRow",
    "MachineInfo",
    "Status",
    "format_size",
    "format_table",
    "machine_info",
    "usable_cpus",
]


Status = Literal["ok", "unavailable", "error"]


@dataclass(frozen=True, slots=True)
class BenchRow:
    """One line of the table; latencies in microseconds, one-way.

    ``ratio`` is this row's p50 divided by the raw-FIFO p50 of the same (floor) scenario
    and body size measured in the same run (throughput rows: the floor's msgs/s over this
    row's). ``x_same_core`` / ``x_cross_core``: p50 over the raw-FIFO ping-pong p50 of the
    same size pinned to one core / across two cores, same run. ``note`` holds the reason
    for an ``unavailable`` or ``error`` status.
    """

    key: str
    scenario: str
    transport: str
    size_bytes: int | None
    status: Status
    n: int = 0
    p50_us: float | None = None
    p90_us: float | None = None
    p99_us: float | None = None
    max_us: float | None = None
    msgs_per_s: float | None = None
    ratio: float | None = None
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)
    x_same_core: float | None = None
    x_cross_core: float | None = None


@dataclass(frozen=True, slots=True)
class MachineInfo:
    """The facts a reader needs to compare two runs.

    ``cpus`` are the CPUs this process may run on (``os.sched_getaffinity``); the pinned
    rows use the first (same core) and the first two (cross core).
    """

    cores: int
    cpu: str
    kernel: str
    python: str
    versions: dict[str, str]
    cpus: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BenchReport:
    """The outcome of `run_bench`: machine facts, rows in run order, total duration."""

    machine: MachineInfo
    rows: list[BenchRow]
    duration_s: float
    quick: bool
    load_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def is_ok(self) -> bool:
        """True when no row failed (unavailable rows are not failures)."""
        return all(row.status != "error" for row in self.rows)

    def to_json(self) -> str:
        """The report as a JSON object: ``machine``, ``duration_s``, ``quick``, ``rows``."""
        return json.dumps(asdict(self), indent=2)

    def format_table(self) -> str:
        """The report as an aligned text table with a header line of machine facts."""
        return format_table(self)


_COLUMNS: Final = (
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
    "note",
)
_LEFT_ALIGNED: Final = frozenset({"scenario", "transport", "note"})


def format_size(size_bytes: int, *, compact: bool = False) -> str:
    """``64 B``, ``4 KiB``, ``1 MiB`` (``64B``... when `compact`)."""
    sep = "" if compact else " "
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size_bytes >= scale and size_bytes % scale == 0:
            return f"{size_bytes // scale}{sep}{unit}"
    return f"{size_bytes}{sep}B"


def _cells(row: BenchRow) -> list[str]:
    def us(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    note = row.note or ", ".join(f"{k}={v:.6g}" for k, v in row.extra.items())
    if row.status == "unavailable":
        note = f"unavailable: {row.note}"
    elif row.status == "error":
        note = f"error: {row.note}"
    return [
        row.scenario,
        row.transport,
        "-" if row.size_bytes is None else format_size(row.size_bytes),
        str(row.n) if row.status != "unavailable" else "-",
        us(row.p50_us),
        us(row.p90_us),
        us(row.p99_us),
        us(row.max_us),
        "-" if row.msgs_per_s is None else f"{row.msgs_per_s:.0f}",
        "-" if row.ratio is None else f"{row.ratio:.2f}",
        "-" if row.x_same_core is None else f"{row.x_same_core:.2f}",
        "-" if row.x_cross_core is None else f"{row.x_cross_core:.2f}",
        note,
    ]


def _pinning(cpus: Sequence[int]) -> str:
    if not cpus:
        return "pinned rows: CPU affinity unknown"
    if len(cpus) == 1:
        return (
            f"this machine has one core (cpu {cpus[0]}): same-core rows pinned to it,"
            " cross-core rows unavailable"
        )
    return f"pinned rows: same core = cpu {cpus[0]}, cross core = cpus {cpus[0]} and {cpus[1]}"


def _load(load: Sequence[float]) -> str:
    return "/".join(f"{v:.1f}" for v in load)


def format_table(report: BenchReport) -> str:
    """Render `report` as text: machine header, column header, one line per row."""
    m = report.machine
    versions = ", ".join(f"{k} {v}" for k, v in m.versions.items())
    header = [
        f"# pipemesh bench ({'quick: numbers are not meaningful' if report.quick else 'full'})"
        f" - {m.cores} cores ({m.cpu}), Linux {m.kernel}, Python {m.python}",
        f"# {versions}" if versions else "#",
        "# one-way latency in us (ping-pong: round trip / 2; fan-in: send stamp to receipt,"
        " queueing included); msgs_per_s: messages delivered per second (a round trip is 2;"
        " fan-in: middle 80% of receipts);"
        " ratio = p50 / raw-fifo p50 of the same scenario and size in this run"
        " (fan-in: raw-fifo msgs/s / msgs/s);"
        " x_same / x_cross = p50 / raw-fifo ping-pong p50 of the same size pinned to one core"
        " / across two cores in this run;"
        f" took {report.duration_s:.0f}s",
        f"# {_pinning(m.cpus)}; load average (1/5/15 min) {_load(report.load_start)} at the"
        f" start, {_load(report.load_end)} at the end",
    ]
    grid = [list(_COLUMNS), *(_cells(row) for row in report.rows)]
    widths = [max(len(line[i]) for line in grid) for i in range(len(_COLUMNS))]
    lines = []
    for line in grid:
        cells = [
            cell.ljust(width) if name in _LEFT_ALIGNED else cell.rjust(width)
            for cell, width, name in zip(line, widths, _COLUMNS, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join([*header, *lines]) + "\n"


def machine_info() -> MachineInfo:
    """Cores, CPU model, kernel, Python, and the versions of the baseline engines."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass  # not Linux, or /proc not mounted: platform's answer stands
    versions: dict[str, str] = {}
    from importlib import metadata  # noqa: PLC0415  # only needed for this header

    for dist in ("pyzmq", "redis"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    redis_server = shutil.which("redis-server")
    if redis_server is not None:
        try:
            out = subprocess.run(
                [redis_server, "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
            versions["redis-server"] = next(
                (p[2:] for p in out.split() if p.startswith("v=")), out.strip()
            )
        except (OSError, subprocess.TimeoutExpired):
            versions["redis-server"] = "unknown"
    else:
        versions["redis-server"] = "not installed"
    return MachineInfo(
        cores=os.cpu_count() or 0,
        cpu=cpu,
        kernel=platform.release(),
        python=f"{platform.python_version()} ({platform.python_implementation()})",
        versions=versions,
        cpus=usable_cpus(),
    )


def usable_cpus() -> list[int]:
    """The CPUs this process may run on, ascending (``os.sched_getaffinity``)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))
