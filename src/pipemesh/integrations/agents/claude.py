"""Claude Code, headless: ``claude -p --output-format json`` with the prompt on stdin.

The JSON result carries the answer in ``result`` and failures in ``is_error``
(https://code.claude.com/docs/en/headless).
"""

from __future__ import annotations

from typing import Final

from pipemesh.integrations.agents.base import CliSpec

__all__ = ["SPEC"]

SPEC: Final = CliSpec(
    kind="claude",
    command=("claude", "-p", "--output-format", "json"),
    output="claude-json",
    install_hint="npm install -g @anthropic-ai/claude-code",
)
