"""What `pipemesh setup` is to write for the hooks: pipemesh.integrations.hooks.hook_settings."""

from __future__ import annotations

import shlex

from pipemesh.integrations.hooks import hook_settings

BASE = ["/opt/my tools/pipemesh", "--home", "/tmp/mesh home"]


def _commands(settings: dict[str, list[dict[str, object]]], event: str) -> list[dict[str, object]]:
    return [h for group in settings[event] for h in group["hooks"]]  # type: ignore[attr-defined]


def test_claude_wake_hook_is_armed_on_session_start_and_every_stop() -> None:
    settings = hook_settings("claude", "cc", BASE, wait_s=300)
    assert set(settings) == {"SessionStart", "Stop", "PostToolUse"}  # no UserPromptSubmit
    (start,) = _commands(settings, "SessionStart")
    stop, wake = _commands(settings, "Stop")
    assert start == wake
    assert wake["asyncRewake"] is True
    assert wake["timeout"] == 86400
    assert shlex.split(str(wake["command"])) == [
        *BASE,
        "hook",
        "wake",
        "--cli",
        "claude",
        "--name",
        "cc",
    ]
    # The synchronous stop hook never waits next to the wake hook.
    assert shlex.split(str(stop["command"]))[-6:] == [
        "hook",
        "stop",
        "--cli",
        "claude",
        "--name",
        "cc",
    ]
    assert "asyncRewake" not in stop


def test_codex_and_gemini_stop_hooks_wait_with_a_timeout_above_the_wait() -> None:
    codex = hook_settings("codex", "cx", BASE, wait_s=120)
    assert set(codex) == {"Stop", "UserPromptSubmit", "PostToolUse"}
    (stop,) = _commands(codex, "Stop")
    assert shlex.split(str(stop["command"]))[-2:] == ["--wait", "120"]
    assert stop["timeout"] == 150
    gemini = hook_settings("gemini", "gm", BASE, wait_s=120)
    assert set(gemini) == {"AfterAgent", "BeforeAgent", "AfterTool"}
    (after,) = _commands(gemini, "AfterAgent")
    assert after["timeout"] == 150_000  # Gemini CLI counts milliseconds
    assert "--cli gemini" in str(after["command"])


def test_join_quotes_for_the_hook_shell() -> None:
    settings = hook_settings("codex", "cx", BASE, join="|".join)
    (stop,) = _commands(settings, "Stop")
    assert stop["command"] == "|".join([*BASE, "hook", "stop", "--cli", "codex", "--name", "cx"])
