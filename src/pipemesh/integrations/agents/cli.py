"""``pipemesh run claude|gemini|codex|command``: run a CLI agent on the mesh until Ctrl-C."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import click

from pipemesh import _platform
from pipemesh.home import MeshHome
from pipemesh.integrations.agents import claude, codex, command, copilot, gemini, opencode
from pipemesh.integrations.agents.base import (
    CliAgent,
    CliFailed,
    CliSpec,
    check_installed,
    load_spec,
)
from pipemesh.wire import is_valid_name

__all__ = ["run_group"]

_DEFAULTS = {
    "claude": claude.SPEC,
    "gemini": gemini.SPEC,
    "codex": codex.SPEC,
    "opencode": opencode.SPEC,
    "copilot": copilot.SPEC,
}


def _exit_on_sigterm() -> None:
    _platform.exit_on_stop_signals()  # SIGTERM, and SIGBREAK on Windows


def _serve(ctx: click.Context, spec: CliSpec, name: str, role: str, config: str | None) -> None:
    if not is_valid_name(name):
        raise click.UsageError(f"agent name {name!r} is not valid")
    home_arg = getattr(ctx.obj, "home_arg", None)
    home = MeshHome.open(home_arg)
    spec = load_spec(spec, Path(config) if config else home.root / "agents.toml")
    opts = ctx.params
    if opts.get("timeout_s"):
        spec = replace(spec, timeout_s=float(opts["timeout_s"]))
    if opts.get("workers"):
        spec = replace(spec, max_workers=int(opts["workers"]))
    try:
        check_installed(spec)
    except CliFailed as exc:
        raise click.ClickException(str(exc)) from None
    if spec.kind == "gemini":
        spec = gemini.isolate(spec, Path.cwd(), home.root / "run" / name)
    if spec.kind == "copilot":
        spec = copilot.isolate(spec, Path.cwd(), home.root / "run" / name)
    if spec.kind == "opencode":
        os.environ.update(opencode.ENV)  # this process exists to run the CLI
    _exit_on_sigterm()
    with CliAgent(name, spec, role, home_arg) as agent:
        click.echo(
            f"{name} answers questions and directives with: {' '.join(spec.command)} "
            f"(timeout {spec.timeout_s:g}s, {spec.max_workers} at a time); Ctrl-C to stop",
            err=True,
        )
        agent.run_forever()


def _common(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option("--config", default=None, help="agents.toml to use (default <home>/...).")(f)
    f = click.option("--workers", type=click.IntRange(1, 32), default=None, help="Runs at once.")(f)
    f = click.option(
        "--timeout", "timeout_s", type=click.FloatRange(1), default=None, help="Seconds per run."
    )(f)
    f = click.option("--role", default="", help="Role shown in the registry.")(f)
    f = click.option("--name", required=True, help="Agent name on the mesh.")(f)
    return f


@click.group("run")
def run_group() -> None:
    """Run an agent that answers mesh messages with a headless CLI."""


def _kind_command(kind: str) -> click.Command:
    @click.command(kind, help=f"Answer questions and directives with {kind}, headless.")
    @_common
    @click.pass_context
    def run_kind(
        ctx: click.Context,
        name: str,
        role: str,
        timeout_s: float | None,
        workers: int | None,
        config: str | None,
    ) -> None:
        _serve(ctx, _DEFAULTS[kind], name, role, config)

    return run_kind


for _kind in _DEFAULTS:
    run_group.add_command(_kind_command(_kind))


@run_group.command("command")
@_common
@click.argument("argv", nargs=-1, required=True)
@click.pass_context
def run_command(
    ctx: click.Context,
    name: str,
    role: str,
    timeout_s: float | None,
    workers: int | None,
    config: str | None,
    argv: tuple[str, ...],
) -> None:
    """Answer with any program: pipemesh run command --name N -- ARGV... (prompt on stdin)."""
    _serve(ctx, command.spec_for(argv), name, role, config)
