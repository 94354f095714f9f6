"""One clock for people: how pipemesh shows times in tail, history, monitor and stats.

Times are shown in the **local** time zone, always with the zone's UTC offset, so a line pasted
into a bug report is unambiguous. Machine output (``--json``, log files) keeps epoch seconds.
Parsing of ``--since``/``--until`` lives with the commands that take them.
"""

from __future__ import annotations

from datetime import datetime

__all__ = ["format_clock", "format_stamp", "zone_label"]


def format_stamp(ts_s: float) -> str:
    """``2026-11-30 14:05:03.123 +01:00``: date, local time to the millisecond, UTC offset."""
    dt = datetime.fromtimestamp(ts_s).astimezone()
    return f"{dt:%Y-%m-%d %H:%M:%S}.{dt.microsecond // 1000:03d} {_offset(dt)}"


def format_clock(ts_s: float) -> str:
    """``14:05:03.123``: local time of day to the millisecond, for narrow columns.

    Use it only where the zone is stated once nearby (a header or title shows
    :func:`zone_label`), so a reader never has to guess.
    """
    dt = datetime.fromtimestamp(ts_s).astimezone()
    return f"{dt:%H:%M:%S}.{dt.microsecond // 1000:03d}"


def zone_label(ts_s: float | None = None) -> str:
    """``local time, UTC+01:00`` (the label a table or header shows once)."""
    dt = datetime.now().astimezone() if ts_s is None else datetime.fromtimestamp(ts_s).astimezone()
    return f"local time, UTC{_offset(dt)}"


def _offset(dt: datetime) -> str:
    off = dt.utcoffset()
    minutes = 0 if off is None else int(off.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"
