"""Faults with real processes: SIGKILL, a full or read-only spool, 100 agents at once.

- A durable receiver SIGKILLed in the middle of 10,000 acknowledged messages and restarted
  handles every message exactly once and in order (from its own record).
- A spool on a full filesystem, or a read-only one: a clear error, nothing half-written.
- 100 agents exchange 64 B..256 KiB messages with random peers, some leave early:
  from the logs, sent = received + queued, none torn, none lost.

(A sender killed mid-message and a registry lock holder killed are in
test_fifo_guarantees.py and test_registry_and_logs.py.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipemesh import AgentBase, MeshClient, SpoolError, SpoolFull
from pipemesh.observe import COMM_LOG, ERRORS_LOG, read_records
from tests.conftest import Spawner, wait_for

pytestmark = pytest.mark.integration

RECORDER = """
import os, sys
from pipemesh import AgentBase
name, record = sys.argv[1], sys.argv[2]
seen = []
try:
    with open(record) as f:
        for line in f:
            n, sender, msg_id = line.split()
            seen.append((sender, msg_id))
except FileNotFoundError:
    pass
fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

class Recorder(AgentBase):
    def on_message_received(self, msg):
        # One write per message: the record of the effect and of its (sender, id).
        os.write(fd, f"{msg.body} {msg.sender} {msg.id}\\n".encode())

with Recorder(name, durable=True, seen_ids=seen) as agent:
    print("ready", flush=True)
    agent.run_forever()
"""

STREAM = """
import json, sys
from pipemesh import AckTimeout, AgentBase
count = int(sys.argv[1])
outcomes = {"delivered": 0, "queued": 0, "ack_timeouts": 0}
with AgentBase("source", spool_fsync=False) as agent:
    for i in range(count):
        while True:
            try:
                res = agent.send("sink", str(i), msg_id=f"n{i}", ack=True, ack_timeout_s=2.0)
            except AckTimeout:
                outcomes["ack_timeouts"] += 1  # retried with the same ID
                continue
            outcomes[res.delivery.value] += 1
            break
print(json.dumps(outcomes), flush=True)
"""


def record_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def test_receiver_killed_mid_stream_handles_each_message_once(
    mesh_home: Path, spawn: Spawner, tmp_path: Path
) -> None:
    """SIGKILL a durable receiver amid 10,000 acked sends; restart: each handled once, in order."""
    total = 10_000
    record = tmp_path / "record.txt"
    r1 = spawn.python(RECORDER, "sink", str(record))
    assert r1.stdout is not None
    assert r1.stdout.readline().strip() == "ready"
    sender = spawn.python(STREAM, str(total))
    wait_for(lambda: len(record_lines(record)) >= 2000, timeout_s=90, interval_s=0.02)
    r1.send_signal(signal.SIGKILL)
    r1.wait(timeout=10)
    spool = mesh_home / "spool" / "sink"
    wait_for(lambda: len(list(spool.glob("*.msg"))) >= 50, timeout_s=60, interval_s=0.02)
    r2 = spawn.python(RECORDER, "sink", str(record))
    assert r2.stdout is not None
    assert r2.stdout.readline().strip() == "ready"
    out, err = sender.communicate(timeout=110)
    assert sender.returncode == 0, err
    outcomes = json.loads(out)
    # Sends after the kill are kept by the sender and moved to the spool (a durable
    # peer), so each send reports delivered or queued; none is lost or failed.
    assert outcomes["delivered"] + outcomes["queued"] == total
    wait_for(lambda: len(record_lines(record)) >= total, timeout_s=60, interval_s=0.05)
    wait_for(lambda: not list(spool.glob("*.msg")), timeout_s=30)
    numbers = [int(line.split()[0]) for line in record_lines(record)]
    assert numbers == list(range(total))  # exactly once, in order


# -- full and read-only spools --


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[None]:
    """Mount a tmpfs at ``path`` (root only), unmount on exit."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"{options},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def assert_only_whole_messages(directory: Path) -> None:
    """Every file is a finished ``.msg`` whose size matches its name; no temporaries."""
    for path in directory.iterdir():
        assert path.name.endswith(".msg"), f"left behind: {path.name}"
        assert path.stat().st_size == int(path.name.split("-")[3])


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root")
def test_full_disk_spool_is_a_clear_error_nothing_half_written(mesh_home: Path) -> None:
    """A spool on a 64 KiB filesystem: SpoolFull naming the disk, only whole files remain."""
    AgentBase("full", durable=True).close()
    spool = mesh_home / "spool" / "full"
    with tmpfs(spool, "size=64k"), MeshClient("w") as w:
        queued = 0
        error: SpoolFull | None = None
        for i in range(100):
            try:
                w.send("full", f"{i:04d}" + "z" * 15_000)
            except SpoolFull as exc:
                error = exc
                break
            queued += 1
        assert error is not None
        assert "no space left for the spool of full" in str(error)
        assert error.message_id
        assert 1 <= queued < 100
        assert_only_whole_messages(spool)
        assert len(list(spool.iterdir())) == queued
    failed = [
        r for r in read_records(mesh_home / "logs" / ERRORS_LOG) if r["event"] == "send_failed"
    ]
    assert len(failed) == 1


def test_unwritable_spool_is_a_clear_error(mesh_home: Path) -> None:
    """A read-only spool directory: SpoolError that says the home is not writable."""
    AgentBase("locked", durable=True).close()
    spool = mesh_home / "spool" / "locked"
    if os.geteuid() == 0:  # root ignores mode bits: use a read-only filesystem
        ctx: contextlib.AbstractContextManager[None] = tmpfs(spool, "ro,size=64k")
    else:
        spool.mkdir(mode=0o500)
        ctx = contextlib.nullcontext()
    with ctx, MeshClient("w") as w:
        with pytest.raises(SpoolError, match=r"cannot queue message .* for locked") as info:
            w.send("locked", "hello")
        assert not isinstance(info.value, SpoolFull)
        assert list(spool.iterdir()) == []


# -- 100 agents --

PEER = """
import json, os, random, sys, time
from pipemesh import AckTimeout, AgentBase, MeshError
idx, n, run_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
leaves_early = sys.argv[4] == "1"
SIZES = [64, 300, 3000, 5000, 20000, 65536, 262144]
WEIGHTS = [30, 20, 15, 10, 10, 10, 5]

def body_for(msg_id, size):
    seed = msg_id + "|"
    return (seed * (size // len(seed) + 1))[:size]

class Peer(AgentBase):
    def on_message_received(self, msg):
        if msg.body != body_for(msg.id, len(msg.body)):
            self.events.error("torn_body", f"message {msg.id} from {msg.sender} is torn")

rng = random.Random(idx)
stats = {"sent": 0, "queued": 0, "ack_timeouts": 0, "failed": 0}
with Peer(f"a{idx}", durable=True, spool_fsync=False, send_timeout_s=30) as me:
    print("ready", flush=True)
    sys.stdin.readline()  # go
    end = time.monotonic() + (run_s / 2 if leaves_early else run_s)
    while time.monotonic() < end and stats["sent"] + stats["queued"] < 30:
        to = f"a{rng.choice([i for i in range(n) if i != idx])}"
        size = rng.choices(SIZES, WEIGHTS)[0]
        msg_id = me.next_id()
        for attempt in range(5):
            try:
                res = me.send(to, body_for(msg_id, size), msg_type="data", msg_id=msg_id,
                              ack=True, ack_timeout_s=10)
            except AckTimeout:
                stats["ack_timeouts"] += 1
                continue
            except MeshError as exc:
                stats["failed"] += 1
                print(json.dumps({"error": str(exc)}), file=sys.stderr, flush=True)
                break
            stats["sent" if res.delivery.value == "delivered" else "queued"] += 1
            break
    print(json.dumps(stats), flush=True)
    if not leaves_early:
        sys.stdin.readline()  # stop: every sender is done, so nothing is in flight
"""


def test_100_agents_mixed_sizes_reconcile_from_logs(mesh_home: Path, spawn: Spawner) -> None:
    """100 agents, 64 B..256 KiB, random peers, 10 send and leave first: sent = received +
    queued."""
    n, run_s = 100, 8.0
    procs = [
        spawn.python(
            PEER, str(i), str(n), str(run_s), "1" if i < 10 else "0", stdin=subprocess.PIPE
        )
        for i in range(n)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""

    # Two phases, so that some messages are sure to be queued however fast the machine is:
    # the 10 early leavers send and leave first, then the others send (to them too).
    def go(group: list[subprocess.Popen[str]]) -> None:
        for proc in group:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()

    def stats_of(group: list[subprocess.Popen[str]]) -> list[dict[str, int]]:
        out = []
        for proc in group:
            assert proc.stdout is not None
            out.append(json.loads(proc.stdout.readline()))
        return out

    go(procs[:10])
    stats = stats_of(procs[:10])
    for proc in procs[:10]:
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    go(procs[10:])
    stats += stats_of(procs[10:])
    for proc in procs[10:]:
        assert proc.stdin is not None
        proc.stdin.write("stop\n")
        proc.stdin.flush()
    for proc in procs:
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    assert sum(s["failed"] for s in stats) == 0

    logs = mesh_home / "logs"
    comm = list(read_records(logs / COMM_LOG))
    sent = {
        (r["agent"], r["id"]): r for r in comm if r["event"] == "frame_sent" and r["type"] == "data"
    }
    queued = {
        (r["agent"], r["id"]): r
        for r in comm
        if r["event"] == "frame_queued" and r["type"] == "data"
    }
    received = {
        (r["from"], r["id"]): r
        for r in comm
        if r["event"] == "frame_received" and r["type"] == "data"
    }
    on_disk = {
        (name, msg_id)
        for path in (mesh_home / "spool").glob("*/*.msg")
        for name, msg_id in [(path.parent.name, path.name.split("-", 4)[4].removesuffix(".msg"))]
    }
    assert len(sent) == sum(s["sent"] for s in stats)
    assert len(queued) == sum(s["queued"] for s in stats)
    assert len(sent) + len(queued) > 500
    assert queued, "no agent left early enough to have messages queued"
    assert set(received) == set(sent)  # every delivered message was handled, none lost
    waiting = {(r["to"], key[1]) for key, r in queued.items()}
    assert waiting <= on_disk  # the rest wait on disk
    # A durable agent that leaves may still handle what its senders already moved to its
    # spool on its LEAVE (before its last report reached them): those copies were
    # handled, and its handled log drops them when it starts again.
    handled = {(r["to"], key[1]) for key, r in received.items()}
    assert on_disk - waiting <= handled
    for key, rec in sent.items():
        assert received[key]["bytes"] == rec["bytes"]
        assert received[key]["agent"] == rec["to"]
    bad = [
        r
        for r in read_records(logs / ERRORS_LOG)
        if r["event"] not in ("send_failed",)  # an ack timeout that was retried
    ]
    assert bad == []
