"""The three-agent demo: the seed's flow, with offline responders, in real processes.

``pipemesh demo`` starts ``claude_code`` (architect), ``gemini`` (collaborator)
and ``codex`` (executor) as three processes of ``python -m pipemesh.demo``
on a fresh temporary mesh home. ``claude_code`` asks ``gemini`` a question,
``gemini`` answers under the question's ID, ``claude_code`` broadcasts the
plan, sends ``codex`` a directive, and ``codex`` reports its status. Each
process prints one JSON line per handled message (with the latency it
measured) to its stdout; the driver prints them readably and then stops the
agents and checks that no process, pipe or registry entry is left.

The responders are canned text: no model is called.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pipemesh import _platform
from pipemesh.errors import AgentOffline, MeshError
from pipemesh.registry import Registry
from pipemesh.runtime.agent import AgentBase
from pipemesh.transport import platform_transport
from pipemesh.wire import Message

__all__ = ["DemoAgent", "main", "run_demo"]

AGENTS = (("claude_code", "architect"), ("gemini", "collaborator"), ("codex", "executor"))

ANSWERS = {
    "gemini": "We should use a modular approach with three stages: ingest, transform, publish. "
    "Each stage owns its schema and talks to the next one over the mesh.",
    "codex": "status: ingest stage implemented (3 files, 12 tests passing).",
}


def _emit(event: dict[str, object]) -> None:
    # Only this process's stdout: the driver reads it through a pipe.
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class DemoAgent(AgentBase):
    """An offline responder: prints what it handles and answers with canned text."""

    def on_message_received(self, msg: Message) -> None:
        """Report the message, then answer questions and directives."""
        latency_us = (time.time_ns() - msg.sent_ns) / 1000 if msg.sent_ns else 0.0
        _emit(
            {
                "agent": self.agent_name,
                "from": msg.sender,
                "to": msg.to,
                "type": msg.msg_type,
                "id": msg.id,
                "re": msg.reply_to,
                "priority": msg.priority,
                "body": msg.body,
                "latency_us": round(latency_us, 1),
            }
        )
        if msg.msg_type == "question":
            self.reply(msg, ANSWERS.get(self.agent_name, "ack"))
        elif msg.msg_type == "directive":
            self.reply(msg, ANSWERS.get(self.agent_name, "done"), msg_type="status")


def _report_reply(agent: AgentBase, reply: Message) -> None:
    latency_us = (time.time_ns() - reply.sent_ns) / 1000 if reply.sent_ns else 0.0
    _emit(
        {
            "agent": agent.agent_name,
            "from": reply.sender,
            "to": reply.to,
            "type": reply.msg_type,
            "id": reply.id,
            "re": reply.reply_to,
            "priority": reply.priority,
            "body": reply.body,
            "latency_us": round(latency_us, 1),
        }
    )


def _wait_for_peers(agent: AgentBase, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        peers = agent.refresh_peers()
        if all(n in peers and peers[n].is_active for n in names):
            return
        time.sleep(0.02)
    raise SystemExit(f"error: peers {names} did not join within {timeout_s:g}s")


def _script(agent: AgentBase) -> None:
    """The seed's flow, run by claude_code."""
    _wait_for_peers(agent, ["gemini", "codex"], 10.0)
    answer = agent.ask("gemini", "How should we structure the data pipeline?", timeout_s=10.0)
    _report_reply(agent, answer)
    result = agent.broadcast_message(
        "Plan agreed: ingest -> transform -> publish. Codex takes ingest.", priority=2
    )
    _emit({"agent": agent.agent_name, "broadcast": {k: str(v) for k, v in result.outcomes.items()}})
    status = agent.ask(
        "codex", "Implement the ingest stage.", timeout_s=10.0, msg_type="directive", priority=2
    )
    _report_reply(agent, status)
    _emit({"agent": agent.agent_name, "done": True})


def agent_main(argv: list[str] | None = None) -> int:
    """Run one demo agent process until SIGTERM/SIGINT (or, with --script, until done)."""
    parser = argparse.ArgumentParser(prog="python -m pipemesh.demo")
    parser.add_argument("--home", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--role", required=True)
    parser.add_argument("--script", action="store_true")
    # Stop when stdin closes: how the driver stops agents cleanly on Windows too,
    # where a signal to another process is TerminateProcess (no cleanup).
    parser.add_argument("--stop-on-eof", action="store_true")
    args = parser.parse_args(argv)

    _platform.exit_on_stop_signals(0)  # exit once; a second signal cannot interrupt close
    with DemoAgent(args.name, args.role, args.home) as agent:
        _emit({"agent": agent.agent_name, "joined": True, "pid": os.getpid()})
        if args.script:
            _script(agent)
        elif args.stop_on_eof:
            _wait_for_eof()  # on this thread: `with` then closes the agent before exit
        else:
            agent.run_forever()
    return 0


def _wait_for_eof() -> None:
    with contextlib.suppress(OSError, ValueError):
        while sys.stdin.buffer.read(4096):
            pass


def _pump(index: int, stream: IO[bytes], lines: queue.Queue[tuple[int, bytes | None]]) -> None:
    """Forward a child's stdout lines (then None at EOF): pipes cannot be selected on Windows."""
    with contextlib.suppress(OSError, ValueError):
        for line in stream:
            lines.put((index, line))
    lines.put((index, None))


def _format(event: dict[str, object]) -> str | None:
    if "joined" in event:
        return None
    if "broadcast" in event:
        outcomes = event["broadcast"]
        if not isinstance(outcomes, dict):
            return None
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
        return f"  {event['agent']} broadcast outcomes: {parts}"
    if "done" in event:
        return None
    to = event["to"] or f"*({event['agent']})"
    ref = f"RE:{event['re']}" if event["re"] else f"ID:{event['id']}"
    body = str(event["body"])
    if len(body) > 70:
        body = body[:67] + "..."
    return (
        f"  {event['from']:>11} -> {to:<11} {event['type']:<9} P{event['priority']} {ref:<22} "
        f"{float(str(event['latency_us'])):>9.1f} us  {body}"
    )


def run_demo(
    home: Path | None = None,
    *,
    timeout_s: float = 30.0,
    echo: Callable[[str], None],
) -> int:
    """Run the demo and return a process exit code; prints through ``echo``."""
    own_home = home is None
    root = Path(tempfile.mkdtemp(prefix="pipemesh-demo-")) if home is None else home
    procs: list[subprocess.Popen[bytes]] = []
    events: list[dict[str, object]] = []
    ok = False
    try:
        echo(f"pipemesh demo: three agents on a fresh mesh at {root}")
        echo(f"  {'FROM':>11}    {'TO':<11} {'TYPE':<9} PR {'ID / RE':<22} {'LATENCY':>12}  BODY")
        for name, role in AGENTS:
            argv = [sys.executable, "-m", "pipemesh.demo", "--home", str(root)]
            argv += ["--name", name, "--role", role, "--stop-on-eof"]
            if name == "claude_code":
                argv.append("--script")
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.PIPE))
        lines: queue.Queue[tuple[int, bytes | None]] = queue.Queue()
        for i, proc in enumerate(procs):
            if proc.stdout is None:
                raise RuntimeError("child stdout is not a pipe")
            threading.Thread(
                target=_pump, args=(i, proc.stdout, lines), name="pipemesh-demo-pump", daemon=True
            ).start()
        deadline = time.monotonic() + timeout_s
        done = False
        while not done and time.monotonic() < deadline:
            try:
                _, line = lines.get(timeout=0.2)
            except queue.Empty:
                if procs[0].poll() is not None:
                    break
                continue
            if not line or not line.strip():
                continue
            event = json.loads(line)
            events.append(event)
            text = _format(event)
            if text:
                echo(text)
            done = done or bool(event.get("done"))
        if not done:
            echo(f"error: the demo flow did not finish within {timeout_s:g}s")
            return 1
        latencies = sorted(
            float(str(e["latency_us"])) for e in events if "latency_us" in e and "from" in e
        )
        echo(
            f"  {len(latencies)} messages handled; latency p50 {latencies[len(latencies) // 2]:.1f}"
            f" us, max {latencies[-1]:.1f} us (sender TS to handler, across processes)"
        )
        ok = True
    finally:
        if procs:
            # claude_code runs the script and leaves on its own; stop the others after it.
            with contextlib.suppress(subprocess.TimeoutExpired):
                procs[0].wait(timeout=10)
        for proc in procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()  # --stop-on-eof: the agent closes itself
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    left = _leftovers(root)
    echo(f"  shut down: {left}")
    if own_home:
        _remove_tree(root)
    return 0 if ok and left.startswith("clean") else 1


def _leftovers(root: Path) -> str:
    try:
        entries = Registry(root / "agent_registry.json", root / "agent_registry.json.lock").read()
    except MeshError as exc:
        return f"registry unreadable: {exc}"
    pipes = sorted(p.name for p in (root / "pipes").glob("*")) if (root / "pipes").exists() else []
    if _platform.IS_WINDOWS:  # named pipes are no files: ask whether anyone still serves one
        transport = platform_transport(root, root / "pipes")
        for name, _ in AGENTS:
            try:
                transport.connect(name).close()
            except AgentOffline:
                continue
            except MeshError:
                pass
            pipes.append(transport.address(name))
    if entries or pipes:
        return f"LEFT BEHIND: registry entries {sorted(entries)}, pipes {pipes}"
    return "clean (3 processes exited, no pipe or registry entry left)"


def _remove_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
    root.rmdir()


def main(argv: list[str] | None = None) -> int:
    """Entry of ``python -m pipemesh.demo`` (one agent process)."""
    return agent_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
