"""How each real CLI is pointed at the fake model and driven headless in the e2e suite.

One :class:`Profile` per CLI: what it needs in its private HOME to talk to the fake
model (never to pipemesh: that part comes only from ``pipemesh setup X --write``), how
to run one headless turn, and how to ask the CLI itself which MCP servers it sees.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tests.e2e.conftest import Sandbox, cli_path


@dataclass(frozen=True)
class Profile:
    """One CLI in the e2e suite.

    Attributes:
        cli: the name ``pipemesh setup``/``run``/``hook`` use.
        binary: the executable in node_modules/.bin.
        agent: the mesh name its MCP server gets in the tests.
        prepare: writes the model-provider settings into the sandbox's HOME.
        turn: argv of one headless turn with a prompt.
        mcp_list: argv of the CLI's own MCP listing.
        connected: what that listing prints for a working pipemesh server.
        prompt_hook, tool_hook, stop_hook: the CLI's event names ("" when not set up).
        needs_approval: the CLI ignores the project's server until ``setup --approve``.
    """

    cli: str
    binary: str
    agent: str
    prepare: Callable[[Sandbox], None]
    turn: Callable[[Sandbox, str], list[str]]
    mcp_list: Callable[[Sandbox], list[str]]
    connected: re.Pattern[str]
    prompt_hook: str
    tool_hook: str
    stop_hook: str
    needs_approval: bool = False

    def exe(self) -> str:
        return str(cli_path(self.binary))


def _claude_prepare(box: Sandbox) -> None:
    # Nothing about the model: Claude Code reads ANTHROPIC_BASE_URL/ANTHROPIC_API_KEY.
    # Skip the first-run screens a person would click through.
    box.write_json("~/.claude.json", {"hasCompletedOnboarding": True})


CLAUDE = Profile(
    cli="claude",
    binary="claude",
    agent="cc",
    prepare=_claude_prepare,
    turn=lambda box, prompt: [
        str(cli_path("claude")),
        "-p",
        "--output-format",
        "json",
        "--allowedTools=mcp__pipemesh",
        prompt,
    ],
    mcp_list=lambda box: [str(cli_path("claude")), "mcp", "list"],
    connected=re.compile(r"^pipemesh: .*mcp --name cc .*Connected", re.M),
    # No UserPromptSubmit hook: the asyncRewake wake hook hands over what waited (wake.md).
    prompt_hook="",
    tool_hook="PostToolUse",
    stop_hook="Stop",
    needs_approval=True,
)


def _gemini_prepare(box: Sandbox) -> None:
    # API-key auth (the key and base URL come from the environment).
    box.write_json(
        "~/.gemini/settings.json", {"security": {"auth": {"selectedType": "gemini-api-key"}}}
    )


GEMINI = Profile(
    cli="gemini",
    binary="gemini",
    agent="gm",
    prepare=_gemini_prepare,
    turn=lambda box, prompt: [str(cli_path("gemini")), "--output-format", "json", "-p", prompt],
    mcp_list=lambda box: [str(cli_path("gemini")), "mcp", "list"],
    connected=re.compile(r"pipemesh: .*mcp --name gm .*Connected", re.M),
    prompt_hook="BeforeAgent",
    tool_hook="AfterTool",
    stop_hook="AfterAgent",
    needs_approval=True,
)


def _codex_prepare(box: Sandbox) -> None:
    # A Responses-API provider on the fake model; the key comes from FAKE_OPENAI_KEY.
    box.write(
        "~/.codex/config.toml",
        'model = "gpt-5"\n'
        'model_provider = "fake"\n\n'
        "[model_providers.fake]\n"
        'name = "fake"\n'
        f'base_url = "{box.model.url}/v1"\n'
        'env_key = "FAKE_OPENAI_KEY"\n'
        'wire_api = "responses"\n',
    )


CODEX = Profile(
    cli="codex",
    binary="codex",
    agent="cx",
    prepare=_codex_prepare,
    turn=lambda box, prompt: [
        str(cli_path("codex")),
        "exec",
        "--skip-git-repo-check",
        prompt,
    ],
    mcp_list=lambda box: [str(cli_path("codex")), "mcp", "list"],
    connected=re.compile(r"^pipemesh\s.*mcp --name cx.*enabled", re.M),
    prompt_hook="UserPromptSubmit",
    tool_hook="PostToolUse",
    stop_hook="Stop",
    needs_approval=True,
)


def _opencode_prepare(box: Sandbox) -> None:
    # The built-in Anthropic provider, pointed at the fake model (user config, not the
    # project's: the project's opencode.json is setup's alone).
    box.write_json(
        "~/.config/opencode/opencode.json",
        {
            "$schema": "https://opencode.ai/config.json",
            "provider": {
                "anthropic": {"options": {"baseURL": f"{box.model.url}/v1", "apiKey": "x"}}
            },
            "model": "anthropic/claude-sonnet-4-5",
            "autoupdate": False,
        },
    )
    box.env.update({"OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1"})


OPENCODE = Profile(
    cli="opencode",
    binary="opencode",
    agent="oc",
    prepare=_opencode_prepare,
    turn=lambda box, prompt: [str(cli_path("opencode")), "run", prompt],
    mcp_list=lambda box: [str(cli_path("opencode")), "mcp", "list"],
    connected=re.compile(r"pipemesh\W+connected", re.M),
    prompt_hook="",
    tool_hook="",
    stop_hook="",
)


def _copilot_prepare(box: Sandbox) -> None:
    # BYOK: Copilot CLI's own switch to a custom OpenAI-compatible provider, no GitHub login.
    box.env.update(
        {
            "COPILOT_PROVIDER_BASE_URL": f"{box.model.url}/v1",
            "COPILOT_PROVIDER_API_KEY": "x",
            "COPILOT_MODEL": "gpt-4.1",
            "COPILOT_OFFLINE": "true",
            "COPILOT_AUTO_UPDATE": "false",
        }
    )


COPILOT = Profile(
    cli="copilot",
    binary="copilot",
    agent="cp",
    prepare=_copilot_prepare,
    turn=lambda box, prompt: [
        str(cli_path("copilot")),
        "-p",
        prompt,
        "--allow-tool=pipemesh",
        "--no-color",
    ],
    mcp_list=lambda box: [str(cli_path("copilot")), "mcp", "list"],
    connected=re.compile(r"^Workspace servers:\n\s+pipemesh \(local\)", re.M),
    prompt_hook="",  # its prompt/tool hooks want another output format (docs/agents.md)
    tool_hook="",
    stop_hook="agentStop",
    needs_approval=True,
)

PROFILES = [CLAUDE, GEMINI, CODEX, OPENCODE, COPILOT]
