"""Durable delivery and acknowledgements, in one process on real FIFOs.

- A durable agent that stopped gets its messages queued, then handled in order on restart.
- The sender learns which happened (delivered or queued), per recipient for broadcasts.
- Spools are bounded: SpoolFull, and nothing is half-written.
- ack=True returns once the handler ran; duplicates (same sender and ID) are handled once.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipemesh import (
    AckTimeout,
    AgentBase,
    AgentOffline,
    Delivery,
    MeshClient,
    Message,
    SpoolFull,
    UnknownAgent,
)
from pipemesh.registry import Registry
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


class Keeper(AgentBase):
    """Keeps every message it handles; can block its handler on a gate."""

    def __init__(self, *args: object, **kw: object) -> None:
        self.got: list[Message] = []
        self.gate = threading.Event()
        self.gate.set()
        super().__init__(*args, **kw)  # type: ignore[arg-type]

    def on_message_received(self, msg: Message) -> None:
        self.gate.wait(30)
        self.got.append(msg)


def spool_files(home: Path, name: str) -> list[Path]:
    return sorted((home / "spool" / name).glob("*.msg"))


def test_durable_agent_gets_queued_messages_in_order(mesh_home: Path) -> None:
    """Messages sent while a durable agent is stopped are queued, then handled in order."""
    Keeper("store", durable=True).close()
    reg = Registry(mesh_home / "agent_registry.json", mesh_home / "agent_registry.json.lock")
    entry = reg.read()["store"]
    assert entry.durable
    assert entry.status == "inactive"  # a clean close keeps a durable entry
    with MeshClient("writer", spool_fsync=False) as w:
        results = [w.send("store", f"m{i}", priority=i % 2) for i in range(20)]
        assert {r.delivery for r in results} == {Delivery.QUEUED}
        assert w.send_message("store", "m20") == spool_files(mesh_home, "store")[-1].name.split(
            "-", 4
        )[4].removesuffix(".msg")
    assert len(spool_files(mesh_home, "store")) == 21
    with Keeper("store", durable=True) as k:
        wait_for(lambda: len(k.got) == 21)
        live = MeshClient("writer2")
        assert live.send("store", "after").delivery is Delivery.DELIVERED
        live.close()
        wait_for(lambda: len(k.got) == 22)
    bodies = [m.body for m in k.got]
    # Handled in queue order within each priority, queued ones before the live one.
    assert [b for b in bodies if b != "after" and int(b[1:]) % 2 == 1] == [
        f"m{i}" for i in range(1, 21, 2)
    ]
    assert bodies[-1] == "after"
    assert spool_files(mesh_home, "store") == []


def test_unknown_and_non_durable_offline_still_raise(mesh_home: Path) -> None:
    """An unknown name is UnknownAgent; a non-durable agent that stopped is not queued."""
    with MeshClient("writer") as w:
        with pytest.raises(UnknownAgent):
            w.send("nobody", "hello")
        with Keeper("durable_one", durable=True) as d:
            assert w.send("durable_one", "x", queue=False).delivery is Delivery.DELIVERED
            wait_for(lambda: d.got)
        with pytest.raises(AgentOffline):
            w.send("durable_one", "y", queue=False)
    assert spool_files(mesh_home, "durable_one") == []


def test_ack_from_a_bare_client_is_a_clear_error(mesh_home: Path) -> None:
    """A MeshClient has no inbox for the ack: ValueError that says so."""
    with (
        Keeper("target"),
        MeshClient("bare") as bare,
        pytest.raises(ValueError, match="needs an inbox"),
    ):
        bare.send("target", "hi", ack=True)


def test_ack_waits_for_the_handler_and_times_out(mesh_home: Path) -> None:
    """ack=True returns after the handler ran; a stalled handler gives AckTimeout."""
    with Keeper("target") as t, AgentBase("asker") as a:
        res = a.send("target", "one", ack=True, ack_timeout_s=30)
        assert res.acked
        assert res.delivery is Delivery.DELIVERED
        assert [m.body for m in t.got] == ["one"]
        t.gate.clear()
        with pytest.raises(AckTimeout, match="did not acknowledge") as info:
            a.send("target", "two", ack=True, ack_timeout_s=0.3)
        msg_id = info.value.message_id
        # The retry with the same ID is dropped as a duplicate and still acknowledged.
        t.gate.set()
        again = a.send("target", "two", ack=True, ack_timeout_s=30, msg_id=msg_id)
        assert again.acked
        wait_for(lambda: t.duplicates == 1)
        assert [m.body for m in t.got] == ["one", "two"]


def test_dedupe_window_is_bounded(mesh_home: Path) -> None:
    """The duplicate filter remembers at most dedupe_window pairs (oldest forgotten)."""
    with Keeper("target", dedupe_window=3) as t, MeshClient("w") as w:
        for i in range(5):
            w.send("target", f"m{i}", msg_id=f"id{i}")
        w.send("target", "again", msg_id="id4")  # recent: dropped
        w.send("target", "old", msg_id="id0")  # forgotten: handled again
        wait_for(lambda: len(t.got) == 6 and t.duplicates == 1)
        assert len(t._seen) == 3


def test_spool_full_is_a_clear_error_and_nothing_half_written(mesh_home: Path) -> None:
    """A spool at its limit refuses with SpoolFull; only whole messages are on disk."""
    Keeper("small", durable=True).close()
    with MeshClient("w", spool_max_messages=3, spool_max_bytes=1 << 20, spool_fsync=False) as w:
        for i in range(3):
            assert w.send("small", f"m{i}").delivery is Delivery.QUEUED
        with pytest.raises(SpoolFull, match="limit is 3 messages"):
            w.send("small", "m3")
        with pytest.raises(SpoolFull, match="bytes"):
            MeshClient("w2", spool_max_bytes=100).send("small", "x" * 200)
    files = [p.name for p in (mesh_home / "spool" / "small").iterdir()]
    assert len(files) == 3
    assert all(name.endswith(".msg") for name in files)
    with Keeper("small", durable=True) as k:
        wait_for(lambda: len(k.got) == 3)
        assert [m.body for m in k.got] == ["m0", "m1", "m2"]
    assert spool_files(mesh_home, "small") == []


def test_broadcast_reports_queued_per_recipient(mesh_home: Path) -> None:
    """A broadcast says delivered for the live agent and queued for the stopped durable one."""
    Keeper("away", durable=True).close()
    with Keeper("here") as here, AgentBase("caller") as c:
        c.refresh_peers()
        result = c.broadcast_message("all hands")
        assert result.outcomes == {"here": Delivery.DELIVERED, "away": Delivery.QUEUED}
        assert result.queued == ["away"]
        assert result.failed == []
        wait_for(lambda: here.got)
    with Keeper("away", durable=True) as away:
        wait_for(lambda: away.got)
        assert away.got[0].body == "all hands"
