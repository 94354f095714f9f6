"""Hook commands fed the JSON each CLI sends (from its documented format)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from pipemesh.integrations._inbox import InboxFile
from pipemesh.integrations.mcp import McpAgent
from pipemesh.runtime.agent import MeshClient
from pipemesh.wire import Message
from tests.conftest import Spawner, run_cli, wait_for

pytestmark = pytest.mark.integration

# https://code.claude.com/docs/en/hooks (common fields + per-event fields)
CLAUDE_BASE = {
    "session_id": "abc123",
    "transcript_path": "/tmp/transcript.jsonl",
    "cwd": "/tmp",
    "permission_mode": "default",
}
CLAUDE_STOP = {**CLAUDE_BASE, "hook_event_name": "Stop", "stop_hook_active": False}
CLAUDE_PROMPT = {**CLAUDE_BASE, "hook_event_name": "UserPromptSubmit", "prompt": "go on"}
CLAUDE_POST_TOOL = {
    **CLAUDE_BASE,
    "hook_event_name": "PostToolUse",
    "tool_name": "Bash",
    "tool_input": {"command": "ls"},
    "tool_response": {"stdout": ""},
    "tool_use_id": "toolu_01",
}
# https://geminicli.com/docs/hooks/reference (base fields + AfterAgent / BeforeAgent fields)
GEMINI_BASE = {
    "session_id": "s1",
    "transcript_path": "/tmp/t.json",
    "cwd": "/tmp",
    "timestamp": "2026-01-01T00:00:00Z",
}
GEMINI_AFTER_AGENT = {
    **GEMINI_BASE,
    "hook_event_name": "AfterAgent",
    "prompt": "fix it",
    "prompt_response": "done",
    "stop_hook_active": False,
}
GEMINI_BEFORE_AGENT = {**GEMINI_BASE, "hook_event_name": "BeforeAgent", "prompt": "fix it"}
# openai/codex codex-rs/hooks/schema/generated/stop.command.input.schema.json and
# user-prompt-submit.command.input.schema.json
CODEX_BASE = {
    "session_id": "t1",
    "turn_id": "turn-1",
    "cwd": "/tmp",
    "transcript_path": None,
    "model": "gpt-5",
    "permission_mode": "default",
}
CODEX_STOP = {
    **CODEX_BASE,
    "hook_event_name": "Stop",
    "stop_hook_active": False,
    "last_assistant_message": "done",
}
CODEX_PROMPT = {**CODEX_BASE, "hook_event_name": "UserPromptSubmit", "prompt": "go on"}


def _hook(home: Path, *args: str, data: dict[str, object]) -> subprocess.CompletedProcess[str]:
    return run_cli("--home", str(home), "hook", *args, input_text=json.dumps(data), timeout_s=60)


def _put(home: Path, name: str, body: str, msg_id: str = "ab12-1") -> None:
    InboxFile.open(home, name).append(Message("gemini", name, 1, "question", msg_id, body))


class TestClaudeHooks:
    def test_stop_without_messages_lets_claude_stop(self, mesh_home: Path) -> None:
        """No message waiting: exit 0 and no output, so Claude Code stops."""
        out = _hook(mesh_home, "stop", "--name", "cc", data=CLAUDE_STOP)
        assert out.returncode == 0, out.stderr
        assert out.stdout == ""

    def test_stop_with_messages_blocks_once(self, mesh_home: Path) -> None:
        """Waiting messages block the stop with them as the reason, and are handed over once."""
        _put(mesh_home, "cc", "please review PR 7")
        out = _hook(mesh_home, "stop", "--name", "cc", data=CLAUDE_STOP)
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
        assert got["decision"] == "block"
        assert "[ab12-1] from gemini, question" in got["reason"]
        assert "please review PR 7" in got["reason"]
        again = _hook(mesh_home, "stop", "--name", "cc", data=CLAUDE_STOP)
        assert again.stdout == ""
        assert InboxFile.open(mesh_home, "cc").find("ab12-1") is not None  # reply() finds it

    def test_context_hooks_add_waiting_messages(self, mesh_home: Path) -> None:
        """UserPromptSubmit and PostToolUse add waiting messages as additionalContext."""
        assert _hook(mesh_home, "context", "--name", "cc", data=CLAUDE_PROMPT).stdout == ""
        for data in (CLAUDE_PROMPT, CLAUDE_POST_TOOL):
            _put(mesh_home, "cc", "status?")
            out = _hook(mesh_home, "context", "--name", "cc", data=data)
            got = json.loads(out.stdout)
            assert got["hookSpecificOutput"]["hookEventName"] == data["hook_event_name"]
            assert "status?" in got["hookSpecificOutput"]["additionalContext"]

    def test_stop_waits_for_a_message_and_wakes_on_arrival(
        self, mesh_home: Path, spawn: Spawner
    ) -> None:
        """With --wait and the MCP agent online, the hook returns as soon as a message arrives."""
        with McpAgent("cw", home=mesh_home, heartbeat_s=0):
            proc = spawn.pipemesh(
                "--home",
                str(mesh_home),
                "hook",
                "stop",
                "--name",
                "cw",
                "--wait",
                "20",
                stdin=subprocess.PIPE,
            )
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(CLAUDE_STOP))
            proc.stdin.close()
            waiters = mesh_home / "mcp" / "cw" / "waiters"
            wait_for(lambda: any(waiters.iterdir()), timeout_s=30)
            start = time.monotonic()
            with MeshClient("peer", mesh_home) as client:
                client.send_message("cw", "wake up", msg_type="directive")
            proc.wait(timeout=30)
            elapsed = time.monotonic() - start
        assert proc.stdout is not None
        assert proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
        assert proc.returncode == 0, err
        got = json.loads(out)
        assert got["decision"] == "block"
        assert "wake up" in got["reason"]
        assert elapsed < 10  # woken by the arrival, well before the 20 s limit

    def test_wrong_event_is_a_non_blocking_error(self, mesh_home: Path) -> None:
        """A context event sent to the stop hook exits 1 (non-blocking) with one clear line."""
        out = _hook(mesh_home, "stop", "--name", "cc", data=CLAUDE_PROMPT)
        assert out.returncode == 1
        assert "this hook handles Stop, SubagentStop events, got 'UserPromptSubmit'" in out.stderr


class TestGeminiHooks:
    def test_after_agent(self, mesh_home: Path) -> None:
        """AfterAgent: {} with nothing waiting; deny with the messages as the new prompt."""
        args = ("stop", "--cli", "gemini", "--name", "gm")
        assert json.loads(_hook(mesh_home, *args, data=GEMINI_AFTER_AGENT).stdout) == {}
        _put(mesh_home, "gm", "ping")
        got = json.loads(_hook(mesh_home, *args, data=GEMINI_AFTER_AGENT).stdout)
        assert got["decision"] == "deny"
        assert "ping" in got["reason"]

    def test_before_agent(self, mesh_home: Path) -> None:
        """BeforeAgent: {} with nothing waiting; additionalContext with messages."""
        args = ("context", "--cli", "gemini", "--name", "gm")
        assert json.loads(_hook(mesh_home, *args, data=GEMINI_BEFORE_AGENT).stdout) == {}
        _put(mesh_home, "gm", "ping")
        got = json.loads(_hook(mesh_home, *args, data=GEMINI_BEFORE_AGENT).stdout)
        assert got["hookSpecificOutput"]["hookEventName"] == "BeforeAgent"
        assert "ping" in got["hookSpecificOutput"]["additionalContext"]


class TestCodexHooks:
    def test_stop(self, mesh_home: Path) -> None:
        """Stop: {} with nothing waiting; block with the messages as the continuation prompt."""
        args = ("stop", "--cli", "codex", "--name", "cx")
        assert json.loads(_hook(mesh_home, *args, data=CODEX_STOP).stdout) == {}
        _put(mesh_home, "cx", "run the tests")
        got = json.loads(_hook(mesh_home, *args, data=CODEX_STOP).stdout)
        assert got == {"decision": "block", "reason": got["reason"]}
        assert "run the tests" in got["reason"]

    def test_user_prompt_submit(self, mesh_home: Path) -> None:
        """UserPromptSubmit: waiting messages come back as additionalContext."""
        _put(mesh_home, "cx", "run the tests")
        args = ("context", "--cli", "codex", "--name", "cx")
        got = json.loads(_hook(mesh_home, *args, data=CODEX_PROMPT).stdout)
        assert got["hookSpecificOutput"]["hookEventName"] == "UserPromptSubmit"
        assert "run the tests" in got["hookSpecificOutput"]["additionalContext"]


def test_setup_write_keeps_a_backup_and_shows_a_diff(mesh_home: Path, tmp_path: Path) -> None:
    """`setup codex --write` shows a diff, keeps a backup, and is a no-op the second time."""
    project = tmp_path / "proj"
    (project / ".codex").mkdir(parents=True)
    config = project / ".codex" / "config.toml"
    config.write_text('model = "gpt-5"\n')
    args = ("--home", str(mesh_home), "setup", "codex", "--name", "cx", "--dir", str(project))
    out = run_cli(*args, "--write")
    assert out.returncode == 0, out.stderr
    assert "+[mcp_servers.pipemesh]" in out.stdout
    text = config.read_text()
    assert 'model = "gpt-5"\n' in text
    assert text.startswith("mcp_optional_startup_grace_ms = ")  # top level: before any table
    assert 'env_vars = ["PIPEMESH_HOME"]' in text
    assert "next: trust this project" in out.stdout  # no --approve: the step, not a write
    backups = list((project / ".codex").glob("config.toml.bak-*"))
    assert [b.read_text() for b in backups] == ['model = "gpt-5"\n']
    hooks = json.loads((project / ".codex" / "hooks.json").read_text())
    assert set(hooks["hooks"]) == {"Stop", "UserPromptSubmit", "PostToolUse"}
    again = run_cli(*args, "--write")
    assert "already set up, left as is" in again.stdout
