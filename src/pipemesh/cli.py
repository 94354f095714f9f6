"""The ``pipemesh`` command line: argument parsing, output and exit codes.

stdout carries results (tables, or JSON with ``--json``); stderr carries
diagnostics as one line, ``error: <message>`` (or ``{"error": ...}`` with
``--json``). Exit codes: 0 ok, 1 runtime error, 2 usage error, 130 interrupted,
141 when stdout was closed by its reader (``| head``). Tracebacks only with
``--debug``. The global options ``--home``, ``--json`` and ``--debug`` are
accepted before or after the subcommand. Text from the mesh is escaped for the
terminal unless ``--json`` or ``--raw``.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import json
import math
import os
import select
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from pipemesh import _platform
from pipemesh._term import Screen, Segment, safe
from pipemesh.clock import format_clock, zone_label
from pipemesh.errors import MeshError, UsageError
from pipemesh.home import MeshHome
from pipemesh.observe import (
    COMM_LOG,
    LATENCY_LOG,
    LogTail,
    latency_summary,
    read_log,
)
from pipemesh.registry import NO_PIPE, AgentRecord, Registry
from pipemesh.runtime.agent import DEFAULT_MSG_TYPE, AgentBase, Delivery, MeshClient
from pipemesh.wire import Message, is_valid_name

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])

# stdout's reader went away (as if killed by SIGPIPE; 13 on Windows too, which has no SIGPIPE)
EXIT_PIPE: Final = 128 + getattr(signal, "SIGPIPE", 13)


class _State:
    def __init__(self, home: str | None, as_json: bool, debug: bool) -> None:
        self.home_arg = home
        self.as_json = as_json
        self.debug = debug

    def home(self) -> MeshHome:
        return MeshHome.open(self.home_arg)

    def registry(self) -> Registry:
        home = self.home()
        return Registry(
            home.registry_path, home.lock_path, names_dir=home.names_dir, pipes_dir=home.pipes_dir
        )


class _StdoutClosed(Exception):
    """stdout's reader went away (EPIPE): leave quietly with EXIT_PIPE."""


def _check_name(name: str, what: str) -> str:
    if not is_valid_name(name):
        raise click.UsageError(
            f"{what} {safe(name)!r} is not valid: use 1-64 characters of A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit"
        )
    return name


class _Seconds(click.ParamType):  # type: ignore[type-arg]  # generic only in click 8.2+
    """A finite, non-negative number of seconds (``inf``/``nan`` would hang or crash)."""

    name = "seconds"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = float(value)  # type: ignore[arg-type]  # click passes str or float
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or seconds < 0 or seconds > 31_536_000:
            self.fail(
                f"{value!r} is not a number of seconds from 0 to 31536000 (one year)", param, ctx
            )
        return seconds


SECONDS: Final = _Seconds()


def _terminate_on_sigterm() -> None:
    # Exit once; a second signal must not interrupt the clean close (SIGBREAK too on Windows).
    _platform.exit_on_stop_signals()


def _print_json(data: object) -> None:
    _write_out(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def _write_out(text: str) -> None:
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        raise _StdoutClosed from None


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _message_segments(
    *,
    ts: float,
    sender: object,
    to: object,
    msg_type: object,
    priority: object,
    msg_id: object,
    reply_to: object,
    extra: str = "",
) -> list[Segment]:
    ref = f" re {safe(reply_to)}" if reply_to else ""
    return [
        (f"[{format_clock(ts)}] ", "dim"),
        (safe(sender), "bold cyan"),
        (" -> ", ""),
        (safe(to or "*"), "bold magenta" if to else "bold yellow"),
        (f"  {safe(msg_type)}", "green"),
        (f" P{safe(priority)} id {safe(msg_id)}{ref}{extra}", "dim"),
    ]


def _indent_body(body: str, *, raw: bool) -> str:
    text = body if raw else safe(body, newlines=True)
    return "\n".join("  " + line for line in text.split("\n"))


# -- the global options, accepted anywhere on the line --------------------------------------


def _check_home(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter(
            "is empty; give a directory (an empty --home would put the mesh in the "
            "current directory)",
            param_hint="'--home'",
        )
    return value


def _set_home(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    value = _check_home(value)
    state = ctx.find_object(_State)
    if value is not None and state is not None:
        state.home_arg = value


def _set_flag(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    state = ctx.find_object(_State)
    if value and state is not None and param.name is not None:
        setattr(state, param.name, True)


def _global_options() -> list[click.Option]:
    return [
        click.Option(
            ["--home"],
            metavar="DIR",
            expose_value=False,
            callback=_set_home,
            help="Mesh home (also accepted before the subcommand).",
        ),
        click.Option(
            ["--json", "as_json"],
            is_flag=True,
            expose_value=False,
            callback=_set_flag,
            help="Print results (and errors) as JSON.",
        ),
        click.Option(
            ["--debug", "debug"],
            is_flag=True,
            expose_value=False,
            callback=_set_flag,
            help="Show tracebacks on errors.",
        ),
    ]


def _add_global_options(cmd: click.Command) -> None:
    """Give ``cmd`` (and its subcommands) --home/--json/--debug unless it has its own."""
    if getattr(cmd, "_pipemesh_globals", False):
        return
    have = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
    for option in _global_options():
        if not have.intersection(option.opts):
            cmd.params.append(option)
    cmd._pipemesh_globals = True  # type: ignore[attr-defined]  # a marker on click's object
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _add_global_options(sub)


class _MeshGroup(click.Group):
    """Subcommands (whoever registered them) accept the global options too."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            _add_global_options(cmd)
        return cmd


@click.group(cls=_MeshGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    envvar="PIPEMESH_HOME",
    default=None,
    metavar="DIR",
    help="Mesh home (default $PIPEMESH_HOME, else $XDG_RUNTIME_DIR/pipemesh, else a tmp dir).",
)
@click.option("--json", "as_json", is_flag=True, help="Print results (and errors) as JSON.")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="pipemesh")
@click.pass_context
def cli(ctx: click.Context, home: str | None, as_json: bool, debug: bool) -> None:
    """pipemesh: a brokerless message mesh for AI agents on named pipes.

    --home, --json and --debug work before or after the subcommand.
    Shell completion: see 'Shell completion' in the README.
    """
    ctx.obj = _State(_check_home(home), as_json, debug)


pass_state = click.make_pass_decorator(_State)


@cli.command()
@pass_state
def agents(state: _State) -> None:
    """List registered agents: name, role, status, pid, age.

    STATUS is active, inactive (its process is gone), or "no pipe" (alive, but
    its FIFO was removed: nothing reaches it; 'pipemesh gc' puts it back).
    """
    home = state.home()
    registry = state.registry()
    records = registry.read()
    if registry.skipped:
        click.echo(
            f"warning: {len(registry.skipped)} malformed registry entries ignored "
            f"(first: {registry.skipped[0]}); run 'pipemesh gc' to drop them",
            err=True,
        )
    status = {name: _status(home, rec) for name, rec in records.items()}
    if state.as_json:
        _print_json(
            {
                name: {**rec.to_json(), "status": status[name], "age_s": rec.age_s()}
                for name, rec in records.items()
            }
        )
        return
    if not records:
        _write_out(f"no agents registered in {home.root}")
        return
    rows = [
        (safe(r.name), safe(r.role), status[r.name], r.pid, _age(r.age_s()))
        for r in sorted(records.values(), key=lambda r: r.name)
    ]
    Screen().table(
        ("NAME", "ROLE", "STATUS", "PID", "AGE"),
        rows,
        title=f"agents in {home.root}",
        styles=("bold cyan", "", "green", "", ""),
    )


def _status(home: MeshHome, rec: AgentRecord) -> str:
    """The entry's status, or "no pipe" for a live FIFO agent whose FIFO is gone."""
    pipe = home.public_pipe(rec.name)
    if not rec.is_active or Path(rec.public_pipe) != pipe:
        return rec.status  # inactive, or not on FIFOs (no pipe to check)
    try:
        return rec.status if stat.S_ISFIFO(os.lstat(pipe).st_mode) else NO_PIPE
    except FileNotFoundError:
        return NO_PIPE


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
    """TEXT, or all of stdin for '-' (closed or non-UTF-8 stdin is a usage error)."""
    if text != "-":
        return text
    stdin = sys.stdin
    if stdin is None:  # fd 0 was closed when Python started
        raise UsageError("TEXT is '-' but stdin is closed; pipe the body in, or give it as TEXT")
    try:
        data = stdin.buffer.read()
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"TEXT is '-' but stdin cannot be read ({exc}); pipe the body in, or give it as TEXT"
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"stdin is not UTF-8 text (bad byte at offset {exc.start}); bodies are UTF-8"
        ) from None


@cli.command()
@click.argument("to")
@click.argument("text")
@click.option(
    "--type", "msg_type", default=DEFAULT_MSG_TYPE, show_default=True, help="Message TYPE."
)
@click.option("--timeout", "timeout_s", type=SECONDS, default=10.0, show_default=True)
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
    """Send TEXT ('-' reads stdin) to agent TO; prints the message ID.

    A durable agent that is away gets the message in its spool: the status is
    then 'queued' (said on stderr, or in the JSON), not 'delivered'.
    """
    _check_name(to, "recipient")
    _check_name(sender, "--from name")
    body = _body(text)
    with MeshClient(sender, state.home_arg) as client:
        result = client.send(to, body, priority, msg_type, timeout_s=timeout_s)
    if state.as_json:
        _print_json({"id": result.id, "to": to, "status": str(result.delivery)})
        return
    _write_out(result.id)
    if result.delivery is Delivery.QUEUED:
        click.echo(
            f"queued: {to} is durable and away; it gets the message when it starts again",
            err=True,
        )


@cli.command()
@click.argument("text")
@click.option("--type", "msg_type", default="broadcast", show_default=True, help="Message TYPE.")
@click.option("--timeout", "timeout_s", type=SECONDS, default=2.0, show_default=True)
@_send_options
@pass_state
def broadcast(
    state: _State, text: str, msg_type: str, timeout_s: float, sender: str, priority: int
) -> None:
    """Send TEXT to every active agent; prints each recipient's outcome."""
    _check_name(sender, "--from name")
    body = _body(text)
    with MeshClient(sender, state.home_arg) as client:
        client.refresh_peers()
        result = client.broadcast_message(body, priority, msg_type, timeout_s=timeout_s)
    if state.as_json:
        _print_json(
            {
                "id": result.id,
                "outcomes": {k: str(v) for k, v in result.outcomes.items()},
                "errors": dict(result.errors),
            }
        )
    elif not result.outcomes:
        _write_out(f"{result.id}: no active agents to broadcast to")
    else:
        _write_out(result.id)
        for name, outcome in sorted(result.outcomes.items()):
            err = result.errors.get(name)
            _write_out(f"  {name}: {outcome}" + (f" ({err})" if err else ""))
    if result.failed:
        raise SystemExit(1)


@cli.command()
@click.argument("to")
@click.argument("text")
@click.option("--timeout", "timeout_s", type=SECONDS, default=30.0, show_default=True)
@click.option("--type", "msg_type", default="question", show_default=True, help="Message TYPE.")
@click.option("--from", "sender", default=None, help="Name to ask as (default cli-<pid>).")
@click.option("--priority", type=click.IntRange(0, 3), default=1, show_default=True)
@click.option("--raw", is_flag=True, help="Print the reply unescaped (control characters too).")
@pass_state
def ask(
    state: _State,
    to: str,
    text: str,
    timeout_s: float,
    msg_type: str,
    sender: str | None,
    priority: int,
    raw: bool,
) -> None:
    """Ask agent TO and print its reply (joins the mesh briefly to get it).

    A reply of type 'error' is an error: its body goes to stderr and the exit code is 1.
    """
    _check_name(to, "recipient")
    name = sender or f"cli-{os.getpid()}"
    _check_name(name, "--from name")
    body = _body(text)
    _terminate_on_sigterm()
    with AgentBase(name, "cli", state.home_arg, heartbeat_s=0, frames="text") as agent:
        reply = agent.ask(to, body, timeout_s, priority=priority, msg_type=msg_type)
    if reply.msg_type == "error":
        raise click.ClickException(f"{to} replied with an error: {safe(reply.body)}")
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
        _write_out(reply.body if raw else safe(reply.body, newlines=True))


class _Listener(AgentBase):
    def __init__(self, *args: Any, show: Callable[[Message, float], None], **kw: Any) -> None:
        self._show = show
        super().__init__(*args, **kw)

    def on_message_received(self, msg: Message) -> None:
        latency_us = (time.time_ns() - msg.sent_ns) / 1000 if msg.sent_ns else 0.0
        self._show(msg, latency_us)


def _reader_gone(fd: int) -> bool:
    """True when ``fd`` is a pipe or terminal whose other end is gone (POLLERR/POLLHUP).

    Always False on Windows (no ``poll`` on pipes there): a gone reader is seen
    at the next write instead.
    """
    if not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(fd, 0)  # errors and hang-ups are always reported
    try:
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except OSError:
        return False


@cli.command()
@click.argument("name")
@click.option("--role", default="human", show_default=True)
@click.option("--count", type=click.IntRange(min=0), default=0, help="Exit after COUNT messages.")
@click.option("--timeout", "timeout_s", type=SECONDS, default=0.0, help="Exit after SECONDS.")
@click.option("--raw", is_flag=True, help="Print bodies unescaped (control characters too).")
@pass_state
def listen(state: _State, name: str, role: str, count: int, timeout_s: float, raw: bool) -> None:
    """Join the mesh as NAME and print every incoming message until Ctrl-C.

    Leaves the mesh (and exits 141) as soon as stdout's reader goes away, so
    'pipemesh listen NAME | head -n 2' does not keep swallowing mail.
    """
    _check_name(name, "agent name")
    _terminate_on_sigterm()
    seen = 0
    stopped = threading.Event()
    broken = threading.Event()
    screen = Screen()

    def show(msg: Message, latency_us: float) -> None:
        nonlocal seen
        if stopped.is_set():
            return
        try:
            if state.as_json:
                record = {**_msg_json(msg), "latency_us": round(latency_us, 1)}
                screen.text(json.dumps(record, ensure_ascii=False))
            else:
                screen.line(
                    [
                        *_message_segments(
                            ts=msg.sent_ns / 1e9,
                            sender=msg.sender,
                            to=msg.to,
                            msg_type=msg.msg_type,
                            priority=msg.priority,
                            msg_id=msg.id,
                            reply_to=msg.reply_to,
                        ),
                        (f"  ({latency_us:.0f} us)\n", "dim"),
                        (_indent_body(msg.body, raw=raw), ""),
                    ]
                )
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            broken.set()
        seen += 1
        if broken.is_set() or (count and seen >= count):
            stopped.set()
            agent.close()  # leave now: nothing more is taken from the pipe

    agent = _Listener(name, role, state.home_arg, show=show, frames="text")
    with agent:
        click.echo(
            f"listening as {name} ({role}) on {state.home().root}; times in {zone_label()}; "
            "Ctrl-C to stop",
            err=True,
        )
        deadline = time.monotonic() + timeout_s if timeout_s > 0 else math.inf
        while not stopped.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                break
            if _reader_gone(sys.stdout.fileno()):
                broken.set()
                break
    if broken.is_set():
        raise _StdoutClosed


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
            if _reader_gone(sys.stdout.fileno()):
                raise _StdoutClosed
            time.sleep(0.1)


def _record_segments(rec: dict[str, Any], *, raw: bool) -> list[Segment]:
    body = str(rec.get("body", ""))
    body = body.replace("\n", " | ") if raw else safe(body)
    if len(body) > 100:
        body = body[:97] + "..."
    event = rec.get("event", "")
    tag = "" if event == "frame_sent" else f" [{safe(event)}]"
    return [
        *_message_segments(
            ts=float(rec["ts"]),
            sender=rec.get("from"),
            to=rec.get("to"),
            msg_type=rec.get("type"),
            priority=rec.get("priority"),
            msg_id=rec.get("id"),
            reply_to=rec.get("re"),
            extra=tag,
        ),
        (f"  {body}", ""),
    ]


@cli.command()
@click.option("-n", "--lines", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--no-follow", is_flag=True, help="Print and exit instead of following.")
@click.option("--all", "all_events", is_flag=True, help="Show received/misrouted events too.")
@click.option("--timeout", "timeout_s", type=SECONDS, default=0.0, help="Stop after SECONDS.")
@click.option("--raw", is_flag=True, help="Print bodies unescaped (control characters too).")
@pass_state
def tail(
    state: _State, lines: int, no_follow: bool, all_events: bool, timeout_s: float, raw: bool
) -> None:
    """Follow the mesh traffic (each message once, as sent), readably; -n N shows the last N."""
    from pipemesh.history import clean_record  # noqa: PLC0415 - the one record check

    path = state.home().logs_dir / COMM_LOG
    screen = Screen()
    skipped = 0

    def wanted(rec: dict[str, Any]) -> bool:
        nonlocal skipped
        if clean_record(rec) is None:
            skipped += 1
            if skipped == 1:
                click.echo(f"warning: skipping malformed records in {path}", err=True)
            return False
        return all_events or rec.get("event") == "frame_sent"

    with LogTail(path) as log_tail:  # one reader: nothing slips between the past and the new
        shown = [r for r in log_tail.poll() if wanted(r)]
        records: Iterator[dict[str, Any]] = iter(shown[-lines:] if lines else [])
        if not no_follow:
            click.echo(f"following {path} (times in {zone_label()}); Ctrl-C to stop", err=True)
            records = itertools.chain(
                records, (r for r in _follow(log_tail, timeout_s=timeout_s) if wanted(r))
            )
        elif shown and not state.as_json:
            click.echo(f"times in {zone_label()}", err=True)
        for rec in records:
            try:
                if state.as_json:
                    screen.text(json.dumps(rec, ensure_ascii=False))
                else:
                    screen.line(_record_segments(rec, raw=raw))
            except BrokenPipeError:
                raise _StdoutClosed from None


_PLOT_FORMATS: Final = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


@cli.command()
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw latency and messages/s per agent to FILE (.png, .svg or .pdf).",
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
    latency_log = state.home().logs_dir / LATENCY_LOG
    fmt = ""
    if plot_path is not None:
        fmt = _PLOT_FORMATS.get(plot_path.suffix.lower(), "")
        if not fmt:
            raise UsageError(
                f"--plot {plot_path}: the file type comes from its name; "
                "end it in .png, .svg or .pdf"
            )
    if plot_path or html_path:
        from pipemesh.plots import write_charts  # noqa: PLC0415 - matplotlib is an extra

        for written in write_charts(latency_log, plot=plot_path, fmt=fmt, html_out=html_path):
            click.echo(f"wrote {written}", err=True)
    records = list(read_log(latency_log))
    rows = latency_summary(records)
    if state.as_json:
        _print_json([dataclasses.asdict(r) for r in rows])
        return
    if not rows:
        _write_out("no latency records yet; send some messages first")
        return
    stamps = [float(t) for r in records if isinstance(t := r.get("ts"), int | float)]
    title = ""
    if stamps:
        from pipemesh.clock import format_stamp  # noqa: PLC0415 - only for the title

        title = f"latency (us) of messages handled {format_stamp(min(stamps))} to "
        title += format_stamp(max(stamps))
    Screen().table(
        ("AGENT", "COUNT", "P50_US", "P90_US", "P99_US", "MAX_US"),
        [
            (
                safe(r.agent),
                r.count,
                f"{r.p50_us:.1f}",
                f"{r.p90_us:.1f}",
                f"{r.p99_us:.1f}",
                f"{r.max_us:.1f}",
            )
            for r in rows
        ],
        title=title,
        styles=("bold cyan",),
    )


@cli.command()
@pass_state
def gc(state: _State) -> None:
    """Remove dead agents' entries and pipes; repair the registry from the live agents.

    A corrupt registry file is moved aside and rebuilt; malformed entries are
    dropped; live agents missing from the file are put back; orphan pipes are
    removed, and a live agent's removed pipe is put back. Safe while agents
    join and leave: nothing of a live agent is ever removed.
    """
    report = state.registry().repair()
    removed = report.removed
    if state.as_json:
        _print_json(
            {
                "removed": [r.name for r in removed],
                "restored": report.restored,
                "pipes_removed": report.pipes_removed,
                "pipes_restored": report.pipes_restored,
                "no_pipe": report.no_pipe,
                "skipped": report.skipped,
                "moved_aside": str(report.moved_aside) if report.moved_aside else None,
            }
        )
        return
    lines = []
    if report.moved_aside:
        lines.append(f"the registry was corrupt: moved to {report.moved_aside} and rebuilt")
    if report.skipped:
        lines.append("dropped malformed entries: " + "; ".join(report.skipped))
    if report.restored:
        lines.append("restored from live agents: " + ", ".join(report.restored))
    if removed:
        lines.append("removed: " + ", ".join(f"{r.name} (pid {r.pid})" for r in removed))
    if report.pipes_removed:
        lines.append("removed orphan pipes of: " + ", ".join(report.pipes_removed))
    if report.pipes_restored:
        lines.append("put back the pipe of: " + ", ".join(report.pipes_restored))
    if report.no_pipe:
        lines.append("alive but without a pipe (restart them): " + ", ".join(report.no_pipe))
    _write_out("\n".join(lines) or "nothing to remove: every registered agent is alive")


@cli.command()
@click.option("--timeout", "timeout_s", type=SECONDS, default=30.0, show_default=True)
@click.pass_obj
def demo(state: _State, timeout_s: float) -> None:
    """Run three demo agents through the seed's flow on their own temporary mesh.

    The demo never uses your mesh (--home and $PIPEMESH_HOME are ignored), so it
    cannot reach your agents, and it removes its mesh when it is done.
    """
    from pipemesh.demo import run_demo  # noqa: PLC0415 - keeps CLI start-up lean

    raise SystemExit(run_demo(timeout_s=timeout_s, echo=click.echo))


def _argv_flags(argv: Sequence[str]) -> tuple[bool, bool]:
    """(--json, --debug) anywhere before a '--' (errors need them before parsing ends)."""
    head = list(itertools.takewhile(lambda a: a != "--", argv))
    return "--json" in head, "--debug" in head


def _error(message: str, *, as_json: bool, hint: str = "") -> None:
    message = " ".join(message.split("\n"))  # one line, always
    if as_json:
        data = {"error": message, **({"hint": hint} if hint else {})}
        click.echo(json.dumps(data, ensure_ascii=False), err=True)
    else:
        label = "error:"
        if _stderr_is_tty() and not os.environ.get("NO_COLOR"):
            label = "\x1b[1;31merror:\x1b[0m"  # red on a terminal, like the tables' colour
        click.echo(f"{label} {message}" + (f" ({hint})" if hint else ""), err=True)


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stderr
        return False


def _silence_stdout() -> None:
    # The reader is gone: point fd 1 at /dev/null so the interpreter's final flush is quiet.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    args = list(argv) if argv is not None else sys.argv[1:]
    as_json, debug = _argv_flags(args)
    try:
        rv = cli.main(args=args, prog_name="pipemesh", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        return 130
    except click.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "pipemesh"
        _error(exc.format_message(), as_json=as_json, hint=f"try '{cmd} --help'")
        return 2
    except click.ClickException as exc:
        _error(exc.format_message(), as_json=as_json)
        return exc.exit_code
    except _StdoutClosed:
        _silence_stdout()
        return EXIT_PIPE
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_PIPE
    except UsageError as exc:
        if debug:
            raise
        _error(str(exc), as_json=as_json)
        return 2
    except MeshError as exc:
        if debug:
            raise
        _error(str(exc), as_json=as_json)
        return 1
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ValueError as exc:
        if debug:
            raise
        _error(str(exc), as_json=as_json)
        return 2
    except Exception as exc:  # the last net: one line, never a traceback without --debug
        if debug:
            raise
        _error(
            f"unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)",
            as_json=as_json,
        )
        return 1
    return rv if isinstance(rv, int) else 0


# -- commands defined in their own modules (kept at the end so merges stay trivial) --
from pipemesh.bench._command import bench_command  # noqa: E402
from pipemesh.history import history as _history  # noqa: E402
from pipemesh.integrations.agents.cli import run_group  # noqa: E402
from pipemesh.integrations.doctor import doctor_command  # noqa: E402
from pipemesh.integrations.hooks import hook_group  # noqa: E402
from pipemesh.integrations.mcp import mcp_command  # noqa: E402
from pipemesh.integrations.setup_clients import setup_command  # noqa: E402
from pipemesh.monitor import monitor as _monitor  # noqa: E402

cli.add_command(mcp_command)
cli.add_command(hook_group)
cli.add_command(run_group)
cli.add_command(setup_command)
cli.add_command(doctor_command)
cli.add_command(_history)
cli.add_command(_monitor)
cli.add_command(bench_command)
from pipemesh.gateway.cli import gateway_command  # noqa: E402

cli.add_command(gateway_command)
