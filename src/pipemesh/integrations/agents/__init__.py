"""Concrete agents: the seed's Claude, Gemini and Codex agents, and any other program.

Each answers incoming questions and directives by running a CLI headless
(:mod:`pipemesh.integrations.agents.base`); one module per CLI holds its default command line.
"""

from __future__ import annotations

from pipemesh.integrations.agents.base import CliAgent, CliFailed, CliSpec, load_spec

__all__ = ["CliAgent", "CliFailed", "CliSpec", "load_spec"]
