"""The ``pipemesh`` command line: argument parsing, output and exit codes.

stdout carries results (tables, or JSON with ``--json``); stderr carries
diagnostics as ``error: <message>``. Exit codes: 0 ok, 1 runtime error,
2 usage error, 130 interrupted. Tracebacks only with ``--debug``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from pipemesh import _platform
from pipemesh.errors import MeshError, UsageError
from pipemesh.home import MeshHome
from pipemesh.observe import (
    COMM_LOG,
    LATENCY_LOG,
    LogTail,
    latency_summary,
    read_log,
)
from pipemesh.registry import Registry
from pipemesh.runtime.agent import AgentBase, MeshClient
from pipemesh.wire import Message, is_valid_name

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])


class _State:
    def __init__(self, home: str | None, as_json: bool, debug: bool) -> None:
        self.home_arg = home
        self.as_json = as_json
        self.debug = debug

    def home(self) -> MeshHome:
        return MeshHome.open(self.home_arg)

    def registry(self) -> Registry:
        home = self.home()
        return Registry(home.registry_path, home.lock_path)


def _check_name(name: str, what: str, command: str) -> str:
    if not is_valid_name(name):
        raise click.UsageError(
            f"{what} {name!r} is not valid: use 1-64 characters of A-Z a-z 0-9 _ . -, "
            f"starting with a letter or digit (try 'pipemesh {command} --help')"
        )
    return name


def _terminate_on_sigterm() -> None:
    # Exit once; a second signal must not interrupt the clean close (SIGBREAK too on Windows).
    _platform.exit_on_stop_signals()


def _print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _format_message(msg: Message, latency_us: float | None = None) -> str:
    stamp = datetime.fromtimestamp(msg.sent_ns / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3]
    to = msg.to or "*"
    ref = f" re {msg.reply_to}" if msg.reply_to else ""
    lat = f"  ({latency_us:.0f} us)" if latency_us is not None else ""
    head = f"[{stamp}] {msg.sender} -> {to}  {msg.msg_type} P{msg.priority} id {msg.id}{ref}{lat}"
    body = "\n".join("  " + line for line in msg.body.splitlines() or [""])
    return f"{head}\n{body}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    envvar="PIPEMESH_HOME",
    default=None,
    metavar="DIR",
    help="Mesh home (default $PIPEMESH_HOME, else $XDG_RUNTIME_DIR/pipemesh, else a tmp dir).",
)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="pipemesh")
@click.pass_context
def cli(ctx: click.Context, home: str | None, as_json: bool, debug: bool) -> None:
    """pipemesh: a brokerless message mesh for AI agents on named pipes."""
    ctx.obj = _State(home, as_json, debug)


pass_state = click.make_pass_decorator(_State)


@cli.command()
@pass_state
def agents(state: _State) -> None:
    """List registered agents: name, role, status, pid, age."""
    records = state.registry().read()
    if state.as_json:
        _print_json(
            {name: {**rec.to_json(), "age_s": rec.age_s()} for name, rec in records.items()}
        )
        return
    if not records:
        click.echo(f"no agents registered in {state.home().root}")
        return
    rows = [
        (r.name, r.role, r.status, r.pid, _age(r.age_s()))
        for r in sorted(records.values(), key=lambda r: r.name)
    ]
    click.echo(_table(("NAME", "ROLE", "STATUS", "PID", "AGE"), rows))


def _send_options(f: F) -> F:
    f = click.option("--from", "sender", default="cli", show_default=True, help="FROM name.")(f)
    f = click.option(
        "--priority",
        type=click.IntRange(0, 3),
        default=1,
        show_default=True,
        help="0 low, 1 normal, 2 urgent, 3 critical.",
    )(f)
    return f


def _body(text: str) -> str:
    return sys.stdin.read() if text == "-" else text


@cli.command()
@click.argument("to")
@click.argument("text")
@click.option("--type", "msg_type", default="directive", show_default=True, help="Message TYPE.")
@click.option("--timeout", "timeout_s", type=float, default=10.0, show_default=True)
@_send_options
@pass_state
def send(
    state: _State,
    to: str,
    text: str,
    msg_type: str,
    timeout_s: float,
    sender: str,
    priority: int,
) -> None:
    """Send TEXT ('-' reads stdin) to agent TO; prints the message ID."""
    _check_name(to, "recipient", "send")
    _check_name(sender, "--from name", "send")
    with MeshClient(sender, state.home_arg) as client:
        msg_id = client.send_message(to, _body(text), priority, msg_type, timeout_s=timeout_s)
    if state.as_json:
        _print_json({"id": msg_id, "to": to, "status": "delivered"})
    else:
        click.echo(msg_id)


@cli.command()
@click.argument("text")
@click.option("--type", "msg_type", default="broadcast", show_default=True, help="Message TYPE.")
@click.option("--timeout", "timeout_s", type=float, default=2.0, show_default=True)
@_send_options
@pass_state
def broadcast(
    state: _State, text: str, msg_type: str, timeout_s: float, sender: str, priority: int
) -> None:
    """Send TEXT to every active agent; prints each recipient's outcome."""
    _check_name(sender, "--from name", "broadcast")
    with MeshClient(sender, state.home_arg) as client:
        client.refresh_peers()
        result = client.broadcast_message(_body(text), priority, msg_type, timeout_s=timeout_s)
    if state.as_json:
        _print_json({"id": result.id, "outcomes": {k: str(v) for k, v in result.outcomes.items()}})
        return
    if not result.outcomes:
        click.echo(f"{result.id}: no active agents to broadcast to")
        return
    click.echo(result.id)
    for name, outcome in sorted(result.outcomes.items()):
        err = result.errors.get(name)
        click.echo(f"  {name}: {outcome}" + (f" ({err})" if err else ""))
    if result.failed:
        raise SystemExit(1)


@cli.command()
@click.argument("to")
@click.argument("text")
@click.option("--timeout", "timeout_s", type=float, default=30.0, show_default=True)
@click.option("--type", "msg_type", default="question", show_default=True, help="Message TYPE.")
@click.option("--from", "sender", default=None, help="Name to ask as (default cli-<pid>).")
@click.option("--priority", type=click.IntRange(0, 3), default=1, show_default=True)
@pass_state
def ask(
    state: _State,
    to: str,
    text: str,
    timeout_s: float,
    msg_type: str,
    sender: str | None,
    priority: int,
) -> None:
    """Ask agent TO and print its reply (joins the mesh briefly to get it)."""
    _check_name(to, "recipient", "ask")
    name = sender or f"cli-{os.getpid()}"
    _check_name(name, "--from name", "ask")
    _terminate_on_sigterm()
    with AgentBase(name, "cli", state.home_arg, heartbeat_s=0) as agent:
        reply = agent.ask(to, _body(text), timeout_s, priority=priority, msg_type=msg_type)
    if state.as_json:
        _print_json(
            {
                "id": reply.id,
                "from": reply.sender,
                "type": reply.msg_type,
                "re": reply.reply_to,
                "body": reply.body,
            }
        )
    else:
        click.echo(reply.body)


class _Listener(AgentBase):
    def __init__(self, *args: Any, show: Callable[[Message, float], None], **kw: Any) -> None:
        self._show = show
        super().__init__(*args, **kw)

    def on_message_received(self, msg: Message) -> None:
        latency_us = (time.time_ns() - msg.sent_ns) / 1000 if msg.sent_ns else 0.0
        self._show(msg, latency_us)


@cli.command()
@click.argument("name")
@click.option("--role", default="human", show_default=True)
@click.option("--count", type=int, default=0, help="Exit after COUNT messages (0: never).")
@click.option("--timeout", "timeout_s", type=float, default=0.0, help="Exit after SECONDS.")
@pass_state
def listen(state: _State, name: str, role: str, count: int, timeout_s: float) -> None:
    """Join the mesh as NAME and print every incoming message until Ctrl-C."""
    _check_name(name, "agent name", "listen")
    _terminate_on_sigterm()
    seen = 0

    def show(msg: Message, latency_us: float) -> None:
        nonlocal seen
        if state.as_json:
            click.echo(json.dumps({**_msg_json(msg), "latency_us": round(latency_us, 1)}))
        else:
            click.echo(_format_message(msg, latency_us))
        sys.stdout.flush()
        seen += 1
        if count and seen >= count:
            agent.close()

    agent = _Listener(name, role, state.home_arg, show=show)
    with agent:
        click.echo(f"listening as {name} ({role}) on {state.home().root}; Ctrl-C to stop", err=True)
        agent.run_forever(poll_s=None if timeout_s <= 0 else timeout_s)


def _msg_json(msg: Message) -> dict[str, object]:
    return {
        "id": msg.id,
        "from": msg.sender,
        "to": msg.to,
        "type": msg.msg_type,
        "priority": msg.priority,
        "re": msg.reply_to,
        "sent_ns": msg.sent_ns,
        "body": msg.body,
    }


def _follow(tail: LogTail, *, timeout_s: float) -> Iterator[dict[str, Any]]:
    """Records appended after what ``tail`` already read, as they come (across rotation)."""
    deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
    while deadline is None or time.monotonic() < deadline:
        records = tail.poll()  # follows rotation (rename) by inode, and truncation
        yield from records
        if not records:
            time.sleep(0.1)


def _format_record(rec: dict[str, Any]) -> str:
    stamp = datetime.fromtimestamp(float(rec.get("ts", 0)), UTC).strftime("%H:%M:%S.%f")[:-3]
    to = rec.get("to") or "*"
    ref = f" re {rec['re']}" if rec.get("re") else ""
    body = str(rec.get("body", "")).replace("\n", " | ")
    if len(body) > 100:
        body = body[:97] + "..."
    event = rec.get("event", "")
    tag = "" if event == "frame_sent" else f" [{event}]"
    return (
        f"[{stamp}] {rec.get('from')} -> {to}  {rec.get('type')} P{rec.get('priority')} "
        f"id {rec.get('id')}{ref}{tag}  {body}"
    )


@cli.command()
@click.option("-n", "--lines", type=int, default=10, show_default=True, help="Show the last N.")
@click.option("--no-follow", is_flag=True, help="Print and exit instead of following.")
@click.option("--all", "all_events", is_flag=True, help="Show received/misrouted events too.")
@click.option("--timeout", "timeout_s", type=float, default=0.0, help="Stop after SECONDS.")
@pass_state
def tail(state: _State, lines: int, no_follow: bool, all_events: bool, timeout_s: float) -> None:
    """Follow the mesh traffic (each message once, as sent), readably."""
    path = state.home().logs_dir / COMM_LOG
    with LogTail(path) as log_tail:  # one reader: nothing slips between the past and the new
        recent = log_tail.poll()
        shown = [r for r in recent if all_events or r.get("event") == "frame_sent"]
        records: Iterator[dict[str, Any]] = iter(shown[-lines:] if lines else [])
        if not no_follow:
            click.echo(f"following {path}; Ctrl-C to stop", err=True)
            records = itertools.chain(records, _follow(log_tail, timeout_s=timeout_s))
        for rec in records:
            if not all_events and rec.get("event") != "frame_sent":
                continue
            click.echo(json.dumps(rec) if state.as_json else _format_record(rec))
            sys.stdout.flush()  # a follower is usually piped into another program


@cli.command()
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw latency and messages/s per agent to FILE.png.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the same charts as a self-contained FILE.html.",
)
@pass_state
def stats(state: _State, plot_path: Path | None, html_path: Path | None) -> None:
    """Latency p50/p90/p99/max per receiving agent, from mesh_latency.log."""
    if plot_path or html_path:
        from pipemesh.plots import write_charts  # noqa: PLC0415 - matplotlib is an extra

        write_charts(state.home().logs_dir / LATENCY_LOG, png=plot_path, html_out=html_path)
    rows = latency_summary(read_log(state.home().logs_dir / LATENCY_LOG))
    if state.as_json:
        _print_json([dataclasses.asdict(r) for r in rows])
        return
    if not rows:
        click.echo("no latency records yet; send some messages first")
        return
    click.echo(
        _table(
            ("AGENT", "COUNT", "P50_US", "P90_US", "P99_US", "MAX_US"),
            [
                (
                    r.agent,
                    r.count,
                    f"{r.p50_us:.1f}",
                    f"{r.p90_us:.1f}",
                    f"{r.p99_us:.1f}",
                    f"{r.max_us:.1f}",
                )
                for r in rows
            ],
        )
    )


@cli.command()
@pass_state
def gc(state: _State) -> None:
    """Remove registry entries of dead agents, and their pipes."""
    home = state.home()
    removed = state.registry().gc()
    for rec in removed:
        for path in (home.public_pipe(rec.name), home.private_pipe(rec.name)):
            path.unlink(missing_ok=True)
    if state.as_json:
        _print_json({"removed": [r.name for r in removed]})
    elif removed:
        click.echo("removed: " + ", ".join(f"{r.name} (pid {r.pid})" for r in removed))
    else:
        click.echo("nothing to remove: every registered agent is alive")


@cli.command()
@click.option("--timeout", "timeout_s", type=float, default=30.0, show_default=True)
@click.pass_obj
def demo(state: _State, timeout_s: float) -> None:
    """Run three agents (claude_code, gemini, codex) through the seed's flow."""
    from pipemesh.demo import run_demo  # noqa: PLC0415 - keeps CLI start-up lean

    home = Path(state.home_arg) if state.home_arg else None
    raise SystemExit(run_demo(home, timeout_s=timeout_s, echo=click.echo))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        return 130
    except click.UsageError as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        cmd = exc.ctx.command_path if exc.ctx else "pipemesh"
        click.echo(f"try '{cmd} --help'", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    except UsageError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        return 2
    except MeshError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ValueError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        return 2
    return 0


# -- commands defined in their own modules (kept at the end so merges stay trivial) --
from pipemesh.bench._command import bench_command  # noqa: E402
from pipemesh.history import history as _history  # noqa: E402
from pipemesh.integrations.agents.cli import run_group  # noqa: E402
from pipemesh.integrations.hooks import hook_group  # noqa: E402
from pipemesh.integrations.mcp import mcp_command  # noqa: E402
from pipemesh.integrations.setup_clients import setup_command  # noqa: E402
from pipemesh.monitor import monitor as _monitor  # noqa: E402

cli.add_command(mcp_command)
cli.add_command(hook_group)
cli.add_command(run_group)
cli.add_command(setup_command)
cli.add_command(_history)
cli.add_command(_monitor)
cli.add_command(bench_command)
