"""Claude Code, headless: ``claude -p --output-format json`` with the prompt on stdin.

The JSON result carries the answer in ``result`` and failures in ``is_error``
(https://code.claude.com/docs/en/headless). ``--setting-sources user`` and
``--strict-mcp-config`` keep the project's hooks and MCP servers out of it.
"""

from __future__ import annotations

from typing import Final

from pipemesh.integrations.agents.base import CliSpec

__all__ = ["SPEC"]

SPEC: Final = CliSpec(
    kind="claude",
    # Only the user's settings and no MCP server: a project set up for an interactive
    # Claude Code holds hooks and a `pipemesh mcp` under that agent's name, which a
    # headless answer must not run (it would take the interactive agent's messages).
    command=(
        "claude",
        "-p",
        "--output-format",
        "json",
        "--setting-sources",
        "user",
        "--strict-mcp-config",
    ),
    output="claude-json",
    install_hint="npm install -g @anthropic-ai/claude-code",
)
