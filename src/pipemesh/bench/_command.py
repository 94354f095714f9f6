"""The ``pipemesh bench`` click command: hands its arguments to `pipemesh.bench.cli.main`.

Kept apart from `pipemesh.bench.cli` so that loading the package CLI stays cheap: the
harness, scenarios and agents are imported only when ``pipemesh bench`` actually runs.
"""

from __future__ import annotations

import click


@click.command(
    "bench",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("bench_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def bench_command(ctx: click.Context, bench_args: tuple[str, ...]) -> None:
    """Benchmark the mesh against raw FIFOs, sockets, ZeroMQ and Redis (--help for options)."""
    from pipemesh.bench.cli import main as bench_main  # noqa: PLC0415  # see module docstring

    args = list(bench_args)
    # `pipemesh --json bench` means the same as `pipemesh bench --json`.
    if getattr(ctx.find_root().obj, "as_json", False) and "--json" not in args:
        args.append("--json")
    raise SystemExit(bench_main(args))
