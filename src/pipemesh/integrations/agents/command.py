"""Any program: ``pipemesh run command --name NAME -- ARGV...``.

The prompt (conversation plus the message to answer) goes to its stdin; its
whole stdout, stripped, is the reply.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipemesh.integrations.agents.base import CliSpec

__all__ = ["spec_for"]


def spec_for(argv: Sequence[str]) -> CliSpec:
    """A spec that runs ``argv`` and replies with its stdout."""
    if not argv:
        raise ValueError("give the command to run after '--', e.g. -- python3 answer.py")
    return CliSpec(
        kind="command",
        command=tuple(argv),
        output="text",
        install_hint=f"install {argv[0]} or give its full path",
    )
