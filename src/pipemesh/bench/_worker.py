"""Worker process entry point: ``python -m pipemesh.bench._worker --transport ... --role ...``.

The harness starts one of these per benchmark endpoint (echo server, measuring client,
fan-in receiver or sender). It parses the command line and hands over to
`pipemesh.bench.baselines.run_worker`; the start barrier and result file follow
`pipemesh.bench._proto`. It prints nothing: results go to ``--out``, and an exception's
traceback on stderr is what the harness quotes in an error row.
"""

from __future__ import annotations

import argparse
import sys

from pipemesh.bench._proto import add_protocol_args
from pipemesh.bench.baselines import ROLES, TRANSPORTS, WorkerArgs, run_worker


def parse_args(argv: list[str] | None = None) -> WorkerArgs:
    """Parse a worker command line built by `pipemesh.bench.scenarios`."""
    parser = argparse.ArgumentParser(prog="python -m pipemesh.bench._worker")
    add_protocol_args(parser)
    parser.add_argument("--transport", required=True, choices=TRANSPORTS)
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--addr", action="append", default=[])
    parser.add_argument("--fd", type=int, default=-1)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--time-limit-s", type=float, default=10.0)
    parser.add_argument("--sender-id", type=int, default=0)
    ns = parser.parse_args(argv)
    return WorkerArgs(
        transport=ns.transport,
        role=ns.role,
        size=ns.size,
        addr=tuple(ns.addr),
        fd=ns.fd,
        count=ns.count,
        warmup=ns.warmup,
        time_limit_s=ns.time_limit_s,
        sender_id=ns.sender_id,
        ready_fd=ns.ready_fd,
        go_fd=ns.go_fd,
        out=ns.out,
        cpu=ns.cpu,
    )


def main(argv: list[str] | None = None) -> int:
    """Run one benchmark endpoint; returns the process exit code."""
    return run_worker(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
