"""The commands that read the mesh's logs: ``tail`` (follow the traffic) and ``stats``.

``history`` (search past traffic) lives in :mod:`pipemesh.history` with its index.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import click

from pipemesh._term import Screen, Segment, safe
from pipemesh.cli._common import (
    SECONDS,
    State,
    StdoutClosed,
    message_segments,
    pass_state,
    print_json,
    reader_gone,
    write_out,
)
from pipemesh.clock import zone_label
from pipemesh.errors import UsageError
from pipemesh.observe import COMM_LOG, LATENCY_LOG, LogTail, latency_summary, read_log

__all__ = ["stats", "tail"]


def _follow(tail: LogTail, *, timeout_s: float) -> Iterator[dict[str, Any]]:
    """Records appended after what ``tail`` already read, as they come (across rotation)."""
    deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
    while deadline is None or time.monotonic() < deadline:
        records = tail.poll()  # follows rotation (rename) by inode, and truncation
        yield from records
        if not records:
            if reader_gone(sys.stdout.fileno()):
                raise StdoutClosed
            time.sleep(0.1)


def _record_segments(rec: dict[str, Any], *, raw: bool) -> list[Segment]:
    body = str(rec.get("body", ""))
    body = body.replace("\n", " | ") if raw else safe(body)
    if len(body) > 100:
        body = body[:97] + "..."
    event = rec.get("event", "")
    tag = "" if event == "frame_sent" else f" [{safe(event)}]"
    return [
        *message_segments(
            ts=float(rec["ts"]),
            sender=rec.get("from"),
            to=rec.get("to"),
            msg_type=rec.get("type"),
            priority=rec.get("priority"),
            msg_id=rec.get("id"),
            reply_to=rec.get("re"),
            extra=tag,
        ),
        (f"  {body}", ""),
    ]


@click.command()
@click.option("-n", "--lines", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--no-follow", is_flag=True, help="Print and exit instead of following.")
@click.option("--all", "all_events", is_flag=True, help="Show received/misrouted events too.")
@click.option("--timeout", "timeout_s", type=SECONDS, default=0.0, help="Stop after SECONDS.")
@click.option("--raw", is_flag=True, help="Print bodies unescaped (control characters too).")
@pass_state
def tail(
    state: State, lines: int, no_follow: bool, all_events: bool, timeout_s: float, raw: bool
) -> None:
    """Follow the mesh traffic (each message once, as sent), readably; -n N shows the last N."""
    from pipemesh.history import clean_record  # noqa: PLC0415 - the one record check

    path = state.home().logs_dir / COMM_LOG
    screen = Screen()
    skipped = 0

    def wanted(rec: dict[str, Any]) -> bool:
        nonlocal skipped
        if clean_record(rec) is None:
            skipped += 1
            if skipped == 1:
                click.echo(f"warning: skipping malformed records in {path}", err=True)
            return False
        return all_events or rec.get("event") == "frame_sent"

    with LogTail(path) as log_tail:  # one reader: nothing slips between the past and the new
        shown = [r for r in log_tail.poll() if wanted(r)]
        records: Iterator[dict[str, Any]] = iter(shown[-lines:] if lines else [])
        if not no_follow:
            click.echo(f"following {path} (times in {zone_label()}); Ctrl-C to stop", err=True)
            records = itertools.chain(
                records, (r for r in _follow(log_tail, timeout_s=timeout_s) if wanted(r))
            )
        elif shown and not state.as_json:
            click.echo(f"times in {zone_label()}", err=True)
        for rec in records:
            try:
                if state.as_json:
                    screen.text(json.dumps(rec, ensure_ascii=False))
                else:
                    screen.line(_record_segments(rec, raw=raw))
            except BrokenPipeError:
                raise StdoutClosed from None


_PLOT_FORMATS: Final = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


@click.command()
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw latency and messages/s per agent to FILE (.png, .svg or .pdf).",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the same charts as a self-contained FILE.html.",
)
@pass_state
def stats(state: State, plot_path: Path | None, html_path: Path | None) -> None:
    """Latency p50/p90/p99/max per receiving agent, from mesh_latency.log."""
    latency_log = state.home().logs_dir / LATENCY_LOG
    fmt = ""
    if plot_path is not None:
        fmt = _PLOT_FORMATS.get(plot_path.suffix.lower(), "")
        if not fmt:
            raise UsageError(
                f"--plot {plot_path}: the file type comes from its name; "
                "end it in .png, .svg or .pdf"
            )
    if plot_path or html_path:
        from pipemesh.plots import write_charts  # noqa: PLC0415 - matplotlib is an extra

        for written in write_charts(latency_log, plot=plot_path, fmt=fmt, html_out=html_path):
            click.echo(f"wrote {written}", err=True)
    records = list(read_log(latency_log))
    rows = latency_summary(records)
    if state.as_json:
        print_json([dataclasses.asdict(r) for r in rows])
        return
    if not rows:
        write_out("no latency records yet; send some messages first")
        return
    stamps = [float(t) for r in records if isinstance(t := r.get("ts"), int | float)]
    title = ""
    if stamps:
        from pipemesh.clock import format_stamp  # noqa: PLC0415 - only for the title

        title = f"latency (us) of messages handled {format_stamp(min(stamps))} to "
        title += format_stamp(max(stamps))
    Screen().table(
        ("AGENT", "COUNT", "P50_US", "P90_US", "P99_US", "MAX_US"),
        [
            (
                safe(r.agent),
                r.count,
                f"{r.p50_us:.1f}",
                f"{r.p90_us:.1f}",
                f"{r.p99_us:.1f}",
                f"{r.max_us:.1f}",
            )
            for r in rows
        ],
        title=title,
        styles=("bold cyan",),
    )
