"""GitHub Copilot CLI, headless: ``copilot -p INSTRUCTION -s`` with the conversation on stdin.

``-s`` prints only the answer. ``--disable-mcp-server pipemesh``: a project set up for an
interactive Copilot CLI starts a ``pipemesh mcp`` under that agent's name, which a
headless answer must not do. Copilot CLI needs a GitHub login, or a model provider of
your own (``COPILOT_PROVIDER_BASE_URL``, see ``copilot help providers``).
"""

from __future__ import annotations

from typing import Final

from pipemesh.integrations.agents.base import INSTRUCTION, CliSpec

__all__ = ["SPEC"]

SPEC: Final = CliSpec(
    kind="copilot",
    command=("copilot", "-p", INSTRUCTION, "-s", "--no-color", "--disable-mcp-server", "pipemesh"),
    output="text",
    install_hint="npm install -g @github/copilot",
)
