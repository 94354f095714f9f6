"""The three-agent demo: the seed's flow, with offline responders, in real processes.

``pipemesh demo`` starts ``demo-claude`` (architect), ``demo-gemini`` (collaborator)
and ``demo-codex`` (executor) as three processes of ``python -m pipemesh.demo``
on its own temporary mesh home, always: ``--home`` and ``$PIPEMESH_HOME`` are
ignored, so the demo can never reach (or be answered by) the user's agents.
``demo-claude`` asks ``demo-gemini`` a question, which answers under the
question's ID; ``demo-claude`` broadcasts the plan, sends ``demo-codex`` a
directive, and ``demo-codex`` reports its status. Each process prints one JSON
line per handled message (with the latency it measured) to its stdout; the
driver prints them readably, stops the agents, checks that no process, pipe or
registry entry is left, and removes the temporary home. A child's stderr goes to
a file in that home: a failure is reported in one line, never as a traceback.

The responders are canned text: no model is called.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import selectors
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

CLAUDE, GEMINI, CODEX = "demo-claude", "demo-gemini", "demo-codex"
AGENTS = ((CLAUDE, "architect"), (GEMINI, "collaborator"), (CODEX, "executor"))

ANSWERS = {
    GEMINI: "We should use a modular approach with three stages: ingest, transform, publish. "
    "Each stage owns its schema and talks to the next one over the mesh.",
    CODEX: "status: ingest stage implemented (3 files, 12 tests passing).",
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
    """The seed's flow, run by demo-claude."""
    _wait_for_peers(agent, [GEMINI, CODEX], 10.0)
    answer = agent.ask(GEMINI, "How should we structure the data pipeline?", timeout_s=10.0)
    _report_reply(agent, answer)
    result = agent.broadcast_message(
        "Plan agreed: ingest -> transform -> publish. Codex takes ingest.", priority=2
    )
    _emit({"agent": agent.agent_name, "broadcast": {k: str(v) for k, v in result.outcomes.items()}})
    status = agent.ask(
        CODEX, "Implement the ingest stage.", timeout_s=10.0, msg_type="directive", priority=2
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
    # Stop when stdin closes: how the driver stops agents cleanly on Windows, where a
    # signal to another process is TerminateProcess (no cleanup).
    parser.add_argument("--stop-on-eof", action="store_true")
    args = parser.parse_args(argv)

    _platform.exit_on_stop_signals(0)  # exit once; a second signal cannot interrupt close
    try:
        with DemoAgent(args.name, args.role, args.home) as agent:
            _emit({"agent": agent.agent_name, "joined": True, "pid": os.getpid()})
            if args.script:
                _script(agent)
            elif args.stop_on_eof:
                _wait_for_eof()  # on this thread: `with` then closes the agent before exit
            else:
                agent.run_forever()
    except MeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


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
        f"  {event['from']:>11} -> {to:<15} {event['type']:<9} P{event['priority']} {ref:<22} "
        f"{float(str(event['latency_us'])):>9.1f} us  {body}"
    )


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


def _copy_to(stream: IO[bytes], path: Path) -> None:
    """Copy a child's stderr to ``path`` (Windows: see run_demo)."""
    with contextlib.suppress(OSError, ValueError), open(path, "ab") as out:
        for line in stream:
            out.write(line)


def run_demo(*, timeout_s: float = 30.0, echo: Callable[[str], None]) -> int:
    """Run the demo on its own temporary mesh and return a process exit code.

    Prints through ``echo``; the temporary home is removed afterwards.
    """
    root = Path(tempfile.mkdtemp(prefix="pipemesh-demo-"))
    procs: list[subprocess.Popen[bytes]] = []
    errs: list[Path] = []
    copiers: list[threading.Thread] = []
    win = _platform.IS_WINDOWS
    events: list[dict[str, object]] = []
    ok = False
    try:
        echo(f"pipemesh demo: three agents on their own temporary mesh at {root}")
        echo(f"  {'FROM':>11}    {'TO':<15} {'TYPE':<9} PR {'ID / RE':<22} {'LATENCY':>12}  BODY")
        env = {k: v for k, v in os.environ.items() if k != "PIPEMESH_HOME"}
        for name, role in AGENTS:
            argv = [sys.executable, "-m", "pipemesh.demo", "--home", str(root)]
            argv += ["--name", name, "--role", role]
            if name == CLAUDE:
                argv.append("--script")
            errs.append(root / f"{name}.stderr")
            if win:
                # Stopped by closing stdin (see agent_main); stderr through a pipe and a
                # thread, since Windows Python under Wine cannot start with a file there.
                argv.append("--stop-on-eof")
                proc = subprocess.Popen(
                    argv,
                    stdout=subprocess.PIPE,
                    stdin=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                )
                procs.append(proc)
                if proc.stderr is not None:
                    copiers.append(
                        threading.Thread(target=_copy_to, args=(proc.stderr, errs[-1]), daemon=True)
                    )
                    copiers[-1].start()
                continue
            with open(errs[-1], "wb") as err:
                procs.append(
                    subprocess.Popen(
                        argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=err, env=env
                    )
                )
        done = _read_events(procs, events, echo, timeout_s)
        if not done:
            echo(f"error: the demo flow did not finish within {timeout_s:g}s")
        else:
            latencies = sorted(
                float(str(e["latency_us"])) for e in events if "latency_us" in e and "from" in e
            )
            echo(
                f"  {len(latencies)} messages handled; latency p50 "
                f"{latencies[len(latencies) // 2]:.1f} us, max {latencies[-1]:.1f} us "
                "(sender TS to handler, across processes)"
            )
            ok = True
        _stop(procs)
        for copier in copiers:
            copier.join(timeout=10)
        for (name, _), err_path, proc in zip(AGENTS, errs, procs, strict=False):
            last = _last_line(err_path)
            if proc.returncode != 0 or last:
                echo(f"  {name} exited with code {proc.returncode}" + (f": {last}" if last else ""))
                ok = ok and not last
        left = _leftovers(root)
        echo(f"  shut down: {left}")
        return 0 if ok and left.startswith("clean") else 1
    finally:
        _stop(procs)  # idempotent: also on Ctrl-C or an error above
        _remove_tree(root)


def _read_events(
    procs: list[subprocess.Popen[bytes]],
    events: list[dict[str, object]],
    echo: Callable[[str], None],
    timeout_s: float,
) -> bool:
    """Print the children's event lines until the script says done; False on timeout."""
    if _platform.IS_WINDOWS:
        return _read_events_threaded(procs, events, echo, timeout_s)
    sel = selectors.DefaultSelector()
    try:
        for proc in procs:
            if proc.stdout is None:
                raise RuntimeError("child stdout is not a pipe")
            os.set_blocking(proc.stdout.fileno(), False)
            sel.register(proc.stdout, selectors.EVENT_READ)
        buffers: dict[int, bytes] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.2):
                fd = key.fd
                chunk = os.read(fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buffers[fd] = buffers.get(fd, b"") + chunk
                *lines, buffers[fd] = buffers[fd].split(b"\n")
                for line in lines:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue  # not ours: a stray print
                    if not isinstance(event, dict):
                        continue
                    events.append(event)
                    text = _format(event)
                    if text:
                        echo(text)
                    if event.get("done"):
                        return True
            if procs[0].poll() is not None:
                return False
        return False
    finally:
        sel.close()


def _read_events_threaded(
    procs: list[subprocess.Popen[bytes]],
    events: list[dict[str, object]],
    echo: Callable[[str], None],
    timeout_s: float,
) -> bool:
    """:func:`_read_events` with a thread per child (Windows cannot select on pipes)."""
    lines: queue.Queue[tuple[int, bytes | None]] = queue.Queue()
    for i, proc in enumerate(procs):
        if proc.stdout is None:
            raise RuntimeError("child stdout is not a pipe")
        threading.Thread(target=_pump, args=(i, proc.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            _, line = lines.get(timeout=0.2)
        except queue.Empty:
            if procs[0].poll() is not None:
                return False
            continue
        if not line or not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue  # not ours: a stray print
        if not isinstance(event, dict):
            continue
        events.append(event)
        text = _format(event)
        if text:
            echo(text)
        if event.get("done"):
            return True
    return False


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    if procs:
        # demo-claude runs the script and leaves on its own; stop the others after it.
        with contextlib.suppress(subprocess.TimeoutExpired):
            procs[0].wait(timeout=10)
    for proc in procs:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # --stop-on-eof (Windows): the agent closes itself
    for proc in procs:
        if proc.stdin is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def _leftovers(root: Path) -> str:
    try:
        entries = Registry(root / "agent_registry.json", root / "agent_registry.json.lock").read()
    except MeshError as exc:
        return f"registry unreadable: {exc}"
    pipes_dir = root / "pipes"
    pipes = sorted(p.name for p in pipes_dir.glob("*")) if pipes_dir.exists() else []
    if _platform.IS_WINDOWS:  # named pipes are no files: ask whether anyone still serves one
        transport = platform_transport(root, pipes_dir)
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
