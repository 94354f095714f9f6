"""A send that caches a peer's route while the router thread changes its record.

``MeshClient._route_to`` reads the peer record and then stores the route it derives.
If the router thread applies the peer's join frame (new record, cached route dropped)
between the read and the store, the route of the *old* record must not stay cached:
every later send would obey the old record (here: a body limit the peer no longer has,
so the peer drops the message and the sender is told it was delivered).

The interleaving is made exact, not timed: the sender's peer table is a dict whose
first ``get`` of the peer, on the sending thread, restarts the peer and waits until the
router thread has stored its new record before it returns the old one.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipemesh import MessageTooLarge
from pipemesh.registry import AgentRecord
from tests.conftest import wait_for
from tests.integration.keeper import Keeper

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _default_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPEMESH_FRAMES", raising=False)  # the shipped default: binary


class _RestartOnFirstGet(dict[str, AgentRecord]):
    """The peer table; the sending thread's first get of ``name`` runs ``between`` first."""

    def __init__(self, peers: dict[str, AgentRecord], name: str, between: object) -> None:
        super().__init__(peers)
        self.name = name
        self.between = between
        self.sender_thread = threading.get_ident()
        self.fired = False

    def get(self, key: str, default: AgentRecord | None = None) -> AgentRecord | None:  # type: ignore[override]
        value = super().get(key, default)
        if key == self.name and not self.fired and threading.get_ident() == self.sender_thread:
            self.fired = True
            self.between()  # type: ignore[operator]
        return value


def test_route_cached_while_the_peer_restarts_follows_its_new_record(mesh_home: Path) -> None:
    """After the race, a 2000-byte send to the peer now limited to 1000 raises MessageTooLarge."""
    started: list[Keeper] = []
    with Keeper("sender") as s:
        p = Keeper("peer")
        started.append(p)
        try:
            wait_for(lambda: s.peers().get("peer") is not None)
            assert "peer" not in s._routes  # nothing sent yet: the first send caches it

            def restart_peer() -> None:
                p.close()
                # (1000, not less: an agent's own join frame, its registry record, must fit.)
                started.append(Keeper("peer", max_body_bytes=1000))
                wait_for(
                    lambda: (
                        (rec := dict.get(s._peers, "peer")) is not None
                        and rec.max_body_bytes == 1000
                    )
                )  # the router thread applied the join frame

            s._peers = _RestartOnFirstGet(s._peers, "peer", restart_peer)
            s.send_message("peer", "small")  # caches the route while the peer restarts
            assert s._peers.fired
            p2 = started[-1]
            wait_for(lambda: p2.bodies() == ["small"])
            with pytest.raises(MessageTooLarge, match="accepts at most 1000"):
                s.send_message("peer", "y" * 2000)
        finally:
            for agent in started:
                agent.close()
