"""The send hot path's per-peer route cache follows the peer's registry record on real FIFOs.

A sender caches, per peer, whether to write binary frames, the peer's body limit and
whether it is durable (``MeshClient._routes``). These tests restart the peer with a
different record and check that the next send obeys the new one: the cache is dropped on
the peer's join and leave frames.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipemesh import Delivery, MessageTooLarge, UnknownAgent
from pipemesh.codec import MAGIC
from pipemesh.observe import COMM_LOG, LATENCY_LOG, read_log
from pipemesh.wire import HEADER_START
from tests.conftest import wait_for
from tests.integration.keeper import Keeper

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _default_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPEMESH_FRAMES", raising=False)  # the shipped default: binary


def test_route_follows_a_restarted_peer_with_a_smaller_body_limit(mesh_home: Path) -> None:
    """After the peer restarts with max_body_bytes=1000, a 2000-byte send raises MessageTooLarge."""
    with Keeper("sender") as s:
        with Keeper("peer") as p:
            s.send_message("peer", "x" * 2000)  # the route is cached: binary, 16 MiB limit
            wait_for(lambda: p.bodies() == ["x" * 2000])
        # (1000, not less: an agent's own join frame, its registry record, must fit.)
        with Keeper("peer", max_body_bytes=1000) as p2:
            wait_for(lambda: s.peers().get("peer") is not None)
            wait_for(lambda: s.peers()["peer"].max_body_bytes == 1000)  # its join frame came
            with pytest.raises(MessageTooLarge, match="accepts at most 1000"):
                s.send_message("peer", "y" * 2000)
            s.send_message("peer", "small")
            wait_for(lambda: p2.bodies() == ["small"])


def test_route_follows_a_peer_that_now_reads_only_text(mesh_home: Path) -> None:
    """A peer that comes back reading only text (and durable) gets text frames in its spool."""
    with Keeper("sender") as s:
        with Keeper("store", durable=True, spool_fsync=False) as p:
            s.send_message("store", "first")  # the route is cached: binary
            wait_for(lambda: p.bodies() == ["first"])
        Keeper("store", durable=True, spool_fsync=False, frames="text").close()
        wait_for(lambda: s.peers().get("store") is not None)
        wait_for(lambda: s.peers()["store"].frames == ("text",))  # its join/leave frames came
        assert s.send("store", "second").delivery is Delivery.QUEUED
    files = sorted((mesh_home / "spool" / "store").glob("*.msg"))
    assert len(files) == 1
    data = files[0].read_bytes()
    assert data.startswith(HEADER_START)
    assert MAGIC not in data
    assert b"second" in data


def test_a_checked_name_does_not_pass_as_a_message_type(mesh_home: Path) -> None:
    """A name seen before is still checked as a TYPE, and a type as a name (their rules differ)."""
    with Keeper("sender") as s, Keeper("peer"):
        with pytest.raises(UnknownAgent):
            s.send_message("1agent", "x")  # a valid name (a digit may start it), not a type
        with pytest.raises(ValueError, match="message type '1agent' is not valid"):
            s.send_message("peer", "x", msg_type="1agent")
        s.send_message("peer", "x", msg_type="a..b")  # a valid type, not a valid name
        with pytest.raises(ValueError, match=r"recipient name 'a\.\.b' is not valid"):
            s.send_message("a..b", "x")


_COMM_KEYS = ["ts", "event", "agent", "from", "to", "type", "priority", "id", "re", "bytes", "body"]


def test_inline_log_records_match_eventlog_lines(mesh_home: Path) -> None:
    """The records the hot path queues itself (frame_sent, frame_received, message_handled)
    are the lines EventLog.message/latency write: same keys, order and values; a long
    body is cut and says so. Fails if an inline record's fields are out of order."""
    with Keeper("sender") as s:
        max_chars = s.events.max_body_chars
        with Keeper("peer") as p:
            first = s.send_message("peer", "hé", priority=2, msg_type="directive")
            wait_for(lambda: p.bodies() == ["hé"])
            answer = p.reply(p.got[0], "y" * (max_chars + 10))
            wait_for(lambda: s.bodies() == ["y" * (max_chars + 10)])
            logs = s.home.logs_dir
            wanted = {("frame_sent", first), ("frame_received", first), ("frame_sent", answer)}

            def comm() -> dict[tuple[str, str], dict[str, object]]:
                return {(str(r["event"]), str(r["id"])): r for r in read_log(logs / COMM_LOG)}

            wait_for(lambda: wanted <= set(comm()))
            recs = comm()
    sent, got, reply = (
        recs[k] for k in (("frame_sent", first), ("frame_received", first), ("frame_sent", answer))
    )
    assert list(sent) == _COMM_KEYS
    assert list(got) == _COMM_KEYS
    assert [sent[k] for k in _COMM_KEYS[1:]] == [
        "frame_sent", "sender", "sender", "peer", "directive", 2, first, "", 3, "hé",
    ]  # fmt: skip
    assert [got[k] for k in _COMM_KEYS[1:]] == [
        "frame_received", "peer", "sender", "peer", "directive", 2, first, "", 3, "",
    ]  # fmt: skip
    assert list(reply) == [*_COMM_KEYS, "truncated"]
    assert (reply["re"], reply["body"], reply["truncated"]) == (first, "y" * max_chars, True)
    assert reply["bytes"] == max_chars + 10
    handled = [r for r in read_log(logs / LATENCY_LOG) if r["id"] == first]
    assert [list(r) for r in handled] == [
        ["ts", "event", "agent", "from", "type", "priority", "id", "bytes", "latency_us"]
    ]
    assert [handled[0][k] for k in ("event", "agent", "from", "type", "priority", "bytes")] == [
        "message_handled", "peer", "sender", "directive", 2, 3,
    ]  # fmt: skip
    assert isinstance(handled[0]["latency_us"], float)
    assert isinstance(handled[0]["ts"], float)
