"""opencode, headless: ``opencode run INSTRUCTION`` with the conversation on stdin.

``opencode run`` prints the answer on stdout (its progress goes to stderr). The project's
``opencode.json`` is left out (``OPENCODE_DISABLE_PROJECT_CONFIG``, set by ``pipemesh run
opencode`` for the child): in a project set up for an interactive opencode it starts a
``pipemesh mcp`` under that agent's name, which a headless answer must not do.
"""

from __future__ import annotations

from typing import Final

from pipemesh.integrations.agents.base import INSTRUCTION, CliSpec

__all__ = ["ENV", "SPEC"]

SPEC: Final = CliSpec(
    kind="opencode",
    command=("opencode", "run", INSTRUCTION),
    output="text",
    install_hint="npm install -g opencode-ai",
)
ENV: Final = {"OPENCODE_DISABLE_PROJECT_CONFIG": "1"}
