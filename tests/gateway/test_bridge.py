"""Two (or three) hosts bridged through a NATS server: messages, broadcast, ask/reply, acks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import wait_for
from tests.gateway.conftest import Cluster

pytestmark = [pytest.mark.gateway, pytest.mark.timeout(180)]


def test_send_both_ways_reply_and_priority(cluster: Cluster) -> None:
    """A message crosses each way with its priority, FROM reads sender@origin, ask is answered."""
    a, b = cluster.hosts
    a.start_gateway()
    b.start_gateway()
    alice = a.agent("alice")
    bob = b.agent("bob")
    a.wait_remote("bob@b")
    b.wait_remote("alice@a")

    shown = subprocess.run(
        [sys.executable, "-m", "pipemesh", "--json", "agents"],
        env={**os.environ, "PIPEMESH_HOME": str(a.home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "bob@b" in shown, shown
    assert "active" in shown, shown

    r = alice.command({"op": "send", "to": "bob@b", "body": "hello bob", "priority": 3})
    assert r["ok"], r
    r = bob.command({"op": "send", "to": "alice@a", "body": "hello alice", "priority": 0})
    assert r["ok"], r
    wait_for(lambda: b.records("bob"), 30)
    wait_for(lambda: a.records("alice"), 30)
    got_b, got_a = b.records("bob")[0], a.records("alice")[0]
    assert (got_b["sender"], got_b["body"], got_b["priority"]) == ("alice@a", "hello bob", 3)
    assert (got_a["sender"], got_a["body"], got_a["priority"]) == ("bob@b", "hello alice", 0)

    sent = subprocess.run(
        [sys.executable, "-m", "pipemesh", "send", "bob@b", "via the CLI"],
        env={**os.environ, "PIPEMESH_HOME": str(a.home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: any(m["body"] == "via the CLI" for m in b.records("bob")), 30)

    r = alice.command({"op": "ask", "to": "bob@b", "body": "ping", "timeout": 30})
    assert r == {"ok": True, "body": "re:ping", "sender": "bob@b"}

    # Over the NATS payload limit (1 MiB by default): refused before it leaves, as locally.
    r = alice.command({"op": "send", "to": "bob@b", "body": "x" * (1 << 20)})
    assert r["ok"] is False, r
    assert r["error"] == "MessageTooLarge", r

    r = alice.command({"op": "send", "to": "bob@b", "body": "acked", "ack": True})
    assert r["ok"], r
    assert r["acked"], r


@pytest.mark.hosts(3)
def test_broadcast_reaches_every_host_once(cluster: Cluster) -> None:
    """A broadcast reaches each agent on the other hosts once and never comes back."""
    a, b, c = cluster.hosts
    for h in (a, b, c):
        h.start_gateway()
    alice, alice2 = a.agent("alice"), a.agent("alice2")
    bob, bob2 = b.agent("bob"), b.agent("bob2")
    carol = c.agent("carol")
    for full in ("bob@b", "bob2@b", "carol@c"):
        a.wait_remote(full)
    for h, full in ((b, "alice@a"), (c, "alice@a")):
        h.wait_remote(full)
    r = alice.command({"op": "broadcast", "body": "to all"})
    assert r["ok"], r

    def everyone() -> bool:
        return all(
            any(m["body"] == "to all" for m in h.records(n))
            for h, n in ((a, "alice2"), (b, "bob"), (b, "bob2"), (c, "carol"))
        )

    wait_for(everyone, 30)
    # Each once (three remote entries on host a wrote to one gateway: one publish).
    for h, n in ((a, "alice2"), (b, "bob"), (b, "bob2"), (c, "carol")):
        copies = [m for m in h.records(n) if m["body"] == "to all"]
        assert len(copies) == 1, (n, copies)
    # Never back to its sender; a second broadcast from b reaches a and c once too.
    r = bob.command({"op": "broadcast", "body": "from b"})
    assert r["ok"], r
    wait_for(lambda: any(m["body"] == "from b" for m in c.records("carol")), 30)
    wait_for(lambda: any(m["body"] == "from b" for m in a.records("alice")), 30)
    assert not any(m["body"] == "to all" for m in a.records("alice"))
    assert [m["sender"] for m in c.records("carol") if m["body"] == "from b"] == ["bob@b"]
    assert not any(m["body"] == "from b" for m in b.records("bob"))
    del alice2, bob2, carol
