"""What senders see when NATS or a gateway is away, and hostile input from NATS."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipemesh.registry import Registry
from tests.conftest import wait_for
from tests.gateway.conftest import Cluster

pytestmark = [pytest.mark.gateway, pytest.mark.timeout(240)]

# argv: nats_url — publishes hostile messages on host a's behalf, then one good one.
HOSTILE = r"""
import asyncio, sys
import nats
from pipemesh import codec
from pipemesh.wire import Frame

def frame(sender, to, body, msg_id):
    return codec.encode_binary(Frame(sender, to, 1, "directive", msg_id, body))

async def main():
    nc = await nats.connect(sys.argv[1])
    direct = "pm.t.m.a.b.bob"
    await nc.publish(direct, b"\xff\x00garbage\x01" * 50)                 # garbage bytes
    await nc.publish(direct, frame("mallory", "bob", b"x" * 100_000, "big1"))  # oversized
    await nc.publish(direct, frame("carol@b", "bob", b"spoof", "sp1"))    # FROM claims a name@host
    await nc.publish("pm.t.m.b.b.bob", frame("carol", "bob", b"loop", "sp2"))  # claims host b
    await nc.publish(direct, frame("mallory", "eve", b"wrong to", "wt1"))  # TO != subject
    await nc.publish("pm.t.hb.a", b"{not json")                            # bad heartbeat
    await nc.publish(direct, frame("bob", "bob", b"not local bob", "ok1"))  # FROM a local name
    await nc.flush()
    await nc.close()

asyncio.run(main())
"""


def test_nats_down_or_gateway_dead_gives_senders_clear_answers(cluster: Cluster) -> None:
    """NATS down: AgentOffline to a remote agent, queued to a durable one, delivered on return."""
    a, b = cluster.hosts
    a.start_gateway()
    b.start_gateway()
    b.agent("bob")
    b.agent("dave", durable=True)
    alice = a.agent("alice")
    a.wait_remote("bob@b")
    a.wait_remote("dave@b")
    assert alice.command({"op": "send", "to": "bob@b", "body": "before"})["ok"]
    # Plain sends are at-most-once across the bridge too: let this one land first.
    wait_for(lambda: b.records("bob"), 30, 0.05)

    cluster.stop_nats()
    wait_for(lambda: a.registry().get("bob@b", {}).get("status") == "inactive", 30, 0.05)
    r = alice.command({"op": "send", "to": "bob@b", "body": "while down"})
    assert r["ok"] is False, r
    assert r["error"] == "AgentOffline", r
    assert "bob@b" in str(r["message"]), r
    r = alice.command({"op": "send", "to": "dave@b", "body": "queued while down"})
    assert r["ok"], r
    assert r["delivery"] == "queued", r

    cluster.start_nats()
    a.wait_remote("bob@b", 60)
    wait_for(lambda: any(m["body"] == "queued while down" for m in b.records("dave")), 60, 0.1)
    assert alice.command({"op": "send", "to": "bob@b", "body": "after"})["ok"]
    wait_for(lambda: any(m["body"] == "after" for m in b.records("bob")), 30, 0.05)
    assert [m["body"] for m in b.records("bob")] == ["before", "after"]

    # The local gateway dies: its entries are dead with it.
    a.kill_gateway()
    r = alice.command({"op": "send", "to": "bob@b", "body": "gateway dead"})
    assert r["ok"] is False, r
    assert r["error"] == "AgentOffline", r
    # 'pipemesh gc' sweeps them as any dead agent's: the durable one stays (it queues).
    subprocess.run(
        [sys.executable, "-m", "pipemesh", "gc"],
        env={**os.environ, "PIPEMESH_HOME": str(a.home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    home = a.home
    entries = Registry(home / "agent_registry.json", home / "agent_registry.json.lock").read()
    assert "bob@b" not in entries
    assert entries["dave@b"].status == "inactive"  # read with liveness: its pid is dead
    assert not (home / "pipes" / "bob@b.public").exists()


def test_hostile_nats_messages_are_logged_and_dropped(cluster: Cluster) -> None:
    """Garbage, oversized, spoofed FROM/origin, wrong TO, bad heartbeat: dropped, logged, alive."""
    a, b = cluster.hosts
    b.start_gateway("--max-message-bytes", "65536")
    b.agent("bob")
    wait_for(lambda: "connected to" in b.gateway_output(), 60, 0.05)  # subscribed
    a.run_python(HOSTILE, a.nats_url)
    wait_for(lambda: b.records("bob"), 30, 0.05)
    reasons = ("malformed", "oversized", "spoofed FROM", "spoofed origin", "bad heartbeat")
    # Each subscription has its own task: the drops may be logged after bob's message.
    wait_for(lambda: all(f"dropped ({r})" in b.gateway_output() for r in reasons), 30, 0.05)
    assert b.gateway_proc is not None
    assert b.gateway_proc.poll() is None
    # Only the well-formed one arrived, and FROM names its host: no local name is spoofed.
    assert [(m["sender"], m["body"]) for m in b.records("bob")] == [("bob@a", "not local bob")]


def test_config_file_must_be_private(tmp_path: object) -> None:
    """A credentials file readable by others is refused with a one-line error, exit 2."""
    path = os.path.join(str(tmp_path), "gw.toml")
    with open(path, "w") as f:
        f.write('[nats]\nuser = "u"\npassword = "p"\n')
    os.chmod(path, 0o644)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipemesh",
            "gateway",
            "--nats",
            "nats://127.0.0.1:1",
            "--config",
            path,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "mode 0644" in done.stderr
    assert f"chmod 600 {path}" in done.stderr
    assert "Traceback" not in done.stderr


def test_gateways_log_in_with_credentials_from_the_config_file(cluster: Cluster) -> None:
    """A server wanting user/password: a wrong one is refused (and said), the right one bridges."""
    a, b = cluster.hosts
    cluster.stop_nats()
    cluster.nats_extra = ["--user", "gw", "--pass", "s3cret-pw"]
    cluster.start_nats()
    good = cluster.tmp / "good.toml"
    good.write_text('[nats]\nuser = "gw"\npassword = "s3cret-pw"\n')
    bad = cluster.tmp / "bad.toml"
    bad.write_text('[nats]\nuser = "gw"\npassword = "wrong"\n')
    for path in (good, bad):
        os.chmod(path, 0o600)
    a.start_gateway("--config", str(bad))
    wait_for(lambda: "cannot reach NATS" in a.gateway_output(), 30, 0.05)
    assert "s3cret" not in a.gateway_output()
    a.stop_gateway()
    a.start_gateway("--config", str(good))
    b.start_gateway("--config", str(good))
    b.agent("bob")
    alice = a.agent("alice")
    a.wait_remote("bob@b")
    assert alice.command({"op": "send", "to": "bob@b", "body": "authenticated"})["ok"]
    wait_for(lambda: b.records("bob"), 30, 0.05)


def test_a_server_without_jetstream_bridges_plain_messages_and_says_so(cluster: Cluster) -> None:
    """No JetStream: said once; plain messages cross; durable ones wait in the spool here."""
    a, b = cluster.hosts
    cluster.stop_nats()
    cluster.jetstream = False
    cluster.start_nats()
    a.start_gateway()
    b.start_gateway()
    b.agent("bob")
    b.agent("dave", durable=True)
    alice = a.agent("alice")
    a.wait_remote("bob@b")
    a.wait_remote("dave@b")
    assert "start nats-server with -js" in a.gateway_output()
    assert alice.command({"op": "send", "to": "bob@b", "body": "plain"})["ok"]
    wait_for(lambda: b.records("bob"), 30, 0.05)
    r = alice.command({"op": "send", "to": "dave@b", "body": "kept"})
    assert r["ok"], r
    spool = a.home / "spool" / "dave@b"
    wait_for(lambda: spool.is_dir() and any(spool.glob("*.msg")), 30, 0.05)
    assert a.gateway_proc is not None
    assert a.gateway_proc.poll() is None


def test_gateway_stopped_cleanly_keeps_durable_entries_and_forwards_their_queue(
    cluster: Cluster,
) -> None:
    """SIGTERM: plain remote entries go, durable ones stay inactive and queue; a restart sends."""
    a, b = cluster.hosts
    a.start_gateway()
    b.start_gateway()
    b.agent("bob")
    b.agent("dave", durable=True)
    alice = a.agent("alice")
    a.wait_remote("bob@b")
    a.wait_remote("dave@b")
    a.stop_gateway()
    assert a.gateway_proc is not None
    assert a.gateway_proc.returncode == 0, a.gateway_output()
    entries = a.registry()
    assert "bob@b" not in entries
    assert entries["dave@b"]["status"] == "inactive"
    r = alice.command({"op": "send", "to": "bob@b", "body": "gone"})
    assert r["error"] == "UnknownAgent", r
    r = alice.command({"op": "send", "to": "dave@b", "body": "kept while stopped"})
    assert r["delivery"] == "queued", r
    a.start_gateway()
    wait_for(lambda: any(m["body"] == "kept while stopped" for m in b.records("dave")), 60, 0.1)
    assert [m["body"] for m in b.records("dave")] == ["kept while stopped"]


# argv: nats_url — one good message to bob on host b from host a, which has no gateway.
ONE_FROM_A = r"""
import asyncio, sys
import nats
from pipemesh import codec
from pipemesh.wire import Frame

async def main():
    nc = await nats.connect(sys.argv[1])
    frame = codec.encode_binary(Frame("mallory", "bob", 1, "directive", "g1", b"hi"))
    await nc.publish("pm.t.m.a.b.bob", frame)
    await nc.flush()
    await nc.close()

asyncio.run(main())
"""


def test_sender_of_a_host_that_never_heartbeats_goes_inactive(cluster: Cluster) -> None:
    """A sender learnt from a message alone goes inactive once its host stays silent.

    Regression: ``_know_sender`` made ``mallory@a`` active, but host a was never in
    the hosts whose silence is watched (only heartbeats put it there), so the entry
    stayed active for good: a reply to it was DELIVERED into the gateway's FIFO and
    published to nobody, where the sender should get AgentOffline.
    """
    a, b = cluster.hosts
    b.start_gateway()
    bob = b.agent("bob")
    wait_for(lambda: "connected to" in b.gateway_output(), 60, 0.05)  # subscribed
    a.run_python(ONE_FROM_A, a.nats_url)
    wait_for(lambda: [m["body"] for m in b.records("bob")] == ["hi"], 30, 0.05)
    # host_timeout is 4 heartbeats (0.3 s) + 1 s: well within the deadline.
    wait_for(lambda: b.registry().get("mallory@a", {}).get("status") == "inactive", 30, 0.1)
    r = bob.command({"op": "send", "to": "mallory@a", "body": "nobody there"})
    assert r["ok"] is False, r
    assert r["error"] == "AgentOffline", r


# argv: nats_url, n — heartbeats from n made-up hosts, each listing one active agent.
HOST_FLOOD = r"""
import asyncio, json, sys
import nats

async def main():
    nc = await nats.connect(sys.argv[1])
    doc = json.dumps({"v": 1, "agents": {"x": {"active": True}}}).encode()
    for i in range(int(sys.argv[2])):
        await nc.publish(f"pm.t.hb.h{i}", doc)
    await nc.flush()
    await nc.close()

asyncio.run(main())
"""


def test_a_flood_of_hosts_is_bounded(cluster: Cluster) -> None:
    """Heartbeats from ever more hosts stop making entries, FIFOs and threads at a limit.

    Regression: every new host name got its dict slots and an entry per agent (each
    a FIFO and a reader thread) without any bound on the number of hosts.
    """
    from pipemesh.gateway.liveness import MAX_REMOTE_HOSTS

    a, b = cluster.hosts
    b.start_gateway()
    wait_for(lambda: "connected to" in b.gateway_output(), 60, 0.05)  # subscribed
    a.run_python(HOST_FLOOD, a.nats_url, str(MAX_REMOTE_HOSTS + 40))
    wait_for(lambda: "dropped (too many hosts)" in b.gateway_output(), 60, 0.1)
    wait_for(lambda: len(b.registry()) >= MAX_REMOTE_HOSTS, 60, 0.1)
    assert b.gateway_proc is not None
    assert b.gateway_proc.poll() is None
    assert len(b.registry()) == MAX_REMOTE_HOSTS
    fifos = [p for p in (b.home / "pipes").iterdir() if "@h" in p.name]
    assert len(fifos) <= MAX_REMOTE_HOSTS


# argv: nats_url — a body-file reference (FILE:, LEN:0) from host a, then a good message.
FILE_REF_FROM_A = r"""
import asyncio, sys
import nats
from pipemesh import codec
from pipemesh.wire import Frame

async def main():
    nc = await nats.connect(sys.argv[1])
    ref = Frame("mallory", "bob", 1, "directive", "f1", b"", file_bytes=5)
    await nc.publish("pm.t.m.a.b.bob", codec.encode_binary(ref))
    good = Frame("mallory", "bob", 1, "directive", "g1", b"ok")
    await nc.publish("pm.t.m.a.b.bob", codec.encode_binary(good))
    await nc.flush()
    await nc.close()

asyncio.run(main())
"""


def test_a_body_file_reference_from_nats_is_dropped(cluster: Cluster) -> None:
    """A frame whose body is in a file (on the sender's host) cannot cross: dropped, logged.

    Regression: its ``FILE:`` was not checked, and the frame was re-encoded without it,
    so the local agent got the message with an empty body, as if it had been sent so.
    """
    a, b = cluster.hosts
    b.start_gateway()
    b.agent("bob")
    wait_for(lambda: "connected to" in b.gateway_output(), 60, 0.05)  # subscribed
    a.run_python(FILE_REF_FROM_A, a.nats_url)
    wait_for(lambda: any(m["body"] == "ok" for m in b.records("bob")), 30, 0.05)
    wait_for(lambda: "dropped (malformed)" in b.gateway_output(), 30, 0.05)
    assert [m["body"] for m in b.records("bob")] == ["ok"]


def test_a_receiving_gateways_size_limit_is_what_senders_see(cluster: Cluster) -> None:
    """A body over the receiving gateway's --max-message-bytes is refused at the sender.

    Regression: the heartbeat advertised each agent's own body limit (16 MiB), so
    host a's entries allowed ~1 MiB (its NATS max_payload); host b's gateway then
    dropped the frame as oversized after alice was told "delivered" (a durable one
    was even terminated in JetStream after its sender was told it was safe).
    """
    a, b = cluster.hosts
    a.start_gateway()
    b.start_gateway("--max-message-bytes", "65536")
    b.agent("bob")
    alice = a.agent("alice")
    a.wait_remote("bob@b")
    limit = int(str(a.registry()["bob@b"]["max_body_bytes"]))
    assert limit <= 65536 - 4096, limit
    r = alice.command({"op": "send", "to": "bob@b", "body": "x" * 100_000})
    assert r["ok"] is False, r
    assert r["error"] == "MessageTooLarge", r
    assert alice.command({"op": "send", "to": "bob@b", "body": "y" * limit})["ok"]
    wait_for(lambda: [len(str(m["body"])) for m in b.records("bob")] == [limit], 30, 0.05)
