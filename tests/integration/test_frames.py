"""Frame negotiation on real FIFOs: binary between agents, text for whoever reads only text.

The kind on the wire is observed where it is real bytes: a durable agent's spool file (what
its pipe would have carried) and a raw FIFO read by a hand-made "old agent".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipemesh import Delivery, MeshClient
from pipemesh.codec import MAGIC
from pipemesh.registry import AgentRecord, Registry, process_start_time, utc_now_iso
from pipemesh.transport.fifo import FifoTransport
from pipemesh.wire import HEADER_START, encode_message
from tests.conftest import wait_for
from tests.integration.keeper import Keeper

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _default_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPEMESH_FRAMES", raising=False)  # the shipped default


def registry(home: Path) -> Registry:
    return Registry(home / "agent_registry.json", home / "agent_registry.json.lock")


def spooled(home: Path, name: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((home / "spool" / name).glob("*.msg"))]


def test_agents_advertise_and_use_the_binary_frame(mesh_home: Path) -> None:
    """Default agents advertise binary and write it; frames='text' agents get text."""
    Keeper("bin_store", durable=True, spool_fsync=False).close()
    Keeper("text_store", durable=True, spool_fsync=False, frames="text").close()
    records = registry(mesh_home).read()
    assert records["bin_store"].frames == ("text", "binary", "file")  # file: body files
    assert records["text_store"].frames == ("text",)
    big = "é" * 5000  # 10,000 bytes: three parts of at most PIPE_BUF
    with Keeper("sender") as s:
        for to in ("bin_store", "text_store"):
            assert s.send(to, "small").delivery is Delivery.QUEUED
            assert s.send(to, big).delivery is Delivery.QUEUED
        result = s.broadcast_message("to all")
        assert set(result.outcomes.values()) == {Delivery.QUEUED}
    bin_files, text_files = spooled(mesh_home, "bin_store"), spooled(mesh_home, "text_store")
    assert len(bin_files) == len(text_files) == 3
    assert all(f.startswith(MAGIC) for f in bin_files)
    assert all(f.startswith(HEADER_START) and MAGIC not in f for f in text_files)
    assert bin_files[1].count(MAGIC) == 3  # the large message went as binary parts
    assert all(len(part) <= 4096 for part in bin_files[1].split(MAGIC)[1:])
    # On restart each agent reads what was queued for it, binary or text alike.
    for name in ("bin_store", "text_store"):
        with Keeper(name, durable=True, spool_fsync=False) as k:
            wait_for(lambda k=k: len(k.bodies()) == 3)  # type: ignore[misc]
            assert sorted(k.bodies()) == sorted(["small", big, "to all"])


def test_both_kinds_share_one_live_pipe(mesh_home: Path) -> None:
    """A binary sender, a text-only sender and a raw external writer all reach one agent."""
    with Keeper("sink") as sink, Keeper("fast") as fast, MeshClient("cli_like") as cli:
        assert cli.frames == "text"
        fifo = FifoTransport(mesh_home / "pipes")
        external = encode_message("ext", "sink", b"from a shell", msg_id="ext-1")
        for i in range(20):
            fast.send_message("sink", f"b{i}")
            cli.send_message("sink", f"t{i}")
            if i == 10:
                out = fifo.connect("sink")
                out.write_frames(external, 5.0)
                out.close()
        wait_for(lambda: len(sink.bodies()) == 41)
        got = sink.bodies()
        assert [b for b in got if b.startswith("b")] == [f"b{i}" for i in range(20)]
        assert [b for b in got if b.startswith("t")] == [f"t{i}" for i in range(20)]
        assert "from a shell" in got
        # A reply from the sink to the binary agent comes back too.
        sink.send_message("fast", "pong")
        wait_for(lambda: fast.bodies() == ["pong"])


def test_an_agent_without_the_field_gets_text(mesh_home: Path) -> None:
    """A record with no 'frames' (an older agent) is written text frames, broadcasts too."""
    reg = registry(mesh_home)
    name_lock = reg.lock_name("old")
    fifo = FifoTransport(mesh_home / "pipes")
    inbox = fifo.bind("old")
    try:
        pid = os.getpid()
        with reg.transaction() as records:
            records["old"] = AgentRecord(
                name="old",
                role="older pipemesh",
                pid=pid,
                registered_at=utc_now_iso(),
                public_pipe=fifo.address("old"),
                private_pipe="",
                pid_start=process_start_time(pid),
            )
        path = registry(mesh_home).path
        doc = json.loads(path.read_text())
        del doc["agents"]["old"]["frames"]  # as an older version wrote its record
        path.write_text(json.dumps(doc))
        with Keeper("newer") as newer:
            assert newer.peers()["old"].frames == ("text",)
            newer.send_message("old", "hello old friend")
            newer.broadcast_message("everyone")
            data = b""
            for _ in range(50):
                data += inbox.read(timeout_s=5.0)
                if data.count(HEADER_START) >= 2:
                    break
        assert data.startswith(HEADER_START)
        assert MAGIC not in data
        assert b"hello old friend" in data
        assert b"everyone" in data
    finally:
        inbox.close()
        fifo.remove("old")
        name_lock.release()


def test_env_turns_the_binary_frame_off(mesh_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PIPEMESH_FRAMES=text makes an agent advertise and write text only; a bad value is refused."""
    monkeypatch.setenv("PIPEMESH_FRAMES", "text")
    with Keeper("plain") as plain:
        assert plain.frames == "text"
        assert registry(mesh_home).read()["plain"].frames == ("text",)
    monkeypatch.setenv("PIPEMESH_FRAMES", "json")
    with pytest.raises(ValueError, match="PIPEMESH_FRAMES must be"):
        Keeper("bad")
    with pytest.raises(ValueError, match="frames must be"):
        MeshClient("bad", frames="json")  # type: ignore[arg-type]
