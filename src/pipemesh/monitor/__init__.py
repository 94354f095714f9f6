"""``pipemesh monitor``: a live terminal dashboard of one mesh (Textual).

This module holds only the click command, so the CLI starts without importing
Textual (an optional extra, ``pipemesh[monitor]``); the app lives in
:mod:`pipemesh.monitor.app`, its data model (no Textual) in
:mod:`pipemesh.monitor.data`. The dashboard only reads what the mesh writes.
"""

from __future__ import annotations

from typing import Protocol

import click

from pipemesh.errors import UsageError
from pipemesh.home import MeshHome

__all__ = ["monitor"]


class _CliState(Protocol):
    home_arg: str | None


@click.command()
@click.option(
    "--refresh",
    "refresh_s",
    type=float,
    default=0.5,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option(
    "--stale-after",
    "stale_after_s",
    type=float,
    default=15.0,
    show_default=True,
    help="Mark an active agent stale when its heartbeats stop for this long.",
)
@click.pass_obj
def monitor(state: _CliState, refresh_s: float, stale_after_s: float) -> None:
    """Live dashboard: agents, traffic, errors; Enter shows a message, q quits."""
    if refresh_s <= 0:
        raise UsageError(f"--refresh must be above 0, got {refresh_s:g}")
    home = MeshHome.open(state.home_arg)
    try:
        from pipemesh.monitor.app import MonitorApp  # noqa: PLC0415 - Textual is an extra
    except ImportError as exc:
        raise UsageError(
            f"the dashboard needs Textual ({exc}); install it with: pip install 'pipemesh[monitor]'"
        ) from None
    MonitorApp(home, refresh_s=refresh_s, stale_after_s=stale_after_s).run()
