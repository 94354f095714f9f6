"""Codex, headless: ``codex exec --skip-git-repo-check --ephemeral ... INSTRUCTION`` with the
conversation on stdin.

With a prompt argument, piped stdin is taken as extra context; only the final
agent message goes to stdout (https://developers.openai.com/codex/noninteractive).
``--ephemeral`` keeps one-off answers out of the session files; the default
read-only sandbox stays on (add ``--sandbox workspace-write`` in agents.toml to
let it edit files).

``--disable codex_hooks`` and the ``mcp_servers.pipemesh`` override (a disabled server,
whole, since a partial table is rejected when the project defines none): in a trusted
project set up for an interactive Codex, ``.codex/`` holds hooks and a ``pipemesh mcp``
under that agent's name, which a headless answer must not run (the hooks would take the
interactive agent's messages).
"""

from __future__ import annotations

from typing import Final

from pipemesh.integrations.agents.base import INSTRUCTION, CliSpec

__all__ = ["SPEC"]

SPEC: Final = CliSpec(
    kind="codex",
    command=(
        "codex",
        "exec",
        "--skip-git-repo-check",
        "--ephemeral",
        "--disable",
        "codex_hooks",
        "-c",
        'mcp_servers.pipemesh={command = "pipemesh", enabled = false}',
        INSTRUCTION,
    ),
    output="text",
    install_hint="npm install -g @openai/codex",
)
