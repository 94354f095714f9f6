"""The Textual dashboard behind ``pipemesh monitor``.

Four panes: agents (registry + heartbeats + latency percentiles), the traffic
feed (every message once, as sent, with its latency once the receiver logged
it; filter box), errors from ``mesh_errors.log``, and a detail screen with one
message's whole body. All data comes from :class:`~pipemesh.monitor.data.MeshView`,
refreshed by a timer on Textual's event loop; no threads, no blocking reads.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any, ClassVar, Final

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Header, Input, Static

from pipemesh.home import MeshHome
from pipemesh.monitor.data import ACTIVE, INACTIVE, LEFT, STALE, MeshView, TrafficFilter

__all__ = ["MonitorApp"]

_STATUS_STYLE: Final = {ACTIVE: "bold green", STALE: "yellow", INACTIVE: "bold red", LEFT: "dim"}
_AGENT_COLUMNS: Final = (
    ("name", "NAME"),
    ("role", "ROLE"),
    ("status", "STATUS"),
    ("pid", "PID"),
    ("uptime", "UPTIME"),
    ("in", "IN"),
    ("out", "OUT"),
    ("p50", "P50 µs"),
    ("p99", "P99 µs"),
    ("backlog", "BACKLOG"),
)
_TRAFFIC_COLUMNS: Final = (
    ("time", "TIME"),
    ("from", "FROM"),
    ("to", "TO"),
    ("type", "TYPE"),
    ("prio", "P"),
    ("size", "BYTES"),
    ("latency", "LAT µs"),
    ("id", "ID"),
    ("body", "BODY"),
)
_ERROR_COLUMNS: Final = (
    ("time", "TIME"),
    ("agent", "AGENT"),
    ("event", "EVENT"),
    ("error", "ERROR"),
)


def _clock(ts: object) -> str:
    if not isinstance(ts, int | float):
        return "?"
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S.%f")[:-3]


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _one_line(text: object, width: int = 60) -> str:
    flat = str(text).replace("\n", " | ")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


class DetailScreen(ModalScreen[None]):
    """One record in full: the header fields, then the whole body."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Back"),
        Binding("q", "dismiss", "Back"),
    ]
    DEFAULT_CSS = """
    DetailScreen { align: center middle; }
    DetailScreen > VerticalScroll {
        width: 90%; height: 85%; border: thick $accent; background: $surface; padding: 0 1;
    }
    """

    def __init__(self, title: str, fields: dict[str, Any], body: str) -> None:
        super().__init__()
        self._title, self._fields, self._body = title, fields, body

    def compose(self) -> ComposeResult:
        head = Text(self._title + "\n", style="bold")
        for key, value in self._fields.items():
            head.append(f"{key:>10}: ", style="bold cyan")
            head.append(f"{value}\n")
        with VerticalScroll():
            yield Static(head, id="detail-header")
            yield Static(Text(self._body), id="detail-body")  # Text: never parsed as markup
        yield Footer()


class MonitorApp(App[None]):
    """Live view of one mesh home.

    Args:
        home: the mesh home to watch.
        refresh_s: seconds between refreshes.
        stale_after_s: heartbeats older than this mark an active agent ``stale``.
    """

    TITLE = "pipemesh monitor"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("enter", "details", "Details", show=False),
        Binding("p", "toggle_pause", "Pause feed"),
        Binding("c", "clear_errors", "Clear errors"),
    ]
    DEFAULT_CSS = """
    #agents { height: 1fr; min-height: 5; }
    #traffic-pane { height: 2fr; }
    #errors { height: 1fr; min-height: 4; }
    .pane-title { background: $boost; color: $text; text-style: bold; padding: 0 1; }
    #filter { height: 3; }
    """

    def __init__(self, home: MeshHome, *, refresh_s: float = 0.5, stale_after_s: float = 15.0):
        super().__init__()
        self.home = home
        self.refresh_s = refresh_s
        self.view = MeshView(home, stale_after_s=stale_after_s)
        self.filter = TrafficFilter()
        self.paused = False
        self.max_rows = 500
        self.ticks = 0  # refreshes done; tests wait on it instead of sleeping
        self._error_seq = 0

    def compose(self) -> ComposeResult:
        yield Header(show_clock=True)
        yield Static("Agents", classes="pane-title", id="agents-title")
        yield DataTable(id="agents", cursor_type="row", zebra_stripes=True)
        with Vertical(id="traffic-pane"):
            yield Static("Traffic", classes="pane-title", id="traffic-title")
            yield Input(placeholder="/ filter: agent:NAME from: to: type:TYPE words…", id="filter")
            yield DataTable(id="traffic", cursor_type="row", zebra_stripes=True)
        yield Static("Errors", classes="pane-title", id="errors-title")
        yield DataTable(id="errors", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = str(self.home.root)
        for table_id, columns in (
            ("#agents", _AGENT_COLUMNS),
            ("#traffic", _TRAFFIC_COLUMNS),
            ("#errors", _ERROR_COLUMNS),
        ):
            table = self.query_one(table_id, DataTable)
            for key, label in columns:
                # Fixed width where values change length after the first row.
                table.add_column(label, key=key, width=8 if key == "status" else None)
        self.refresh_view()
        self.query_one("#traffic", DataTable).focus()
        self.set_interval(self.refresh_s, self.refresh_view)

    def on_unmount(self) -> None:
        self.view.close()

    # -- refreshing --

    def refresh_view(self) -> None:
        """Read what is new and update the three tables."""
        msgs, errors, latencies = self.view.refresh()
        self._update_agents()
        traffic = self.query_one("#traffic", DataTable)
        if not self.paused:
            visible = [rec for rec in msgs if self.filter.matches(rec)]
            for rec in visible:
                self._add_traffic_row(traffic, rec)
            if visible:
                # Each process appends its own batches: keep the feed in send order.
                traffic.sort("time")
            for msg_id in latencies:
                if msg_id in traffic.rows:
                    lat = self.view.latency_by_id[msg_id]
                    traffic.update_cell(msg_id, "latency", _num(lat))
        errors_table = self.query_one("#errors", DataTable)
        for rec in errors:
            self._add_error_row(errors_table, rec)
        shown = traffic.row_count
        title = f"Traffic ({shown} shown" + (", paused" if self.paused else "") + ")"
        self.query_one("#traffic-title", Static).update(title)
        self.query_one("#errors-title", Static).update(f"Errors ({errors_table.row_count})")
        note = f" — registry: {self.view.registry_error}" if self.view.registry_error else ""
        self.query_one("#agents-title", Static).update(f"Agents ({len(self.view.agents)}){note}")
        self.ticks += 1

    def _update_agents(self) -> None:
        table = self.query_one("#agents", DataTable)
        now = time.monotonic()
        for name in sorted(self.view.agents):
            a = self.view.agents[name]
            backlog = a.heartbeat.get("backlog")
            row = {
                "name": name,
                "role": a.role,
                "status": Text(a.status, style=_STATUS_STYLE.get(a.status, "")),
                "pid": str(a.pid or "-"),
                "uptime": _duration(a.uptime_s(now)) if a.status != LEFT else "-",
                "in": str(a.received),
                "out": str(a.sent),
                "p50": _num(a.latency_p(50)),
                "p99": _num(a.latency_p(99)),
                "backlog": "-" if backlog is None else str(backlog),
            }
            if name in table.rows:
                for key, value in row.items():
                    table.update_cell(name, key, value)
            else:
                table.add_row(*row.values(), key=name)

    def _add_traffic_row(self, table: DataTable[Any], rec: dict[str, Any]) -> None:
        msg_id = str(rec.get("id", ""))
        if msg_id in table.rows:
            return
        lat = self.view.latency_by_id.get(msg_id)
        table.add_row(
            _clock(rec.get("ts")),
            str(rec.get("from", "")),
            str(rec.get("to") or "*"),
            str(rec.get("type", "")),
            str(rec.get("priority", "")),
            str(rec.get("bytes", "")),
            _num(lat),
            msg_id,
            _one_line(rec.get("body", "")),
            key=msg_id,
        )
        while table.row_count > self.max_rows:
            table.remove_row(next(iter(table.rows)))

    def _add_error_row(self, table: DataTable[Any], rec: dict[str, Any]) -> None:
        self._error_seq += 1
        table.add_row(
            _clock(rec.get("ts")),
            str(rec.get("agent", "")),
            Text(str(rec.get("event", "")), style="bold red"),
            _one_line(rec.get("error", ""), 100),
            key=f"e{self._error_seq}",
        )
        while table.row_count > self.max_rows:
            table.remove_row(next(iter(table.rows)))

    def _rebuild_traffic(self) -> None:
        table = self.query_one("#traffic", DataTable)
        table.clear()
        for rec in self.view.traffic:
            if self.filter.matches(rec):
                self._add_traffic_row(table, rec)
        table.sort("time")

    # -- actions --

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter = TrafficFilter.parse(event.value)
        self._rebuild_traffic()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one("#traffic", DataTable).focus()

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""  # fires Input.Changed, which rebuilds the feed
        self.query_one("#traffic", DataTable).focus()

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self._rebuild_traffic()

    def action_clear_errors(self) -> None:
        self.query_one("#errors", DataTable).clear()

    def action_details(self) -> None:
        table = self.focused
        if isinstance(table, DataTable) and table.row_count:
            self._show_detail(table, table.cursor_row)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self._show_detail(event.data_table, event.cursor_row)

    def _show_detail(self, table: DataTable[Any], row: int) -> None:
        if table.id == "traffic":
            msg_id = str(table.get_row_at(row)[7])
            self.show_message(msg_id)
        elif table.id == "errors":
            cells = table.get_row_at(row)
            rec = next(
                (
                    r
                    for r in reversed(self.view.errors)
                    if _clock(r.get("ts")) == cells[0] and str(r.get("agent")) == cells[1]
                ),
                None,
            )
            if rec is not None:
                body = json.dumps(rec, indent=2, ensure_ascii=False, default=str)
                self.push_screen(DetailScreen(f"Error {rec.get('event')}", {}, body))

    def show_message(self, msg_id: str) -> None:
        """Open the detail screen of message ``msg_id`` (if it is in the feed)."""
        rec = next((r for r in reversed(self.view.traffic) if r.get("id") == msg_id), None)
        if rec is None:
            return
        lat = self.view.latency_by_id.get(msg_id)
        replies = [str(r.get("id")) for r in self.view.traffic if r.get("re") == msg_id]
        fields = {
            "id": msg_id,
            "time": _clock(rec.get("ts")),
            "from": rec.get("from"),
            "to": rec.get("to") or "* (broadcast)",
            "type": rec.get("type"),
            "priority": rec.get("priority"),
            "bytes": rec.get("bytes"),
            "latency": "-" if lat is None else f"{lat:.1f} µs",
            "re": rec.get("re") or "-",
            "replies": ", ".join(replies) or "-",
        }
        if rec.get("truncated"):
            fields["note"] = "body truncated in the log (max_body_chars)"
        self.push_screen(DetailScreen(f"Message {msg_id}", fields, str(rec.get("body", ""))))
