"""Export docs/monitor.svg: the dashboard over a real three-agent mesh.

Usage: .venv/bin/python scripts/monitor_screenshot.py [OUT.svg]

Starts gemini and codex as real agent processes in a temporary mesh home, joins
claude_code in this process and asks a few questions (answered by the agents),
then uses the dashboard's own compose form as a person (``human-alice``): sends
gemini a question and broadcasts a note. Writes garbage into one inbox so the
errors pane has an entry, kills codex with SIGKILL, and saves what the headless
dashboard shows.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import TextArea

from pipemesh.home import MeshHome
from pipemesh.monitor.app import MonitorApp
from pipemesh.registry import Registry
from pipemesh.runtime.agent import AgentBase

AGENT = """
import sys
from pipemesh.runtime.agent import AgentBase

class Echo(AgentBase):
    def on_message_received(self, msg):
        if msg.msg_type == "question":
            self.reply(msg, f"{self.agent_name} thinks: " + msg.body.lower())

with Echo(sys.argv[1], sys.argv[2], heartbeat_s=0.3) as agent:
    agent.run_forever()
"""
ROLES = {"claude_code": "architect", "gemini": "collaborator", "codex": "executor"}
QUESTIONS = [
    ("gemini", "How should we structure the data pipeline?"),
    ("codex", "Run the unit tests for the wire module"),
    ("gemini", "Review the registry lock timeout, please"),
    ("codex", "Benchmark fan-in with 8 senders"),
    ("gemini", "Is the resync after garbage bytes safe?"),
]


def wait(condition: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the mesh")
        time.sleep(0.05)


async def compose(pilot: Pilot[None], key: str, body: str, to: str = "") -> None:
    """Open the compose form with ``key``, fill it in and send it with Ctrl+S."""
    await pilot.press(key)
    await pilot.pause(0.2)
    if to:
        await pilot.press(*to)
    pilot.app.screen.query_one("#compose-body", TextArea).focus()
    await pilot.press(*body)
    await pilot.press("ctrl+s")
    await pilot.pause(0.2)


async def shoot(home: MeshHome, out: Path, procs: dict[str, subprocess.Popen[bytes]]) -> None:
    app = MonitorApp(home, refresh_s=0.2, human_name="human-alice")
    async with app.run_test(size=(150, 42)) as pilot:
        with AgentBase("claude_code", "architect", home.root, heartbeat_s=0.3) as me:
            for to, text in QUESTIONS:
                me.ask(to, text, timeout_s=30)
                await pilot.pause(0.05)
            me.broadcast_message("Standup in 5 minutes", 2)
            # A person at the dashboard: s (send) to gemini, then b (broadcast).
            await compose(pilot, "s", "Can you summarise the open review comments?", to="gemini")
            await compose(pilot, "b", "Deploy freeze starts at 17:00")
            fd = os.open(home.public_pipe("gemini"), os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b"not a frame at all\n")
            os.close(fd)
            procs["codex"].send_signal(signal.SIGKILL)
            procs["codex"].wait()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                agents = app.view.agents
                if (
                    agents.get("codex") is not None
                    and agents["codex"].status == "inactive"
                    and app.view.errors
                    and all(agents[n].beat_at for n in ("gemini", "claude_code"))
                    and any(
                        r.get("from") == "gemini" and r.get("to") == "human-alice"
                        for r in app.view.traffic
                    )
                ):
                    break
                await pilot.pause(0.1)
            await pilot.pause(0.5)
            app.save_screenshot(out.name, str(out.parent))


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/monitor.svg").absolute()
    with tempfile.TemporaryDirectory() as tmp:
        home = MeshHome.open(Path(tmp) / "mesh")
        env = {**os.environ, "PIPEMESH_HOME": str(home.root)}
        procs = {
            name: subprocess.Popen([sys.executable, "-c", AGENT, name, role], env=env)
            for name, role in ROLES.items()
            if name != "claude_code"
        }
        try:
            registry = Registry(home.registry_path, home.lock_path)
            wait(lambda: {"gemini", "codex"} <= set(registry.read()))
            asyncio.run(shoot(home, out, procs))
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
                proc.wait(timeout=10)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
