"""Issue 10's goals, met or missed, from one ``pipemesh bench --json`` run.

Every figure comes from the one run given (ratios are same-run), mesh rows with logging on
as shipped. Prints a Markdown table for BENCHMARKS.md; with ``--table``, first the run's
table as ``pipemesh bench`` prints it (so one run gives both).

    .venv/bin/pipemesh bench --json > run.json
    .venv/bin/python bench/issue10_goals.py [--table] run.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

Row = dict[str, Any]


def _row(rows: dict[str, Row], key: str) -> Row | None:
    row = rows.get(key)
    return row if row is not None and row["status"] == "ok" else None


def _line(goal: str, figure: str, met: bool | None) -> str:
    verdict = "n/a (row missing)" if met is None else ("met" if met else "**missed**")
    return f"| {goal} | {figure} | {verdict} |"


def goals(report: dict[str, Any]) -> list[str]:
    """One Markdown table line per goal."""
    rows = {row["key"]: row for row in report["rows"]}
    out = ["| goal (issue 10) | this run | met? |", "| --- | --- | --- |"]

    def ratio(goal: str, key: str, limit: float, field: str = "ratio") -> None:
        row = _row(rows, key)
        if row is None or row[field] is None:
            out.append(_line(goal, f"`{key}` not measured", None))
            return
        out.append(_line(goal, f"{row['p50_us']:.1f} us = {row[field]:.2f}x", row[field] <= limit))

    ratio("64 B one-way p50 <= 2.0x raw FIFO, same core", "ping-pong-same-core/mesh/64B", 2.0)
    ratio("64 B one-way p50 <= 1.3x raw FIFO, cross core", "ping-pong-cross-core/mesh/64B", 1.3)
    for regime, label in (("ping-pong-same-core", "same core"), ("ping-pong", "unpinned")):
        mesh, zmq = _row(rows, f"{regime}/mesh/64B"), _row(rows, f"{regime}/zmq-pair/64B")
        goal = f"64 B one-way p50 <= 0.4x pyzmq PAIR ({label})"
        if mesh is None or zmq is None:
            out.append(_line(goal, "rows not measured", None))
        else:
            x = mesh["p50_us"] / zmq["p50_us"]
            figure = f"{mesh['p50_us']:.1f} / {zmq['p50_us']:.1f} us = {x:.2f}x"
            out.append(_line(goal, figure, x <= 0.4))
    ratio(
        "public-API shape (`ask()`, hand-off to the caller) <= 2.5x same core",
        "ping-pong-same-core/mesh-ask/64B",
        2.5,
    )
    idle_key = next((k for k in rows if k.startswith("ping-pong-") and "-idle/mesh/64B" in k), "")
    idle = _row(rows, idle_key)
    if idle is None:
        out.append(_line("p99 <= 100 us with 100 idle agents", "row not measured", None))
    else:
        out.append(
            _line(
                f"p99 <= 100 us with idle agents (`{idle_key}`)",
                f"{idle['p99_us']:.1f} us",
                idle["p99_us"] <= 100,
            )
        )
    fan = _row(rows, "fan-in-10/mesh/64B")
    if fan is None:
        out.append(_line("fan-in from 10 senders >= 400k msgs/s", "row not measured", None))
    else:
        out.append(
            _line(
                "fan-in from 10 senders >= 400k msgs/s",
                f"{fan['msgs_per_s']:,.0f} msgs/s (raw FIFO / mesh = {fan['ratio']:.1f}x)",
                fan["msgs_per_s"] >= 400_000,
            )
        )
    cast = _row(rows, "broadcast-100/mesh/64B")
    if cast is None:
        out.append(_line("broadcast to 100, last delivery p50 <= 2.5 ms", "not measured", None))
    else:
        raw = _row(rows, "broadcast-100/raw-fifo/64B")
        raw_text = f", raw FIFO {raw['p50_us'] / 1000:.2f} ms" if raw else ""
        out.append(
            _line(
                "broadcast to 100, last delivery p50 <= 2.5 ms",
                f"{cast['p50_us'] / 1000:.2f} ms{raw_text}",
                cast["p50_us"] <= 2500,
            )
        )
    ratio("64 KiB one-way p50 <= 3x raw FIFO (unpinned)", "ping-pong/mesh/64KiB", 3.0)
    big = _row(rows, "ping-pong/mesh/1MiB")
    bases = [
        r
        for r in rows.values()
        if r["scenario"] == "ping-pong"
        and r["size_bytes"] == 1 << 20
        and not r["transport"].startswith("mesh")
        and r["status"] == "ok"
    ]
    if big is None or not bases:
        out.append(_line("1 MiB <= best baseline x 1.5", "rows not measured", None))
    else:
        best = min(bases, key=lambda r: r["p50_us"])
        x = big["p50_us"] / best["p50_us"]
        out.append(
            _line(
                "1 MiB one-way p50 <= best baseline in the run x 1.5",
                f"{big['p50_us']:.0f} us vs {best['transport']} {best['p50_us']:.0f} us = {x:.2f}x",
                x <= 1.5,
            )
        )
    if idle is None:
        out.append(_line("idle agent RSS < 25 MiB and 0 CPU", "row not measured", None))
    else:
        extra = idle["extra"]
        out.append(
            _line(
                "idle agent RSS < 25 MiB and 0 CPU",
                f"RSS max {extra['idle_rss_mib_max']:.1f} MiB, CPU of all idle agents over"
                f" the phase {extra['idle_cpu_ms']:.0f} ms",
                extra["idle_rss_mib_max"] < 25 and extra["idle_cpu_ms"] == 0,
            )
        )
    return out


def table(report: dict[str, Any]) -> str:
    """The run as the text table ``pipemesh bench`` prints."""
    from pipemesh.bench.harness import BenchReport, BenchRow, MachineInfo

    return BenchReport(
        machine=MachineInfo(**report["machine"]),
        rows=[BenchRow(**row) for row in report["rows"]],
        duration_s=report["duration_s"],
        quick=report["quick"],
        load_start=tuple(report["load_start"]),
        load_end=tuple(report["load_end"]),
    ).format_table()


def main() -> None:
    args = sys.argv[1:]
    with_table = "--table" in args
    paths = [a for a in args if a != "--table"]
    if len(paths) != 1:
        sys.exit("usage: issue10_goals.py [--table] RUN.json  (from: pipemesh bench --json)")
    with open(paths[0], encoding="utf-8") as fh:
        report = json.load(fh)
    if with_table:
        print(table(report))
    print("\n".join(goals(report)))


if __name__ == "__main__":
    main()
