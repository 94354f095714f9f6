"""The real CLI in real processes: results on stdout, one-line errors, exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipemesh import AgentBase, Message
from tests.conftest import Spawner, run_cli, wait_for

pytestmark = pytest.mark.integration


class Echo(AgentBase):
    """Answers questions; keeps everything else for receive()."""

    def on_message_received(self, msg: Message) -> None:
        if msg.msg_type == "question":
            self.reply(msg, "echo: " + msg.body)
        else:
            super().on_message_received(msg)


def test_agents_table_and_json(mesh_home: Path) -> None:
    """'agents' lists name, role, status, pid, age; --json gives the registry shape."""
    assert "no agents registered" in run_cli("agents").stdout
    with AgentBase("gemini", "collaborator"):
        out = run_cli("agents")
        assert out.returncode == 0
        header, row = out.stdout.splitlines()
        assert header.split() == ["NAME", "ROLE", "STATUS", "PID", "AGE"]
        assert row.split()[:3] == ["gemini", "collaborator", "active"]
        data = json.loads(run_cli("--json", "agents").stdout)
        assert data["gemini"]["role"] == "collaborator"
        assert data["gemini"]["public_pipe"].endswith("pipes/gemini.public")


def test_send_broadcast_ask(mesh_home: Path) -> None:
    """send prints the ID, broadcast prints outcomes, ask prints the reply."""
    with Echo("gemini") as g, AgentBase("codex") as c:
        out = run_cli("send", "gemini", "hello there", "--type", "directive", "--priority", "2")
        assert out.returncode == 0, out.stderr
        msg = g.receive(10)
        assert msg is not None
        assert (msg.body, msg.msg_type, msg.priority, msg.sender) == (
            "hello there",
            "directive",
            2,
            "cli",
        )
        assert msg.id == out.stdout.strip()
        out = run_cli("broadcast", "all hands", "--from", "boss")
        assert out.returncode == 0, out.stderr
        assert "codex: delivered" in out.stdout
        assert "gemini: delivered" in out.stdout
        for agent in (c, g):
            got = agent.receive(10)
            assert got is not None
            assert got.is_broadcast
            assert got.body == "all hands"
        out = run_cli("ask", "gemini", "ping?", "--timeout", "20")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "echo: ping?"
        out = run_cli("send", "gemini", "-", input_text="from stdin\nline 2")
        assert out.returncode == 0
        stdin_msg = g.receive(10)
        assert stdin_msg is not None
        assert stdin_msg.body == "from stdin\nline 2"


def test_errors_are_one_line_with_exit_codes(mesh_home: Path) -> None:
    """Bad input: exit 2 and a hint; runtime failures: exit 1; never a traceback."""
    cases = [
        (("send", "bad/name", "hi"), 2, "not valid"),
        (("send", "nobody", "hi"), 1, "no agent named nobody is registered"),
        (("send", "x", "hi", "--priority", "9"), 2, "9"),
        (("ask", "nobody", "hi", "--timeout", "1"), 1, "no agent named nobody"),
        (("frobnicate",), 2, "No such command"),
        (("listen", "a|b"), 2, "not valid"),
    ]
    for args, code, text in cases:
        out = run_cli(*args)
        assert out.returncode == code, (args, out.stderr)
        assert out.stderr.startswith("error: "), out.stderr
        assert text in out.stderr
        assert "Traceback" not in out.stderr
    usage = run_cli("send", "bad/name", "hi")
    assert "try 'pipemesh send --help'" in usage.stderr
    with AgentBase("quiet"):
        out = run_cli("ask", "quiet", "hello?", "--timeout", "0.5")
        assert out.returncode == 1
        assert "quiet did not reply" in out.stderr


def test_listen_prints_messages_and_leaves_cleanly(mesh_home: Path, spawn: Spawner) -> None:
    """A person can be an agent: 'listen' joins, prints each message, leaves on SIGINT."""
    proc = spawn.pipemesh("listen", "human", "--role", "reviewer")
    wait_for(lambda: "human" in run_cli("--json", "agents").stdout, timeout_s=30)
    assert run_cli("send", "human", "please review\nPR 42", "--from", "claude_code").returncode == 0
    assert proc.stdout is not None
    header = proc.stdout.readline()
    assert "claude_code -> human" in header
    assert "directive" in header
    assert proc.stdout.readline().strip() == "please review"
    assert proc.stdout.readline().strip() == "PR 42"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 130
    assert "human" not in json.loads(run_cli("--json", "agents").stdout)
    assert not (mesh_home / "pipes" / "human.public").exists()


def test_listen_json_and_count(mesh_home: Path, spawn: Spawner) -> None:
    """'listen --json --count N' prints N JSON lines and exits 0 (SIGTERM-free)."""
    proc = spawn.pipemesh("--json", "listen", "bot", "--count", "2")
    wait_for(lambda: "bot" in run_cli("--json", "agents").stdout, timeout_s=30)
    run_cli("send", "bot", "one")
    run_cli("send", "bot", "two")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert [json.loads(line)["body"] for line in out.splitlines()] == ["one", "two"]


def test_listen_terminated_by_sigterm_cleans_up(mesh_home: Path, spawn: Spawner) -> None:
    """SIGTERM makes a CLI agent unregister and remove its pipes."""
    proc = spawn.pipemesh("listen", "term")
    wait_for(lambda: "term" in run_cli("--json", "agents").stdout, timeout_s=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    assert "term" not in json.loads(run_cli("--json", "agents").stdout)
    assert not (mesh_home / "pipes" / "term.public").exists()


def test_tail_and_stats(mesh_home: Path, spawn: Spawner) -> None:
    """'tail' shows each message once, readable; 'stats' shows latency per agent."""
    assert "no latency records" in run_cli("stats").stdout
    follower = spawn.pipemesh("tail", "-n", "0", "--timeout", "60")
    assert follower.stderr is not None
    assert "following" in follower.stderr.readline()  # ready: it has its start offset
    with Echo("gemini") as _, AgentBase("claude_code") as c:
        c.ask("gemini", "What is the plan?", timeout_s=10)
    assert follower.stdout is not None
    first = follower.stdout.readline()
    second = follower.stdout.readline()
    follower.send_signal(signal.SIGTERM)
    assert "claude_code -> gemini  question" in first
    assert "What is the plan?" in first
    assert "gemini -> claude_code  response" in second
    assert " re " in second
    past = run_cli("tail", "--no-follow", "-n", "5")
    assert past.stdout.count("\n") == 2
    every = run_cli("tail", "--no-follow", "--all")
    assert "[frame_received]" in every.stdout
    stats = run_cli("stats")
    assert stats.returncode == 0
    rows = {line.split()[0]: line.split() for line in stats.stdout.splitlines()[1:]}
    assert set(rows) == {"claude_code", "gemini"}
    assert rows["gemini"][1] == "1"
    data = json.loads(run_cli("--json", "stats").stdout)
    assert {d["agent"] for d in data} == {"claude_code", "gemini"}


def test_demo_runs_and_leaves_nothing(mesh_home: Path) -> None:
    """'pipemesh demo' plays the seed's flow in three processes and cleans up."""
    out = subprocess.run(
        [sys.executable, "-m", "pipemesh", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "demo-claude -> demo-gemini     question" in text
    assert "demo-gemini -> demo-claude     response" in text
    assert "*(demo-codex)" in text
    assert "*(demo-gemini)" in text
    assert "demo-claude -> demo-codex      directive" in text
    assert "demo-codex -> demo-claude     status" in text
    assert "clean (3 processes exited, no pipe or registry entry left)" in text
    question_id = text.split("question  P1 ID:")[1].split()[0]
    assert f"RE:{question_id}" in text
    assert out.stderr == ""


def test_demo_is_isolated_from_the_users_mesh(mesh_home: Path) -> None:
    """With $PIPEMESH_HOME and --home set and a live 'gemini' there, the demo runs on its
    own temporary mesh and names, reaches nobody in the user's mesh, removes its home, and
    prints no traceback (was: ran in the user's mesh and timed out with two tracebacks)."""
    with AgentBase("gemini", "collaborator") as user_gemini:
        out = subprocess.run(
            [sys.executable, "-m", "pipemesh", "demo", "--home", str(mesh_home)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert user_gemini.receive(0.5) is None  # the demo never wrote to the user's agent
    assert "Traceback" not in out.stdout + out.stderr
    first = out.stdout.splitlines()[0]
    assert "own temporary mesh at " in first
    demo_home = Path(first.split(" at ")[1])
    assert demo_home != mesh_home
    assert not demo_home.exists()
    assert set(json.loads(run_cli("--json", "agents").stdout)) == set()
