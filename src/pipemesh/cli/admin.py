"""The commands that look after the mesh itself: ``agents``, ``gc`` and ``demo``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import click

from pipemesh._term import Screen, safe
from pipemesh.cli._common import SECONDS, State, age, pass_state, print_json, write_out
from pipemesh.home import MeshHome
from pipemesh.registry import NO_PIPE, AgentRecord
from pipemesh.runtime.bodies import BodyStore

__all__ = ["agents", "demo", "gc"]


@click.command()
@pass_state
def agents(state: State) -> None:
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
        print_json(
            {
                name: {**rec.to_json(), "status": status[name], "age_s": rec.age_s()}
                for name, rec in records.items()
            }
        )
        return
    if not records:
        write_out(f"no agents registered in {home.root}")
        return
    rows = [
        (safe(r.name), safe(r.role), status[r.name], r.pid, age(r.age_s()))
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


@click.command()
@pass_state
def gc(state: State) -> None:
    """Remove dead agents' entries and pipes; repair the registry from the live agents.

    A corrupt registry file is moved aside and rebuilt; malformed entries are
    dropped; live agents missing from the file are put back; orphan pipes are
    removed, and a live agent's removed pipe is put back. Safe while agents
    join and leave: nothing of a live agent is ever removed.
    """
    registry = state.registry()
    report = registry.repair()
    removed = report.removed
    # Body files addressed to agents that are gone (runtime/bodies.py): nobody reads them.
    bodies_removed = BodyStore(state.home().bodies_dir).sweep_unowned(registry._try_name)
    if state.as_json:
        print_json(
            {
                "removed": [r.name for r in removed],
                "restored": report.restored,
                "pipes_removed": report.pipes_removed,
                "pipes_restored": report.pipes_restored,
                "no_pipe": report.no_pipe,
                "skipped": report.skipped,
                "moved_aside": str(report.moved_aside) if report.moved_aside else None,
                "body_files_removed": bodies_removed,
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
    if any(bodies_removed.values()):
        lines.append(
            "removed body files of agents that are gone: "
            + ", ".join(f"{n} ({c})" for n, c in bodies_removed.items() if c)
        )
    if report.pipes_restored:
        lines.append("put back the pipe of: " + ", ".join(report.pipes_restored))
    if report.no_pipe:
        lines.append("alive but without a pipe (restart them): " + ", ".join(report.no_pipe))
    write_out("\n".join(lines) or "nothing to remove: every registered agent is alive")


@click.command()
@click.option("--timeout", "timeout_s", type=SECONDS, default=30.0, show_default=True)
@click.pass_obj
def demo(state: State, timeout_s: float) -> None:
    """Run three demo agents through the seed's flow on their own temporary mesh.

    The demo never uses your mesh (--home and $PIPEMESH_HOME are ignored), so it
    cannot reach your agents, and it removes its mesh when it is done.
    """
    from pipemesh.demo import run_demo  # noqa: PLC0415 - keeps `agents` and `gc` lean

    raise SystemExit(run_demo(timeout_s=timeout_s, echo=click.echo))
