"""Registry and logs under many processes: never corrupt, never a lost entry or record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipemesh import RegistryCorrupt, RegistryLockTimeout
from pipemesh.home import MeshHome
from pipemesh.observe import COMM_LOG, EventLog
from pipemesh.registry import Registry
from tests.conftest import Spawner, run_cli, wait_for

pytestmark = pytest.mark.integration

HOLDER = """
import sys
from pipemesh import AgentBase
with AgentBase(sys.argv[1], "worker", heartbeat_s=0, log_messages=False) as agent:
    print("registered", flush=True)
    sys.stdin.readline()
"""

CHURN = """
import sys
from pipemesh import AgentBase
for i in range(int(sys.argv[2])):
    with AgentBase(f"{sys.argv[1]}-{i}", "churn", heartbeat_s=0, log_messages=False):
        pass
"""


def registry_of(home: Path) -> Registry:
    mesh = MeshHome.open(home)
    return Registry(mesh.registry_path, mesh.lock_path)


@pytest.mark.timeout(400)
def test_100_processes_register_and_unregister(mesh_home: Path, spawn: Spawner) -> None:
    """100 agents joining at once are all listed; leaving at once leaves an empty registry.

    Meanwhile a reader parses the file continuously: it is never corrupt.
    """
    reg = registry_of(mesh_home)
    procs = [spawn.python(HOLDER, f"agent{i:03d}", stdin=subprocess.PIPE) for i in range(100)]
    reads = 0

    def all_registered() -> bool:
        nonlocal reads
        reads += 1
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            pytest.fail(f"a registering process exited: {dead[0].stderr.read()}")  # type: ignore[union-attr]
        return len(reg.read()) == 100  # raises RegistryCorrupt if a read sees a torn file

    wait_for(all_registered, timeout_s=180, interval_s=0.02)
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "registered"
    entries = reg.read()
    assert sorted(entries) == [f"agent{i:03d}" for i in range(100)]
    assert all(e.is_active and e.role == "worker" for e in entries.values())
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
    wait_for(lambda: reg.read() == {}, timeout_s=120, interval_s=0.02)
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    assert list((mesh_home / "pipes").iterdir()) == []
    assert reads > 1


def test_churn_from_many_processes_keeps_registry_valid(mesh_home: Path, spawn: Spawner) -> None:
    """20 processes each join and leave 10 times: the file stays valid, ends empty."""
    procs = [spawn.python(CHURN, f"c{i}", "10") for i in range(20)]
    reg = registry_of(mesh_home)
    while any(p.poll() is None for p in procs):
        reg.read()  # never RegistryCorrupt
        time.sleep(0.005)
    assert all(p.returncode == 0 for p in procs)
    assert reg.read() == {}


def test_dead_entries_read_inactive_and_gc_removes_them(mesh_home: Path, spawn: Spawner) -> None:
    """A SIGKILLed agent's entry reads inactive; 'pipemesh gc' removes it and its pipes."""
    proc = spawn.python(HOLDER, "doomed", stdin=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "registered"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    reg = registry_of(mesh_home)
    assert reg.read()["doomed"].status == "inactive"
    assert (mesh_home / "pipes" / "doomed.public").exists()
    listing = run_cli("agents")
    assert listing.returncode == 0
    assert "doomed" in listing.stdout
    assert "inactive" in listing.stdout
    out = run_cli("gc")
    assert out.returncode == 0, out.stderr
    assert "removed: doomed" in out.stdout
    assert reg.read() == {}
    assert not (mesh_home / "pipes" / "doomed.public").exists()
    assert not (mesh_home / "pipes" / "doomed.private").exists()
    assert "nothing to remove" in run_cli("gc").stdout


def test_lock_holder_killed_does_not_block_others(mesh_home: Path, spawn: Spawner) -> None:
    """A process killed while holding the registry lock releases it (the kernel drops flock)."""
    reg = registry_of(mesh_home)
    holder = spawn.python(
        "import sys, filelock\n"
        "lock = filelock.FileLock(sys.argv[1]); lock.acquire()\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n",
        str(MeshHome.open(mesh_home).lock_path),
        stdin=subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    short = Registry(reg.path, reg.lock_path, lock_timeout_s=0.2)
    with pytest.raises(RegistryLockTimeout, match=r"not acquired after 0\.2s"), short.transaction():
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    with reg.transaction() as entries:
        assert entries == {}


def test_corrupt_registry_is_a_clear_error(mesh_home: Path) -> None:
    """A hand-broken registry file gives RegistryCorrupt with the path and a fix."""
    reg = registry_of(mesh_home)
    reg.path.write_text("{not json")
    with pytest.raises(RegistryCorrupt, match="is not valid JSON"):
        reg.read()
    out = run_cli("agents")
    assert out.returncode == 1
    assert out.stderr.startswith("error: ")
    assert "Traceback" not in out.stderr
    reg.path.write_text(json.dumps({"agents": {"../evil": {"pid": 1, "public_pipe": "/x"}}}))
    assert reg.read() == {}
    assert "not valid" in reg.skipped[0]


def test_log_appends_from_100_processes_never_split(mesh_home: Path, spawn: Spawner) -> None:
    """100 processes append 200 records each at once: every line is one whole JSON record."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pipemesh.observe import EventLog\n"
        "log = EventLog(Path(sys.argv[1]), sys.argv[2], flush_interval_s=0.001)\n"
        "for i in range(200):\n"
        "    log.message('frame_sent', sender=sys.argv[2], to='x', msg_type='t', priority=1,\n"
        "                msg_id=f'{sys.argv[2]}-{i}', body='b' * (i * 37 % 3000))\n"
        "log.close()\n"
    )
    logs = mesh_home / "logs"
    procs = [spawn.python(code, str(logs), f"p{i}") for i in range(100)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    lines = (logs / COMM_LOG).read_bytes().splitlines()
    assert len(lines) == 100 * 200
    ids = {json.loads(line)["id"] for line in lines}
    assert len(ids) == 100 * 200


def test_event_log_is_off_the_send_path(tmp_path: Path) -> None:
    """Records are written by the background thread and flushed on close."""
    events = EventLog(tmp_path, "me", flush_interval_s=10.0)
    events.error("something_failed", "went wrong", id="m1")
    assert (tmp_path / "mesh_errors.log").read_bytes() == b""  # not written synchronously
    events.close()
    (record,) = [json.loads(x) for x in (tmp_path / "mesh_errors.log").read_text().splitlines()]
    assert record["event"] == "something_failed"
    assert record["agent"] == "me"
    disabled = EventLog(tmp_path / "off", "me", enabled=False)
    disabled.error("x", "y")
    disabled.close()
    assert not (tmp_path / "off").exists()


def test_home_refused_when_unsafe(tmp_path: Path) -> None:
    """A mesh home writable by group/others is refused with a fix."""
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    os.chmod(unsafe, 0o777)
    out = subprocess.run(
        [sys.executable, "-m", "pipemesh", "--home", str(unsafe), "agents"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert f"run 'chmod 700 {unsafe}'" in out.stderr
    made = tmp_path / "fresh" / "home"
    MeshHome.open(made)
    assert (made.stat().st_mode & 0o777) == 0o700
