"""The dashboard, driven headless by Textual's pilot, against real agent processes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual import events
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static, TextArea

from pipemesh.home import MeshHome
from pipemesh.monitor.app import DetailScreen, MonitorApp
from pipemesh.monitor.screens import ComposeScreen
from pipemesh.runtime.agent import AgentBase, MeshClient
from tests.conftest import Spawner, run_cli, wait_for
from tests.integration.meshproc import ECHO_AGENT, active_agents

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0  # generous: the machine is shared; a pass is usually a few seconds


async def until(pilot: Pilot[None], condition: Callable[[], object], what: str) -> None:
    """Let the app refresh until ``condition`` holds; fail at the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            app = pilot.app
            shown = screen_text(app) if isinstance(app, MonitorApp) else ""
            pytest.fail(f"dashboard never showed {what} within {DEADLINE_S}s; screen:\n{shown}")
        await pilot.pause(0.05)


async def refreshes(pilot: Pilot[None], app: MonitorApp, count: int) -> None:
    """Wait until the dashboard has refreshed ``count`` more times."""
    target = app.ticks + count
    await until(pilot, lambda: app.ticks >= target, f"{count} refreshes")


def cell(app: MonitorApp, table_id: str, row: str, column: str) -> str:
    table = app.query_one(table_id, DataTable)
    if row not in table.rows:
        return ""
    value: Any = table.get_cell(row, column)
    return str(value.plain if hasattr(value, "plain") else value)


def screen_text(app: MonitorApp) -> str:
    """What the terminal shows right now, as plain text (the rows a person would read)."""
    width, height = app.size
    console = Console(
        width=width, height=height, file=io.StringIO(), record=True, color_system=None
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text()


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


# argv: name record_file. Appends every message it gets to record_file as a JSON line
# (its own record of what arrived) and answers questions with "noted: <body>".
RECORD_AGENT = """
import json, sys
from pipemesh.runtime.agent import AgentBase

class Recorder(AgentBase):
    def on_message_received(self, msg):
        with open(sys.argv[2], "a", encoding="utf-8") as f:
            f.write(json.dumps({"from": msg.sender, "to": msg.to, "type": msg.msg_type,
                                "id": msg.id, "re": msg.reply_to, "body": msg.body}) + "\\n")
        if msg.msg_type == "question":
            self.reply(msg, "noted: " + msg.body)

with Recorder(sys.argv[1], "recorder", heartbeat_s=0.2) as agent:
    agent.run_forever()
"""


def wheel(kind: type[events.MouseEvent], widget: Any) -> events.MouseEvent:
    """One notch of the mouse wheel over ``widget``."""
    down = kind is events.MouseScrollDown
    return kind(widget, 5, 3, 0, 1 if down else -1, 0, False, False, False)


def recorded(path: Path) -> list[dict[str, Any]]:
    """Whole lines of a recorder agent's file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def on_screen(app: MonitorApp, text: str) -> bool:
    return text in screen_text(app)


def test_monitor_feed_follows_newest_until_moved_away(mesh_home: Path, spawn: Spawner) -> None:
    """The feed keeps the newest message on screen; after the person moves up it stays put
    (the selected row kept) while traffic arrives; End jumps to the newest row (not sideways)
    and following resumes (also with the mouse wheel and after a resize); trimming old rows
    keeps following. Bodies are shown literally, never as markup."""
    spawn.python(ECHO_AGENT, "alpha", "0.2")
    wait_for(lambda: "alpha" in active_agents(mesh_home), DEADLINE_S)
    home = MeshHome.open(mesh_home)

    async def scenario() -> None:
        app = MonitorApp(home, refresh_s=0.1, human_name="human-t")
        async with app.run_test(size=(100, 24)) as pilot:
            feed = app.feed
            with MeshClient("tester") as client:

                def send(first: int, count: int) -> None:
                    for i in range(first, first + count):
                        client.send_message("alpha", f"note-{i:03d}", msg_type="note")

                send(0, 40)
                await until(pilot, lambda: feed.row_count == 40, "40 rows")
                await until(pilot, lambda: on_screen(app, "note-039"), "the newest row on screen")
                assert app.is_following()
                assert not on_screen(app, "note-000")  # 40 rows do not fit: it really scrolled

                await pilot.press("up")  # the person moves to an older message
                held = str(feed.coordinate_to_cell_key(feed.cursor_coordinate).row_key.value)
                assert not app.is_following()
                send(40, 10)
                await until(pilot, lambda: feed.row_count == 50, "50 rows")
                await refreshes(pilot, app, 3)  # the view must not move
                assert str(feed.coordinate_to_cell_key(feed.cursor_coordinate).row_key.value) == (
                    held
                )
                assert on_screen(app, "note-038")
                assert not on_screen(app, "note-049")
                assert "End follows" in screen_text(app)

                await pilot.press("end")
                await until(pilot, lambda: on_screen(app, "note-049"), "End to jump to the newest")
                assert feed.scroll_x == 0
                assert app.is_following()
                send(50, 5)
                await until(pilot, lambda: on_screen(app, "note-054"), "following again")

                # The mouse wheel: scrolling up holds the view; back at the bottom it follows.
                for _ in range(3):
                    feed.post_message(wheel(events.MouseScrollUp, feed))
                await until(pilot, lambda: not app.is_following(), "the wheel to hold the feed")
                send(55, 3)
                await until(pilot, lambda: feed.row_count == 58, "58 rows")
                await refreshes(pilot, app, 3)
                assert not on_screen(app, "note-057")
                for _ in range(40):  # bounded: 40 wheel steps cover the whole feed
                    if feed.scroll_y >= feed.max_scroll_y:
                        break
                    feed.post_message(wheel(events.MouseScrollDown, feed))
                    await pilot.pause(0.02)
                await until(pilot, lambda: on_screen(app, "note-057"), "the bottom again")
                assert app.is_following()

                # A wider terminal: the body column takes the new width, the newest stays.
                narrow = feed.columns["body"].width  # type: ignore[index]
                await pilot.resize_terminal(160, 30)
                await until(
                    pilot, lambda: feed.columns["body"].width > narrow + 40, "the wider body"
                )
                client.send_message(
                    "alpha", "closing [/red] tag [bold]kept[/bold]", msg_type="note"
                )
                await until(
                    pilot,
                    lambda: on_screen(app, "closing [/red] tag [bold]kept[/bold]"),
                    "a body with markup shown literally",
                )

                # A long session: the feed keeps the newest rows (trimmed) and still follows.
                app.max_rows = 30
                send(100, 60)
                await until(pilot, lambda: on_screen(app, "note-159"), "the newest after trimming")
                assert feed.row_count <= 36
                assert app.is_following()
            await pilot.press("q")

    asyncio.run(scenario())


def test_monitor_states_match_registry_and_uptime_freezes(mesh_home: Path, spawn: Spawner) -> None:
    """An agent known only from the logs is `left` with no pid; a live one is `active`; a
    SIGKILLed one turns `inactive` with its uptime frozen; one that leaves while watched turns
    `left`; IN/OUT count log records since the header's time and keep that meaning after
    heartbeats arrive (an earlier process of the same name counts too)."""
    home = MeshHome.open(mesh_home)
    with AgentBase("ghost", "gone", mesh_home, heartbeat_s=0) as ghost, MeshClient("c") as c:
        c.send_message("ghost", "before the dashboard", msg_type="note")
        wait_for(lambda: ghost.received == 1, DEADLINE_S)
    with AgentBase("alpha", "first run", mesh_home, heartbeat_s=0) as first, MeshClient("c") as c:
        c.send_message("alpha", "one", msg_type="note")
        c.send_message("alpha", "two", msg_type="note")
        wait_for(lambda: first.received == 2, DEADLINE_S)
    spawn.python(ECHO_AGENT, "alpha", "0.2")
    victim = spawn.python(ECHO_AGENT, "victim", "0.2")
    wait_for(lambda: {"alpha", "victim"} <= active_agents(mesh_home), DEADLINE_S)

    async def scenario() -> None:
        app = MonitorApp(home, refresh_s=0.1, stale_after_s=60, human_name="human-t")
        async with app.run_test(size=(160, 40)) as pilot:
            await until(pilot, lambda: cell(app, "#agents", "ghost", "status") == "left", "ghost")
            assert cell(app, "#agents", "ghost", "pid") == "-"
            assert cell(app, "#agents", "ghost", "uptime") == "-"
            assert cell(app, "#agents", "ghost", "in") == "1"
            for name in ("alpha", "victim"):
                assert cell(app, "#agents", name, "status") == "active"

            with MeshClient("c") as c:
                c.send_message("alpha", "three", msg_type="note")
            await until(pilot, lambda: cell(app, "#agents", "alpha", "in") == "3", "IN = 3")
            alpha = app.view.agents["alpha"]
            await until(pilot, lambda: alpha.beat_at > 0, "alpha's heartbeat")
            beat_seen = alpha.beat_at
            await until(pilot, lambda: alpha.beat_at > beat_seen, "another heartbeat")
            assert cell(app, "#agents", "alpha", "in") == "3"  # heartbeats said 1: not used

            view = app.view.agents["victim"]
            await until(pilot, lambda: (view.uptime_s(time.monotonic()) or 0) >= 1, "uptime")
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=DEADLINE_S)
            await until(
                pilot, lambda: cell(app, "#agents", "victim", "status") == "inactive", "death"
            )
            frozen, shown = (
                view.uptime_s(time.monotonic()),
                cell(app, "#agents", "victim", "uptime"),
            )
            assert frozen is not None
            t0, ticks0 = time.monotonic(), app.ticks
            await until(
                pilot, lambda: time.monotonic() > t0 + 2.5 and app.ticks > ticks0 + 5, "time"
            )
            assert view.uptime_s(time.monotonic()) == frozen
            assert cell(app, "#agents", "victim", "uptime") == shown

            leaver = AgentBase("leaver", "brief", mesh_home, heartbeat_s=0)
            try:
                await until(
                    pilot, lambda: cell(app, "#agents", "leaver", "status") == "active", "join"
                )
            finally:
                leaver.close()
            await until(
                pilot, lambda: cell(app, "#agents", "leaver", "status") == "left", "the leave"
            )
            assert cell(app, "#agents", "leaver", "pid") == "-"
            table = app.query_one("#agents", DataTable)
            order = [str(k.value) for k in table.rows]
            statuses = [cell(app, "#agents", n, "status") for n in order]
            rank = {"active": 0, "inactive": 1, "left": 2}
            assert [rank[s] for s in statuses] == sorted(rank[s] for s in statuses)
            assert "heartbeats" in screen_text(app)  # the counters' meaning is on screen
            await pilot.press("q")

    asyncio.run(scenario())


LONG_BODY = "".join(f"{i:03d}-" for i in range(60))  # 240 characters, each position readable


@pytest.mark.parametrize(
    ("size", "min_agent_rows", "min_body"),
    [((80, 24), 4, 25), ((100, 30), 8, 45), ((160, 45), 13, 70), ((200, 50), 13, 90)],
)
def test_monitor_layout_fits_terminal(
    mesh_home: Path,
    spawn: Spawner,
    size: tuple[int, int],
    min_agent_rows: int,
    min_body: int,
) -> None:
    """From 80x24 to 200x50: no sideways scrolling, the agent table shows many rows on tall
    terminals (13 at 45 lines), the feed keeps rows, and the body gets the spare width."""
    spawn.python(ECHO_AGENT, "alpha", "0.2")
    wait_for(lambda: "alpha" in active_agents(mesh_home), DEADLINE_S)
    home = MeshHome.open(mesh_home)
    workers = [AgentBase(f"worker-{i:02d}", "w", mesh_home, heartbeat_s=0) for i in range(12)]
    try:
        with MeshClient("tester") as client:
            for _ in range(3):
                client.send_message("alpha", LONG_BODY, msg_type="note")

        async def scenario() -> None:
            app = MonitorApp(home, refresh_s=0.1, human_name="human-t")
            async with app.run_test(size=size) as pilot:
                feed, agents = app.feed, app.query_one("#agents", DataTable)
                await until(pilot, lambda: feed.row_count == 3, "the messages")
                await until(pilot, lambda: agents.row_count >= 13, "the agents")
                await refreshes(pilot, app, 2)
                text = screen_text(app)
                body_width = feed.columns["body"].width  # type: ignore[index]
                assert body_width >= min_body
                assert LONG_BODY[: body_width - 1] in text
                assert feed.max_scroll_x == 0
                assert agents.max_scroll_x == 0
                visible_agent_rows = agents.size.height - 1  # minus the header row
                assert visible_agent_rows >= min(min_agent_rows, agents.row_count)
                assert sum(f"worker-{i:02d}" in text for i in range(12)) + 1 >= min_agent_rows
                assert feed.size.height - 1 >= 3  # the feed keeps room for messages
                await pilot.press("q")

        asyncio.run(scenario())
    finally:
        for worker in workers:
            worker.close()


def test_monitor_compose_send_reply_broadcast(
    mesh_home: Path, spawn: Spawner, tmp_path: Path
) -> None:
    """From the dashboard a person sends to an agent, replies to the selected message and
    broadcasts, as a named agent joined on the first send; each arrives at the real agents
    (their own records show it); an unknown name, an agent that is not reading (killed) or a
    too-large body is shown in the form, which stays open; on exit the person's agent leaves
    the registry."""
    rec_a, rec_b = tmp_path / "alpha.jsonl", tmp_path / "beta.jsonl"
    spawn.python(RECORD_AGENT, "alpha", str(rec_a))
    spawn.python(RECORD_AGENT, "beta", str(rec_b))
    gamma = spawn.python(RECORD_AGENT, "gamma", str(tmp_path / "gamma.jsonl"))
    wait_for(lambda: {"alpha", "beta", "gamma"} <= active_agents(mesh_home), DEADLINE_S)
    os.kill(gamma.pid, signal.SIGKILL)
    gamma.wait(timeout=DEADLINE_S)
    home = MeshHome.open(mesh_home)
    me = "human-tester"
    LIMIT = 4096  # a small limit for this agent: a 16 MiB body would only be slow to type

    async def write(pilot: Pilot[None], app: MonitorApp, body: str, typed: bool = False) -> None:
        await until(pilot, lambda: isinstance(app.screen, ComposeScreen), "the compose form")
        box = app.screen.query_one("#compose-body", TextArea)
        box.focus()
        if typed:
            await pilot.press(*body)  # key by key, as a person types (slow under the pilot)
        else:
            box.text = body

    def form_error(app: MonitorApp) -> str:
        return app.screen.error if isinstance(app.screen, ComposeScreen) else ""

    async def scenario() -> None:
        app = MonitorApp(home, refresh_s=0.1, human_name=me, max_body_bytes=LIMIT)
        async with app.run_test(size=(140, 40)) as pilot:
            await until(pilot, lambda: app.ticks > 1, "the first refresh")
            assert me not in active_agents(mesh_home)  # watching registers nothing

            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, ComposeScreen), "the form")
            await pilot.press(*"alpha")
            await write(pilot, app, "hi [b]x[/b]")
            await pilot.press("ctrl+s")
            await until(
                pilot,
                lambda: any(
                    r["from"] == me and r["body"] == "hi [b]x[/b]" for r in recorded(rec_a)
                ),
                "alpha's record of the message",
            )
            assert recorded(rec_a)[0]["type"] == "question"
            assert me in active_agents(mesh_home)
            assert "sent" in app.last_outcome

            # alpha answered; select its answer in the feed and reply to it.
            feed = app.feed

            def answer_id() -> str:
                for r in app.view.traffic:
                    if r.get("from") == "alpha" and r.get("to") == me:
                        return str(r["id"])
                return ""

            await until(pilot, lambda: answer_id() in feed.rows, "alpha's answer in the feed")
            # Its answer, addressed to the person, also pops up.
            await until(
                pilot, lambda: "alpha (response): noted: hi [b]x[/b]" in app.told, "the pop-up"
            )
            feed.move_cursor(row=feed.get_row_index(answer_id()))
            await pilot.press("r")
            await write(pilot, app, "thanks alpha", typed=True)
            await pilot.press("ctrl+s")
            await until(
                pilot,
                lambda: any(r["re"] == answer_id() for r in recorded(rec_a)),
                "the reply at alpha",
            )
            reply = next(r for r in recorded(rec_a) if r["re"] == answer_id())
            assert (reply["from"], reply["body"], reply["type"]) == (me, "thanks alpha", "response")

            await pilot.press("b")
            await write(pilot, app, "standup now")
            await pilot.press("ctrl+s")
            for path in (rec_a, rec_b):
                await until(
                    pilot,
                    lambda p=path: any(
                        r["body"] == "standup now" and r["to"] == "" for r in recorded(p)
                    ),
                    f"the broadcast at {path.stem}",
                )
            assert "delivered to 2" in app.last_outcome

            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, ComposeScreen), "the form")
            await pilot.press(*"nobody")
            await write(pilot, app, "anyone?")
            await pilot.press("ctrl+s")
            await until(pilot, lambda: "no agent named nobody" in form_error(app), "the error")
            assert isinstance(app.screen, ComposeScreen)  # still open, text kept
            assert app.screen.query_one("#compose-body", TextArea).text == "anyone?"
            assert "no agent named nobody" in screen_text(app)
            to_box = app.screen.query_one("#compose-to", Input)
            to_box.value = "gamma"  # killed: nobody reads its pipe (or a joiner swept its entry)
            await pilot.press("ctrl+s")
            await until(
                pilot,
                lambda: any(
                    text in form_error(app)
                    for text in ("gamma is not reading", "no agent named gamma is registered")
                ),
                "offline",
            )
            to_box.value = "alpha"
            app.screen.query_one("#compose-body", TextArea).text = "x" * (LIMIT + 1)
            await pilot.press("ctrl+s")
            await until(pilot, lambda: f"limit is {LIMIT}" in form_error(app), "the size error")
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, ComposeScreen), "form closed")
            assert not any(len(r["body"]) > LIMIT for r in recorded(rec_a))
            await pilot.press("q")
        assert me not in active_agents(mesh_home)  # left cleanly on exit

    asyncio.run(scenario())


def test_monitor_compose_name_taken_is_shown(mesh_home: Path, spawn: Spawner) -> None:
    """Sending as a name a live agent holds shows why in the form (and how to pick another)."""
    taken = spawn.python(ECHO_AGENT, "taken", "0.2")
    wait_for(lambda: "taken" in active_agents(mesh_home), DEADLINE_S)
    home = MeshHome.open(mesh_home)

    async def scenario() -> None:
        app = MonitorApp(home, refresh_s=0.1, human_name="taken")
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("b")
            await until(pilot, lambda: isinstance(app.screen, ComposeScreen), "the form")
            app.screen.query_one("#compose-body", TextArea).text = "hello all"
            await pilot.press("ctrl+s")
            await until(
                pilot,
                lambda: (
                    isinstance(app.screen, ComposeScreen)
                    and f"held by live process {taken.pid}" in app.screen.error
                ),
                "the name-taken error",
            )
            assert not app.human.is_joined
            await pilot.press("escape")
            await pilot.press("q")
        assert "taken" in active_agents(mesh_home)  # the real holder is untouched

    asyncio.run(scenario())


def test_monitor_rejects_bad_as_name(mesh_home: Path) -> None:
    """`monitor --as` with an invalid agent name is a one-line usage error (exit 2)."""
    result = run_cli("monitor", "--as", "not a name!")
    assert result.returncode == 2
    assert "--as 'not a name!' is not a valid agent name" in result.stderr
    assert "Traceback" not in result.stderr
