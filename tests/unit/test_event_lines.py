"""The mesh logs' line format: records built on the hot path, JSON Lines on disk.

The writer encodes a batch with msgspec; readers (history, tail, stats, monitor, jq)
see the same keys, in the same order, as the lines formatted in Python before.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipemesh import observe
from pipemesh.observe import COMM_LOG, LATENCY_LOG, EventLog, read_log


def test_message_and_latency_lines_keep_their_keys_and_order(tmp_path: Path) -> None:
    events = EventLog(tmp_path, "me", max_body_chars=5, flush_interval_s=10.0)
    events.message(
        "frame_sent",
        sender="me",
        to="you",
        msg_type="directive",
        priority=2,
        msg_id="a-1",
        body='hé "quoted"\n',
        reply_to="b-2",
        size=15,
    )
    events.message(
        "frame_received", sender="you", to="me", msg_type="t", priority=1, msg_id="c-3", body=""
    )
    events.latency(
        "message_handled",
        sender="you",
        msg_type="t",
        priority=1,
        msg_id="c-3",
        latency_us=12.3,
        size=7,
    )
    events.close()
    lines = (tmp_path / COMM_LOG).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert list(first) == [
        "ts", "event", "agent", "from", "to", "type", "priority", "id", "re", "bytes", "body",
        "truncated",
    ]  # fmt: skip
    assert first["body"] == 'hé "q'  # cut at max_body_chars, and says so
    assert first["truncated"] is True
    assert (first["from"], first["to"], first["priority"], first["re"]) == ("me", "you", 2, "b-2")
    assert "truncated" not in second
    assert (second["event"], second["re"], second["bytes"]) == ("frame_received", "", 0)
    (latency,) = read_log(tmp_path / LATENCY_LOG)
    assert list(latency) == [
        "ts", "event", "agent", "from", "type", "priority", "id", "bytes", "latency_us",
    ]  # fmt: skip
    assert latency["latency_us"] == 12.3
    assert isinstance(latency["ts"], float)


def test_many_records_are_written_whole_and_in_order(tmp_path: Path) -> None:
    """More records than one writer batch: every line whole, order kept."""
    events = EventLog(tmp_path, "me", flush_interval_s=10.0)
    for i in range(1000):
        events.message(
            "frame_sent", sender="me", to="x", msg_type="t", priority=1, msg_id=f"m-{i}", body="b"
        )
    events.close()
    ids = [r["id"] for r in read_log(tmp_path / COMM_LOG)]
    assert ids == [f"m-{i}" for i in range(1000)]


def test_a_held_writer_writes_every_record_at_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """observe.FLUSH_INTERVAL_S (what `pipemesh bench --instructions` sets to an hour) is
    the default gathering time: records wait for close(), then all are written, in order."""
    monkeypatch.setattr(observe, "FLUSH_INTERVAL_S", 3600.0)
    events = EventLog(tmp_path, "me")
    assert events.flush_interval_s == 3600.0
    assert (
        EventLog(tmp_path / "other", "me", enabled=False, flush_interval_s=0.5).flush_interval_s
        == 0.5
    )
    for i in range(600):
        events.message("frame_sent", "me", "x", "t", 1, f"m-{i}", "b")
    assert (tmp_path / COMM_LOG).read_bytes() == b""  # held: the writer waits an hour or close()
    events.close(timeout_s=60.0)
    assert events.dropped == 0
    assert [r["id"] for r in read_log(tmp_path / COMM_LOG)] == [f"m-{i}" for i in range(600)]
