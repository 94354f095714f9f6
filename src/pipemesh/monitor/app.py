"""The Textual dashboard behind ``pipemesh monitor``.

Panes: agents (registry state, heartbeats, counters, latency percentiles), the
traffic feed (every message once, as sent, with its latency once the receiver
logged it; a filter box; it follows the newest row unless the person moved
away from it), errors from ``mesh_errors.log``, a detail screen with one
record in full, and a compose form that sends, replies or broadcasts as a
named human agent (joined on the first send, gone on exit). All mesh data comes
from :class:`~pipemesh.monitor.data.MeshView`, refreshed by a timer on
Textual's event loop; nothing here blocks on a pipe.

Columns are chosen for the terminal's width, and the body column gets all the
width the others leave, so the layout works from 80x24 up.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict, deque
from typing import Any, ClassVar, Final

from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.coordinate import Coordinate
from textual.notifications import SeverityLevel
from textual.widgets import DataTable, Footer, Input, Static

from pipemesh.clock import format_stamp, zone_label
from pipemesh.home import MeshHome
from pipemesh.monitor._tables import (
    Column,
    FeedTable,
    TimeCell,
    agent_columns,
    clock,
    cursor_key,
    duration,
    feed_columns,
    fit,
    fit_middle,
    num,
    stamp,
)
from pipemesh.monitor.data import ACTIVE, INACTIVE, LEFT, AgentView, MeshView, TrafficFilter
from pipemesh.monitor.human import HumanAgent, default_human_name
from pipemesh.monitor.screens import ComposeScreen, DetailScreen, Draft, Mode
from pipemesh.wire import MAX_BODY_BYTES

__all__ = ["DetailScreen", "FeedTable", "MonitorApp"]

_STATUS_STYLE: Final = {ACTIVE: "bold green", INACTIVE: "bold red", LEFT: "dim"}


class MonitorApp(App[None]):
    """Live view of one mesh home, and a way to write to it.

    Args:
        home: the mesh home to watch.
        refresh_s: seconds between refreshes.
        stale_after_s: a heartbeat older than this shows as late (HB column).
        human_name: the agent name compose sends as (default ``human-<user>``);
            joined on the first send, left on exit.
        max_body_bytes: the largest body that agent sends or receives.
    """

    TITLE = "pipemesh monitor"
    ENABLE_COMMAND_PALETTE = False  # its footer entry would take room from the keys below
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("s", "compose('send')", "Send"),
        Binding("r", "compose('reply')", "Reply"),
        Binding("b", "compose('broadcast')", "Broadcast"),
        Binding("enter", "details", "Details", show=False),
        Binding("slash", "focus_filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("p", "toggle_pause", "Pause"),
        Binding("c", "clear_errors", "Clear errors"),
    ]
    DEFAULT_CSS = """
    #summary { background: $primary-background; color: $text; padding: 0 1; height: auto; }
    .pane-title { background: $boost; color: $text; text-style: bold; padding: 0 1; height: 1; }
    DataTable { scrollbar-size-vertical: 1; }
    #agents { height: auto; max-height: 40%; }
    #traffic-bar { height: 1; background: $boost; }
    #traffic-title { width: auto; }
    #filter { border: none; height: 1; padding: 0 1; width: 1fr; }
    #traffic { height: 1fr; min-height: 4; }
    #errors { height: auto; max-height: 6; }
    """

    def __init__(
        self,
        home: MeshHome,
        *,
        refresh_s: float = 0.5,
        stale_after_s: float = 15.0,
        human_name: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ):
        super().__init__()
        self.home = home
        self.refresh_s = refresh_s
        self.view = MeshView(home, stale_after_s=stale_after_s)
        self.human = HumanAgent(
            home, human_name or default_human_name(), max_body_bytes=max_body_bytes
        )
        self.filter = TrafficFilter()
        self.paused = False
        self.max_rows = 500  # the feed holds the newest 500 to 600 messages
        self.ticks = 0  # refreshes done; tests wait on it instead of sleeping
        self.last_outcome = ""  # the last compose result (sent/queued/error), also notified
        self.told: deque[str] = deque(maxlen=100)  # the pop-ups shown, newest last
        self._seq = 0
        self._last_order = 0.0  # sort position of the newest row in the feed
        self._order_ts: OrderedDict[str, float] = OrderedDict()
        self._width = 0
        self._agent_cols: list[Column] = []
        self._feed_cols: list[Column] = []
        self._errors_by_key: dict[str, dict[str, Any]] = {}
        # Kept as attributes: queries would search whichever screen is on top (a form).
        self._summary_line = Static(id="summary")
        self._agents_title = Static("Agents", classes="pane-title", id="agents-title")
        self.agents_table: DataTable[Any] = DataTable(
            id="agents", cursor_type="row", zebra_stripes=True
        )
        self._traffic_title = Static("Traffic", classes="pane-title", id="traffic-title")
        self._filter_box = Input(
            placeholder="/ filter: agent:NAME from: to: type: words", id="filter"
        )
        self.feed = FeedTable(id="traffic", cursor_type="row", zebra_stripes=True)
        self._errors_title = Static("Errors", classes="pane-title", id="errors-title")
        self.errors_table: DataTable[Any] = DataTable(id="errors", cursor_type="row")
        self._closing = False

    def compose(self) -> ComposeResult:
        yield self._summary_line
        yield self._agents_title
        yield self.agents_table
        with Horizontal(id="traffic-bar"):
            yield self._traffic_title
            yield self._filter_box
        yield self.feed
        yield self._errors_title
        yield self.errors_table
        yield Footer()

    def on_mount(self) -> None:
        errors = self.errors_table
        for key, label in (("time", "TIME"), ("agent", "AGENT"), ("event", "EVENT")):
            errors.add_column(label, key=key)
        errors.add_column("ERROR", key="error")
        errors.display = False
        self._fit_columns()
        self.refresh_view()
        self.feed.focus()
        self.set_interval(self.refresh_s, self.refresh_view)

    def on_unmount(self) -> None:
        self._closing = True
        self.view.close()
        self.human.close()

    def on_resize(self, event: events.Resize) -> None:
        self._fit_columns()

    # -- layout --

    def _fit_columns(self) -> None:
        """Choose the columns for the current width (and re-add rows if they changed)."""
        width = self.size.width
        if width == self._width or width <= 0:
            return
        self._width = width
        agent_cols, feed_cols = agent_columns(width), feed_columns(width)
        if agent_cols != self._agent_cols:
            self._agent_cols = agent_cols
            table = self.agents_table
            table.clear(columns=True)
            for col in agent_cols:
                table.add_column(col.label, key=col.key, width=col.width)
            self._update_agents()
        if feed_cols != self._feed_cols:
            feed = self.feed
            place = (self.is_following(), cursor_key(feed))  # before the rows go
            self._feed_cols = feed_cols
            feed.clear(columns=True)
            for col in feed_cols:
                feed.add_column(col.label, key=col.key, width=col.width)
            self._rebuild_traffic(place)

    # -- refreshing --

    def refresh_view(self) -> None:
        """Read what is new and update every pane."""
        if self._closing:
            return
        self._fit_columns()
        msgs, errors, latencies = self.view.refresh()
        self._update_agents()
        feed = self.feed
        if not self.paused:
            self._add_traffic([rec for rec in msgs if self.filter.matches(rec)])
            if "latency" in feed.columns:
                for msg_id in latencies:
                    if msg_id in feed.rows:
                        lat = self.view.latency_by_id[msg_id]
                        feed.update_cell(msg_id, "latency", Text(num(lat)))
        if self.is_following() and feed.row_count and feed.scroll_y < feed.max_scroll_y:
            # The feed got shorter (a pane above grew): keep the newest row in view.
            feed.scroll_end(animate=False, x_axis=False)
        errors_table = self.errors_table
        for rec in errors:
            self._add_error_row(errors_table, rec)
        errors_table.display = errors_table.row_count > 0
        for msg in self.human.take_arrived():
            self._tell(f"{msg.sender} ({msg.msg_type}): {fit(msg.body, 200)}", title="to you")
        self._update_titles()
        self.ticks += 1

    def _update_titles(self) -> None:
        feed = self.feed
        state = "paused" if self.paused else ("following" if self.is_following() else "held")
        hint = "" if state != "held" else ": End follows"
        self._traffic_title.update(f"Traffic ({feed.row_count} shown, {state}{hint})")
        errors = self.errors_table
        self._errors_title.update(f"Errors ({errors.row_count})")
        note = f" — registry: {self.view.registry_error}" if self.view.registry_error else ""
        counts = {s: 0 for s in (ACTIVE, INACTIVE, LEFT)}
        for a in self.view.agents.values():
            counts[a.status] += 1
        self._agents_title.update(
            f"Agents: {counts[ACTIVE]} active, {counts[INACTIVE]} inactive, "
            f"{counts[LEFT]} left{note}"
        )
        self._summary_line.update(self._summary())

    def _summary(self) -> Text:
        """The header: where, which clock, who you are, what the counters count.

        Each line takes the longest wording that fits the width.
        """
        room = max(40, self._width - 2)
        joined = self.human.is_joined
        since = format_stamp(self.view.counted_since)[:19]  # with the date unless it is today
        if since[:10] == format_stamp(time.time())[:10]:
            since = since[11:]
        zone = zone_label()
        you = f"{self.human.name} ({'joined' if joined else 'joins on first send'})"
        first = f" │ times: {zone} │ you: {you}"
        if len(first) + 40 > room:
            first = f" │ you: {self.human.name}" + (" (joined)" if joined else "")
        home = fit_middle(
            str(self.home.root), max(12, room - len("pipemesh monitor │ ") - len(first))
        )
        counters = (
            f"IN/OUT: messages each agent received/sent since {since}, counted from the logs "
            "(heartbeats and control frames are not counted) │ HB: time since its last heartbeat",
            f"IN/OUT: messages received/sent since {since}, from the logs (heartbeats not "
            "counted) │ HB: since last heartbeat",
            f"IN/OUT: msgs since {since}, not heartbeats",
        )
        second = next((c for c in counters if len(c) <= room), counters[-1])
        if "times:" not in first:
            second = f"times: {zone} │ {second}"
        out = Text()
        out.append("pipemesh monitor", style="bold")
        out.append(f" │ {home}{first}\n{second}")
        return out

    def _agent_row(self, a: AgentView, now: float) -> dict[str, Text]:
        backlog = a.heartbeat.get("backlog")
        widths = {c.key: c.width for c in self._agent_cols}
        beat = a.beat_age_s(now) if a.status == ACTIVE else None
        beat_text = "-" if beat is None else f"{beat:.0f}s"
        row = {
            "name": Text(fit(a.name, widths.get("name", 18))),
            "role": Text(fit(a.role, widths.get("role", 12))),
            "status": Text(a.status, style=_STATUS_STYLE.get(a.status, "")),
            "pid": Text(str(a.pid or "-")),
            "uptime": Text(duration(a.uptime_s(now))),
            "beat": Text(beat_text, style="yellow" if self.view.is_late(a, now) else ""),
            "in": Text(str(a.msgs_in)),
            "out": Text(str(a.msgs_out)),
            "p50": Text(num(a.latency_p(50))),
            "p99": Text(num(a.latency_p(99))),
            "backlog": Text("-" if backlog is None else str(backlog)),
        }
        return {c.key: row[c.key] for c in self._agent_cols}

    def _update_agents(self) -> None:
        table = self.agents_table
        if not self._agent_cols:
            return
        now = time.monotonic()
        ordered = self.view.ordered_agents()
        names = [a.name for a in ordered]
        if names == [str(k.value) for k in table.rows]:
            for a in ordered:
                for key, value in self._agent_row(a, now).items():
                    table.update_cell(a.name, key, value)
            return
        selected = cursor_key(table)
        table.clear()
        for a in ordered:
            table.add_row(*self._agent_row(a, now).values(), key=a.name)
        if selected is not None and selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected))

    # -- the traffic feed --

    def is_following(self) -> bool:
        """True when the feed shows the newest row and moves on with new traffic.

        The person stops following by moving the cursor off the last row or by
        scrolling up; moving back to the last row (``End``, or scrolling back
        to the bottom) follows again.
        """
        feed = self.feed
        if feed.row_count == 0:
            return True
        if feed.scrolled_away:
            if feed.scroll_y < feed.max_scroll_y:
                return False
            # The wheel brought the view back to the bottom: follow from the newest row.
            feed.scrolled_away = False
            feed.move_cursor(row=feed.row_count - 1, scroll=False)
            return True
        return feed.cursor_row >= feed.row_count - 1

    def _order_of(self, rec: dict[str, Any]) -> float:
        """Where ``rec`` sorts: its logged time, but never before the message it answers.

        A sender logs after its write returns, so a fast reply can be logged
        before the question it answers; the feed still shows question first.
        """
        ts = rec.get("ts")
        order = float(ts) if isinstance(ts, int | float) else 0.0
        asked = self._order_ts.get(str(rec.get("re") or ""))
        if asked is not None and asked >= order:
            order = asked + 1e-6
        self._order_ts[str(rec.get("id", ""))] = order
        if len(self._order_ts) > 20_000:
            self._order_ts.popitem(last=False)
        return order

    def _traffic_row(self, rec: dict[str, Any]) -> list[Text]:
        msg_id = str(rec.get("id", ""))
        self._seq += 1
        order = self._order_of(rec)
        self._last_order = max(self._last_order, order)
        widths = {c.key: c.width for c in self._feed_cols}
        to = str(rec.get("to") or "*")
        to_style = "bold magenta" if to == self.human.name else ""
        if rec.get("event") == "frame_queued":
            to_style = "italic"
        cells: dict[str, Text] = {
            "time": TimeCell(rec.get("ts"), (order, self._seq)),
            "from": Text(fit(rec.get("from", ""), widths.get("from", 10))),
            "to": Text(fit(to, widths.get("to", 10)), style=to_style),
            "type": Text(fit(rec.get("type", ""), widths.get("type", 9))),
            "prio": Text(str(rec.get("priority", ""))),
            "size": Text(str(rec.get("bytes", ""))),
            "latency": Text(num(self.view.latency_by_id.get(msg_id))),
            "id": Text(fit(msg_id, widths.get("id", 14))),
            "body": Text(fit(rec.get("body", ""), widths.get("body", 40))),
        }
        return [cells[c.key] for c in self._feed_cols]

    def _add_traffic(self, recs: list[dict[str, Any]]) -> None:
        feed = self.feed
        if not recs or not self._feed_cols:
            return
        follow = self.is_following()
        selected = None if follow else cursor_key(feed)
        out_of_order = False
        for rec in recs:
            msg_id = str(rec.get("id", ""))
            if msg_id in feed.rows:
                continue
            newest = self._last_order
            feed.add_row(*self._traffic_row(rec), key=msg_id)
            # Each process appends its own batches: a record may be older than the last row.
            out_of_order = out_of_order or self._order_ts[msg_id] < newest
        if feed.row_count > self.max_rows + self.max_rows // 5:
            # Trim by rebuilding with the newest max_rows: DataTable.remove_row costs
            # O(rows) each, so removing one row per new message would cost 10x more.
            self._rebuild_traffic((follow, selected))
            return
        if out_of_order:
            feed.sort("time", key=lambda cell: cell.order)
        self._place_cursor(follow, selected)

    def _place_cursor(self, follow: bool, selected: str | None) -> None:
        feed = self.feed
        if follow and feed.row_count:
            feed.move_cursor(row=feed.row_count - 1)
        elif selected is not None and selected in feed.rows:
            index = feed.get_row_index(selected)
            if index != feed.cursor_row:
                feed.move_cursor(row=index, scroll=False)

    def _rebuild_traffic(self, place: tuple[bool, str | None] | None = None) -> None:
        """Re-add the feed's rows (new filter or columns), keeping following or the selection."""
        feed = self.feed
        if not self._feed_cols:
            return
        follow, selected = place or (self.is_following(), cursor_key(feed))
        feed.clear()
        recs = [rec for rec in self.view.traffic if self.filter.matches(rec)]
        recs.sort(key=self._order_of)  # in arrival order first, so questions precede replies
        self._last_order = 0.0
        for rec in recs[-self.max_rows :]:
            msg_id = str(rec.get("id", ""))
            if msg_id not in feed.rows:
                feed.add_row(*self._traffic_row(rec), key=msg_id)
        self._place_cursor(follow, None if follow else selected)

    def selected_message(self) -> dict[str, Any] | None:
        """The logged record of the feed's selected row, or None."""
        msg_id = cursor_key(self.feed)
        if msg_id is None:
            return None
        return next((r for r in reversed(self.view.traffic) if r.get("id") == msg_id), None)

    # -- errors --

    def _add_error_row(self, table: DataTable[Any], rec: dict[str, Any]) -> None:
        self._seq += 1
        key = f"e{self._seq}"
        self._errors_by_key[key] = rec
        table.add_row(
            Text(clock(rec.get("ts"))),
            Text(str(rec.get("agent", ""))),
            Text(str(rec.get("event", "")), style="bold red"),
            Text(fit(rec.get("error", ""), max(20, self._width - 50))),
            key=key,
        )
        while table.row_count > self.max_rows:
            oldest = table.coordinate_to_cell_key(Coordinate(0, 0)).row_key
            self._errors_by_key.pop(str(oldest.value), None)
            table.remove_row(oldest)

    # -- actions --

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.filter = TrafficFilter.parse(event.value)
            self._rebuild_traffic()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.feed.focus()

    def action_focus_filter(self) -> None:
        self._filter_box.focus()

    def action_clear_filter(self) -> None:
        box = self._filter_box
        box.value = ""  # fires Input.Changed, which rebuilds the feed
        self.feed.focus()

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self._rebuild_traffic()
        self._update_titles()

    def action_clear_errors(self) -> None:
        table = self.errors_table
        table.clear()
        table.display = False
        self._errors_by_key.clear()
        self._update_titles()

    def action_details(self) -> None:
        table = self.focused
        if isinstance(table, DataTable) and table.row_count:
            self._show_detail(table)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self._show_detail(event.data_table)

    def _show_detail(self, table: DataTable[Any]) -> None:
        key = cursor_key(table)
        if key is None:
            return
        if table.id == "traffic":
            self.show_message(key)
        elif table.id == "errors" and key in self._errors_by_key:
            rec = self._errors_by_key[key]
            body = json.dumps(rec, indent=2, ensure_ascii=False, default=str)
            fields = {"time": stamp(rec.get("ts")), "agent": rec.get("agent")}
            self.push_screen(DetailScreen(f"Error {rec.get('event')}", fields, body))

    def show_message(self, msg_id: str) -> None:
        """Open the detail screen of message ``msg_id`` (if it is in the feed)."""
        rec = next((r for r in reversed(self.view.traffic) if r.get("id") == msg_id), None)
        if rec is None:
            return
        lat = self.view.latency_by_id.get(msg_id)
        replies = [str(r.get("id")) for r in self.view.traffic if r.get("re") == msg_id]
        fields = {
            "id": msg_id,
            "time": stamp(rec.get("ts")),
            "from": rec.get("from"),
            "to": rec.get("to") or "* (broadcast)",
            "type": rec.get("type"),
            "priority": rec.get("priority"),
            "bytes": rec.get("bytes"),
            "latency": "-" if lat is None else f"{lat:.1f} µs",
            "re": rec.get("re") or "-",
            "replies": ", ".join(replies) or "-",
        }
        if rec.get("event") == "frame_queued":
            fields["delivery"] = "queued in the recipient's spool (durable, not reading)"
        if rec.get("truncated"):
            fields["note"] = "body truncated in the log (max_body_chars)"
        self.push_screen(DetailScreen(f"Message {msg_id}", fields, str(rec.get("body", ""))))

    # -- compose --

    def action_compose(self, mode: str) -> None:
        """Open the compose form: ``send``, ``reply`` (to the selected message) or ``broadcast``."""
        kind: Mode = "reply" if mode == "reply" else "broadcast" if mode == "broadcast" else "send"
        to, rec = "", None
        if kind == "reply":
            rec = self.selected_message()
            if rec is None:
                self._outcome("nothing to reply to: select a message in the traffic feed", True)
                return
        elif kind == "send":
            agents = self.agents_table
            if self.focused is agents:
                to = cursor_key(agents) or ""
        screen = ComposeScreen(
            kind, sender=self.human.name, submit=self.submit, to=to, reply_to=rec
        )
        self.push_screen(screen, self._after_compose)

    def submit(self, draft: Draft) -> str:
        """Send ``draft`` as the human agent; return the outcome or raise MeshError/ValueError."""
        if draft.mode == "reply":
            outcome = self.human.reply(
                draft.reply_to, draft.body, msg_type=draft.msg_type, priority=draft.priority
            )
        elif draft.mode == "broadcast":
            outcome = self.human.broadcast(
                draft.body, msg_type=draft.msg_type, priority=draft.priority
            )
        else:
            outcome = self.human.send(
                draft.to, draft.body, msg_type=draft.msg_type, priority=draft.priority
            )
        self._update_titles()
        return outcome

    def _after_compose(self, outcome: str | None) -> None:
        if outcome:
            self._outcome(outcome, False)

    def _outcome(self, text: str, is_error: bool) -> None:
        self.last_outcome = text
        self._tell(text, severity="error" if is_error else "information")

    def _tell(self, text: str, *, title: str = "", severity: SeverityLevel = "information") -> None:
        """Pop up ``text`` (never read as markup: it may quote a message body)."""
        self.told.append(text)
        self.notify(text, title=title, severity=severity, markup=False)
