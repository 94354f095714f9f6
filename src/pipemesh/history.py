"""Search past mesh traffic: ``pipemesh history``.

Answers from the search index in ``<home>/logs/history.sqlite3``
(:mod:`pipemesh.history_index`), which the command brings up to date from
``mesh_communication.log``, ``mesh_latency.log`` and their rotated files before each
query (only what was appended since the last run is read). Filters by agent, peer,
type, time range and text; ``--thread ID`` shows a message and every reply to it (the
``re`` field), transitively. Results are sorted by time. It never touches pipes or the
registry.

Times are shown in local time with the UTC offset (:mod:`pipemesh.clock`);
``--since``/``--until`` take local times too (see :func:`parse_time`).
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

import click

from pipemesh._logfiles import COMM_LOG
from pipemesh._term import Screen, Segment, safe
from pipemesh.clock import format_stamp
from pipemesh.errors import UsageError
from pipemesh.history_index import HistoryIndex, clean_record
from pipemesh.home import MeshHome

__all__ = ["Query", "clean_record", "history", "parse_time", "search", "thread"]

SENT: Final = "frame_sent"
_RELATIVE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float | None = None) -> float:
    """A Unix time from ``text``.

    Accepted: an age (``90s``, ``10m``, ``2h``, ``3d``: that long before now);
    ``now``, ``today`` (local midnight), ``yesterday`` (the local midnight before);
    an ISO 8601 date or time (``2026-11-24``, ``2026-11-24T14:18``, ``2026-11-24 14:18``),
    read as **local** time unless it names a zone (``Z``, ``+01:00``); or epoch seconds.

    Raises:
        UsageError: none of those forms.
    """
    text = text.strip()
    now_s = time.time() if now is None else now
    m = _RELATIVE.fullmatch(text)
    if m:
        return now_s - float(m[1]) * _UNIT_S[m[2]]
    word = text.lower()
    if word == "now":
        return now_s
    if word in ("today", "yesterday"):
        midnight = (
            datetime.fromtimestamp(now_s)
            .astimezone()
            .replace(hour=0, minute=0, second=0, microsecond=0)
        )
        if word == "yesterday":
            # Step back a day in local time (across a DST change, midnight stays midnight).
            day = (midnight - timedelta(days=1)).date()
            return datetime(day.year, day.month, day.day).astimezone().timestamp()
        return midnight.timestamp()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return value
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"time {text!r} is not understood: use an age like 10m, 2h or 3d, today, "
            "yesterday, a local time like 2026-11-24T14:18 (add Z or +01:00 for another "
            "zone), or epoch seconds"
        ) from None
    return (dt if dt.tzinfo else dt.astimezone()).timestamp()


@dataclass(frozen=True, slots=True)
class Query:
    """What to look for; empty fields match everything.

    Attributes:
        agent: FROM or TO is this agent (with ``peer``: one side each).
        peer: the other side of ``agent``'s conversation.
        msg_type: the TYPE, exactly.
        since: Unix time, inclusive.
        until: Unix time, inclusive.
        text: a case-insensitive substring of the body.
        all_events: include ``frame_received``/``frame_misrouted`` records, not
            only ``frame_sent`` (each message once, as sent).
    """

    agent: str = ""
    peer: str = ""
    msg_type: str = ""
    since: float | None = None
    until: float | None = None
    text: str = ""
    all_events: bool = False

    def matches(self, rec: dict[str, Any]) -> bool:
        """True when ``rec`` passes every filter (the index applies the same rules)."""
        if clean_record(rec) is None:
            return False
        if not self.all_events and rec.get("event") != SENT:
            return False
        sender, to = rec.get("from"), rec.get("to")
        if self.agent and self.peer:
            pair = {self.agent, self.peer}
            if {sender, to} != pair and not (to == "" and sender in pair):
                return False
        elif (self.agent or self.peer) and (self.agent or self.peer) not in (sender, to):
            return False
        if self.msg_type and rec.get("type") != self.msg_type:
            return False
        ts = float(rec["ts"])
        if self.since is not None and ts < self.since:
            return False
        if self.until is not None and ts > self.until:
            return False
        return not self.text or self.text.lower() in str(rec.get("body", "")).lower()


_SAY_BYTES: Final = 16 * 1024 * 1024  # indexing more than this takes seconds: say so


def _index(logs_dir: Path, *, verbose: bool = False) -> tuple[HistoryIndex, int]:
    index = HistoryIndex(logs_dir)
    try:
        return _update(index, verbose=verbose)
    except sqlite3.OperationalError as exc:  # busy past the timeout, disk full, read-only
        raise click.ClickException(
            f"cannot update the history index {index.path} ({exc}); if another "
            "'pipemesh history' is building it, wait for it and try again"
        ) from None


def _update(index: HistoryIndex, *, verbose: bool) -> tuple[HistoryIndex, int]:
    try:
        pending = index.pending_bytes() if verbose else 0
        if pending > _SAY_BYTES:
            click.echo(
                f"indexing {pending / 2**20:.0f} MiB of new log records for search "
                f"(about {pending / 2**20 / 3:.0f} s; later runs read only what is new)",
                err=True,
            )
        update = index.update()
    except BaseException:
        index.close()
        raise
    return index, update.skipped


def search(logs_dir: Path, query: Query, *, limit: int = 0) -> list[dict[str, Any]]:
    """Matching communication records, oldest first (the last ``limit`` if > 0).

    Each record gets ``latency_us`` when the receiver logged one for its ID.
    Brings the index up to date first.
    """
    index, _ = _index(logs_dir)
    with index:
        return _search(index, query, limit)


def _search(index: HistoryIndex, query: Query, limit: int) -> list[dict[str, Any]]:
    return index.search(
        agent=query.agent,
        peer=query.peer,
        msg_type=query.msg_type,
        since=query.since,
        until=query.until,
        text=query.text,
        all_events=query.all_events,
        limit=limit,
    )


def thread(logs_dir: Path, msg_id: str, *, all_events: bool = False) -> list[dict[str, Any]]:
    """The message ``msg_id`` and every reply to it or to its replies, by time."""
    index, _ = _index(logs_dir)
    with index:
        return index.thread(msg_id, all_events=all_events)


def format_record(rec: dict[str, Any], *, full: bool = False, raw: bool = False) -> str:
    """One record as a readable line (``full``: the whole body, indented, below it)."""
    return "".join(t for t, _ in record_segments(rec, full=full, raw=raw))


def record_segments(rec: dict[str, Any], *, full: bool = False, raw: bool = False) -> list[Segment]:
    """:func:`format_record` as styled pieces (colour on a terminal)."""
    to = rec.get("to") or "*"
    ref = f" re {safe(rec['re'])}" if rec.get("re") else ""
    lat = rec.get("latency_us")
    lat_text = f" ({lat:.0f} us)" if isinstance(lat, int | float) else ""
    event = rec.get("event", "")
    tag = "" if event == SENT else f" [{safe(event)}]"
    head: list[Segment] = [
        (f"[{format_stamp(float(rec['ts']))}] ", "dim"),
        (safe(rec.get("from")), "bold cyan"),
        (" -> ", ""),
        (safe(to), "bold magenta" if rec.get("to") else "bold yellow"),
        (f"  {safe(rec.get('type'))}", "green"),
        (f" P{safe(rec.get('priority'))} id {safe(rec.get('id'))}{ref}{lat_text}{tag}", "dim"),
    ]
    body = str(rec.get("body", ""))
    if full:
        more = " [truncated in the log]" if rec.get("truncated") else ""
        shown = body if raw else safe(body, newlines=True)
        lines = "\n".join("    " + ln for ln in shown.split("\n"))
        return [*head, (more + "\n" + lines, "")]
    body = body.replace("\n", " | ") if raw else safe(body)
    return [*head, (f"  {body[:97] + '...' if len(body) > 100 else body}", "")]


class _CliState(Protocol):
    home_arg: str | None
    as_json: bool


@click.command()
@click.argument("words", nargs=-1)
@click.option("--agent", default="", help="Messages from or to AGENT.")
@click.option("--peer", default="", help="With --agent: only its conversation with PEER.")
@click.option("--type", "msg_type", default="", help="Only this message TYPE.")
@click.option(
    "--since", default=None, help="From this time: 10m, 2h, 3d, today, yesterday, local ISO time."
)
@click.option("--until", default=None, help="Up to this time (same forms as --since).")
@click.option("--text", default="", help="Body contains TEXT (case-insensitive).")
@click.option("--thread", "thread_id", default="", help="A message ID and all its replies.")
@click.option("--all", "all_events", is_flag=True, help="Include received/misrouted records.")
@click.option(
    "-n", "--limit", type=click.IntRange(min=0), default=0, help="Only the last N matches."
)
@click.option("--full", is_flag=True, help="Print whole bodies, not one line each.")
@click.option("--raw", is_flag=True, help="Print bodies unescaped (control characters too).")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@click.pass_obj
def history(
    state: _CliState,
    words: tuple[str, ...],
    agent: str,
    peer: str,
    msg_type: str,
    since: str | None,
    until: str | None,
    text: str,
    thread_id: str,
    all_events: bool,
    limit: int,
    full: bool,
    raw: bool,
    as_json: bool,
) -> None:
    """Search past traffic: 'pipemesh history "some text"' finds bodies containing it.

    Sorted by time, shown in local time. Uses an index under the mesh home
    (logs/history.sqlite3) that this command keeps up to date from the logs.
    """
    logs_dir = MeshHome.open(state.home_arg).logs_dir
    phrase = " ".join(words)
    if phrase and text:
        raise UsageError("give the text to find once: as an argument or as --text")
    index, skipped = _index(logs_dir, verbose=True)
    with index:
        if skipped:
            click.echo(
                f"warning: skipped {skipped} malformed record{'s' if skipped > 1 else ''} "
                f"in {logs_dir} (not JSON, or fields of the wrong type)",
                err=True,
            )
        if thread_id:
            found = index.thread(thread_id, all_events=all_events)
            if not found:
                raise UsageError(f"no message with id {thread_id} in {logs_dir / COMM_LOG}")
        else:
            query = Query(
                agent=agent,
                peer=peer,
                msg_type=msg_type,
                since=parse_time(since) if since else None,
                until=parse_time(until) if until else None,
                text=phrase or text,
                all_events=all_events,
            )
            found = _search(index, query, limit)
    screen = Screen()
    for rec in found:
        if as_json or state.as_json:
            screen.text(json.dumps(rec, ensure_ascii=False))
        else:
            screen.line(record_segments(rec, full=full or bool(thread_id), raw=raw))
