"""Gemini CLI, headless: ``gemini --output-format json -p INSTRUCTION``, conversation on stdin.

``-p`` is appended to what arrives on stdin; the JSON output carries the answer
in ``response`` and failures in ``error`` (https://geminicli.com/docs/cli/headless).
"""

from __future__ import annotations

from typing import Final

from pipemesh.integrations.agents.base import INSTRUCTION, CliSpec

__all__ = ["SPEC"]

SPEC: Final = CliSpec(
    kind="gemini",
    command=("gemini", "--output-format", "json", "-p", INSTRUCTION),
    output="gemini-json",
    install_hint="npm install -g @google/gemini-cli",
)
