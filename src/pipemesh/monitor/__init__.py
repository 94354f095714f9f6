"""``pipemesh monitor``: a live terminal dashboard of one mesh (Textual).

This module holds only the click command, so the CLI starts without importing
Textual (an optional extra, ``pipemesh[monitor]``); the app lives in
:mod:`pipemesh.monitor.app` (its forms in :mod:`pipemesh.monitor.screens`,
its tables in :mod:`pipemesh.monitor._tables`), its data model (no Textual) in
:mod:`pipemesh.monitor.data`, the person's own agent in
:mod:`pipemesh.monitor.human`. Watching only reads what the mesh writes; the
dashboard joins the mesh (as ``--as NAME``) only when the person first sends.
"""

from __future__ import annotations

from typing import Protocol

import click

from pipemesh.errors import UsageError
from pipemesh.home import MeshHome
from pipemesh.wire import is_valid_name

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
    help="Show an active agent's heartbeat age (HB) in yellow past this many seconds.",
)
@click.option(
    "--as",
    "as_name",
    metavar="NAME",
    default=None,
    help="Agent name to send as from the dashboard [default: human-<user>]; "
    "joined on the first send, left on exit.",
)
@click.pass_obj
def monitor(state: _CliState, refresh_s: float, stale_after_s: float, as_name: str | None) -> None:
    """Live dashboard: agents, traffic, errors; s/r/b send, reply, broadcast; q quits."""
    if refresh_s <= 0:
        raise UsageError(f"--refresh must be above 0, got {refresh_s:g}")
    if as_name is not None and not is_valid_name(as_name):
        raise UsageError(
            f"--as {as_name!r} is not a valid agent name: use 1-64 characters of "
            "A-Z a-z 0-9 _ . -, starting with a letter or digit"
        )
    home = MeshHome.open(state.home_arg)
    try:
        from pipemesh.monitor.app import MonitorApp  # noqa: PLC0415 - Textual is an extra
    except ImportError as exc:
        raise UsageError(
            f"the dashboard needs Textual ({exc}); install it with: pip install 'pipemesh[monitor]'"
        ) from None
    MonitorApp(home, refresh_s=refresh_s, stale_after_s=stale_after_s, human_name=as_name).run()
