"""The ``pipemesh`` command line: argument parsing, output and exit codes.

stdout carries results (tables, or JSON with ``--json``); stderr carries
diagnostics as one line, ``error: <message>`` (or ``{"error": ...}`` with
``--json``). Exit codes: 0 ok, 1 runtime error, 2 usage error, 130 interrupted,
141 when stdout was closed by its reader (``| head``). Tracebacks only with
``--debug``. The global options ``--home``, ``--json`` and ``--debug`` are
accepted before or after the subcommand. Text from the mesh is escaped for the
terminal unless ``--json`` or ``--raw``.

This module holds the group, the list of commands and :func:`main`; the commands live in
their own modules (``messaging``, ``logs``, ``admin`` here, the others next to what they
drive) and are imported only when they run, so that a quick command such as
``pipemesh history`` starts fast (tests/integration/test_cli_startup.py guards what it imports).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Sequence

import click

from pipemesh.cli._common import (
    EXIT_PIPE,
    MeshGroup,
    State,
    StdoutClosed,
    check_home,
)
from pipemesh.errors import MeshError, UsageError

__all__ = ["cli", "main"]


@click.group(cls=MeshGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    ctx.obj = State(check_home(home), as_json, debug)


# -- the commands -----------------------------------------------------------------------------
# One line each: the name, where the click command is ("module:attribute", imported only when
# the command runs) and the first sentence of its help, which 'pipemesh --help' lists without
# importing anything (tests/unit/test_cli_commands.py checks that each summary matches).
# A new command goes here, in a module of its own; keep heavy imports out of its module's top
# level when other commands share that module.
cli.add_lazy_command(
    "agents", "pipemesh.cli.admin:agents", "List registered agents: name, role, status, pid, age."
)
cli.add_lazy_command(
    "gc",
    "pipemesh.cli.admin:gc",
    "Remove dead agents' entries and pipes; repair the registry from the live agents.",
)
cli.add_lazy_command(
    "demo",
    "pipemesh.cli.admin:demo",
    "Run three demo agents through the seed's flow on their own temporary mesh.",
)
cli.add_lazy_command(
    "send",
    "pipemesh.cli.messaging:send",
    "Send TEXT ('-' reads stdin) to agent TO; prints the message ID.",
)
cli.add_lazy_command(
    "broadcast",
    "pipemesh.cli.messaging:broadcast",
    "Send TEXT to every active agent; prints each recipient's outcome.",
)
cli.add_lazy_command(
    "ask",
    "pipemesh.cli.messaging:ask",
    "Ask agent TO and print its reply (joins the mesh briefly to get it).",
)
cli.add_lazy_command(
    "listen",
    "pipemesh.cli.messaging:listen",
    "Join the mesh as NAME and print every incoming message until Ctrl-C.",
)
cli.add_lazy_command(
    "tail",
    "pipemesh.cli.logs:tail",
    "Follow the mesh traffic (each message once, as sent), readably; -n N shows the last N.",
)
cli.add_lazy_command(
    "stats",
    "pipemesh.cli.logs:stats",
    "Latency p50/p90/p99/max per receiving agent, from mesh_latency.log.",
)
cli.add_lazy_command(
    "history",
    "pipemesh.history:history",
    "Search past traffic: 'pipemesh history \"some text\"' finds bodies containing it.",
)
cli.add_lazy_command(
    "monitor",
    "pipemesh.monitor:monitor",
    "Live dashboard: agents, traffic, errors; s/r/b send, reply, broadcast; q quits.",
)
cli.add_lazy_command(
    "mcp",
    "pipemesh.integrations.mcp:mcp_command",
    "Run a stdio MCP server that joins the mesh as NAME (for Claude Code, Gemini, Codex).",
)
cli.add_lazy_command(
    "hook",
    "pipemesh.integrations.hooks:hook_group",
    "Hooks for Claude Code, Gemini CLI and Codex that hand mesh messages to the model.",
)
cli.add_lazy_command(
    "run",
    "pipemesh.integrations.agents.cli:run_group",
    "Run an agent that answers mesh messages with a headless CLI.",
)
cli.add_lazy_command(
    "setup",
    "pipemesh.integrations.setup_clients:setup_command",
    "Print (or --write) what an agent CLI needs to join the mesh: MCP server, hooks, trust.",
)
cli.add_lazy_command(
    "doctor",
    "pipemesh.integrations.doctor:doctor_command",
    "Check a project per agent CLI: installed, set up, approved/trusted, same mesh home.",
)
cli.add_lazy_command(
    "bench",
    "pipemesh.bench._command:bench_command",
    "Benchmark the mesh against raw FIFOs, sockets, ZeroMQ and Redis (--help for options).",
)
cli.add_lazy_command(
    "gateway",
    "pipemesh.gateway.cli:gateway_command",
    "Bridge this host's mesh to the other hosts' meshes over NATS.",
)


# -- running it: exit codes and one-line errors -------------------------------------------------


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
    except StdoutClosed:
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
