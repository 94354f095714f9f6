"""Gemini CLI, headless: ``gemini --skip-trust --output-format json -p INSTRUCTION``,
conversation on stdin.

``-p`` is appended to what arrives on stdin; the JSON output carries the answer
in ``response`` and failures in ``error`` (https://geminicli.com/docs/cli/headless).

``--skip-trust``: in a folder the user never trusted, ``gemini -p`` exits 55 without it.
But a trusted folder's ``.gemini/settings.json`` is loaded, and in a project set up for
an interactive Gemini CLI it holds hooks and a ``pipemesh mcp`` under that agent's name,
which a headless answer must not run (the hooks would take the interactive agent's
messages). Gemini CLI has no flag that skips project settings (its system settings
file could override them, but it is read only from a root-owned location), so
:func:`isolate` runs it from a private working directory and gives it the project's
files with ``--include-directories``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Final

from pipemesh.integrations.agents.base import INSTRUCTION, CliSpec

__all__ = ["SPEC", "isolate"]

SPEC: Final = CliSpec(
    kind="gemini",
    command=("gemini", "--skip-trust", "--output-format", "json", "-p", INSTRUCTION),
    output="gemini-json",
    install_hint="npm install -g @google/gemini-cli",
)


def isolate(spec: CliSpec, project: Path, private_dir: Path) -> CliSpec:
    """``spec`` run from ``private_dir`` with ``project`` as an included directory.

    Only the default command is changed, and only when agents.toml sets no ``cwd``:
    a command line of the user's own is run as written.
    """
    if spec.cwd is not None or spec.command != SPEC.command:
        return spec
    private_dir.mkdir(parents=True, exist_ok=True)
    head, tail = spec.command[:-2], spec.command[-2:]
    command = (*head, "--include-directories", str(project), *tail)
    return replace(spec, command=command, cwd=str(private_dir))
