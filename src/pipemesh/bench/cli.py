"""Command line of the benchmark: ``python -m pipemesh.bench [--json] [--quick] [--instructions]``.

`main` is a plain function so the package CLI (``pipemesh bench``) can call it with its
own argv. This is the only module of the bench package that writes to stdout/stderr:
the table or JSON on stdout, progress and errors on stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import replace
from types import FrameType

from pipemesh.bench.harness import BenchConfig, run_bench
from pipemesh.bench.scenarios import default_scenarios
from pipemesh.errors import UsageError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipemesh bench",
        description=(
            "Measure one-way latency and throughput of pipemesh and its baselines (raw FIFO, "
            "Unix socket, multiprocessing.Pipe, ZeroMQ, Redis) on this machine, in one run."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--quick", action="store_true", help="tiny counts: checks the harness, numbers mean nothing"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only scenarios whose key contains TEXT (repeatable; floor rows always run)",
    )
    parser.add_argument(
        "--time-limit-s",
        type=float,
        default=None,
        metavar="S",
        help="upper bound on each scenario's measured phase",
    )
    parser.add_argument("--list", action="store_true", help="list scenario keys and exit")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="instead of timing, count instructions per 64 B hop under valgrind's callgrind"
        " (load-independent; needs valgrind)",
    )
    parser.add_argument(
        "--round-trips",
        type=int,
        default=None,
        metavar="N",
        help="with --instructions: measured round trips (2 hops each; default 1000, --quick 200)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return parser


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark from a command line; returns the exit code.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        0 when every row was measured or is unavailable, 1 when a row failed,
        2 for bad arguments, 130 when interrupted.
    """
    parser = _parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad input and 0 for --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if ns.instructions:
        return _instructions(ns)
    if ns.round_trips is not None:
        print("error: --round-trips goes with --instructions", file=sys.stderr)
        return EXIT_USAGE
    config = BenchConfig.quick_run() if ns.quick else BenchConfig()
    config = replace(config, only=tuple(ns.only))
    if ns.time_limit_s is not None:
        if ns.time_limit_s <= 0:
            print("error: --time-limit-s must be positive", file=sys.stderr)
            return EXIT_USAGE
        config = replace(config, time_limit_s=ns.time_limit_s)
    if ns.list:
        for scenario in default_scenarios(config):
            print(scenario.key)
        return EXIT_OK
    # SIGTERM (a CI cancel, `timeout`) would end the process without unwinding, leaving
    # workers and redis-server behind; make it unwind like Ctrl-C so the pool kills them.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        report = run_bench(config, progress=None if ns.quiet else _progress)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("try 'pipemesh bench --help'", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.stdout.write(report.to_json() + "\n" if ns.json else report.format_table())
    return EXIT_OK if report.is_ok else EXIT_FAILED


def _instructions(ns: argparse.Namespace) -> int:
    """``--instructions``: callgrind counts per hop (see `pipemesh.bench.instructions`)."""
    from pipemesh.bench import instructions as ins  # noqa: PLC0415  # only this mode needs it

    default = ins.QUICK_ROUND_TRIPS if ns.quick else ins.DEFAULT_ROUND_TRIPS
    round_trips = default if ns.round_trips is None else ns.round_trips
    if round_trips <= 0:
        print("error: --round-trips must be positive", file=sys.stderr)
        return EXIT_USAGE
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        report = ins.run_instructions(
            round_trips=round_trips,
            warmup=ins.QUICK_WARMUP if ns.quick else ins.DEFAULT_WARMUP,
            quick=ns.quick,
            progress=None if ns.quiet else _progress,
        )
    except ins.ValgrindMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ins.CountFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.stdout.write(report.to_json() + "\n" if ns.json else report.format_table())
    return EXIT_OK
