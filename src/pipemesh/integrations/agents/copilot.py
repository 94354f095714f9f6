"""GitHub Copilot CLI, headless: ``copilot -s`` with the prompt piped to stdin.

Piped stdin is the prompt (``-p TEXT`` would put the whole conversation on the command
line, and with ``-p`` stdin is ignored); ``-s`` prints only the answer.

In a trusted folder set up for an interactive Copilot CLI, the project's
``.github/hooks`` and MCP config hold hooks and a ``pipemesh mcp`` under that agent's
name, which a headless answer must not run (the hooks would take the interactive
agent's messages). Copilot CLI has no flag that skips a folder's hooks, so
:func:`isolate` runs it from a private working directory and gives it the project's
files with ``--add-dir``; ``--disable-mcp-server pipemesh`` covers a server in the
user's own config. Copilot CLI needs a GitHub login, or a model provider of your own
(``COPILOT_PROVIDER_BASE_URL``, see ``copilot help providers``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Final

from pipemesh.integrations.agents.base import CliSpec

__all__ = ["SPEC", "isolate"]

SPEC: Final = CliSpec(
    kind="copilot",
    command=("copilot", "-s", "--no-color", "--disable-mcp-server", "pipemesh"),
    output="text",
    install_hint="npm install -g @github/copilot",
)


def isolate(spec: CliSpec, project: Path, private_dir: Path) -> CliSpec:
    """``spec`` run from ``private_dir`` with ``project`` added (default command only)."""
    if spec.cwd is not None or spec.command != SPEC.command:
        return spec
    private_dir.mkdir(parents=True, exist_ok=True)
    return replace(spec, command=(*spec.command, "--add-dir", str(project)), cwd=str(private_dir))
