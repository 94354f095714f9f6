"""Durable remote peers across the bridge: JetStream, and gateways or NATS dying mid-stream.

Reconciled from the agents' own records: what the sender's ``send()`` returned
(IDs), and what the receiver's handler wrote (one line per handled message).
"""

from __future__ import annotations

import collections

import pytest

from tests.conftest import wait_for
from tests.gateway.conftest import Cluster, Host

pytestmark = [pytest.mark.gateway, pytest.mark.timeout(240)]


def _handled(host: Host, name: str, prefix: str) -> collections.Counter[str]:
    return collections.Counter(
        str(m["body"]) for m in host.records(name) if str(m["body"]).startswith(prefix)
    )


def _all_once(host: Host, name: str, prefix: str, n: int) -> bool:
    got = _handled(host, name, prefix)
    return len(got) >= n


def test_durable_remote_peer_gets_messages_while_it_is_down(cluster: Cluster) -> None:
    """To a durable remote agent: delivered while it runs, queued while it is down, each once."""
    a, b = cluster.hosts
    a.start_gateway()
    b.start_gateway()
    bob = b.agent("bob", durable=True)
    alice = a.agent("alice")
    a.wait_remote("bob@b")
    r = alice.command({"op": "burst", "to": "bob@b", "prefix": "m", "count": 100})
    assert r["counts"] == {"delivered": 100}, r
    wait_for(lambda: _all_once(b, "bob", "m", 100), 60, 0.1)
    assert bob.command({"op": "quit"})["ok"]
    bob.popen.wait(timeout=30)
    # bob is down; its entry on a stays (durable): sends are accepted and kept by JetStream.
    r = alice.command({"op": "burst", "to": "bob@b", "prefix": "q", "count": 50})
    assert sum(r["counts"].values()) == 50, r  # type: ignore[union-attr]
    assert set(r["counts"]) <= {"delivered", "queued"}, r  # type: ignore[arg-type]
    # A broadcast meanwhile is queued for it too, as on one host.
    assert alice.command({"op": "broadcast", "body": "q-broadcast"})["ok"]
    spool = b.home / "spool" / "bob"
    wait_for(lambda: any(b"q-broadcast" in p.read_bytes() for p in spool.glob("*.msg")), 60, 0.1)
    b.agent("bob", durable=True)
    wait_for(lambda: _all_once(b, "bob", "q", 51), 60, 0.1)
    got = _handled(b, "bob", "m") + _handled(b, "bob", "q")
    assert len(got) == 151
    assert max(got.values()) == 1, [k for k, v in got.items() if v > 1]


@pytest.mark.parametrize("victim", ["receiver", "sender"])
def test_gateway_sigkilled_mid_stream_loses_and_duplicates_nothing(
    cluster: Cluster, victim: str
) -> None:
    """A gateway SIGKILLed amid a durable stream and restarted: 0 lost, 0 handled twice."""
    a, b = cluster.hosts
    a.start_gateway()
    b.start_gateway()
    b.agent("bob", durable=True)
    alice = a.agent("alice")
    a.wait_remote("bob@b")
    b.wait_remote("alice@a")
    host = b if victim == "receiver" else a
    total = 0
    for round_no in range(3):
        proc = alice.popen
        assert proc.stdin is not None
        # A burst in flight while the gateway dies: send, kill after it started, restart.
        import json

        proc.stdin.write(
            json.dumps(
                {
                    "op": "burst",
                    "to": "bob@b",
                    "prefix": f"k{round_no}-",
                    "count": 300,
                    "pause": 0.002,
                }
            )
            + "\n"
        )
        proc.stdin.flush()
        wait_for(lambda r=round_no: _handled(b, "bob", f"k{r}-"), 60, 0.02)
        host.kill_gateway()
        host.start_gateway()
        r = alice.read_line(120)
        assert r["ok"], r
        counts = r["counts"]
        assert isinstance(counts, dict)
        assert set(counts) <= {"delivered", "queued"}, counts
        total += 300
        a.wait_remote("bob@b", 60)
    wait_for(lambda: len(_handled(b, "bob", "k")) >= total, 120, 0.2)
    got = _handled(b, "bob", "k")
    assert len(got) == total
    assert max(got.values()) == 1, [k for k, v in got.items() if v > 1]


def test_nats_restarted_mid_stream_durable_loses_nothing(cluster: Cluster) -> None:
    """NATS killed and restarted amid a durable stream: the gateways reconnect, 0 lost."""
    a, b = cluster.hosts
    a.start_gateway()
    b.start_gateway()
    b.agent("bob", durable=True)
    alice = a.agent("alice")
    a.wait_remote("bob@b")
    b.wait_remote("alice@a")
    proc = alice.popen
    assert proc.stdin is not None
    import json

    proc.stdin.write(
        json.dumps({"op": "burst", "to": "bob@b", "prefix": "n", "count": 600, "pause": 0.003})
        + "\n"
    )
    proc.stdin.flush()
    wait_for(lambda: len(_handled(b, "bob", "n")) >= 50, 60, 0.02)
    cluster.stop_nats()
    cluster.start_nats()
    r = alice.read_line(180)
    assert r["ok"], r
    counts = r["counts"]
    assert isinstance(counts, dict)
    assert set(counts) <= {"delivered", "queued"}, counts
    wait_for(lambda: len(_handled(b, "bob", "n")) >= 600, 120, 0.2)
    got = _handled(b, "bob", "n")
    assert len(got) == 600
    assert max(got.values()) == 1, [k for k, v in got.items() if v > 1]
