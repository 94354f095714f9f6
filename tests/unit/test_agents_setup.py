"""Pure parts of the CLI agents and of `pipemesh setup`: output parsing, prompts, config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipemesh.errors import UsageError
from pipemesh.integrations.agents import claude, gemini
from pipemesh.integrations.agents.base import CliFailed, build_prompt, load_spec, parse_output
from pipemesh.integrations.setup_clients import plan
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
