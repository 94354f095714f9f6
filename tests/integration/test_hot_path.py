"""The send hot path's per-peer route cache follows the peer's registry record on real FIFOs.

A sender caches, per peer, whether to write binary frames, the peer's body limit and
whether it is durable (``MeshClient._routes``). These tests restart the peer with a
different record and check that the next send obeys the new one: the cache is dropped on
the peer's join and leave frames.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipemesh import AgentBase, Delivery, Message, MessageTooLarge, UnknownAgent
from pipemesh.codec import MAGIC
from pipemesh.wire import HEADER_START
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _default_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPEMESH_FRAMES", raising=False)  # the shipped default: binary


class Keeper(AgentBase):
    def __init__(self, *args: object, **kw: object) -> None:
        self.got: list[Message] = []
        self.lock = threading.Lock()
        super().__init__(*args, heartbeat_s=0, **kw)  # type: ignore[arg-type]

    def on_message_received(self, msg: Message) -> None:
        with self.lock:
            self.got.append(msg)

    def bodies(self) -> list[str]:
        with self.lock:
            return [m.body for m in self.got]


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
