"""Issue 9, wire/transport/runtime findings, on real FIFOs and processes: nothing dropped
silently, bad input refused at send, no fd leaks, bounded queues, no stalls."""

from __future__ import annotations

import os
import select
import signal
import threading
from pathlib import Path

import pytest

from pipemesh import (
    AgentBase,
    AgentRecord,
    Delivery,
    MeshClient,
    Message,
    MessageTooLarge,
    ReplyTimeout,
    SendTimeout,
)
from pipemesh.home import MeshHome
from pipemesh.observe import ERRORS_LOG, read_records
from pipemesh.registry import Registry
from pipemesh.transport.fifo import FifoTransport, platform_pipe_buf
from pipemesh.wire import MAX_BODY_BYTES
from tests.conftest import Spawner, wait_for
from tests.integration.meshproc import active_agents

pytestmark = pytest.mark.integration

QUIET = {"heartbeat_s": 0, "log_messages": False}


class Echo(AgentBase):
    def on_message_received(self, msg: Message) -> None:
        if msg.msg_type == "question":
            self.reply(msg, "re: " + msg.body)


def errors(home: Path) -> list[dict[str, object]]:
    return list(read_records(home / "logs" / ERRORS_LOG))


# -- 1. receive() never drops: a full receive queue pushes back --


def test_receive_queue_full_pushes_back_instead_of_dropping(mesh_home: Path) -> None:
    """With receive() not called, the router stops reading once max_queue messages wait:
    the sender gets SendTimeout, and every message it was told delivered is received, in order."""
    with (
        AgentBase("inbox", max_queue=50, **QUIET) as rx,
        MeshClient("tx", log_messages=False) as tx,
    ):  # type: ignore[arg-type]
        delivered: list[str] = []
        pushed_back = False
        for i in range(20_000):
            try:
                tx.send("inbox", f"m{i}", timeout_s=0.3)
            except SendTimeout:
                pushed_back = True
                break
            delivered.append(f"m{i}")
        assert pushed_back, f"{len(delivered)} messages accepted with max_queue=50, no backpressure"
        got: list[str] = []
        while len(got) < len(delivered):
            msg = rx.receive(timeout_s=20)
            assert msg is not None, f"only {len(got)} of {len(delivered)} delivered were received"
            got.append(msg.body)
        assert got == delivered
        tx.send("inbox", "after", timeout_s=10)  # reading resumed
        last = rx.receive(timeout_s=20)
        assert last is not None
        assert last.body == "after"


def test_ask_behind_a_full_receive_queue_says_why(mesh_home: Path) -> None:
    """An ask() whose reply is stuck behind a full receive queue times out saying to call
    receive(); once receive() drains it, asking works again."""
    with (
        Echo("echo", **QUIET) as _echo,  # type: ignore[arg-type]
        AgentBase("inbox", max_queue=5, **QUIET) as rx,  # type: ignore[arg-type]
        MeshClient("tx", log_messages=False) as tx,
    ):
        for i in range(6):  # five wait for receive(), the sixth holds the router
            tx.send("inbox", f"m{i}")
        wait_for(lambda: len(rx._inbox_queue) == 5, timeout_s=20)
        with pytest.raises(ReplyTimeout, match=r"call receive\(\)"):
            rx.ask("echo", "hello?", timeout_s=2)
        got = [rx.receive(timeout_s=20) for _ in range(6)]
        assert [m.body for m in got if m is not None] == [f"m{i}" for i in range(6)]
        assert rx.ask("echo", "again", timeout_s=30).body == "re: again"


# -- 2. priority must be a real int --


@pytest.mark.parametrize("priority", [1.0, True, False, 2.5, "1", None])
def test_send_rejects_a_priority_that_is_not_an_int(mesh_home: Path, priority: object) -> None:
    """priority=1.0 (or a bool, str, ...) is refused at send; nothing reaches the receiver."""
    with AgentBase("rx", **QUIET) as rx, AgentBase("tx", **QUIET) as tx:  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="priority must be the int 0, 1, 2 or 3"):
            tx.send("rx", "bad", priority)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="priority must be"):
            tx.broadcast_message("bad", priority)  # type: ignore[arg-type]
        tx.send("rx", "good", 2)
        msg = rx.receive(timeout_s=10)
        assert msg is not None
        assert (msg.body, msg.priority) == ("good", 2)


# -- 3. the receiver's max_body_bytes is known to senders --


SMALL_AGENT = """
import sys
from pipemesh.runtime.agent import AgentBase
with AgentBase(sys.argv[1], max_body_bytes=int(sys.argv[2]), heartbeat_s=0) as agent:
    agent.run_forever()
"""


def test_body_over_the_receivers_limit_fails_at_send(mesh_home: Path, spawn: Spawner) -> None:
    """A body over the receiver's max_body_bytes raises MessageTooLarge naming both sizes,
    for send and for each broadcast recipient; one that fits is delivered."""
    spawn.python(SMALL_AGENT, "small", "1024")
    wait_for(lambda: "small" in active_agents(mesh_home), timeout_s=30)
    with AgentBase("tx", **QUIET) as tx:  # type: ignore[arg-type]
        with pytest.raises(MessageTooLarge) as info:
            tx.send("small", "x" * 2000)
        assert "2000" in str(info.value)
        assert "1024" in str(info.value)
        assert info.value.agent_id == "small"
        result = tx.broadcast_message("y" * 3000)
        assert result.outcomes["small"] is Delivery.FAILED
        assert "1024" in result.errors["small"]
        assert tx.send("small", "z" * 1000).delivery is Delivery.DELIVERED


def test_old_registry_record_without_a_limit_loads_with_the_default() -> None:
    """Records written before max_body_bytes existed load with the old default limit."""
    rec = AgentRecord.from_json("old", {"pid": 1, "public_pipe": "/x/old.public"})
    assert rec.max_body_bytes == MAX_BODY_BYTES
    assert rec.to_json()["max_body_bytes"] == MAX_BODY_BYTES
    with pytest.raises(ValueError, match="max_body_bytes 0 is out of range"):
        AgentRecord.from_json("bad", {"pid": 1, "public_pipe": "/p", "max_body_bytes": 0})


# -- 4. no fd leaks to dead peers; EMFILE is a clear error --


ASKERS = """
import sys, threading
from pipemesh.runtime.agent import AgentBase
n = int(sys.argv[1])
agents = [AgentBase(f"asker{i}", heartbeat_s=0, log_messages=False) for i in range(n)]
for a in agents:
    assert a.ask("server", "hi", timeout_s=60).body == "re: hi"
print("asked", flush=True)
threading.Event().wait(600)
"""


def fds_to(prefix: Path) -> int:
    """Open fds of this process whose target path starts with ``prefix``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(prefix)):
            count += 1
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts fds in /proc")
def test_fds_to_killed_peers_are_closed(mesh_home: Path, spawn: Spawner) -> None:
    """A long-lived agent closes its pipes to askers that were SIGKILLed (no leave frame)."""
    pipes = MeshHome.open(mesh_home).pipes_dir
    with Echo("server", heartbeat_s=0.2, log_messages=False):
        proc = spawn.python(ASKERS, "12")
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "asked"
        assert fds_to(pipes / "asker") == 12
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        wait_for(lambda: fds_to(pipes / "asker") == 0, timeout_s=30)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts fds in /proc")
def test_open_outboxes_are_bounded(mesh_home: Path, spawn: Spawner) -> None:
    """With max_open_outboxes=4, answering 10 live askers keeps at most 4 pipes open."""
    pipes = MeshHome.open(mesh_home).pipes_dir
    with Echo("server", heartbeat_s=0, log_messages=False, max_open_outboxes=4):
        proc = spawn.python(ASKERS, "10")
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "asked"
        assert fds_to(pipes / "asker") <= 4


EMFILE = """
import os, resource, sys
from pipemesh import MeshClient, TooManyOpenFiles
from pipemesh.transport.fifo import FifoTransport
t = FifoTransport(sys.argv[1])
client = MeshClient("c", log_messages=False)
client.refresh_peers()  # the peer is known: the send's only open is its pipe
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
held = []
try:
    for _ in range(200):
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
for what, call in (("connect", lambda: t.connect("peer")), ("bind", lambda: t.bind("other")),
                   ("send", lambda: client.send("peer", "hi"))):
    try:
        call()
    except TooManyOpenFiles as exc:
        print(what, "|", exc)
"""


def test_emfile_is_a_clear_mesh_error(mesh_home: Path, spawn: Spawner) -> None:
    """Out of fds, opening a pipe raises TooManyOpenFiles with advice, not a raw OSError."""
    with AgentBase("peer", **QUIET):  # type: ignore[arg-type]
        proc = spawn.python(EMFILE, str(MeshHome.open(mesh_home).pipes_dir))
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert [line.split(" |")[0] for line in lines] == ["connect", "bind", "send"], out + err
    for line in lines:
        assert "EMFILE" in line
        assert "ulimit -n" in line


START_OUT_OF_FDS = """
import os, resource, sys
from pipemesh import AgentBase, MeshError
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
held = []
try:
    for _ in range(200):
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
for _ in range(60):  # free one fd at a time: every step of the start fails once
    os.close(held.pop())
    try:
        agent = AgentBase("late", heartbeat_s=0, log_messages=False)
    except MeshError as exc:
        print("failed:", type(exc).__name__, flush=True)
        continue
    for fd in held:
        os.close(fd)
    agent.close()
    print("started", flush=True)
    break
"""


def test_agent_start_out_of_fds_fails_cleanly(mesh_home: Path, spawn: Spawner) -> None:
    """An agent started with no fds to spare fails with a MeshError at every step (never a
    raw OSError), leaks nothing, and starts once fds are free; nothing is left after."""
    proc = spawn.python(START_OUT_OF_FDS)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[-1] == "started", out + err
    assert any("TooManyOpenFiles" in line for line in lines)
    mesh = MeshHome.open(mesh_home)
    assert "late" not in Registry(mesh.registry_path, mesh.lock_path).read()
    assert sorted(p.name for p in mesh.pipes_dir.iterdir()) == []


# -- 5. ask() inside a handler does not make the router read without bound --


class AskingHandler(AgentBase):
    """On its first message, asks an agent that never answers."""

    def __init__(self, *args: object, **kw: object) -> None:
        self.asking = threading.Event()
        self.outcome = ""
        super().__init__(*args, **kw)  # type: ignore[arg-type]

    def on_message_received(self, msg: Message) -> None:
        if msg.body == "go":
            self.asking.set()
            try:
                self.ask("silent", "?", timeout_s=120)
            except ReplyTimeout as exc:
                self.outcome = str(exc)


def test_pump_in_ask_respects_max_queue(mesh_home: Path) -> None:
    """While a handler waits in ask(), at most max_queue (+ one read) messages are taken;
    then the pipe fills and senders get SendTimeout."""
    with (
        AgentBase("silent", **QUIET) as _silent,  # type: ignore[arg-type]
        AskingHandler("busy", max_queue=50, heartbeat_s=0, log_messages=False) as busy,
        MeshClient("tx", log_messages=False) as tx,
    ):
        tx.send("busy", "go")
        assert busy.asking.wait(30)
        accepted = 0
        pushed_back = False
        for _ in range(30_000):
            try:
                tx.send("busy", "flood", timeout_s=0.3)
            except SendTimeout:
                pushed_back = True
                break
            accepted += 1
        assert pushed_back, f"{accepted} messages taken while the handler waited in ask()"
        # One pipe read may overshoot max_queue: at most a 256 KiB pipe of small frames.
        assert busy._router.backlog < 50 + 4000
    assert busy.outcome  # close() ended the wait


# -- 6. a frame whose LEN lies does not stall later messages --


def test_lying_len_frame_is_skipped_not_awaited(mesh_home: Path) -> None:
    """A frame claiming LEN:4000 with a 5-byte body is reported; the next message arrives."""
    with AgentBase("rx", heartbeat_s=0) as rx, MeshClient("tx", log_messages=False) as tx:
        frames, _ = tx._encode(
            to="rx",
            message="short",
            priority=1,
            msg_type="note",
            msg_id="liar",
            reply_to="",
            sent_ns=1,
        )
        (liar,) = frames
        liar = liar.replace(b"|LEN:5|", b"|LEN:4000|")
        fd = os.open(MeshHome.open(mesh_home).public_pipe("rx"), os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, liar)
        finally:
            os.close(fd)
        tx.send("rx", "after the liar")
        msg = rx.receive(timeout_s=15)
        assert msg is not None, "the message after a lying frame was never received"
        assert msg.body == "after the liar"
    assert any("LEN:4000" in str(r.get("error", "")) for r in errors(mesh_home))


# -- 9. FIFO chunking follows the platform's PIPE_BUF --


def test_platform_pipe_buf_is_used() -> None:
    """The default frame size is the platform's PIPE_BUF, not a constant."""
    assert platform_pipe_buf() == getattr(select, "PIPE_BUF", 512)


def test_forced_small_pipe_buf_chunks_through_real_fifos(mesh_home: Path) -> None:
    """With a 512-byte PIPE_BUF (macOS), a 6000-byte message goes as <=512-byte frames
    through real FIFOs and arrives intact; a bigger frame size than the platform's is refused."""
    pipes = MeshHome.open(mesh_home).pipes_dir
    with pytest.raises(ValueError, match="max_frame_bytes"):
        FifoTransport(pipes, max_frame_bytes=platform_pipe_buf(pipes) + 1)
    small_rx = FifoTransport(pipes, max_frame_bytes=512)
    small_tx = FifoTransport(pipes, max_frame_bytes=512)
    body = ("pipé-" * 1200)[:6000]
    with (
        AgentBase("rx", transport=small_rx, heartbeat_s=0) as rx,
        MeshClient("tx", transport=small_tx, log_messages=False) as tx,
    ):
        frames, _ = tx._encode(
            to="rx", message=body, priority=1, msg_type="note", msg_id="m1", reply_to="", sent_ns=1
        )
        assert len(frames) >= 12
        assert max(len(f) for f in frames) <= 512
        tx.send("rx", body)
        msg = rx.receive(timeout_s=15)
        assert msg is not None
        assert msg.body == body
