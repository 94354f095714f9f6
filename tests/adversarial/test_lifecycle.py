"""Issue 9 section 3: however an agent's process ends (SIGTERM, SIGINT, a script that never
calls close()), it leaves no registry entry and no pipes, and prints no traceback."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipemesh import AgentBase
from pipemesh.home import MeshHome
from pipemesh.registry import Registry
from tests.conftest import Spawner, wait_for
from tests.integration.meshproc import active_agents

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/PID/status"),
]

# argv: name mode. "forever": run_forever(); "with": inside `with`; "exit": never close();
# "raise": an uncaught exception without close().
PROGRAM = """
import sys
from pipemesh.runtime.agent import AgentBase
name, mode = sys.argv[1], sys.argv[2]
if mode == "with":
    with AgentBase(name, heartbeat_s=0.2) as agent:
        agent.run_forever()
    sys.exit(0)
agent = AgentBase(name, heartbeat_s=0.2)
if mode == "forever":
    agent.run_forever()
elif mode == "raise":
    raise RuntimeError("a bug in the program")
"""


def catches_sigterm(pid: int) -> bool:
    """True once process ``pid`` has a SIGTERM handler (run_forever is waiting)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def left_behind(home: Path, name: str) -> list[str]:
    """What an ended agent left: its registry entry, its pipes."""
    mesh = MeshHome.open(home)
    found = []
    if name in Registry(mesh.registry_path, mesh.lock_path).read():
        found.append("registry entry")
    for path in (mesh.public_pipe(name), mesh.private_pipe(name)):
        if path.exists():
            found.append(path.name)
    return found


@pytest.mark.parametrize("mode", ["forever", "with"])
def test_sigterm_on_run_forever_closes_cleanly(mesh_home: Path, spawn: Spawner, mode: str) -> None:
    """SIGTERM: exit 143, no traceback, no registry entry, no pipes."""
    proc = spawn.python(PROGRAM, "termed", mode)
    wait_for(lambda: "termed" in active_agents(mesh_home), timeout_s=30)
    wait_for(lambda: catches_sigterm(proc.pid), timeout_s=30)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert left_behind(mesh_home, "termed") == []


@pytest.mark.parametrize("mode", ["forever", "with"])
def test_ctrl_c_on_run_forever_closes_without_traceback(
    mesh_home: Path, spawn: Spawner, mode: str
) -> None:
    """SIGINT (Ctrl-C): exit 130, no KeyboardInterrupt traceback, no entry, no pipes."""
    proc = spawn.python(PROGRAM, "interrupted", mode)
    wait_for(lambda: "interrupted" in active_agents(mesh_home), timeout_s=30)
    wait_for(lambda: catches_sigterm(proc.pid), timeout_s=30)  # installed after SIGINT's
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err
    assert left_behind(mesh_home, "interrupted") == []


def test_script_that_never_closes_leaves_nothing(mesh_home: Path, spawn: Spawner) -> None:
    """A script that ends without close() is cleaned up at exit (atexit)."""
    proc = spawn.python(PROGRAM, "forgetful", "exit")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert left_behind(mesh_home, "forgetful") == []


def test_script_that_crashes_leaves_nothing(mesh_home: Path, spawn: Spawner) -> None:
    """An uncaught exception shows its own traceback, and the agent is still unregistered."""
    proc = spawn.python(PROGRAM, "crashed", "raise")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "a bug in the program" in err
    assert left_behind(mesh_home, "crashed") == []


def test_run_forever_restores_signal_handlers(mesh_home: Path) -> None:
    """run_forever() puts back the SIGINT/SIGTERM handlers it found, and returns on close()."""
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    with AgentBase("restorer", heartbeat_s=0, log_messages=False) as agent:
        seen: list[object] = []

        def close_soon() -> None:
            wait_for(lambda: signal.getsignal(signal.SIGINT) is not before[0], timeout_s=10)
            seen.append(signal.getsignal(signal.SIGINT))
            agent.close()

        closer = threading.Thread(target=close_soon)
        closer.start()
        agent.run_forever()
        closer.join(10)
    assert seen, "run_forever did not install its SIGINT handler"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_run_forever_off_the_main_thread_installs_nothing(mesh_home: Path) -> None:
    """Signal handlers belong to the main thread: run_forever elsewhere leaves them alone."""
    before = signal.getsignal(signal.SIGINT)
    with AgentBase("threaded", heartbeat_s=0, log_messages=False) as agent:
        runner = threading.Thread(target=agent.run_forever)
        runner.start()
        assert signal.getsignal(signal.SIGINT) is before
        agent.close()
        runner.join(10)
        assert not runner.is_alive()


def test_cli_listen_sigterm_leaves_nothing(mesh_home: Path, spawn: Spawner) -> None:
    """A CLI-run agent ('pipemesh listen') ends on SIGTERM with 143, no traceback, nothing left."""
    proc = spawn.pipemesh("listen", "listener")
    wait_for(lambda: "listener" in active_agents(mesh_home), timeout_s=30)
    wait_for(lambda: catches_sigterm(proc.pid), timeout_s=30)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert left_behind(mesh_home, "listener") == []


# A stop signal that lands inside AgentBase.__init__, after the exit guard exists but before
# the router thread runs, is the race CI hit with 'pipemesh listen' (SIGTERM right after the
# entry appeared): the guard's close() then met a router that was never started.
STOPPED_IN_INIT = """
import sys
from pipemesh.runtime.agent import AgentBase

class StoppedInInit(AgentBase):
    def _drain_spool(self, *args, **kwargs):
        raise SystemExit(143)  # as a SIGTERM handler does, before the router starts

StoppedInInit(sys.argv[1], heartbeat_s=0.2)
"""


def test_stop_inside_init_closes_without_traceback(mesh_home: Path, spawn: Spawner) -> None:
    """Exit during __init__ before the router thread started: no traceback, nothing left."""
    proc = spawn.python(STOPPED_IN_INIT, "early")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert left_behind(mesh_home, "early") == []


def test_ctrl_c_right_after_the_registry_write_leaves_no_entry(
    mesh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt landing just after the registry write, while its transaction
    ends, leaves no entry and no pipe (seen under Wine: `pipemesh listen` stopped by a
    Ctrl-C raised as soon as its entry appeared left the entry behind). The real registry
    commits; the interrupt is injected after its write."""
    real = Registry.transaction

    @contextlib.contextmanager
    def interrupted_after_commit(self: Registry) -> Iterator[dict[str, object]]:
        with real(self) as records:
            yield records
        if "interrupted" in records:
            raise KeyboardInterrupt

    monkeypatch.setattr(Registry, "transaction", interrupted_after_commit)
    with pytest.raises(KeyboardInterrupt):
        AgentBase("interrupted", heartbeat_s=0, log_messages=False)
    monkeypatch.undo()
    assert left_behind(mesh_home, "interrupted") == []


def test_ctrl_c_before_the_exit_guard_leaves_no_entry(
    mesh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt between the registry write and the exit guard (here: raised by
    the guard's creation) removes the entry and the pipes, and leaves no exit hook."""

    def interrupt(target: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("pipemesh.runtime.agent.ExitGuard", interrupt)
    with pytest.raises(KeyboardInterrupt):
        AgentBase("unguarded", heartbeat_s=0, log_messages=False)
    monkeypatch.undo()
    assert left_behind(mesh_home, "unguarded") == []
