"""Pure pieces of the dashboard, history and plots: filters, time parsing, binning."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipemesh.errors import UsageError
from pipemesh.history import Query, parse_time
from pipemesh.monitor.data import TrafficFilter
from pipemesh.observe import LogTail, log_files
from pipemesh.plots import collect_series

REC = {
    "ts": 1000.0,
    "event": "frame_sent",
    "from": "claude_code",
    "to": "gemini",
    "type": "question",
    "id": "ab-1",
    "re": "",
    "body": "How should we structure the data PIPELINE?",
}


class TestTrafficFilter:
    def test_parse_splits_fields_and_words(self) -> None:
        """agent:/from:/to:/type: become fields; other tokens are lower-cased words."""
        f = TrafficFilter.parse("agent:gemini type:question Data pipeline")
        assert f == TrafficFilter(agent="gemini", msg_type="question", words=("data", "pipeline"))

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("", True),
            ("agent:claude_code", True),
            ("agent:codex", False),
            ("from:gemini", False),
            ("to:gemini type:question", True),
            ("type:response", False),
            ("pipeline structure", True),
            ("pipeline nothing", False),
            ("ab-1", True),
        ],
    )
    def test_matches(self, text: str, expected: bool) -> None:
        """Every field and every word must match."""
        assert TrafficFilter.parse(text).matches(REC) is expected


class TestQuery:
    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (Query(), True),
            (Query(agent="gemini"), True),
            (Query(agent="gemini", peer="claude_code"), True),
            (Query(agent="gemini", peer="codex"), False),
            (Query(msg_type="response"), False),
            (Query(since=1000.0, until=1000.0), True),
            (Query(since=1000.5), False),
            (Query(until=999.0), False),
            (Query(text="pipeline"), True),
            (Query(text="absent"), False),
        ],
    )
    def test_matches(self, query: Query, expected: bool) -> None:
        """Each filter narrows; empty filters match everything."""
        assert query.matches(REC) is expected

    def test_received_records_need_all_events(self) -> None:
        """Only frame_sent records match unless all_events is set."""
        rec = {**REC, "event": "frame_received"}
        assert not Query().matches(rec)
        assert Query(all_events=True).matches(rec)


class TestParseTime:
    def test_relative(self) -> None:
        """10m means ten minutes before now."""
        assert parse_time("10m", now=5000.0) == 4400.0
        assert parse_time("1.5h", now=10_000.0) == 4600.0

    def test_iso_is_local_unless_zoned(self) -> None:
        """A naive ISO time is local time (the clock people read); Z and offsets are honoured."""
        local = datetime(2025, 11, 21, 10, 0).astimezone().timestamp()
        assert parse_time("2025-11-21T10:00:00") == local
        assert parse_time("2025-11-21 10:00") == local
        expected = datetime(2025, 11, 21, 10, 0, tzinfo=UTC).timestamp()
        assert parse_time("2025-11-21T10:00:00Z") == expected
        assert parse_time("2025-11-21T11:00:00+01:00") == expected

    def test_today_yesterday_and_days(self) -> None:
        """today/yesterday are local midnights; 3d is three days before now."""
        now = datetime(2026, 11, 24, 14, 18).astimezone().timestamp()
        today = datetime(2026, 11, 24).astimezone().timestamp()
        assert parse_time("today", now=now) == today
        assert parse_time("Yesterday", now=now) == datetime(2026, 11, 23).astimezone().timestamp()
        assert parse_time("3d", now=now) == now - 3 * 86400
        assert parse_time("now", now=now) == now

    def test_epoch_and_garbage(self) -> None:
        """Seconds pass through; anything else is a usage error with the accepted forms."""
        assert parse_time("1700000000.5") == 1700000000.5
        for bad in ("last week", "inf", "2026-13-01"):
            with pytest.raises(UsageError, match="an age like 10m"):
                parse_time(bad)


def test_collect_series_groups_and_bins() -> None:
    """Latency records group by receiving agent; rates count messages per second bin."""
    records = [
        {"agent": "b", "ts": 10.0, "latency_us": 5.0},
        {"agent": "a", "ts": 10.2, "latency_us": 7.0},
        {"agent": "a", "ts": 10.9, "latency_us": 9.0},
        {"agent": "a", "ts": 12.1, "latency_us": 8.0},
        {"agent": "a", "ts": 12.5},  # no latency: ignored
    ]
    series = collect_series(records)
    assert list(series) == ["a", "b"]
    assert series["a"].latency_us == [7.0, 9.0, 8.0]
    assert series["a"].rate_per_s() == ([0.0, 1.0], [2.0, 1.0])  # bins start at 10.2 s


def test_log_files_oldest_first(tmp_path: Path) -> None:
    """Rotated files come highest number first, then the live file; lock files are not logs."""
    for name in ("x.log", "x.log.1", "x.log.10", "x.log.2", "x.log.lock", "x.logger"):
        (tmp_path / name).write_text("")
    names = [p.name for p in log_files(tmp_path / "x.log")]
    assert names == ["x.log.10", "x.log.2", "x.log.1", "x.log"]


def test_logtail_rereads_after_truncation_and_waits_for_whole_lines(tmp_path: Path) -> None:
    """A truncated file is read from the start; a partial line waits for its newline."""
    path = tmp_path / "x.log"
    path.write_bytes(b'{"n": 1}\n{"n": 2')
    with LogTail(path) as tail:
        assert tail.poll() == [{"n": 1}]
        with path.open("ab") as f:
            f.write(b"}\n")
        assert tail.poll() == [{"n": 2}]
        path.write_bytes(b'{"n": 3}\n')  # truncate and rewrite in place
        assert tail.poll() == [{"n": 3}]
