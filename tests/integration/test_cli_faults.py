"""CLI findings of issues 9, 12 and 13, each in real processes: what the CLI says and
does when input, stdout or the mesh misbehave. Each test failed on the code before
the fix (noted in its docstring)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipemesh import AgentBase, Message
from tests.conftest import PY, Spawner, run_cli, wait_for

pytestmark = pytest.mark.integration

COLOUR = re.compile(r"\x1b\[(?:[0-9]+;)*(?:3[0-8]|9[0-7])(?:;[0-9]+)*m")  # SGR colours
ANSI = "\x1b[31mRED\x1b[0m\rover\x07"


class Failer(AgentBase):
    """Answers every question with a reply of type 'error' (as the run adapters do)."""

    def on_message_received(self, msg: Message) -> None:
        if msg.msg_type == "question":
            self.reply(msg, "model failed: quota exceeded", msg_type="error")


def _agents(home: Path) -> dict[str, object]:
    out = run_cli("--json", "agents")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert isinstance(data, dict)
    return data


def test_global_options_after_the_subcommand(mesh_home: Path, tmp_path: Path) -> None:
    """--json, --home and --debug work after the subcommand too (was: 'No such option')."""
    other = tmp_path / "other"
    with AgentBase("gemini", "collaborator", other):
        out = run_cli("agents", "--json", "--home", str(other))
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["gemini"]["role"] == "collaborator"
        out = run_cli("agents", "--home", str(other), "--debug")
        assert out.returncode == 0, out.stderr
        assert "gemini" in out.stdout
    assert json.loads(run_cli("gc", "--json").stdout)["removed"] == []


def test_errors_are_one_line_and_json_with_json(mesh_home: Path) -> None:
    """Usage errors print the hint once, on the error's line; with --json every error is
    {"error": ...} on stderr with the same exit code (was: two lines, hint twice, text)."""
    out = run_cli("send", "bad/name", "hi")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.count("--help") == 1, out.stderr
    for args, code in [
        (("send", "bad/name", "hi", "--json"), 2),
        (("--json", "send", "nobody", "hi"), 1),
        (("agents", "--frobnicate", "--json"), 2),
    ]:
        out = run_cli(*args)
        assert out.returncode == code, out.stderr
        assert out.stdout == ""
        lines = out.stderr.splitlines()
        assert len(lines) == 1, out.stderr
        assert json.loads(lines[0])["error"]


def test_send_to_an_away_durable_agent_says_queued(mesh_home: Path) -> None:
    """'pipemesh --json send' to a durable agent that is away reports 'queued'
    (was: 'delivered' although it sat in the spool); text mode says so on stderr."""
    AgentBase("keeper", durable=True).close()  # registered, durable, away
    out = run_cli("--json", "send", "keeper", "wait for me")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "queued"
    text = run_cli("send", "keeper", "me too")
    assert text.returncode == 0, text.stderr
    assert "queued" in text.stderr
    assert len(text.stdout.split()) == 1  # the ID alone on stdout


def test_send_timeout_inf_and_nan_are_usage_errors(mesh_home: Path) -> None:
    """--timeout inf/nan/-1 is a one-line usage error (was: a raw OverflowError traceback)."""
    with AgentBase("gemini"):
        for value in ("inf", "nan", "-1"):
            out = run_cli("send", "gemini", "hi", "--timeout", value)
            assert out.returncode == 2, (value, out.stderr)
            assert "Traceback" not in out.stderr
            assert "seconds" in out.stderr


def test_send_dash_with_stdin_closed(mesh_home: Path) -> None:
    """'send TO -' with fd 0 closed is a one-line error (was: AttributeError traceback)."""
    with AgentBase("gemini"):
        out = subprocess.run(
            ["sh", "-c", 'exec "$0" -m pipemesh send gemini - 0<&-', PY],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "stdin is closed" in out.stderr


def test_stats_plot_to_a_full_disk_and_by_file_type(mesh_home: Path, tmp_path: Path) -> None:
    """--plot /dev/full is a one-line error (was: a traceback); .svg writes SVG (was: PNG
    bytes) and says what it wrote; an unknown suffix is refused before drawing."""
    pytest.importorskip("matplotlib")
    with AgentBase("gemini") as g, AgentBase("codex") as c:
        c.send_message("gemini", "hello")
        assert g.receive(10) is not None
    wait_for(lambda: (mesh_home / "logs" / "mesh_latency.log").stat().st_size > 0, 30)
    if Path("/dev/full").exists():
        full = run_cli("stats", "--plot", "/dev/full")
        assert full.returncode == 2, full.stderr
        assert "Traceback" not in full.stderr
    svg = tmp_path / "lat.svg"
    out = run_cli("stats", "--plot", str(svg))
    assert out.returncode == 0, out.stderr
    assert svg.read_bytes().lstrip().startswith((b"<?xml", b"<svg"))
    assert f"wrote {svg} (SVG" in out.stderr
    pdf = tmp_path / "lat.pdf"
    assert run_cli("stats", "--plot", str(pdf)).returncode == 0
    assert pdf.read_bytes()[:5] == b"%PDF-"
    bad = run_cli("stats", "--plot", str(tmp_path / "lat.gif"))
    assert bad.returncode == 2
    assert ".png, .svg or .pdf" in bad.stderr


def test_empty_home_is_refused(mesh_home: Path, tmp_path: Path) -> None:
    """--home '' is a usage error (was: the mesh silently made in the current directory)."""
    for args in (("--home", "", "agents"), ("agents", "--home", "")):
        out = subprocess.run(
            [PY, "-m", "pipemesh", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
        )
        assert out.returncode == 2, out.stderr
        assert "--home" in out.stderr
        assert "empty" in out.stderr
    assert not (tmp_path / "agent_registry.json").exists()
    assert not (tmp_path / "pipes").exists()


def test_ask_error_reply_exits_1(mesh_home: Path) -> None:
    """An 'error' reply is an error: exit 1, its text on stderr (was: printed, exit 0)."""
    with Failer("bot"):
        out = run_cli("ask", "bot", "do it", "--timeout", "30")
        assert out.returncode == 1, out.stdout + out.stderr
        assert out.stdout == ""
        assert "bot replied with an error: model failed: quota exceeded" in out.stderr
        out = run_cli("ask", "bot", "do it", "--timeout", "30", "--json")
        assert out.returncode == 1
        assert "quota exceeded" in json.loads(out.stderr)["error"]


def test_listen_timeout_exits(mesh_home: Path, spawn: Spawner) -> None:
    """'listen --timeout 1' exits by itself and leaves the mesh (was: never exited)."""
    proc = spawn.pipemesh("listen", "waiter", "--timeout", "1")
    assert proc.wait(timeout=60) == 0
    assert "waiter" not in _agents(mesh_home)


def test_listen_leaves_when_stdout_reader_goes(mesh_home: Path, spawn: Spawner) -> None:
    """'listen NAME | head -n 2': when the reader exits, listen leaves the mesh and exits
    141, so later mail is refused rather than swallowed (was: stayed registered)."""
    proc = spawn.pipemesh("--json", "listen", "human")
    wait_for(lambda: "human" in _agents(mesh_home), timeout_s=30)
    assert run_cli("send", "human", "one").returncode == 0
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline())["body"] == "one"
    proc.stdout.close()  # what head does after its lines
    assert proc.wait(timeout=60) == 141
    assert "human" not in _agents(mesh_home)
    late = run_cli("send", "human", "two")
    assert late.returncode == 1
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


def _malformed(logs: Path) -> None:
    logs.mkdir(exist_ok=True)
    with open(logs / "mesh_communication.log", "a", encoding="utf-8") as f:
        f.write("this is not json\n")
        f.write('{"ts": 1e300, "event": "frame_sent", "from": "x", "to": "y", "id": "a-1"}\n')
        f.write('{"ts": null, "event": "frame_sent", "from": "x", "to": "y", "id": "a-2"}\n')
        f.write('{"ts": 5.0, "event": "frame_sent", "from": ["x"], "to": "y", "id": ["a"]}\n')


def test_tail_and_history_skip_malformed_records(mesh_home: Path) -> None:
    """One bad record is skipped and reported once on stderr; the good ones are shown
    (was: tail and history died with a traceback)."""
    with AgentBase("gemini") as g, AgentBase("codex") as c:
        c.send_message("gemini", "before")
        assert g.receive(10) is not None
    logs = mesh_home / "logs"
    wait_for(lambda: b"before" in (logs / "mesh_communication.log").read_bytes(), 30)
    _malformed(logs)
    with AgentBase("gemini") as g, AgentBase("codex") as c:
        c.send_message("gemini", "after")
        assert g.receive(10) is not None
    wait_for(lambda: b"after" in (logs / "mesh_communication.log").read_bytes(), 30)
    tail = run_cli("tail", "--no-follow", "-n", "10")
    assert tail.returncode == 0, tail.stderr
    assert "before" in tail.stdout
    assert "after" in tail.stdout
    assert tail.stderr.count("malformed") == 1
    hist = run_cli("history")
    assert hist.returncode == 0, hist.stderr
    assert "before" in hist.stdout
    assert "after" in hist.stdout
    assert "skipped 4 malformed records" in hist.stderr
    assert "Traceback" not in tail.stderr + hist.stderr
    thread = run_cli("history", "--agent", "x", "--peer", "y")
    assert thread.returncode == 0, thread.stderr


def test_bodies_are_escaped_unless_raw_or_json(mesh_home: Path, spawn: Spawner) -> None:
    """ANSI/control characters in bodies are shown as escapes by listen, tail and history
    (was: sent raw to the terminal); --raw and --json keep them."""
    proc = spawn.pipemesh("listen", "human", "--count", "1")
    wait_for(lambda: "human" in _agents(mesh_home), timeout_s=30)
    assert run_cli("send", "human", ANSI).returncode == 0
    out, _ = proc.communicate(timeout=60)
    assert "\x1b" not in out
    assert "\\x1b[31mRED" in out
    assert "\\x0dover\\x07" in out
    wait_for(lambda: b"RED" in (mesh_home / "logs" / "mesh_communication.log").read_bytes(), 30)
    for args in (("tail", "--no-follow"), ("history",), ("history", "--full")):
        shown = run_cli(*args)
        assert shown.returncode == 0, shown.stderr
        assert "\\x1b[31mRED" in shown.stdout, args
        assert "\x1b" not in shown.stdout, args
        assert "\r" not in shown.stdout, args
    raw = run_cli("history", "--raw")
    assert "\x1b[31mRED" in raw.stdout
    as_json = run_cli("history", "--json")
    assert json.loads(as_json.stdout.splitlines()[-1])["body"] == ANSI


def _run_in_pty(args: list[str], env: dict[str, str]) -> str:
    """Run the CLI with stdout on a pseudo-terminal; return what it printed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [PY, "-m", "pipemesh", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its side
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    return b"".join(chunks).decode("utf-8", "replace")


def test_tables_are_rich_on_a_terminal_and_plain_when_piped(mesh_home: Path) -> None:
    """On a terminal 'agents' draws a table with colour; NO_COLOR drops the colour;
    piped output stays plain text (no escape sequences)."""
    with AgentBase("gemini", "collaborator"):
        coloured = _run_in_pty(["agents"], {"COLUMNS": "120", "TERM": "xterm-256color"})
        plain_tty = _run_in_pty(
            ["agents"], {"COLUMNS": "120", "TERM": "xterm-256color", "NO_COLOR": "1"}
        )
        piped = run_cli("agents")
    assert "gemini" in coloured
    assert COLOUR.search(coloured)
    assert "─" in coloured or "━" in coloured  # a drawn table
    assert "gemini" in plain_tty
    assert not COLOUR.search(plain_tty)  # NO_COLOR: bold may stay, colour goes
    assert "\x1b" not in piped.stdout
    assert piped.stdout.splitlines()[0].split() == ["NAME", "ROLE", "STATUS", "PID", "AGE"]


def test_shell_completion_script(mesh_home: Path, tmp_path: Path) -> None:
    """The documented click way prints a bash completion script for 'pipemesh'."""
    exe = Path(sys.executable).parent / "pipemesh"
    if not exe.exists():
        pytest.skip("the pipemesh console script is not installed next to this python")
    out = subprocess.run(
        [str(exe)],
        env={**os.environ, "_PIPEMESH_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "_pipemesh_completion" in out.stdout
    done = subprocess.run(
        [str(exe)],
        env={
            **os.environ,
            "_PIPEMESH_COMPLETE": "bash_complete",
            "COMP_WORDS": "pipemesh hist",
            "COMP_CWORD": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "history" in done.stdout


def test_default_message_type_is_one(mesh_home: Path) -> None:
    """API send()/send_message() and CLI send use the same default TYPE (was: API
    'response', CLI 'directive')."""
    from pipemesh.runtime.agent import DEFAULT_MSG_TYPE

    with AgentBase("gemini") as g, AgentBase("codex") as c:
        c.send_message("gemini", "api")
        c.send("gemini", "api2")
        assert run_cli("send", "gemini", "cli").returncode == 0
        types = set()
        for _ in range(3):
            msg = g.receive(10)
            assert msg is not None
            types.add(msg.msg_type)
    assert types == {DEFAULT_MSG_TYPE}
