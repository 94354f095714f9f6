"""AgentBase on real FIFOs: send, broadcast, ask/reply, priority, handler failures, lifecycle."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from pipemesh import (
    AgentBase,
    AgentOffline,
    Delivery,
    MeshClient,
    Message,
    MessageTooLarge,
    NameTaken,
    ReplyTimeout,
    TransportClosed,
    UnknownAgent,
)
from pipemesh.observe import COMM_LOG, ERRORS_LOG, LATENCY_LOG, read_records
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


class Echo(AgentBase):
    """Replies with the body upper-cased."""

    def on_message_received(self, msg: Message) -> None:
        if msg.msg_type == "question":
            self.reply(msg, msg.body.upper())


class Gated(AgentBase):
    """Holds its first message until the gate opens, recording the order of the rest."""

    def __init__(self, *args: object, **kw: object) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.order: list[str] = []
        super().__init__(*args, **kw)  # type: ignore[arg-type]

    def on_message_received(self, msg: Message) -> None:
        if msg.body == "gate":
            self.entered.set()
            self.gate.wait(30)
            return
        self.order.append(msg.body)


def add_entry(agent: AgentBase, name: str, pid: int) -> None:
    """Write a registry entry by hand (a crashed or stuck agent)."""
    with agent.registry.transaction() as entries:
        entries[name] = replace(entries[agent.agent_name], name=name, pid=pid, pid_start=0)


def records(home: Path, name: str) -> list[dict[str, object]]:
    return list(read_records(home / "logs" / name))


def test_send_and_receive(mesh_home: Path) -> None:
    """A message arrives whole, with its header fields, and is logged on both sides."""
    with AgentBase("gemini", "collaborator") as g, AgentBase("claude_code", "architect") as c:
        msg_id = c.send_message("gemini", "How should we?\nlïne 2", 2, "question")
        msg = g.receive(10)
        assert msg is not None
        assert (msg.sender, msg.to, msg.priority, msg.msg_type, msg.id) == (
            "claude_code",
            "gemini",
            2,
            "question",
            msg_id,
        )
        assert msg.body == "How should we?\nlïne 2"
        assert msg.sent_ns > 0
    comm = records(mesh_home, COMM_LOG)
    assert {(r["event"], r["agent"]) for r in comm if r["id"] == msg_id} == {
        ("frame_sent", "claude_code"),
        ("frame_received", "gemini"),
    }
    assert {r["bytes"] for r in comm if r["id"] == msg_id} == {22}  # UTF-8 bytes on both sides
    lat = [r for r in records(mesh_home, LATENCY_LOG) if r["id"] == msg_id]
    assert len(lat) == 1
    assert float(str(lat[0]["latency_us"])) > 0


def test_ask_reply_carries_question_id(mesh_home: Path) -> None:
    """ask() returns the reply whose RE is the question's ID (the seed's flow)."""
    with Echo("gemini") as _, AgentBase("claude_code") as c:
        reply = c.ask("gemini", "structure?", timeout_s=10)
        assert reply.body == "STRUCTURE?"
        assert reply.msg_type == "response"
        assert reply.reply_to
        assert [m.body for m in c.history("gemini")] == ["structure?", "STRUCTURE?"]


def test_ask_from_inside_a_handler(mesh_home: Path) -> None:
    """A handler may ask() another agent: the router reads the reply itself."""

    class Relay(AgentBase):
        def on_message_received(self, msg: Message) -> None:
            answer = self.ask("gemini", msg.body, timeout_s=10)
            self.reply(msg, "relayed " + answer.body)

    with Echo("gemini"), Relay("relay"), AgentBase("user") as u:
        assert u.ask("relay", "hi", timeout_s=15).body == "relayed HI"


def test_ask_times_out_with_clear_error(mesh_home: Path) -> None:
    """No reply within the timeout raises ReplyTimeout naming the peer."""
    with (
        AgentBase("silent"),
        AgentBase("asker") as a,
        pytest.raises(ReplyTimeout, match="silent did not reply"),
    ):
        a.ask("silent", "anyone?", timeout_s=0.3)


def test_broadcast_reports_each_recipient(mesh_home: Path) -> None:
    """Broadcast reaches every other active agent and reports offline ones, never failing."""
    with AgentBase("a") as a, AgentBase("b") as b, AgentBase("c") as c:
        # A registered, live-looking agent whose FIFO nobody reads.
        add_entry(a, "ghost", os.getpid())
        os.mkfifo(mesh_home / "pipes" / "ghost.public", 0o600)
        a.refresh_peers()
        result = a.broadcast_message("all hands", priority=2)
        assert result.outcomes["b"] is Delivery.DELIVERED
        assert result.outcomes["c"] is Delivery.DELIVERED
        assert result.outcomes["ghost"] is Delivery.OFFLINE
        assert "a" not in result.outcomes
        assert result.failed == ["ghost"]
        for agent in (b, c):
            msg = agent.receive(10)
            assert msg is not None
            assert msg.is_broadcast
            assert msg.body == "all hands"
            assert msg.id == result.id


def test_priority_order_under_backlog(mesh_home: Path) -> None:
    """With a backlog, higher PRIORITY is handled first, FIFO within a priority."""
    with Gated("worker") as w, MeshClient("boss") as boss:
        boss.send_message("worker", "gate")
        assert w.entered.wait(10)
        for i, prio in enumerate([0, 1, 3, 1, 2, 0, 3]):
            boss.send_message("worker", f"{prio}-{i}", prio)
        w.gate.set()
        wait_for(lambda: len(w.order) == 7)
        assert w.order == ["3-2", "3-6", "2-4", "1-1", "1-3", "0-0", "0-5"]


def test_handler_exception_is_logged_and_router_continues(mesh_home: Path) -> None:
    """A handler that raises is reported in mesh_errors.log; later messages still arrive."""
    seen: list[str] = []

    class Fragile(AgentBase):
        def on_message_received(self, msg: Message) -> None:
            if msg.body == "boom":
                raise RuntimeError("handler exploded")
            seen.append(msg.body)

    with Fragile("fragile") as f, MeshClient("s") as s:
        s.send_message("fragile", "boom")
        s.send_message("fragile", "after")
        wait_for(lambda: seen == ["after"])
        assert f.handler_errors == 1
    errs = [r for r in records(mesh_home, ERRORS_LOG) if r["event"] == "handler_failed"]
    assert len(errs) == 1
    assert "handler exploded" in str(errs[0]["error"])


def test_misrouted_frame_is_logged_not_handled(mesh_home: Path) -> None:
    """A frame addressed to another agent, written into my pipe, is logged as misrouted."""
    with AgentBase("me") as me, MeshClient("forger") as forger:
        frames = forger._encode(
            to="someone_else",
            message="not for you",
            priority=1,
            msg_type="question",
            msg_id="f-1",
            reply_to="",
            sent_ns=1,
        )[0]
        forger._outbox("me").write_frames(frames, 5)
        forger.send_message("me", "for you")
        msg = me.receive(10)
        assert msg is not None
        assert msg.body == "for you"
    events = [r for r in records(mesh_home, ERRORS_LOG) if r["event"] == "frame_misrouted"]
    assert [e["id"] for e in events] == ["f-1"]


def test_unknown_agent_offline_agent_and_bad_input(mesh_home: Path) -> None:
    """Clear errors: unknown name, registered-but-dead agent, bad names, oversized body."""
    with AgentBase("sender", max_body_bytes=1000) as s:
        with pytest.raises(UnknownAgent, match="no agent named nobody"):
            s.send_message("nobody", "hi")
        with pytest.raises(ValueError, match="not valid"):
            s.send_message("../etc/passwd", "hi")
        with pytest.raises(ValueError, match="priority"):
            s.send_message("sender", "hi", priority=7)
        with pytest.raises(ValueError, match="reserved"):
            s.send_message("sender", "hi", msg_type="mesh.join")
        with pytest.raises(MessageTooLarge, match="body is 1001 bytes, limit is 1000"):
            s.send_message("sender", "x" * 1001)
        with pytest.raises(TypeError):
            s.send_message("sender", b"bytes")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="lone surrogate"):
            s.send_message("sender", "bad \ud800 text")
        # A registry entry whose process is gone.
        add_entry(s, "dead", 2**22 + 12345)
        os.mkfifo(mesh_home / "pipes" / "dead.public", 0o600)
        s.refresh_peers()
        assert not s.peers()["dead"].is_active
        with pytest.raises(AgentOffline, match="dead is not reading its pipe"):
            s.send_message("dead", "hello?")


def test_name_taken_and_takeover(mesh_home: Path) -> None:
    """A live holder's name is refused; a dead holder's name is taken over."""
    with AgentBase("unique") as u:
        with pytest.raises(NameTaken, match="held by live process"):
            AgentBase("unique")
        add_entry(u, "crashed", 2**22 + 999)
        os.mkfifo(mesh_home / "pipes" / "crashed.public", 0o600)
        with AgentBase("crashed") as c:
            assert c.registry.read()["crashed"].pid == os.getpid()
            assert c.registry.read()["crashed"].is_active


def test_close_unregisters_and_removes_pipes(mesh_home: Path) -> None:
    """close() leaves no registry entry, no pipe, no thread; a second close is a no-op."""
    before = threading.active_count()
    agent = AgentBase("temp", heartbeat_s=0.05)
    assert (mesh_home / "pipes" / "temp.public").exists()
    assert (mesh_home / "pipes" / "temp.private").exists()
    assert "temp" in agent.registry.read()
    agent.close()
    agent.close()
    assert not (mesh_home / "pipes" / "temp.public").exists()
    assert not (mesh_home / "pipes" / "temp.private").exists()
    assert "temp" not in agent.registry.read()
    wait_for(lambda: threading.active_count() <= before)
    with pytest.raises(TransportClosed):
        agent.send_message("temp", "x")


def test_close_from_inside_handler(mesh_home: Path) -> None:
    """A handler may close its own agent."""

    class Quitter(AgentBase):
        def on_message_received(self, msg: Message) -> None:
            self.close()

    q = Quitter("quitter")
    with MeshClient("s") as s:
        s.send_message("quitter", "bye")
    q.run_forever(poll_s=None)
    wait_for(lambda: not (mesh_home / "pipes" / "quitter.public").exists())


def test_join_and_leave_seen_without_registry_reads(mesh_home: Path) -> None:
    """Agents learn of joins and leaves from control frames, not by re-reading per send."""
    with AgentBase("watcher") as w:
        reads = 0
        original = w.registry.read

        def counting_read() -> dict[str, object]:
            nonlocal reads
            reads += 1
            return original()  # type: ignore[return-value]

        w.registry.read = counting_read  # type: ignore[method-assign]
        newcomer = AgentBase("newcomer", "scout")
        wait_for(lambda: "newcomer" in w.peers())
        assert w.peers()["newcomer"].role == "scout"
        for _ in range(20):
            w.send_message("newcomer", "hi")
        assert reads == 0  # the join frame carried the record; sends never read the registry
        newcomer.close()
        wait_for(lambda: "newcomer" not in w.peers())


def test_history_is_bounded(mesh_home: Path) -> None:
    """Per-peer history keeps the last history_limit messages."""
    with AgentBase("h", history_limit=5) as h, AgentBase("peer"):
        for i in range(12):
            h.send_message("peer", str(i))
        assert [m.body for m in h.history("peer")] == ["7", "8", "9", "10", "11"]
        assert h.history("stranger") == []


def test_history_holds_whole_messages_and_nothing_at_limit_zero(mesh_home: Path) -> None:
    """Sent messages are kept as fields and handed out as Messages; history_limit=0 keeps none."""
    with (
        AgentBase("h") as h,
        AgentBase("peer", history_limit=0) as peer,
    ):
        msg_id = h.send_message("peer", "question?", 2, "question")
        got = peer.receive(timeout_s=30)
        assert got is not None
        peer.reply(got, "answer")
        wait_for(lambda: len(h.history("peer")) == 2)
        sent, answer = h.history("peer")
        assert sent == Message("h", "peer", 2, "question", msg_id, "question?", sent.sent_ns, "")
        assert sent.sent_ns > 0
        assert (answer.sender, answer.reply_to, answer.body) == ("peer", msg_id, "answer")
        assert peer.history("h") == []


def test_large_message_and_marker_in_body(mesh_home: Path) -> None:
    """A 2 MiB body containing the end marker and fake headers arrives exactly."""
    body = ("line ===END_MESSAGE===\n[FROM:x|TO:y|PRIORITY:1]\n" * 50000)[: 2 * 1024 * 1024]
    with AgentBase("big") as big, MeshClient("s") as s:
        s.send_message("big", body)
        msg = big.receive(30)
        assert msg is not None
        assert msg.body == body


def test_restarted_receiver_is_picked_up_by_sender(mesh_home: Path) -> None:
    """A receiver that leaves and comes back under the same name gets the next message."""
    with MeshClient("sender") as s:
        r1 = AgentBase("r")
        s.send_message("r", "one")
        assert (m := r1.receive(10)) is not None
        assert m.body == "one"
        r1.close()
        with pytest.raises((UnknownAgent, AgentOffline)):
            s.send_message("r", "lost?")
        with AgentBase("r") as r2:
            s.send_message("r", "two")
            assert (m := r2.receive(10)) is not None
            assert m.body == "two"


def test_heartbeat_on_private_pipe(mesh_home: Path) -> None:
    """A reader of the private pipe gets heartbeat frames with the agent's counters."""
    from pipemesh.wire import FrameDecoder, NeedData

    with AgentBase("beating", heartbeat_s=0.05) as agent:
        fd = os.open(mesh_home / "pipes" / "beating.private", os.O_RDONLY | os.O_NONBLOCK)
        try:
            dec = FrameDecoder()

            def beat() -> object:
                try:
                    dec.feed(os.read(fd, 65536))
                except BlockingIOError:
                    return None
                frame = dec.next_frame()
                return None if isinstance(frame, NeedData) else frame

            frame = wait_for(beat)
            status = json.loads(frame.body)  # type: ignore[attr-defined]
            assert status["agent"] == "beating"
            assert status["pid"] == os.getpid()
            assert agent.status()["received"] == 0
        finally:
            os.close(fd)
