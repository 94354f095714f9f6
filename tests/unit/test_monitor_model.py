"""The dashboard's pure parts: agent states and uptime, column layout (no terminal, no pipes)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("textual")

from pipemesh.home import MeshHome
from pipemesh.monitor._tables import SCROLLBAR, agent_columns, feed_columns
from pipemesh.monitor.data import ACTIVE, INACTIVE, LEFT, AgentView, MeshView
from pipemesh.monitor.human import default_human_name
from pipemesh.wire import is_valid_name


class TestAgentView:
    def test_agent_view_unregistered_is_left(self) -> None:
        """A name seen only in the logs is `left` with no uptime, never `active`."""
        view = AgentView("ghost")
        assert view.status == LEFT
        assert view.uptime_s(100.0) is None

    def test_agent_view_uptime_freezes_when_it_stops(self) -> None:
        """Uptime advances from the last heartbeat while active and freezes at the stop."""
        view = AgentView("a", heartbeat={"uptime_s": 10.0}, beat_at=100.0)
        view.set_status(ACTIVE, 100.0)
        assert view.uptime_s(105.0) == 15.0
        view.set_status(INACTIVE, 106.0)
        assert view.uptime_s(500.0) == 16.0
        view.set_status(LEFT, 600.0)
        assert view.uptime_s(900.0) == 16.0

    def test_agent_view_dead_at_first_sight_has_no_uptime(self) -> None:
        """An agent already dead when first seen has no known uptime (not its registry age)."""
        view = AgentView("a", registered_age_s=3600.0)
        view.set_status(INACTIVE, 1.0)
        assert view.uptime_s(2.0) is None


@pytest.mark.parametrize("width", [80, 90, 100, 120, 140, 160, 189, 190, 200, 250])
def test_columns_fit_width(width: int) -> None:
    """Every column set fits its width (cells, padding, scrollbar); the body fills the rest."""
    for cols in (agent_columns(width), feed_columns(width)):
        assert sum(c.width + 2 for c in cols) + SCROLLBAR <= width
    feed = feed_columns(width)
    assert feed[-1].key == "body"
    assert feed[-1].width >= 28
    assert sum(c.width + 2 for c in feed) + SCROLLBAR == width  # the body takes all the rest


def test_default_human_name_is_a_valid_agent_name() -> None:
    """`human-<login>` is always a valid agent name."""
    name = default_human_name()
    assert name.startswith("human-")
    assert is_valid_name(name)


def test_mesh_view_keeps_recent_left_agents_only(tmp_path: Path) -> None:
    """Short-lived senders do not pile up: the `max_left` most recently seen left agents stay."""
    view = MeshView(MeshHome.open(tmp_path / "mesh"), max_left=3)
    try:
        for i in range(6):
            view.agents[f"cli-{i}"] = AgentView(f"cli-{i}", seen_at=float(i))
        view.refresh()
        assert sorted(view.agents) == ["cli-3", "cli-4", "cli-5"]
    finally:
        view.close()
