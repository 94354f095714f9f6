"""The registry under faults: gc racing joins, a deleted or hostile registry file, bad lock
paths, read-only and full filesystems, pipes removed under live agents, dead entries swept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipemesh import AgentBase, MeshClient, NameTaken, RegistryCorrupt
from pipemesh.errors import RegistryError
from pipemesh.home import MeshHome
from pipemesh.registry import Registry, pid_alive
from tests.adversarial.conftest import fill, remount_ro
from tests.conftest import Spawner, run_cli

pytestmark = pytest.mark.integration

HOLDER = """
import sys
from pipemesh import AgentBase
durable = len(sys.argv) > 2 and sys.argv[2] == "durable"
with AgentBase(sys.argv[1], "worker", heartbeat_s=0, log_messages=False, durable=durable) as a:
    print("registered", flush=True)
    for line in sys.stdin:
        if line.strip() == "recv":
            msg = a.receive(30)
            print("got " + (msg.body if msg else "nothing"), flush=True)
        else:
            break
"""

# Two of these per name take turns on it: join, hold a moment, check that the FIFO at the
# path is still the one this agent reads, leave. Prints "ok N lost M".
TURNS = """
import os, random, sys, time
from pipemesh import AgentBase, NameTaken
name, until = sys.argv[1], time.monotonic() + float(sys.argv[2])
ok = lost = 0
while time.monotonic() < until:
    try:
        agent = AgentBase(name, "turns", heartbeat_s=0, log_messages=False,
                          registry_lock_timeout_s=30)
    except NameTaken:
        time.sleep(random.random() * 0.002)
        continue
    pipe = agent.transport.path(name)
    mine = os.fstat(agent._inbox._fd).st_ino
    time.sleep(random.random() * 0.01)
    try:
        same = os.stat(pipe).st_ino == mine
    except FileNotFoundError:
        same = False
    ok, lost = (ok + 1, lost) if same else (ok, lost + 1)
    agent.close()
print(f"ok {ok} lost {lost}", flush=True)
"""

# Joins each name and dies without leaving (as SIGKILL would): dead entries and pipes stay.
VANISH = """
import os, sys
from pipemesh import AgentBase, NameTaken
for name in sys.argv[1:]:
    try:
        AgentBase(name, "vanish", heartbeat_s=0, log_messages=False)
    except NameTaken:
        pass
os._exit(0)
"""

GC_LOOP = """
import sys, time
from pipemesh.cli import main
until = time.monotonic() + float(sys.argv[1])
runs = 0
while time.monotonic() < until:
    assert main(["gc"]) == 0
    runs += 1
print(f"gc {runs}", file=sys.stderr, flush=True)
"""


def registry_of(home: Path) -> Registry:
    mesh = MeshHome.open(home)
    return Registry(mesh.registry_path, mesh.lock_path)


def start_holder(spawn: Spawner, name: str, *extra: str) -> subprocess.Popen[str]:
    proc = spawn.python(HOLDER, name, *extra, stdin=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == "registered", proc.stderr.read() if proc.stderr else line
    return proc


def holder_receives(proc: subprocess.Popen[str]) -> str:
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write("recv\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def assert_clean_error(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    """A one-line 'error:' on stderr, exit 1 or 2, no traceback."""
    assert out.returncode in (1, 2), (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: "), out.stderr
    for needle in needles:
        assert needle in out.stderr, out.stderr


class TestGcAgainstJoins:
    @pytest.mark.timeout(300)
    def test_gc_loop_never_takes_a_live_agents_pipe(self, mesh_home: Path, spawn: Spawner) -> None:
        """gc in a loop while agents take turns on names and others die holding them:
        no agent ever finds its FIFO removed or replaced while it is registered.

        Many dead entries per gc run make its unlinking take a while, so joiners of the
        same names race it (on the old code, gc unlinked after releasing the lock)."""
        seconds = "15"
        names = [f"n{i:02d}" for i in range(24)]
        contested = names[-4:]
        turns = [spawn.python(TURNS, name, seconds) for name in contested for _ in range(2)]
        gcs = spawn.python(GC_LOOP, seconds, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + float(seconds)
        rounds = 0
        while time.monotonic() < deadline and rounds < 100:
            assert spawn.python(VANISH, *names).wait(timeout=60) == 0
            rounds += 1
        assert gcs.wait(timeout=120) == 0, gcs.stderr.read() if gcs.stderr else ""
        total_ok = total_lost = 0
        for proc in turns:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            ok, lost = (int(x) for x in out.split()[1::2])
            total_ok, total_lost = total_ok + ok, total_lost + lost
        assert total_lost == 0, f"{total_lost} agents lost their pipe ({total_ok} kept it)"
        assert total_ok >= 4, "the agents must actually have taken turns"


class TestNameOwnership:
    def test_deleted_registry_does_not_free_a_live_name(
        self, mesh_home: Path, spawn: Spawner
    ) -> None:
        """With agent_registry.json deleted, a second agent cannot take a live name, senders
        still reach the holder, and gc writes the registry back from the live agents."""
        holder = start_holder(spawn, "owner")
        (mesh_home / "agent_registry.json").unlink()
        with pytest.raises(NameTaken, match=f"held by live process {holder.pid}"):
            AgentBase("owner", heartbeat_s=0, log_messages=False)
        with MeshClient("sender", log_messages=False) as c:
            c.send("owner", "still yours")
        assert holder_receives(holder) == "got still yours"
        listing = run_cli("agents")
        assert listing.returncode == 0, listing.stderr
        assert "owner" in listing.stdout
        out = run_cli("gc")
        assert out.returncode == 0, out.stderr
        doc = json.loads((mesh_home / "agent_registry.json").read_text())
        assert doc["agents"]["owner"]["pid"] == holder.pid

    def test_corrupt_registry_is_rebuilt_by_gc(self, mesh_home: Path, spawn: Spawner) -> None:
        """A garbage registry says to run 'pipemesh gc'; gc sets it aside and rebuilds it
        with the live agents and the durable agents' stop records."""
        holder = start_holder(spawn, "alive")
        AgentBase("away", durable=True, heartbeat_s=0, log_messages=False).close()
        reg = registry_of(mesh_home)
        reg.path.write_text("{not json")
        with pytest.raises(RegistryCorrupt, match="run 'pipemesh gc'"):
            reg.read()
        assert_clean_error(run_cli("agents"), "run 'pipemesh gc'")
        out = run_cli("gc")
        assert out.returncode == 0, out.stderr
        assert "moved to" in out.stdout
        assert (mesh_home / "agent_registry.json.corrupt").read_text() == "{not json"
        entries = reg.read()
        assert entries["alive"].pid == holder.pid
        assert entries["alive"].is_active
        assert entries["away"].durable
        assert not entries["away"].is_active
        with MeshClient("w", log_messages=False) as c:
            assert c.send("away", "queued for later").delivery == "queued"

    def test_closing_holder_makes_joiner_wait_not_fail(self, mesh_home: Path) -> None:
        """An agent that rejoins right after a close gets the name (the close finishes first)."""
        for _ in range(20):
            AgentBase("again", heartbeat_s=0, log_messages=False).close()
        agent = AgentBase("again", heartbeat_s=0, log_messages=False)
        try:
            assert (mesh_home / "pipes" / "again.public").exists()
        finally:
            agent.close()
        assert not (mesh_home / "names" / "again.lock").exists()


BAD_ENTRIES: dict[str, str] = {
    "pid_2_pow_31": '{"pid": 2147483648, "public_pipe": "/x"}',
    "pid_1e400": '{"pid": 1e400, "public_pipe": "/x"}',
    "pid_true": '{"pid": true, "public_pipe": "/x"}',
    "pid_float": '{"pid": 12.5, "public_pipe": "/x"}',
    "pid_start_negative": '{"pid": 1, "pid_start": -1, "public_pipe": "/x"}',
    "status_odd": '{"pid": 1, "status": "zombie", "public_pipe": "/x"}',
    "role_surrogate": '{"pid": 1, "role": "\\udc80", "public_pipe": "/x"}',
    "pipe_nested": '{"pid": 1, "public_pipe": ' + "[" * 50 + "]" * 50 + "}",
}


def write_registry(home: Path, entry_json: str) -> None:
    good = '{"pid": 1, "public_pipe": "/x", "status": "inactive"}'
    (home / "agent_registry.json").write_text(
        '{"agents": {"bad": ' + entry_json + ', "good": ' + good + '}, "version": 1}'
    )


class TestHostileRegistry:
    @pytest.mark.parametrize("entry", list(BAD_ENTRIES.values()), ids=list(BAD_ENTRIES))
    def test_bad_entry_is_skipped_everywhere_and_gc_drops_it(
        self, mesh_home: Path, entry: str
    ) -> None:
        """One out-of-range or mistyped entry: agents, send, gc and a join work and say so;
        gc drops the entry; no traceback."""
        MeshHome.open(mesh_home)
        write_registry(mesh_home, entry)
        listing = run_cli("agents")
        assert listing.returncode == 0, listing.stderr
        assert "Traceback" not in listing.stderr
        assert "malformed registry entries ignored" in listing.stderr
        assert "good" in listing.stdout
        assert_clean_error(run_cli("send", "bad", "hi"), "no agent named bad")
        with AgentBase("joiner", heartbeat_s=0, log_messages=False):
            pass
        write_registry(mesh_home, entry)
        out = run_cli("gc")
        assert out.returncode == 0, out.stderr
        assert "dropped malformed entries" in out.stdout
        doc = json.loads((mesh_home / "agent_registry.json").read_text())
        assert "bad" not in doc["agents"]

    @pytest.mark.parametrize("where", ["nested_top", "nested_entry", "pid_5000_digits"])
    def test_unparsable_registry_is_corrupt_and_gc_repairs(
        self, mesh_home: Path, where: str
    ) -> None:
        """A registry nested 100,000 deep, or with a 5,000-digit number, is RegistryCorrupt
        with the repair, never a RecursionError or ValueError traceback; gc sets it aside."""
        MeshHome.open(mesh_home)
        deep = "[" * 100_000 + "]" * 100_000
        text = {
            "nested_top": deep,
            "nested_entry": '{"agents": {"x": ' + deep + "}}",
            "pid_5000_digits": '{"agents": {"x": {"pid": ' + "9" * 5000 + "}}}",
        }[where]
        (mesh_home / "agent_registry.json").write_text(text)
        for args in (("agents",), ("send", "x", "hi")):
            assert_clean_error(run_cli(*args), "run 'pipemesh gc'")
        out = run_cli("gc")
        assert out.returncode == 0, out.stderr
        assert run_cli("agents").returncode == 0


class TestLockPaths:
    @pytest.mark.parametrize("kind", ["directory", "symlink", "fifo"])
    def test_unusable_lock_path_is_a_clear_error(
        self, mesh_home: Path, tmp_path: Path, kind: str
    ) -> None:
        """A registry lock path that is a directory, symlink or FIFO gives a one-line error
        (no traceback, no hang), and a symlink's target is never created or truncated."""
        MeshHome.open(mesh_home)
        lock = mesh_home / "agent_registry.json.lock"
        victim = tmp_path / "victim.txt"
        victim.write_text("precious")
        if kind == "directory":
            lock.mkdir()
        elif kind == "symlink":
            lock.symlink_to(victim)
        else:
            os.mkfifo(lock)
        for args in (("gc",), ("listen", "x", "--count", "1")):
            assert_clean_error(run_cli(*args, timeout_s=60), "agent_registry.json.lock")
        with pytest.raises(RegistryError, match="registry lock"):
            AgentBase("x", heartbeat_s=0, log_messages=False)
        assert victim.read_text() == "precious"

    def test_name_lock_symlink_is_refused(self, mesh_home: Path, tmp_path: Path) -> None:
        """A symlink planted as an agent's name lock is never followed."""
        MeshHome.open(mesh_home)
        victim = tmp_path / "victim.txt"
        victim.write_text("precious")
        (mesh_home / "names" / "a.lock").symlink_to(victim)
        out = run_cli("listen", "a", "--count", "1")
        assert_clean_error(out, "symbolic link")
        assert victim.read_text() == "precious"


class TestFilesystems:
    def test_read_only_home_is_a_clear_error(
        self, tiny_fs: Callable[[int], Path], spawn: Spawner
    ) -> None:
        """On a read-only filesystem, joining, sending and gc fail with one line each."""
        point = tiny_fs(1 << 20)
        home = point / "mesh"
        MeshHome.open(home)
        remount_ro(point)
        env = {"PIPEMESH_HOME": str(home)}
        for args in (["listen", "a", "--count", "1"], ["gc"], ["send", "a", "hi"]):
            proc = spawn.pipemesh(*args, env=env)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode in (1, 2), err
            assert "Traceback" not in err, err
            assert err.startswith("error: "), err
            assert len(err.strip().splitlines()) == 1, err
            assert "read-only" in err.lower(), err

    def test_full_filesystem_join_is_a_clear_error(
        self, tiny_fs: Callable[[int], Path], spawn: Spawner
    ) -> None:
        """With the disk full, a join fails with 'No space left' in one line; after space is
        freed it works."""
        point = tiny_fs(256 * 1024)
        home = point / "mesh"
        MeshHome.open(home)
        filler = fill(point / "filler")
        env = {"PIPEMESH_HOME": str(home)}
        proc = spawn.pipemesh("listen", "a", "--count", "1", env=env)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        assert "Traceback" not in err, err
        assert "No space left" in err, err
        assert len(err.strip().splitlines()) == 1, err
        filler.unlink()
        agent = AgentBase("a", home=home, heartbeat_s=0)
        agent.close()


class TestPipesAndSweeping:
    def test_removed_pipe_shows_no_pipe_and_gc_puts_it_back(
        self, mesh_home: Path, spawn: Spawner
    ) -> None:
        """A live agent whose FIFO was deleted lists as 'no pipe'; gc restores the FIFO
        and messages reach the agent again."""
        holder = start_holder(spawn, "lonely")
        (mesh_home / "pipes" / "lonely.public").unlink()
        listing = run_cli("agents")
        assert "no pipe" in listing.stdout, listing.stdout
        out = run_cli("gc")
        assert out.returncode == 0, out.stderr
        assert "put back the pipe of: lonely" in out.stdout
        assert "active" in run_cli("agents").stdout
        with MeshClient("w", log_messages=False) as c:
            c.send("lonely", "found you")
        assert holder_receives(holder) == "got found you"

    def test_joiner_sweeps_dead_entries_and_their_pipes(
        self, mesh_home: Path, spawn: Spawner
    ) -> None:
        """A joining agent removes dead agents' entries and pipes (a durable one keeps its
        entry), without anyone running gc; a live agent is untouched."""
        live = start_holder(spawn, "live")
        doomed = [start_holder(spawn, "dead"), start_holder(spawn, "dead-durable", "durable")]
        for proc in doomed:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        pipes = mesh_home / "pipes"
        assert (pipes / "dead.public").exists()
        with AgentBase("joiner", heartbeat_s=0, log_messages=False):
            entries = registry_of(mesh_home).read()
            assert "dead" not in entries
            assert entries["dead-durable"].durable
            assert not (pipes / "dead.public").exists()
            assert not (pipes / "dead-durable.public").exists()
            assert entries["live"].pid == live.pid
            assert (pipes / "live.public").exists()

    def test_gc_removes_orphan_pipes_only(self, mesh_home: Path, spawn: Spawner) -> None:
        """FIFOs nobody registered or holds are removed by gc; a live agent's stay."""
        start_holder(spawn, "keeper")
        os.mkfifo(mesh_home / "pipes" / "ghost.public", 0o600)
        os.mkfifo(mesh_home / "pipes" / "ghost.private", 0o600)
        out = run_cli("gc")
        assert out.returncode == 0, out.stderr
        assert "removed orphan pipes of: ghost" in out.stdout
        assert sorted(p.name for p in (mesh_home / "pipes").iterdir()) == [
            "keeper.private",
            "keeper.public",
        ]


def test_pid_alive_survives_out_of_range_pids() -> None:
    """pid_alive answers False for pids no process can have, instead of OverflowError."""
    assert not pid_alive(2**31)
    assert not pid_alive(2**64)
    assert pid_alive(os.getpid())
