"""The dashboard's tables: which columns fit a width, cell text, and the traffic table.

Pure layout (no mesh access): :func:`agent_columns` and :func:`feed_columns`
choose columns for a terminal width, the feed's BODY column taking what the
others leave; :class:`FeedTable` is the traffic table whose ``End`` selects the
newest row instead of scrolling sideways.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.widgets import DataTable

from pipemesh.clock import format_clock, format_stamp

__all__ = [
    "SCROLLBAR",
    "Column",
    "FeedTable",
    "TimeCell",
    "agent_columns",
    "clock",
    "cursor_key",
    "duration",
    "feed_columns",
    "fit",
    "fit_middle",
    "num",
    "stamp",
]

SCROLLBAR: Final = 1  # the tables' vertical scrollbar width (set in the app's CSS)


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    width: int


AGENT_ORDER: Final = (
    "name",
    "role",
    "status",
    "pid",
    "uptime",
    "beat",
    "in",
    "out",
    "p50",
    "p99",
    "backlog",
)


def agent_columns(width: int) -> list[Column]:
    """The agent table's columns that fit in ``width`` cells (optional ones by importance)."""
    cols = [
        Column("name", "NAME", 18 if width >= 100 else 14),
        Column("status", "STATUS", 8),
        Column("pid", "PID", 7),
        Column("uptime", "UPTIME", 6),
        Column("beat", "HB", 5),
        Column("in", "IN", 6),
        Column("out", "OUT", 6),
    ]
    for col in (
        Column("role", "ROLE", 12),
        Column("p99", "P99 µs", 7),
        Column("p50", "P50 µs", 7),
        Column("backlog", "BACKLOG", 7),
    ):
        if sum(c.width + 2 for c in cols) + SCROLLBAR + col.width + 2 <= width:
            cols.append(col)
    return sorted(cols, key=lambda c: AGENT_ORDER.index(c.key))


def feed_columns(width: int) -> list[Column]:
    """The feed's columns for ``width`` cells; BODY takes whatever is left."""
    name_w = 14 if width >= 140 else 10
    cols = [
        Column("time", "TIME", 12),
        Column("from", "FROM", name_w),
        Column("to", "TO", name_w),
        Column("type", "TYPE", 9),
    ]
    if width >= 120:
        cols.append(Column("latency", "LAT µs", 7))
    if width >= 190:  # priority, size and ID only where the body keeps ~90 columns
        cols[4:4] = [Column("prio", "P", 1), Column("size", "BYTES", 6)]
        cols.append(Column("id", "ID", 14))
    used = sum(c.width + 2 for c in cols) + 2 + SCROLLBAR
    cols.append(Column("body", "BODY", max(12, width - used)))
    return cols


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def num(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def fit(text: object, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    flat = str(text).replace("\r", " ").replace("\n", " | ")
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"


def fit_middle(text: str, width: int) -> str:
    """``text`` cut in the middle to ``width`` characters (paths keep both ends)."""
    if len(text) <= width:
        return text
    half = (width - 1) // 2
    return text[:half] + "…" + text[len(text) - (width - 1 - half) :]


def clock(ts: object) -> str:
    return format_clock(float(ts)) if isinstance(ts, int | float) else "?"


def stamp(ts: object) -> str:
    return format_stamp(float(ts)) if isinstance(ts, int | float) else "?"


class TimeCell(Text):
    """A time cell showing the logged time, sorting by ``order`` (time, then arrival)."""

    def __init__(self, ts: object, order: tuple[float, int]) -> None:
        super().__init__(clock(ts))
        self.order = order


class FeedTable(DataTable[Any]):
    """The traffic table: ``End`` jumps to the newest row (and follows it), ``Home`` to the oldest.

    ``scrolled_away`` is set when the person scrolls up with the mouse wheel;
    the app clears it once the view is back at the bottom.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Details"),
        Binding("end", "scroll_end", "Newest"),
        Binding("home", "scroll_home", "Oldest", show=False),
    ]

    scrolled_away = False

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self.scrolled_away = True

    def action_scroll_end(self) -> None:
        """Select the newest row, scroll it into view and follow new traffic again."""
        self.scrolled_away = False
        self.scroll_x = 0
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)
        self.scroll_end(animate=False, x_axis=False)

    def action_scroll_home(self) -> None:
        """Select the oldest row."""
        self.scroll_x = 0
        if self.row_count:
            self.move_cursor(row=0)


def cursor_key(table: DataTable[Any]) -> str | None:
    """The row key under the table's cursor, or None when it is empty."""
    if not table.row_count:
        return None
    row = min(table.cursor_row, table.row_count - 1)
    value = table.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value
    return None if value is None else str(value)
