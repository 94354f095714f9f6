"""Helpers for tests that run real agents: an echo agent as a ``python -c`` program."""

from __future__ import annotations

from pathlib import Path

from pipemesh.home import MeshHome
from pipemesh.registry import Registry

# argv: name [heartbeat_s]. Replies "echo: <body>" to questions; runs until killed.
ECHO_AGENT = """
import sys
from pipemesh.runtime.agent import AgentBase

class Echo(AgentBase):
    def on_message_received(self, msg):
        if msg.msg_type == "question":
            self.reply(msg, "echo: " + msg.body)

hb = float(sys.argv[2]) if len(sys.argv) > 2 else 0.2
with Echo(sys.argv[1], "echo", heartbeat_s=hb) as agent:
    agent.run_forever()
"""


def active_agents(home: Path) -> set[str]:
    """Names of registered agents whose process is alive."""
    mesh = MeshHome.open(home)
    records = Registry(mesh.registry_path, mesh.lock_path).read()
    return {name for name, rec in records.items() if rec.is_active}
