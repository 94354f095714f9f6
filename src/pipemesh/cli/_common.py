"""What every ``pipemesh`` command shares: the global options, the state, output helpers.

Holds the group class (:class:`MeshGroup`: subcommands take the global options and are
imported only when they run), the per-invocation :class:`State`, parameter types and name
checks, and the helpers that write results to stdout. It must stay cheap to import: every
command pays for it, so the mesh modules (home, registry, wire, runtime) are imported inside
the functions that need them.
"""

from __future__ import annotations

import importlib
import json
import math
import select
import signal
import sys
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import click

from pipemesh._term import Segment, safe
from pipemesh.clock import format_clock

if TYPE_CHECKING:
    from pipemesh.home import MeshHome
    from pipemesh.registry import Registry

__all__ = [
    "EXIT_PIPE",
    "SECONDS",
    "MeshGroup",
    "State",
    "StdoutClosed",
    "age",
    "check_home",
    "check_name",
    "indent_body",
    "message_segments",
    "pass_state",
    "print_json",
    "reader_gone",
    "terminate_on_sigterm",
    "write_out",
]

# stdout's reader went away (as if killed by SIGPIPE; 13 on Windows too, which has no SIGPIPE)
EXIT_PIPE: Final = 128 + getattr(signal, "SIGPIPE", 13)


class State:
    """The global options of one invocation (``ctx.obj``)."""

    def __init__(self, home: str | None, as_json: bool, debug: bool) -> None:
        self.home_arg = home
        self.as_json = as_json
        self.debug = debug

    def home(self) -> MeshHome:
        from pipemesh.home import MeshHome  # noqa: PLC0415 - see the module docstring

        return MeshHome.open(self.home_arg)

    def registry(self) -> Registry:
        from pipemesh.registry import Registry  # noqa: PLC0415 - see the module docstring

        home = self.home()
        return Registry(
            home.registry_path, home.lock_path, names_dir=home.names_dir, pipes_dir=home.pipes_dir
        )


pass_state = click.make_pass_decorator(State)


class StdoutClosed(Exception):
    """stdout's reader went away (EPIPE): leave quietly with EXIT_PIPE."""


def check_name(name: str, what: str) -> str:
    """``name`` if it is a valid agent name, else a usage error naming ``what`` it is."""
    from pipemesh.wire import is_valid_name  # noqa: PLC0415 - see the module docstring

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


def terminate_on_sigterm() -> None:
    """Exit once on a stop signal; a second must not interrupt the clean close."""
    from pipemesh import _platform  # noqa: PLC0415 - see the module docstring

    _platform.exit_on_stop_signals()  # SIGBREAK too on Windows


def print_json(data: object) -> None:
    write_out(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def write_out(text: str) -> None:
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        raise StdoutClosed from None


def age(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def message_segments(
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


def indent_body(body: str, *, raw: bool) -> str:
    text = body if raw else safe(body, newlines=True)
    return "\n".join("  " + line for line in text.split("\n"))


def reader_gone(fd: int) -> bool:
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


# -- the global options, accepted anywhere on the line --------------------------------------


def check_home(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter(
            "is empty; give a directory (an empty --home would put the mesh in the "
            "current directory)",
            param_hint="'--home'",
        )
    return value


def _set_home(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    value = check_home(value)
    state = ctx.find_object(State)
    if value is not None and state is not None:
        state.home_arg = value


def _set_flag(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    state = ctx.find_object(State)
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


class LazyCommand(NamedTuple):
    """A command known by where it is defined, imported when it is first needed."""

    target: str
    """``"module:attribute"`` of the :class:`click.Command`."""
    summary: str
    """The first sentence of its help: what ``pipemesh --help`` lists for it."""


class MeshGroup(click.Group):
    """The ``pipemesh`` group: subcommands take the global options and load lazily.

    A command added with :meth:`add_lazy_command` is imported only when it runs (or its own
    help is asked for), so ``pipemesh history`` does not pay for the runtime, the monitor or
    the MCP server, and ``pipemesh --help`` lists every command from its summary alone.
    Commands added with ``add_command`` (whoever registered them) work too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands: dict[str, LazyCommand] = {}

    def add_lazy_command(self, name: str, target: str, summary: str) -> None:
        """Register the command ``target`` (``"module:attribute"``) as ``name``.

        Args:
            name: what the user types (``pipemesh NAME``).
            target: where the :class:`click.Command` is, e.g. ``"pipemesh.history:history"``.
            summary: the first sentence of the command's help, listed by ``pipemesh --help``
                (a test checks that it matches the command's own).
        """
        self.lazy_commands[name] = LazyCommand(target, summary)

    def load_command(self, name: str) -> click.Command:
        """Import the lazily registered command ``name`` and add it to the group."""
        module, _, attribute = self.lazy_commands[name].target.partition(":")
        cmd = getattr(importlib.import_module(module), attribute)
        if not isinstance(cmd, click.Command):
            raise TypeError(f"{self.lazy_commands[name].target} is not a click command")
        self.add_command(cmd, name)
        return cmd

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name in self.lazy_commands:
            cmd = self.load_command(cmd_name)
        if cmd is not None:
            _add_global_options(cmd)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's command list, with the commands not imported yet shown from their summary."""
        shown: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            cmd = self.commands.get(name) or click.Command(
                name, help=self.lazy_commands[name].summary
            )
            if not cmd.hidden:
                shown.append((name, cmd))
        if shown:
            limit = formatter.width - 6 - max(len(name) for name, _ in shown)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in shown])
