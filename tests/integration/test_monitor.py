"""The dashboard, driven headless by Textual's pilot, against real agent processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from pipemesh.home import MeshHome
from pipemesh.monitor.app import DetailScreen, MonitorApp
from pipemesh.runtime.agent import MeshClient
from tests.conftest import Spawner, wait_for
from tests.integration.meshproc import ECHO_AGENT, active_agents

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0  # generous: the machine is shared; a pass is usually a few seconds


async def until(pilot: Pilot[None], condition: Callable[[], object], what: str) -> None:
    """Let the app refresh until ``condition`` holds; fail at the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"dashboard never showed {what} within {DEADLINE_S}s")
        await pilot.pause(0.05)


def cell(app: MonitorApp, table_id: str, row: str, column: str) -> str:
    table = app.query_one(table_id, DataTable)
    if row not in table.rows:
        return ""
    value: Any = table.get_cell(row, column)
    return str(value.plain if hasattr(value, "plain") else value)


def detail_body(app: MonitorApp) -> str:
    if not isinstance(app.screen, DetailScreen):
        return ""
    found = app.screen.query("#detail-body")
    return str(found.first(Static).render()) if found else ""


def error_events(app: MonitorApp) -> list[str]:
    table = app.query_one("#errors", DataTable)
    return [str(table.get_row_at(i)[2]) for i in range(table.row_count)]


def test_monitor_shows_agents_traffic_death_and_errors(mesh_home: Path, spawn: Spawner) -> None:
    """Agents are listed with heartbeats, a sent message and its detail show, a SIGKILLed
    agent turns inactive, agents joining later appear, and garbage on a pipe shows as an error."""
    alpha = spawn.python(ECHO_AGENT, "alpha", "0.2")
    wait_for(lambda: "alpha" in active_agents(mesh_home), DEADLINE_S)
    home = MeshHome.open(mesh_home)

    async def scenario() -> None:
        app = MonitorApp(home, refresh_s=0.1, stale_after_s=60)
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: cell(app, "#agents", "alpha", "status") == "active", "alpha")
            # Heartbeats arrive over the private FIFO once the monitor reads it.
            await until(pilot, lambda: app.view.agents["alpha"].beat_at > 0, "a heartbeat")
            assert cell(app, "#agents", "alpha", "pid") == str(alpha.pid)

            beta = spawn.python(ECHO_AGENT, "beta", "0.2")  # joins while the dashboard runs
            await until(pilot, lambda: cell(app, "#agents", "beta", "status") == "active", "beta")

            with MeshClient("tester") as client:
                msg_id = client.send_message(
                    "alpha", "hello monitor\nsecond line", msg_type="question"
                )
            traffic = app.query_one("#traffic", DataTable)
            await until(pilot, lambda: msg_id in traffic.rows, "the sent message")
            assert cell(app, "#traffic", msg_id, "from") == "tester"
            assert cell(app, "#traffic", msg_id, "type") == "question"
            await until(
                pilot, lambda: cell(app, "#traffic", msg_id, "latency") not in ("", "-"), "latency"
            )
            # alpha's counters move with its heartbeats.
            await until(pilot, lambda: cell(app, "#agents", "alpha", "in") != "0", "counters")

            # Filter: a type that matches nothing hides the row; clearing brings it back.
            await pilot.press("slash", *"type:nothing")
            await until(pilot, lambda: msg_id not in traffic.rows, "the filter applied")
            await pilot.press("escape")
            await until(pilot, lambda: msg_id in traffic.rows, "the filter cleared")

            app.show_message(msg_id)
            await until(pilot, lambda: "second line" in detail_body(app), "the detail view")
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, DetailScreen), "detail closed")

            os.kill(beta.pid, signal.SIGKILL)
            beta.wait(timeout=DEADLINE_S)
            await until(
                pilot, lambda: cell(app, "#agents", "beta", "status") == "inactive", "beta dead"
            )
            assert cell(app, "#agents", "alpha", "status") == "active"

            fd = os.open(home.public_pipe("alpha"), os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(fd, b"this is not a frame\n" * 5)
            finally:
                os.close(fd)
            await until(pilot, lambda: "frame_rejected" in error_events(app), "the error")

            await pilot.press("q")
        assert app.return_code in (0, None)

    asyncio.run(scenario())
