"""Latency pictures for ``pipemesh stats --plot FILE.{png,svg,pdf}`` / ``--html FILE.html``.

Reads ``mesh_latency.log`` (and its rotated files) and draws, per receiving
agent, the latency distribution and the messages handled per second over time.
Drawing uses matplotlib's Agg backend (no display, no GUI toolkit); matplotlib
is imported only here, so it stays an optional extra (``pipemesh[plot]``).
Nothing here touches the mesh itself.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipemesh.clock import format_stamp
from pipemesh.errors import UsageError
from pipemesh.observe import percentile, read_log

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["AgentSeries", "collect_series", "write_charts"]


@dataclass(slots=True)
class AgentSeries:
    """One receiving agent's latency samples and their timestamps."""

    agent: str
    ts: list[float] = field(default_factory=list)
    latency_us: list[float] = field(default_factory=list)

    def rate_per_s(self, bin_s: float = 1.0) -> tuple[list[float], list[float]]:
        """(seconds since the first sample, messages/s) in bins of ``bin_s``."""
        if not self.ts:
            return [], []
        start = min(self.ts)
        counts = [0] * (int((max(self.ts) - start) // bin_s) + 1)
        for t in self.ts:
            counts[int((t - start) // bin_s)] += 1
        return [i * bin_s for i in range(len(counts))], [c / bin_s for c in counts]


def collect_series(records: Iterable[dict[str, object]]) -> dict[str, AgentSeries]:
    """Group latency records (``message_handled``/``reply_received``) by receiving agent."""
    out: dict[str, AgentSeries] = {}
    for rec in records:
        agent, ts, lat = rec.get("agent"), rec.get("ts"), rec.get("latency_us")
        if isinstance(agent, str) and isinstance(ts, int | float) and isinstance(lat, int | float):
            series = out.get(agent) or out.setdefault(agent, AgentSeries(agent))
            series.ts.append(float(ts))
            series.latency_us.append(float(lat))
    return dict(sorted(out.items()))


def _figure(series: dict[str, AgentSeries]) -> Figure:
    import matplotlib  # noqa: PLC0415 - optional extra, loaded only to draw

    matplotlib.use("Agg")  # no display: render to files only
    from matplotlib.figure import Figure  # noqa: PLC0415 - the runtime import

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax_lat, ax_rate = fig.subplots(1, 2)
    lows = [max(min(s.latency_us), 0.1) for s in series.values()]
    highs = [max(s.latency_us) for s in series.values()]
    lo, hi = math.log10(min(lows)), math.log10(max(*highs, min(lows) * 10))
    bins = [10 ** (lo + (hi - lo) * i / 40) for i in range(41)]
    all_ts = [t for s in series.values() for t in s.ts]
    t0 = min(all_ts)
    for s in series.values():
        values = sorted(s.latency_us)
        p50, p99 = percentile(values, 50), percentile(values, 99)
        label = f"{s.agent} (n={len(values)}, p50 {p50:.0f} µs, p99 {p99:.0f} µs)"
        ax_lat.hist(values, bins=bins, histtype="step", linewidth=1.5, label=label)
        offset = min(s.ts) - t0
        xs, ys = s.rate_per_s()
        ax_rate.step([x + offset for x in xs], ys, where="post", label=s.agent)
    ax_lat.set_xscale("log")
    ax_lat.set_xlabel("send-to-handler latency (µs, log scale)")
    ax_lat.set_ylabel("messages")
    ax_lat.set_title("Latency distribution per receiving agent")
    ax_lat.legend(fontsize="small")
    ax_rate.set_xlabel(f"seconds since the first message in the log ({format_stamp(t0)})")
    ax_rate.set_ylabel("messages handled / s")
    ax_rate.set_title("Throughput over time per agent")
    ax_rate.legend(fontsize="small")
    return fig


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1024 else f"{n / 1024:.1f} KiB"


def write_charts(
    latency_log: Path,
    *,
    plot: Path | None = None,
    fmt: str = "png",
    html_out: Path | None = None,
) -> list[str]:
    """Draw the charts of ``latency_log`` (and its rotated files) to a picture and/or HTML.

    Args:
        latency_log: ``mesh_latency.log``.
        plot: picture file to write, in ``fmt``.
        fmt: ``png``, ``svg`` or ``pdf``.
        html_out: a self-contained HTML page to write (the table and a PNG inline).

    Returns:
        One line per file written, saying what it holds (``x.svg (SVG, 31.2 KiB)``).

    Raises:
        UsageError: there are no latency records yet, matplotlib is missing, or a
            file cannot be written (disk full, no such directory, permission).
    """
    series = collect_series(read_log(latency_log))
    if not series:
        raise UsageError(
            f"no latency records in {latency_log}; send some messages first, then plot"
        )
    try:
        fig = _figure(series)
    except ImportError as exc:
        raise UsageError(
            f"plotting needs matplotlib ({exc}); install it with: pip install 'pipemesh[plot]'"
        ) from None
    written: list[str] = []
    if plot is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=110)
        _write(plot, buf.getvalue())
        written.append(f"{plot} ({fmt.upper()}, {_size(len(buf.getvalue()))})")
    if html_out is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        rows = "".join(
            f"<tr><td>{html.escape(s.agent)}</td><td>{len(s.latency_us)}</td>"
            f"<td>{percentile(sorted(s.latency_us), 50):.1f}</td>"
            f"<td>{percentile(sorted(s.latency_us), 99):.1f}</td></tr>"
            for s in series.values()
        )
        stamps = [t for s in series.values() for t in s.ts]
        page = (
            "<!doctype html><meta charset='utf-8'><title>pipemesh latency</title>"
            f"<h1>pipemesh latency</h1><p>from {html.escape(str(latency_log))}, "
            f"{html.escape(format_stamp(min(stamps)))} to "
            f"{html.escape(format_stamp(max(stamps)))}</p>"
            "<table border=1 cellpadding=4><tr><th>agent</th><th>count</th>"
            f"<th>p50 µs</th><th>p99 µs</th></tr>{rows}</table>"
            f"<p><img alt='latency charts' src='data:image/png;base64,{data}'></p>\n"
        ).encode()
        _write(html_out, page)
        written.append(f"{html_out} (HTML page with the table and charts, {_size(len(page))})")
    return written


def _write(path: Path, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise UsageError(
            f"cannot write {path}: {exc.strerror or exc}; choose another file"
        ) from None
