"""Codex, headless: ``codex exec --skip-git-repo-check --ephemeral INSTRUCTION`` with the
conversation on stdin.

With a prompt argument, piped stdin is taken as extra context; only the final
agent message goes to stdout (https://developers.openai.com/codex/noninteractive).
``--ephemeral`` keeps one-off answers out of the session files; the default
read-only sandbox stays on (add ``--sandbox workspace-write`` in agents.toml to
let it edit files).
"""

from __future__ import annotations

from typing import Final

from pipemesh.integrations.agents.base import INSTRUCTION, CliSpec

__all__ = ["SPEC"]

SPEC: Final = CliSpec(
    kind="codex",
    command=("codex", "exec", "--skip-git-repo-check", "--ephemeral", INSTRUCTION),
    output="text",
    install_hint="npm install -g @openai/codex",
)
