"""`pipemesh run` against fake claude/gemini/codex programs placed first on PATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipemesh.home import MeshHome
from pipemesh.integrations.agents import claude
from pipemesh.registry import Registry
from pipemesh.runtime.agent import AgentBase
from tests.conftest import Spawner, run_cli, wait_for

pytestmark = pytest.mark.integration

# A real program: records argv, stdin and pid as one JSON line, then answers in the
# output format of the CLI it is named after. HANG in the prompt sleeps; FAIL exits 3.
FAKE = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys, time
    kind = os.path.basename(sys.argv[0])
    prompt = sys.stdin.read()
    with open(os.environ["FAKE_LOG"], "a") as f:
        f.write(json.dumps({{"kind": kind, "argv": sys.argv[1:], "stdin": prompt,
                            "pid": os.getpid()}}) + "\\n")
    last = prompt.rstrip().splitlines()[-1]
    if "HANG" in last:
        time.sleep(120)
    if "FAIL" in last:
        sys.stderr.write("boom: model unavailable\\n")
        sys.exit(3)
    answer = kind + " answer to: " + last
    if kind == "claude":
        print(json.dumps({{"type": "result", "is_error": False, "result": answer}}))
    elif kind == "gemini":
        print(json.dumps({{"response": answer, "stats": {{}}}}))
    else:
        print(answer)
    """
)


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """A directory with fake claude, gemini and codex executables."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for kind in ("claude", "gemini", "codex"):
        exe = bin_dir / kind
        exe.write_text(FAKE.format(python=sys.executable))
        exe.chmod(0o755)
    return bin_dir


def _env(fake_bin: Path, log: Path) -> dict[str, str]:
    return {"PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}", "FAKE_LOG": str(log)}


def _calls(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _start(spawn: Spawner, home: Path, env: dict[str, str], *args: str) -> None:
    name = args[args.index("--name") + 1]
    proc = spawn.pipemesh("--home", str(home), "run", *args, env=env)
    registry = Registry(MeshHome.open(home).registry_path, MeshHome.open(home).lock_path)

    def online() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        rec = registry.read().get(name)
        return rec is not None and rec.is_active

    wait_for(online, timeout_s=30)


def test_run_claude_spawns_claude_and_passes_history(
    mesh_home: Path, spawn: Spawner, fake_bin: Path, tmp_path: Path
) -> None:
    """Each question runs `claude -p --output-format json`; the second prompt holds the first."""
    log = tmp_path / "calls.jsonl"
    _start(spawn, mesh_home, _env(fake_bin, log), "claude", "--name", "cl", "--timeout", "30")
    with AgentBase("asker", "test", mesh_home, heartbeat_s=0) as asker:
        first = asker.ask("cl", "what is 2+2?", timeout_s=30)
        second = asker.ask("cl", "and times 3?", timeout_s=30)
    assert first.body == "claude answer to: what is 2+2?"
    assert first.msg_type == "response"
    assert first.sender == "cl"
    assert second.body == "claude answer to: and times 3?"
    calls = _calls(log)
    assert [c["argv"] for c in calls] == [list(claude.SPEC.command[1:])] * 2
    history = str(calls[1]["stdin"])
    assert "what is 2+2?" in history
    assert "claude answer to: what is 2+2?" in history
    assert history.rstrip().endswith("and times 3?")
    assert f"id {second.reply_to}" in history


@pytest.mark.parametrize(
    ("kind", "argv0"),
    [
        ("gemini", ["--skip-trust", "--output-format", "json", "--include-directories"]),
        ("codex", ["exec", "--skip-git-repo-check"]),
    ],
)
def test_run_gemini_and_codex_spawn_their_headless_commands(
    mesh_home: Path, spawn: Spawner, fake_bin: Path, tmp_path: Path, kind: str, argv0: list[str]
) -> None:
    """gemini runs `-p` with JSON output, codex runs `exec`; each answer is read back."""
    log = tmp_path / "calls.jsonl"
    _start(spawn, mesh_home, _env(fake_bin, log), kind, "--name", kind)
    with AgentBase("asker", "test", mesh_home, heartbeat_s=0) as asker:
        reply = asker.ask(kind, "hello there", timeout_s=30, msg_type="directive")
    assert reply.body == f"{kind} answer to: hello there"
    (call,) = _calls(log)
    argv = call["argv"]
    assert isinstance(argv, list)
    assert argv[: len(argv0)] == argv0


def test_run_hang_hits_timeout_and_failure_is_error_reply(
    mesh_home: Path, spawn: Spawner, fake_bin: Path, tmp_path: Path
) -> None:
    """A hung CLI is killed at the timeout and a non-zero exit comes back as TYPE:error."""
    log = tmp_path / "calls.jsonl"
    _start(spawn, mesh_home, _env(fake_bin, log), "claude", "--name", "cl", "--timeout", "1")
    with AgentBase("asker", "test", mesh_home, heartbeat_s=0) as asker:
        hung = asker.ask("cl", "HANG please", timeout_s=30)
        failed = asker.ask("cl", "FAIL please", timeout_s=30)
    assert hung.msg_type == "error"
    assert "claude did not answer within 1s and was stopped" in hung.body
    assert failed.msg_type == "error"
    assert failed.body == "claude exited with code 3: boom: model unavailable"
    pid = int(str(_calls(log)[0]["pid"]))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the hung process was killed, not left behind


def test_run_command_answers_with_any_program(
    mesh_home: Path, spawn: Spawner, fake_bin: Path, tmp_path: Path
) -> None:
    """`run command -- ARGV` replies with the program's stdout."""
    log = tmp_path / "calls.jsonl"
    prog = str(fake_bin / "codex")
    _start(spawn, mesh_home, _env(fake_bin, log), "command", "--name", "cmd", "--", prog, "x")
    with AgentBase("asker", "test", mesh_home, heartbeat_s=0) as asker:
        reply = asker.ask("cmd", "anything", timeout_s=30)
    assert reply.body == "codex answer to: anything"
    assert _calls(log)[0]["argv"] == ["x"]


def test_run_missing_cli_says_how_to_install(mesh_home: Path, tmp_path: Path) -> None:
    """Without claude on PATH, `pipemesh run claude` exits 1 with the install command."""
    env = {**os.environ, "PATH": str(tmp_path / "empty")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipemesh",
            "--home",
            str(mesh_home),
            "run",
            "claude",
            "--name",
            "c",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == 1
    assert "claude is not installed (not found on PATH)" in out.stderr
    assert "npm install -g @anthropic-ai/claude-code" in out.stderr
    assert run_cli("--home", str(mesh_home), "agents").stdout.startswith("no agents")
