"""The FIFO transport's promises, each shown with real processes and real FIFOs.

- 100 concurrent senders, bodies 10 B to 1 MiB: every message whole, none torn.
- A sender SIGKILLed in the middle of a large message corrupts nothing else.
- A registered agent with no reader: AgentOffline at once, no hang.
- A full pipe: a bounded wait, then SendTimeout; the reader never gets a partial message.
- A receiver restarting under the same name is picked up by a sender that keeps running.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import termios
import threading
from pathlib import Path

import pytest

from pipemesh import AgentBase, AgentOffline, MeshClient, Message, UnknownAgent
from pipemesh.observe import ERRORS_LOG, read_records
from tests.conftest import Spawner, wait_for

pytestmark = pytest.mark.integration

SIZES = [10, 100, 4000, 4096, 4097, 10_000, 65_536, 300_000, 1024 * 1024]

SENDER = """
import sys
from pipemesh import MeshClient
idx, count = int(sys.argv[1]), int(sys.argv[2])
sizes = [int(x) for x in sys.argv[3].split(",")]
with MeshClient(f"s{idx}") as c:
    for k in range(count):
        size = sizes[(idx + k) % len(sizes)]
        seed = f"<{idx}:{k}>"
        body = (seed * (size // len(seed) + 1))[:size]
        c.send_message("sink", body, msg_type="data", timeout_s=120)
"""

RECEIVER = """
import sys
from pipemesh import AgentBase
class Printer(AgentBase):
    def on_message_received(self, msg):
        print(msg.body, flush=True)
with Printer(sys.argv[1]) as agent:
    print("ready", flush=True)
    agent.run_forever()
"""


def expected_body(idx: int, k: int, size: int) -> str:
    seed = f"<{idx}:{k}>"
    return (seed * (size // len(seed) + 1))[:size]


class Collector(AgentBase):
    """Keeps every message; optionally blocks in its handler until a gate opens."""

    def __init__(self, *args: object, **kw: object) -> None:
        self.got: list[Message] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.lock = threading.Lock()
        super().__init__(*args, **kw)  # type: ignore[arg-type]

    def on_message_received(self, msg: Message) -> None:
        if msg.body == "gate":
            self.entered.set()
            self.gate.wait(60)
            return
        with self.lock:
            self.got.append(msg)


def pipe_fill(path: Path) -> int:
    """Bytes waiting in a FIFO (FIONREAD on a second read end of it)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, termios.FIONREAD, buf)
        return int.from_bytes(buf, "little")
    finally:
        os.close(fd)


def test_100_concurrent_senders_nothing_torn(mesh_home: Path, spawn: Spawner) -> None:
    """100 processes send 10 B..1 MiB bodies to one agent at once: all arrive whole."""
    senders, per_sender = 100, 2
    with Collector("sink") as sink:
        procs = [
            spawn.python(SENDER, str(i), str(per_sender), ",".join(map(str, SIZES)))
            for i in range(senders)
        ]
        wait_for(lambda: len(sink.got) >= senders * per_sender, timeout_s=240, interval_s=0.1)
        for proc in procs:
            assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
        assert sink.status()["rejected_frames"] == 0
    seen = set()
    sizes_seen = set()
    for msg in sink.got:
        idx, k = (int(x) for x in msg.body[1 : msg.body.index(">")].split(":"))
        assert msg.sender == f"s{idx}"
        assert msg.body == expected_body(idx, k, len(msg.body)), f"torn message from s{idx}"
        seen.add((idx, k))
        sizes_seen.add(len(msg.body))
    assert len(seen) == senders * per_sender
    assert {10, 4097, 1024 * 1024} <= sizes_seen
    errors = [r for r in read_records(mesh_home / "logs" / ERRORS_LOG) if r["agent"] == "sink"]
    assert errors == []


def test_sender_killed_mid_large_message(mesh_home: Path, spawn: Spawner) -> None:
    """SIGKILL during an 8 MiB send: the receiver survives, later messages arrive intact."""
    with Collector("sink", partial_timeout_s=1.0) as sink, MeshClient("control") as control:
        sink.gate.clear()
        control.send_message("sink", "gate")
        assert sink.entered.wait(10)
        # PART frames (a body file would not fill the pipe): the path this test is about.
        parts_only = SENDER.replace(" as c:\n", " as c:\n    c.body_file_min_bytes = 1 << 62\n")
        assert parts_only != SENDER
        big = spawn.python(parts_only, "7", "1", str(8 * 1024 * 1024))
        pipe = mesh_home / "pipes" / "sink.public"
        # The handler is blocked, so the pipe fills with parts of the big message.
        wait_for(lambda: pipe_fill(pipe) >= 128 * 1024, timeout_s=30)
        big.send_signal(signal.SIGKILL)
        big.wait(timeout=10)
        sink.gate.set()
        control.send_message("sink", "after-1")
        control.send_message("sink", "x" * 100_000)
        control.send_message("sink", "after-3")
        wait_for(lambda: len(sink.got) >= 3, timeout_s=30)

        def expired() -> bool:
            control.send_message("sink", "nudge")  # expiry is checked when data arrives
            events = [r["event"] for r in read_records(mesh_home / "logs" / ERRORS_LOG)]
            return "parts_expired" in events

        wait_for(expired, timeout_s=30, interval_s=0.3)
        bodies = [m.body for m in sink.got]
        assert bodies[:3] == ["after-1", "x" * 100_000, "after-3"]
        assert all(m.sender == "control" for m in sink.got)  # the killed message never appears
        assert sink.is_running


def test_offline_agent_fails_at_once(mesh_home: Path, spawn: Spawner) -> None:
    """A registered agent whose process died: AgentOffline, never a hang."""
    proc = spawn.python(RECEIVER, "victim")
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with MeshClient("sender") as s:
        s.refresh_peers()
        assert s.peers()["victim"].status == "inactive"
        with pytest.raises(AgentOffline, match="victim is not reading its pipe"):
            s.send_message("victim", "hello?", timeout_s=30)
        result = s.broadcast_message("anyone?")
        assert "victim" not in result.outcomes  # inactive agents are not broadcast to


SLOW_SENDER = """
import json, sys
from pipemesh import MeshClient, SendTimeout
sent = []
with MeshClient("flood") as c:
    for i in range(2000):
        try:
            sent.append(c.send_message("sink", f"{i:06d}" + "y" * 65530, timeout_s=0.3))
        except SendTimeout as exc:
            print(json.dumps({"sent": sent, "timed_out": exc.message_id, "error": str(exc)}))
            break
"""


def test_full_pipe_times_out_and_reader_sees_no_partial(mesh_home: Path, spawn: Spawner) -> None:
    """A stalled reader: the sender gets SendTimeout; the reader later gets only whole messages."""
    with Collector("sink", partial_timeout_s=1.0) as sink, MeshClient("control") as control:
        sink.gate.clear()
        control.send_message("sink", "gate")
        assert sink.entered.wait(10)
        proc = spawn.python(SLOW_SENDER)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        report = json.loads(out)
        assert "stayed full" in report["error"]
        sent, timed_out = report["sent"], report["timed_out"]
        assert sent
        assert timed_out
        sink.gate.set()
        wait_for(lambda: len(sink.got) >= len(sent), timeout_s=30)
        ids = [m.id for m in sink.got if m.sender == "flood"]
        assert ids == sent
        assert timed_out not in ids
        for msg in sink.got:
            assert len(msg.body) == 65536


def test_restarted_receiver_picked_up_without_restarting_sender(
    mesh_home: Path, spawn: Spawner
) -> None:
    """Receiver crashes and restarts under its name; the same sender process reaches it."""
    with MeshClient("steady") as sender:
        r1 = spawn.python(RECEIVER, "phoenix")
        assert r1.stdout is not None
        assert r1.stdout.readline().strip() == "ready"
        sender.send_message("phoenix", "one")
        assert r1.stdout.readline().strip() == "one"
        r1.send_signal(signal.SIGKILL)
        r1.wait(timeout=10)
        with pytest.raises((AgentOffline, UnknownAgent)):
            sender.send_message("phoenix", "into the void")
        r2 = spawn.python(RECEIVER, "phoenix")
        assert r2.stdout is not None
        assert r2.stdout.readline().strip() == "ready"
        sender.send_message("phoenix", "two")
        assert r2.stdout.readline().strip() == "two"
        r2.send_signal(signal.SIGINT)
        r2.wait(timeout=10)
    wait_for(lambda: not (mesh_home / "pipes" / "phoenix.public").exists())
