"""Body files under faults: SIGKILLed senders and receivers, forged references, a full disk.

Real processes, real FIFOs, real files. A child stops at the exact point of a
fault by wrapping one BodyStore method (the file I/O itself is real) and
printing where it is; the test then SIGKILLs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pipemesh import AgentBase, Delivery
from pipemesh.codec import AnyFrameDecoder
from pipemesh.runtime import bodies
from pipemesh.wire import TRAILER, NeedData
from tests.adversarial.conftest import fill
from tests.conftest import Spawner, run_cli, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BIG = 64 * 1024


def waiting(home: Path, receiver: str) -> list[str]:
    """Body files waiting for ``receiver`` (recycled ``.free-`` files excluded)."""
    directory = home / "bodies" / receiver
    if not directory.exists():
        return []
    return sorted(n for n in os.listdir(directory) if not n.startswith(".free-"))


def error_records(home: Path, event: str) -> list[dict[str, object]]:
    path = home / "logs" / "mesh_errors.log"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [r for r in records if r.get("event") == event]


# argv: name count; writes `count` body files to "rx", stops after the last file, before
# its frame, says "file <path>" and waits for stdin (the test SIGKILLs it there).
STOP_AFTER_FILE = """
import sys
from pipemesh import MeshClient
from pipemesh.runtime.bodies import BodyStore
name = sys.argv[1]
original = BodyStore.put
def put(self, receiver, ref):
    path = original(self, receiver, ref)
    print("file", path, flush=True)
    sys.stdin.readline()
    return path
BodyStore.put = put
with MeshClient(name, frames="binary", log_messages=False) as c:
    c.send_message("rx", "k" * 70000, msg_id="killed-1")
"""


def test_sender_sigkilled_between_file_and_frame_leaks_nothing(
    mesh_home: Path, spawn: Spawner
) -> None:
    """The orphan file stays out of the way and goes when the receiver closes or restarts."""
    rx = AgentBase("rx", heartbeat_s=0)
    try:
        proc = spawn.python(STOP_AFTER_FILE, "tx", stdin=subprocess.PIPE)
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[0] == "file"
        orphan = Path(line[1])
        assert orphan == mesh_home / "bodies" / "rx" / "tx.killed-1"
        assert orphan.exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # The receiver is unaffected: the next large message arrives.
        with AgentBase("tx2", heartbeat_s=0) as tx2:
            tx2.send_message("rx", "n" * BIG)
            msg = rx.receive(30)
            assert msg is not None
            assert msg.body == "n" * BIG
        assert orphan.exists()  # no frame will ever come for it ...
    finally:
        rx.close()
    assert not orphan.exists()  # ... so the receiver's close removed it
    # And a restart removes one left by a receiver that was killed as well.
    orphan.parent.mkdir(mode=0o700, exist_ok=True)
    orphan.write_bytes(b"k")
    with AgentBase("rx", heartbeat_s=0):
        assert not orphan.exists()


# argv: name durable(0/1) record block(0/1): a receiver whose router stops (when block)
# right after a FILE frame arrived, before it opens the file ("frame <id>").
RECEIVER = """
import hashlib, os, sys
from pipemesh import AgentBase
from pipemesh.runtime.bodies import BodyStore
name, durable, record, block = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4] == "1"
original = BodyStore.take
def take(self, receiver, max_body_bytes, frame):
    if block:
        print("frame", frame.id, flush=True)
        sys.stdin.readline()
    return original(self, receiver, max_body_bytes, frame)
BodyStore.take = take
fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
class Receiver(AgentBase):
    def on_message_received(self, msg):
        digest = hashlib.sha256(msg.body.encode()).hexdigest()
        os.write(fd, f"{msg.sender} {msg.id} {digest}\\n".encode())
with Receiver(name, durable=durable, heartbeat_s=0, spool_fsync=False) as agent:
    print("ready", flush=True)
    agent.run_forever()
"""


def start(spawn: Spawner, durable: bool, record: Path, block: bool) -> subprocess.Popen[str]:
    proc = spawn.python(
        RECEIVER,
        "rx",
        "1" if durable else "0",
        str(record),
        "1" if block else "0",
        stdin=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def records(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().split("\n")[:-1] if line]


def test_durable_receiver_sigkilled_before_reading_the_file_loses_nothing(
    mesh_home: Path, spawn: Spawner, tmp_path: Path
) -> None:
    """The sender's kept copy goes to the spool with its body; the restart handles it once."""
    record = tmp_path / "handled.txt"
    body = "".join(f"{i:06d}" for i in range(20_000))  # 120,000 bytes
    digest = hashlib.sha256(body.encode()).hexdigest()
    rx = start(spawn, True, record, block=True)
    with AgentBase("tx", heartbeat_s=0) as tx:
        result = tx.send("rx", body, msg_id="durable-1")
        assert result.delivery is Delivery.DELIVERED
        assert rx.stdout is not None
        assert rx.stdout.readline().split() == ["frame", "durable-1"]
        assert waiting(mesh_home, "rx") == ["tx.durable-1"]
        rx.send_signal(signal.SIGKILL)
        rx.wait(timeout=10)
        # The sender sees the death and moves what it kept to rx's spool: the body, inline.
        spool = mesh_home / "spool" / "rx"
        spooled = wait_for(
            lambda: [p for p in spool.glob("*.msg")] if spool.exists() else [], timeout_s=30
        )
        assert isinstance(spooled, list)
        assert len(spooled) == 1
        decoder = AnyFrameDecoder()
        decoder.feed(spooled[0].read_bytes())
        decoder.feed(b"")
        frames = []
        for _ in range(1000):
            frame = decoder.next_frame()
            if isinstance(frame, NeedData):
                break
            frames.append(frame)
        assert frames
        assert all(f.file_bytes == 0 for f in frames)  # never a dangling reference
        assert b"".join(f.body for f in frames) == body.encode()
        again = start(spawn, True, record, block=False)
        wait_for(lambda: len(records(record)) >= 1, timeout_s=30)
        assert records(record) == [["tx", "durable-1", digest]]
        assert waiting(mesh_home, "rx") == []  # the dangling file was swept at the start
        assert again.stdin is not None
        again.send_signal(signal.SIGTERM)
        again.wait(timeout=30)
    assert records(record) == [["tx", "durable-1", digest]]  # once
    assert list((mesh_home / "spool" / "rx").glob("*.msg")) == []
    assert os.listdir(mesh_home / "bodies" / "rx") == []


def test_non_durable_receiver_sigkilled_before_reading_the_file_is_swept_by_gc(
    mesh_home: Path, spawn: Spawner, tmp_path: Path
) -> None:
    """Non-durable: the message is lost with the receiver (at most once); gc removes the file."""
    record = tmp_path / "handled.txt"
    rx = start(spawn, False, record, block=True)
    with AgentBase("tx", heartbeat_s=0) as tx:
        tx.send_message("rx", "v" * BIG, msg_id="lost-1")
        assert rx.stdout is not None
        assert rx.stdout.readline().split() == ["frame", "lost-1"]
        rx.send_signal(signal.SIGKILL)
        rx.wait(timeout=10)
    assert waiting(mesh_home, "rx") == ["tx.lost-1"]
    out = run_cli("--json", "gc")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["body_files_removed"] == {"rx": 1}
    assert not (mesh_home / "bodies" / "rx").exists()
    assert records(record) == []


def external_frame(home: Path, header: str, body: bytes = b"") -> None:
    """Write one text frame to rx's pipe as an external writer would."""
    fd = os.open(home / "pipes" / "rx.public", os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, f"[{header}|LEN:{len(body)}|TS:0]\n".encode() + body + TRAILER)
    finally:
        os.close(fd)


def ref_header(msg_id: str, size: int, to: str = "rx") -> str:
    return f"FROM:ev|TO:{to}|PRIORITY:1|TYPE:note|ID:{msg_id}|FILE:{size}"


def plant(home: Path, name: str, data: bytes, mode: int = 0o600) -> Path:
    directory = home / "bodies" / "rx"
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.write(fd, data)
    os.close(fd)
    os.chmod(path, mode)
    return path


def test_forged_references_are_rejected_and_nothing_else_is_lost(
    mesh_home: Path, tmp_path: Path
) -> None:
    """Missing, symlinked, foreign, loose, oversized, short, non-UTF-8 and misplaced files."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 50)
    secret.chmod(0o600)
    foreign_ok = os.geteuid() == 0
    with (
        AgentBase("rx", heartbeat_s=0, max_body_bytes=100_000) as rx,
        AgentBase("tx", heartbeat_s=0) as tx,
    ):
        directory = mesh_home / "bodies" / "rx"
        directory.mkdir(mode=0o700, exist_ok=True)
        cases: list[tuple[str, int, Callable[[], object], str]] = [
            ("m-missing", 10, lambda: None, "does not exist"),
            (
                "m-link",
                50,
                lambda: os.symlink(secret, directory / "ev.m-link"),
                "without following a link",
            ),
            ("m-loose", 5, lambda: plant(mesh_home, "ev.m-loose", b"12345", 0o644), "mode 644"),
            (
                "m-big",
                200_000,
                lambda: plant(mesh_home, "ev.m-big", b"b" * 200_000),
                "limit is 100000",
            ),
            ("m-short", 10, lambda: plant(mesh_home, "ev.m-short", b"12345"), "holds 5 bytes"),
            ("m-utf8", 3, lambda: plant(mesh_home, "ev.m-utf8", b"\xff\xfe\xfd"), "not UTF-8"),
            ("m-dir", 3, lambda: os.mkdir(directory / "ev.m-dir", 0o700), "not a regular file"),
        ]
        if foreign_ok:
            cases.append(
                (
                    "m-foreign",
                    4,
                    lambda: os.chown(plant(mesh_home, "ev.m-foreign", b"1234"), 65534, 65534),
                    "belongs to uid 65534",
                )
            )
        for msg_id, size, prepare, _ in cases:
            prepare()
            external_frame(mesh_home, ref_header(msg_id, size))
        # Misplaced: a file under another receiver's directory is never read for rx.
        elsewhere = mesh_home / "bodies" / "other" / "ev.m-else"
        elsewhere.parent.mkdir(mode=0o700)
        elsewhere.write_bytes(b"else")
        external_frame(mesh_home, ref_header("m-else", 4))
        external_frame(mesh_home, ref_header("m-to", 4, to="other"))  # addressed elsewhere
        external_frame(mesh_home, ref_header("..%2Fx", 4))  # no path in an ID, ever
        # The router is alive and nothing else is lost.
        tx.send_message("rx", "after" * 20_000)
        msg = rx.receive(30)
        assert msg is not None
        assert msg.body == "after" * 20_000
        assert rx.receive(0.3) is None
        expected = len(cases) + 2  # and m-else, m-to
        wait_for(
            lambda: len(error_records(mesh_home, "message_rejected")) >= expected, timeout_s=30
        )
        rejected = error_records(mesh_home, "message_rejected")
        texts = {str(r.get("id")): str(r.get("error")) for r in rejected}
        for msg_id, _, _, reason in cases:
            assert reason in texts[msg_id], (msg_id, texts.get(msg_id))
        assert "does not exist" in texts["m-else"]
        assert "addressed to other" in texts["m-to"]
        wait_for(lambda: error_records(mesh_home, "frame_rejected"), timeout_s=30)  # the bad ID
        assert secret.read_bytes() == b"s" * 50  # a symlink is never followed
        assert elsewhere.read_bytes() == b"else"  # another directory is never touched
        leftovers = set(waiting(mesh_home, "rx"))
        assert leftovers <= {"ev.m-dir"}  # every bad file is removed (a directory stays)
        os.rmdir(directory / "ev.m-dir")


def test_disk_full_falls_back_to_part_frames(
    tiny_fs: Callable[[int], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No room for the body file: the sender reports it and sends PART frames; no file is left."""
    home = tiny_fs(4 * 1024 * 1024) / "mesh"
    monkeypatch.setenv("PIPEMESH_HOME", str(home))
    with AgentBase("rx", heartbeat_s=0) as rx, AgentBase("tx", heartbeat_s=0) as tx:
        wait_for(lambda: "tx" in rx.peers(), timeout_s=30)
        filler = fill(home / "filler")
        # Leave room for the error record, not for a 256 KiB body.
        os.truncate(filler, max(0, os.path.getsize(filler) - 64 * 1024))
        body = "d" * (256 * 1024)
        before = rx._router.frames
        tx.send_message("rx", body)
        msg = rx.receive(30)
        assert msg is not None
        assert msg.body == body
        assert rx._router.frames - before > 1  # PART frames
        assert waiting(home, "rx") == []  # the partial file was removed
        failed = wait_for(lambda: error_records(home, "body_file_failed"), timeout_s=30)
        assert isinstance(failed, list)
        assert "PART frames instead" in str(failed[0]["error"])
        filler.unlink()
        assert bodies.CAPABILITY in tx.peers()["rx"].frames
