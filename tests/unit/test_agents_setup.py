"""Pure parts of the CLI agents and of `pipemesh setup`: output parsing, prompts, config."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from pipemesh.errors import UsageError
from pipemesh.integrations.agents import claude, copilot, gemini
from pipemesh.integrations.agents.base import CliFailed, build_prompt, load_spec, parse_output
from pipemesh.integrations.setup_clients import plan, shell_join
from pipemesh.wire import Message


class TestParseOutput:
    def test_claude_json_result(self) -> None:
        """claude's JSON `result` is the answer; `is_error` makes it a failure."""
        assert parse_output(claude.SPEC, json.dumps({"result": "hi", "is_error": False})) == "hi"
        with pytest.raises(CliFailed, match="claude reported an error"):
            parse_output(claude.SPEC, json.dumps({"result": "quota", "is_error": True}))

    def test_gemini_json_response(self) -> None:
        """gemini's JSON `response` is the answer; `error` makes it a failure."""
        assert parse_output(gemini.SPEC, json.dumps({"response": "ok", "stats": {}})) == "ok"
        with pytest.raises(CliFailed, match="gemini reported an error"):
            parse_output(gemini.SPEC, json.dumps({"error": {"message": "no auth"}}))

    def test_not_json(self) -> None:
        """Plain text where JSON was expected names the likely cause."""
        with pytest.raises(CliFailed, match="missing --output-format json"):
            parse_output(claude.SPEC, "hello")


def test_build_prompt_lists_history_then_the_message() -> None:
    """The prompt holds earlier messages with the peer, oldest first, then the question."""
    q1 = Message("bob", "me", 1, "question", "b-1", "first?")
    a1 = Message("me", "bob", 1, "response", "m-1", "answer one", reply_to="b-1")
    q2 = Message("bob", "me", 1, "question", "b-2", "second?")
    text = build_prompt("me", "coder", q2, [q1, a1, q2])
    assert text.index("first?") < text.index("answer one") < text.index("second?")
    assert "--- bob -> you (question, id b-1)" in text
    assert "--- you -> bob (response, id m-1)" in text
    assert text.count("second?") == 1


def test_load_spec_applies_the_kind_table(tmp_path: Path) -> None:
    """agents.toml overrides the command and limits of its kind; bad types are usage errors."""
    path = tmp_path / "agents.toml"
    assert load_spec(claude.SPEC, path) == claude.SPEC
    path.write_text('[claude]\ncommand = ["my-claude", "-p"]\ntimeout_s = 9\nmax_workers = 4\n')
    spec = load_spec(claude.SPEC, path)
    assert spec.command == ("my-claude", "-p")
    assert (spec.timeout_s, spec.max_workers) == (9.0, 4)
    path.write_text("[claude]\ntimeout_s = 'soon'\n")
    with pytest.raises(UsageError, match="timeout_s"):
        load_spec(claude.SPEC, path)


def test_setup_plan_merges_without_dropping_user_settings(tmp_path: Path) -> None:
    """Existing hooks and keys stay; our entries are added once; a second plan changes nothing."""
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    mine = {"command": "my-linter", "type": "command"}
    settings.write_text(json.dumps({"model": "opus", "hooks": {"Stop": [{"hooks": [mine]}]}}))
    changes = plan("claude", "cc", tmp_path, None, 0.0, user_home=tmp_path).project
    new = json.loads(changes[1].new)
    assert new["model"] == "opus"
    assert new["hooks"]["Stop"][0]["hooks"] == [mine]
    assert "hook stop --cli claude --name cc" in new["hooks"]["Stop"][1]["hooks"][0]["command"]
    settings.write_text(changes[1].new)
    assert not plan("claude", "cc", tmp_path, None, 0.0, user_home=tmp_path).project[1].changed


def test_setup_plan_refuses_unparsable_files(tmp_path: Path) -> None:
    """A settings file that is not JSON is never overwritten."""
    (tmp_path / ".gemini").mkdir()
    (tmp_path / ".gemini" / "settings.json").write_text("{not json")
    with pytest.raises(UsageError, match="is not valid JSON"):
        plan("gemini", "gm", tmp_path, None, 0.0, user_home=tmp_path)


def test_setup_codex_plan_has_what_codex_needs(tmp_path: Path) -> None:
    """Codex: start-up grace at the top level (before any table), env_vars, approval mode;
    project trust in the user's config, and a step when the project is marked otherwise."""
    project = tmp_path / "proj"
    (project / ".codex").mkdir(parents=True)
    (project / ".codex" / "config.toml").write_text('[profiles.x]\nmodel = "o3"\n')
    result = plan("codex", "cx", project, "/mesh home", 0.0, user_home=tmp_path)
    text = result.project[0].new
    parsed = tomllib.loads(text)
    assert parsed["mcp_optional_startup_grace_ms"] == 10000
    assert parsed["profiles"]["x"]["model"] == "o3"
    server = parsed["mcp_servers"]["pipemesh"]
    assert server["env_vars"] == ["PIPEMESH_HOME"]
    assert server["default_tools_approval_mode"] == "approve"
    args = server["args"]
    assert args[args.index("--home") + 1] == "/mesh home"
    (user,) = result.user
    assert tomllib.loads(user.new)["projects"][str(project)]["trust_level"] == "trusted"
    user.path.parent.mkdir(parents=True)
    user.path.write_text(f'[projects.{json.dumps(str(project))}]\ntrust_level = "untrusted"\n')
    again = plan("codex", "cx", project, None, 0.0, user_home=tmp_path)
    assert again.user == []
    assert any('without trust_level = "trusted"' in step for step in again.steps)


def test_setup_plans_for_opencode_and_copilot(tmp_path: Path) -> None:
    """opencode gets opencode.json `mcp`; Copilot CLI .github/mcp.json (not Claude Code's
    .mcp.json), an agentStop hook, and a trusted folder in ~/.copilot/config.json."""
    (oc,) = plan("opencode", "oc", tmp_path, None, 0.0, user_home=tmp_path).project
    assert oc.path == tmp_path / "opencode.json"
    local = json.loads(oc.new)["mcp"]["pipemesh"]
    assert local["type"] == "local"
    assert local["command"][-3:] == ["mcp", "--name", "oc"]
    copilot = plan("copilot", "cp", tmp_path, None, 0.0, user_home=tmp_path)
    assert [c.path for c in copilot.project] == [
        tmp_path / ".github" / "mcp.json",
        tmp_path / ".github" / "hooks" / "pipemesh.json",
    ]
    hooks = json.loads(copilot.project[1].new)
    assert hooks["version"] == 1
    assert set(hooks["hooks"]) == {"agentStop"}
    stop = hooks["hooks"]["agentStop"][0]
    assert "hook stop --cli claude --name cp" in stop["bash"]
    assert stop["powershell"].startswith("& ")
    (trust,) = copilot.user
    assert json.loads(trust.new)["trustedFolders"] == [str(tmp_path)]


def test_hook_commands_are_quoted_for_posix_and_windows_shells() -> None:
    """A path with spaces stays one argument in sh and in cmd."""
    argv = ["C:\\Program Files\\pipemesh\\pipemesh.exe", "--home", "C:\\mesh home", "hook"]
    assert shell_join(argv, windows=True) == (
        '"C:\\Program Files\\pipemesh\\pipemesh.exe" --home "C:\\mesh home" hook'
    )
    assert shell_join(["/opt/my tools/pipemesh", "hook"], windows=False) == (
        "'/opt/my tools/pipemesh' hook"
    )


def test_headless_gemini_and_copilot_run_from_a_private_directory(tmp_path: Path) -> None:
    """The default command gets a private cwd and the project as an included directory;
    a command or cwd of the user's own is left as written."""
    spec = gemini.isolate(gemini.SPEC, tmp_path / "proj", tmp_path / "run")
    assert spec.cwd == str(tmp_path / "run")
    assert (tmp_path / "run").is_dir()
    assert spec.command[-4:-2] == ("--include-directories", str(tmp_path / "proj"))
    assert spec.command[-2] == "-p"
    mine = replace(gemini.SPEC, command=("gemini", "-p", "x"))
    assert gemini.isolate(mine, tmp_path, tmp_path / "run") is mine
    cp = copilot.isolate(copilot.SPEC, tmp_path / "proj", tmp_path / "run2")
    assert cp.command[-2:] == ("--add-dir", str(tmp_path / "proj"))
    assert cp.cwd == str(tmp_path / "run2")
