"""Mesh worker entry point: ``python -m pipemesh.bench._mesh_worker --role ... --home ...``.

The harness starts one of these per mesh agent of a scenario (echo, measuring client,
idle agent, fan-in sink or sender, broadcaster or receiver, join observer or joiner). It
parses the command line and hands over to `pipemesh.bench.mesh.run_mesh_worker`; the
start barrier and result file follow `pipemesh.bench._proto`. It prints nothing.
"""

from __future__ import annotations

import argparse
import sys

from pipemesh.bench._proto import add_protocol_args
from pipemesh.bench.mesh import ROLES, MeshArgs, run_mesh_worker


def parse_args(argv: list[str] | None = None) -> MeshArgs:
    """Parse a mesh worker command line built by `pipemesh.bench.scenarios`."""
    parser = argparse.ArgumentParser(prog="python -m pipemesh.bench._mesh_worker")
    add_protocol_args(parser)
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument("--home", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--peer", default="")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--time-limit-s", type=float, default=10.0)
    parser.add_argument("--peers", type=int, default=0)
    parser.add_argument("--no-log", action="store_true", help="agents do not write mesh logs")
    parser.add_argument("--durable", action="store_true", help="the sink agent is durable")
    parser.add_argument(
        "--agent-sender", action="store_true", help="fan-in senders are AgentBase agents"
    )
    parser.add_argument(
        "--parts", action="store_true", help="large bodies as PART frames, never body files"
    )
    ns = parser.parse_args(argv)
    return MeshArgs(
        role=ns.role,
        home=ns.home,
        name=ns.name,
        peer=ns.peer,
        size=ns.size,
        count=ns.count,
        warmup=ns.warmup,
        time_limit_s=ns.time_limit_s,
        peers=ns.peers,
        log=not ns.no_log,
        ready_fd=ns.ready_fd,
        go_fd=ns.go_fd,
        out=ns.out,
        cpu=ns.cpu,
        durable=ns.durable,
        agent_sender=ns.agent_sender,
        parts=ns.parts,
    )


def main(argv: list[str] | None = None) -> int:
    """Run one mesh endpoint; returns the process exit code."""
    return run_mesh_worker(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
