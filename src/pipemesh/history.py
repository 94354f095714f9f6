"""Search past mesh traffic: ``pipemesh history``.

Reads ``mesh_communication.log`` and its rotated files (oldest first) and
``mesh_latency.log`` for latencies. Filters by agent, peer, type, time range and
text; ``--thread ID`` shows a message and every reply to it (the ``re`` field),
transitively. Read-only: it never touches pipes or the registry.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import click

from pipemesh.errors import UsageError
from pipemesh.home import MeshHome
from pipemesh.observe import COMM_LOG, LATENCY_LOG, read_log

__all__ = ["Query", "history", "parse_time", "search", "thread"]

SENT: Final = "frame_sent"
_RELATIVE: Final = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float | None = None) -> float:
    """A Unix time from ``text``: a relative age (``90s``, ``10m``, ``2h``, ``1d``),
    an ISO 8601 time (UTC unless it names a zone), or seconds since the epoch.

    Raises:
        UsageError: none of those forms.
    """
    text = text.strip()
    m = _RELATIVE.fullmatch(text)
    if m:
        return (time.time() if now is None else now) - float(m[1]) * _UNIT_S[m[2]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"time {text!r} is not understood: use an age like 10m or 2h, "
            "an ISO time like 2025-11-21T10:00:00, or epoch seconds"
        ) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


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
        """True when ``rec`` passes every filter."""
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
        ts = rec.get("ts")
        if not isinstance(ts, int | float):
            return False
        if self.since is not None and ts < self.since:
            return False
        if self.until is not None and ts > self.until:
            return False
        return not self.text or self.text.lower() in str(rec.get("body", "")).lower()


def _latencies(logs_dir: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for rec in read_log(logs_dir / LATENCY_LOG):
        msg_id, lat = rec.get("id"), rec.get("latency_us")
        if isinstance(msg_id, str) and isinstance(lat, int | float):
            out[msg_id] = float(lat)
    return out


def _with_latency(records: Iterable[dict[str, Any]], logs_dir: Path) -> Iterator[dict[str, Any]]:
    lat: dict[str, float] | None = None
    for rec in records:
        if lat is None:
            lat = _latencies(logs_dir)  # read only when something matched
        value = lat.get(str(rec.get("id")))
        yield {**rec, "latency_us": value} if value is not None else rec


def search(logs_dir: Path, query: Query, *, limit: int = 0) -> list[dict[str, Any]]:
    """Matching communication records, oldest first (the last ``limit`` if > 0).

    Each record gets ``latency_us`` when the receiver logged one for its ID.
    """
    found = [rec for rec in read_log(logs_dir / COMM_LOG) if query.matches(rec)]
    if limit > 0:
        found = found[-limit:]
    return list(_with_latency(found, logs_dir))


def thread(logs_dir: Path, msg_id: str, *, all_events: bool = False) -> list[dict[str, Any]]:
    """The message ``msg_id`` and every reply to it or to its replies, by time."""
    records: list[dict[str, Any]] = [
        rec for rec in read_log(logs_dir / COMM_LOG) if all_events or rec.get("event") == SENT
    ]
    wanted = {msg_id}
    grew = True
    while grew:  # replies of replies: grow the set until it stops changing
        before = len(wanted)
        wanted |= {str(r.get("id")) for r in records if r.get("re") in wanted}
        grew = len(wanted) > before
    found = [r for r in records if r.get("id") in wanted]
    found.sort(key=lambda r: float(r.get("ts", 0)))
    return list(_with_latency(found, logs_dir))


def format_record(rec: dict[str, Any], *, full: bool = False) -> str:
    """One record as a readable line (``full``: the whole body, indented, below it)."""
    stamp = datetime.fromtimestamp(float(rec.get("ts", 0)), UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    to = rec.get("to") or "*"
    ref = f" re {rec['re']}" if rec.get("re") else ""
    lat = rec.get("latency_us")
    lat_text = f" ({lat:.0f} us)" if isinstance(lat, int | float) else ""
    event = rec.get("event", "")
    tag = "" if event == SENT else f" [{event}]"
    head = (
        f"[{stamp[:-3]}] {rec.get('from')} -> {to}  {rec.get('type')} P{rec.get('priority')} "
        f"id {rec.get('id')}{ref}{lat_text}{tag}"
    )
    body = str(rec.get("body", ""))
    if full:
        more = " [truncated in the log]" if rec.get("truncated") else ""
        return head + more + "\n" + "\n".join("    " + ln for ln in body.splitlines() or [""])
    body = body.replace("\n", " | ")
    return f"{head}  {body[:97] + '...' if len(body) > 100 else body}"


class _CliState(Protocol):
    home_arg: str | None
    as_json: bool


@click.command()
@click.option("--agent", default="", help="Messages from or to AGENT.")
@click.option("--peer", default="", help="With --agent: only its conversation with PEER.")
@click.option("--type", "msg_type", default="", help="Only this message TYPE.")
@click.option("--since", default=None, help="From this time: 10m, 2h, 1d, ISO time or epoch s.")
@click.option("--until", default=None, help="Up to this time (same forms as --since).")
@click.option("--text", default="", help="Body contains TEXT (case-insensitive).")
@click.option("--thread", "thread_id", default="", help="A message ID and all its replies.")
@click.option("--all", "all_events", is_flag=True, help="Include received/misrouted records.")
@click.option("-n", "--limit", type=int, default=0, help="Only the last N matches (0: all).")
@click.option("--full", is_flag=True, help="Print whole bodies, not one line each.")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@click.pass_obj
def history(
    state: _CliState,
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
    as_json: bool,
) -> None:
    """Search past traffic in mesh_communication.log and its rotated files."""
    logs_dir = MeshHome.open(state.home_arg).logs_dir
    if thread_id:
        found = thread(logs_dir, thread_id, all_events=all_events)
        if not found:
            raise UsageError(f"no message with id {thread_id} in {logs_dir / COMM_LOG}")
    else:
        query = Query(
            agent=agent,
            peer=peer,
            msg_type=msg_type,
            since=parse_time(since) if since else None,
            until=parse_time(until) if until else None,
            text=text,
            all_events=all_events,
        )
        found = search(logs_dir, query, limit=limit)
    for rec in found:
        if as_json or state.as_json:
            click.echo(json.dumps(rec, ensure_ascii=False))
        else:
            click.echo(format_record(rec, full=full or bool(thread_id)))
