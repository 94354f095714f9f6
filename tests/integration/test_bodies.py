"""Large bodies through body files (runtime/bodies.py): real FIFOs, real files, real processes.

Which path a message took is read from the receiver's router (``frames``: one
frame for a body file, one per part otherwise) and from the home's ``bodies/``
directory, never from the sender's internals.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from pipemesh import AgentBase, MeshClient, Message, SendTimeout
from pipemesh.runtime import bodies
from tests.conftest import Spawner, run_cli, wait_for

pytestmark = pytest.mark.integration

BIG = 64 * 1024


def body_files(home: Path, receiver: str) -> list[str]:
    """The body files waiting for ``receiver`` (recycled ``.free-`` files excluded)."""
    directory = home / "bodies" / receiver
    if not directory.exists():
        return []
    return sorted(n for n in os.listdir(directory) if not n.startswith(".free-"))


def joined(rx: AgentBase, sender: str) -> None:
    """Wait until ``rx`` routed ``sender``'s join frame (so frame counts are messages only)."""
    wait_for(lambda: sender in rx.peers(), timeout_s=30)


def errors_of(home: Path, event: str) -> list[dict[str, object]]:
    path = home / "logs" / "mesh_errors.log"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [r for r in records if r.get("event") == event]


def test_large_body_goes_through_one_frame_and_a_body_file(mesh_home: Path) -> None:
    """64 KiB and 1 MiB arrive whole as one FILE frame each; nothing is left behind."""
    with (
        AgentBase("rx", home=mesh_home, heartbeat_s=0) as rx,
        AgentBase("tx", home=mesh_home, heartbeat_s=0) as tx,
    ):
        assert bodies.CAPABILITY in tx.peers()["rx"].frames
        joined(rx, "tx")
        for size in (BIG, 1 << 20, bodies.DEFAULT_MIN_BYTES):
            text = ("é" * size)[: size // 2] + "x" * (size - 2 * (size // 2))  # size bytes
            assert len(text.encode()) == size
            before = rx._router.frames
            tx.send_message("rx", text)
            msg = rx.receive(30)
            assert msg is not None
            assert msg.body == text
            assert msg.sender == "tx"
            assert rx._router.frames - before == 1
            assert body_files(mesh_home, "rx") == []
        small = "s" * (bodies.DEFAULT_MIN_BYTES - 1)  # under the threshold: PART frames
        before = rx._router.frames
        tx.send_message("rx", small)
        assert rx.receive(30).body == small  # type: ignore[union-attr]
        assert rx._router.frames - before > 1
    assert (
        not (mesh_home / "bodies" / "rx").exists() or os.listdir(mesh_home / "bodies" / "rx") == []
    )


def test_body_file_is_private_and_in_the_expected_place(mesh_home: Path) -> None:
    """The sender's file is 0600 in a 0700 <home>/bodies/<receiver>/, named <sender>.<id>."""
    with (
        AgentBase("rx", home=mesh_home, heartbeat_s=0) as rx,
        MeshClient("tx", home=mesh_home) as tx,
    ):
        tx.refresh_peers()
        ref, _ = tx._encode(
            to="rx",
            message="b" * BIG,
            priority=1,
            msg_type="note",
            msg_id="m-1",
            reply_to="",
            sent_ns=1,
        )
        assert isinstance(ref, bodies.BodyRef)
        assert tx._bodies is not None
        path = Path(tx._bodies.put("rx", ref))
        assert path == mesh_home / "bodies" / "rx" / "tx.m-1"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(mesh_home / "bodies").st_mode) == 0o700
        tx._write_once("rx", list(ref), 5.0)  # the frame, as _write does after the file
        msg = rx.receive(30)
        assert msg is not None
        assert msg.body == "b" * BIG
        assert msg.id == "m-1"
        assert not path.exists()


def test_text_only_peer_still_gets_part_frames(mesh_home: Path) -> None:
    """A receiver that does not advertise body files gets PART frames; no body directory."""
    with (
        AgentBase("rx", home=mesh_home, heartbeat_s=0, frames="text") as rx,
        AgentBase("tx", home=mesh_home, heartbeat_s=0) as tx,
    ):
        assert tx.peers()["rx"].frames == ("text",)
        joined(rx, "tx")
        before = rx._router.frames
        tx.send_message("rx", "t" * BIG)
        assert rx.receive(30).body == "t" * BIG  # type: ignore[union-attr]
        assert rx._router.frames - before >= BIG // 4096
        assert not (mesh_home / "bodies" / "rx").exists()


def test_cli_send_uses_a_body_file_to_an_agent(mesh_home: Path) -> None:
    """'pipemesh send' (a MeshClient, text frames) hands a large body over as a body file."""
    with AgentBase("rx", home=mesh_home, heartbeat_s=0) as rx:
        before = rx._router.frames
        body = "c" * (BIG + 3)
        out = run_cli("send", "rx", body)
        assert out.returncode == 0, out.stderr
        msg = rx.receive(30)
        assert msg is not None
        assert msg.body == body
        assert rx._router.frames - before == 1
        assert body_files(mesh_home, "rx") == []


def test_recycled_file_is_reused_and_swept(mesh_home: Path) -> None:
    """The receiver keeps one read file per sender for reuse; close removes it."""
    with (
        AgentBase("rx", home=mesh_home, heartbeat_s=0) as rx,
        AgentBase("tx", home=mesh_home, heartbeat_s=0) as tx,
    ):
        for size in (3 * BIG, BIG, 2 * BIG):  # larger, smaller, larger than the kept file
            tx.send_message("rx", "r" * size)
            assert rx.receive(30).body == "r" * size  # type: ignore[union-attr]
        assert os.listdir(mesh_home / "bodies" / "rx") == [".free-tx"]
    assert os.listdir(mesh_home / "bodies" / "rx") == []


def test_broadcast_of_a_large_body_reaches_everyone_once(mesh_home: Path) -> None:
    """A large broadcast: one body file per receiver that takes them, PART for the others."""
    body = "B" * (BIG + 1)
    with (
        AgentBase("a", home=mesh_home, heartbeat_s=0) as a,
        AgentBase("b", home=mesh_home, heartbeat_s=0) as b,
        AgentBase("c", home=mesh_home, heartbeat_s=0, frames="text") as c,
        AgentBase("tx", home=mesh_home, heartbeat_s=0) as tx,
    ):
        result = tx.broadcast_message(body)
        assert set(result.outcomes) == {"a", "b", "c"}
        assert not result.errors
        for agent in (a, b, c):
            msg = agent.receive(30)
            assert msg is not None
            assert msg.body == body
            assert msg.is_broadcast
            assert agent.receive(0.2) is None
        for name in ("a", "b"):
            assert body_files(mesh_home, name) == []
        assert not (mesh_home / "bodies" / "c").exists()


SENDER = """
import hashlib, sys
from pipemesh import MeshClient
name, count = sys.argv[1], int(sys.argv[2])
with MeshClient(name, frames="binary", log_messages=False) as c:
    for i in range(count):
        body = (f"{name}-{i}-" * 20000)[: 40000 + 997 * i]
        c.send_message("rx", body, msg_id=f"{name}-{i}")
        print(hashlib.sha256(body.encode()).hexdigest(), flush=True)
"""


def test_many_concurrent_large_senders(mesh_home: Path, spawn: Spawner) -> None:
    """4 processes send 15 large bodies each at once: all arrive intact, no file is left."""
    senders, count = 4, 15
    with AgentBase("rx", home=mesh_home, heartbeat_s=0, log_messages=False) as rx:
        procs = [spawn.python(SENDER, f"s{k}", str(count)) for k in range(senders)]
        got: dict[str, str] = {}
        for _ in range(senders * count):
            msg = rx.receive(60)
            assert msg is not None, f"only {len(got)} messages arrived"
            got[msg.id] = hashlib.sha256(msg.body.encode()).hexdigest()
        expected: dict[str, str] = {}
        for k, proc in enumerate(procs):
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            for i, digest in enumerate(out.split()):
                expected[f"s{k}-{i}"] = digest
        assert got == expected
        assert rx._router.rejected == 0
        wait_for(lambda: body_files(mesh_home, "rx") == [], timeout_s=10)


def test_gc_removes_body_files_of_agents_that_are_gone(mesh_home: Path) -> None:
    """'pipemesh gc' empties bodies/<name>/ of names no live agent holds, and only those."""
    (mesh_home / "bodies" / "gone").mkdir(parents=True, mode=0o700)
    (mesh_home / "bodies" / "gone" / "tx.m1").write_bytes(b"x")
    with AgentBase("live", home=mesh_home, heartbeat_s=0):
        kept = mesh_home / "bodies" / "live" / "tx.m2"
        kept.parent.mkdir(mode=0o700, exist_ok=True)
        kept.write_bytes(b"y")
        out = run_cli("--json", "gc")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["body_files_removed"] == {"gone": 1}
        assert not (mesh_home / "bodies" / "gone").exists()
        assert kept.exists()  # a live agent's directory is never touched
        kept.unlink()


def test_receiver_start_sweeps_leftover_body_files(mesh_home: Path) -> None:
    """Files left for a name by an earlier run are removed when that name starts again."""
    leftover = mesh_home / "bodies" / "rx" / "tx.old-1"
    leftover.parent.mkdir(parents=True, mode=0o700)
    leftover.write_bytes(b"z" * 10)
    with AgentBase("rx", home=mesh_home, heartbeat_s=0):
        assert not leftover.exists()


def test_threshold_and_off_switch(mesh_home: Path) -> None:
    """body_file_min_bytes decides per sender; a huge value turns body files off."""
    with (
        AgentBase("rx", home=mesh_home, heartbeat_s=0) as rx,
        AgentBase("tx", home=mesh_home, heartbeat_s=0) as tx,
    ):
        joined(rx, "tx")
        tx.body_file_min_bytes = 1 << 40
        before = rx._router.frames
        tx.send_message("rx", "o" * BIG)
        assert rx.receive(30).body == "o" * BIG  # type: ignore[union-attr]
        assert rx._router.frames - before > 1
        tx.body_file_min_bytes = 100
        before = rx._router.frames
        tx.send_message("rx", "p" * 200)
        assert rx.receive(30).body == "p" * 200  # type: ignore[union-attr]
        assert rx._router.frames - before == 1
        assert errors_of(mesh_home, "message_rejected") == []


def test_recycled_files_stay_within_the_budget(mesh_home: Path) -> None:
    """Six senders of 1 MiB: the receiver keeps at most RECYCLE_BUDGET_BYTES of used files."""
    size = bodies.RECYCLE_MAX_BYTES
    with AgentBase("rx", home=mesh_home, heartbeat_s=0, log_messages=False) as rx:
        for k in range(6):
            with MeshClient(f"s{k}", home=mesh_home, log_messages=False) as client:
                client.send_message("rx", str(k) * size)
            assert rx.receive(30).body == str(k) * size  # type: ignore[union-attr]
        kept = [n for n in os.listdir(mesh_home / "bodies" / "rx") if n.startswith(".free-")]
        assert len(kept) * size <= bodies.RECYCLE_BUDGET_BYTES
        assert sorted(kept) == [f".free-s{k}" for k in range(6 - len(kept), 6)]  # the newest


class Gated(AgentBase):
    """Blocks in its handler (so its router reads nothing) until ``gate`` is set."""

    def __init__(self, *args: object, **kw: object) -> None:
        self.gate = threading.Event()
        self.got: list[str] = []
        super().__init__(*args, **kw)  # type: ignore[arg-type]

    def on_message_received(self, msg: Message) -> None:
        self.gate.wait(60)
        self.got.append(msg.id)


def test_stalled_reader_collects_few_body_files(mesh_home: Path) -> None:
    """A reader that stops reading: past a few unread body files, senders use PART frames."""
    with (
        Gated("rx", home=mesh_home, heartbeat_s=0, log_messages=False) as rx,
        AgentBase("tx", home=mesh_home, heartbeat_s=0, log_messages=False) as tx,
    ):
        tx.send_message("rx", "stall")  # the router blocks in its handler from here on
        sent: list[str] = []

        def flood() -> None:
            for i in range(500):
                sent.append(tx.send_message("rx", f"{i:05d}" + "w" * BIG, timeout_s=0.5))

        with pytest.raises(SendTimeout):
            flood()
        ref, _ = tx._encode(
            to="rx",
            message="w" * BIG,
            priority=1,
            msg_type="response",
            msg_id=sent[-1],
            reply_to="",
            sent_ns=1,
        )
        waiting = body_files(mesh_home, "rx")
        assert len(waiting) <= bodies.MAX_UNREAD_BYTES // len(ref[0]) + 1
        assert len(sent) > len(waiting)  # the rest went as PART frames and filled the pipe
        rx.gate.set()
        wait_for(lambda: len(rx.got) == len(sent) + 1, timeout_s=60)
        assert rx.got[1:] == sent
        wait_for(lambda: body_files(mesh_home, "rx") == [], timeout_s=10)
