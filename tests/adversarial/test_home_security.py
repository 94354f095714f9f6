"""The mesh home against another local user and a careless umask: no symlink swaps, no
pipes followed through links, everything created 0600/0700."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipemesh import AgentBase
from pipemesh.errors import DeliveryError, UsageError
from pipemesh.home import MeshHome, default_home
from pipemesh.transport.fifo import FifoTransport, StatusPipe
from tests.conftest import Spawner

NOBODY = 65534


def as_nobody(action: Callable[[], object]) -> str:
    """Fork; the child drops to uid/gid 65534, runs ``action``; return its outcome's name."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only syscalls, then _exit
        code = 0
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                action()
                result = "ok"
            except OSError as exc:
                result = type(exc).__name__
            os.write(write_fd, result.encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return data.decode()


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A world-writable sticky directory like /tmp that uid 65534 can reach."""
    path = Path(tempfile.mkdtemp(prefix="pipemesh-adv-", dir="/tmp"))
    os.chmod(path, 0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


SENDER = """
import sys, time
from pipemesh import MeshClient, MeshError
with MeshClient("sender") as c:
    deadline = time.monotonic() + 30
    while True:  # until the victim has joined; then the pipe stays open across the swap
        try:
            c.send("victim", "hello")
            break
        except MeshError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        c.send("victim", "the secret")
    finally:
        c.close()
"""


def clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PIPEMESH_HOME", "XDG_RUNTIME_DIR")}
    env["TMPDIR"] = str(tmp)
    return env


def files_of(root: Path) -> str:
    """Everything readable under ``root``, as one text."""
    out = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            out.append(path.read_text(errors="replace"))
    return "\n".join(out)


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another uid needs root")
def test_other_user_cannot_swap_the_default_home(shared_tmp: Path, spawn: Spawner) -> None:
    """Another user plants <tmp>/pipemesh-<uid> as a symlink to a directory of ours, to
    re-point it at their own directory once agents run: the home is refused at once, so no
    log record can reach their directory; and a real home cannot be renamed by them."""
    ours = shared_tmp / "ours"
    ours.mkdir(mode=0o700)
    theirs = shared_tmp / "theirs"
    link = shared_tmp / f"pipemesh-{os.getuid()}"
    assert as_nobody(lambda: os.symlink(ours, link)) == "ok"

    env = clean_env(shared_tmp)
    agent = spawn.pipemesh("listen", "victim", "--count", "5", env=env)
    sender = spawn.python(SENDER, env=env, stdin=subprocess.PIPE)

    def swap() -> None:
        os.mkdir(theirs, 0o777)
        for sub in ("logs", "pipes", "spool", "names"):
            os.mkdir(theirs / sub, 0o777)
        # Files of theirs that the victim's processes would append to.
        os.close(os.open(theirs / "logs" / "mesh_communication.log", os.O_CREAT | os.O_WRONLY))
        os.chmod(theirs / "logs" / "mesh_communication.log", 0o666)
        os.symlink(theirs, shared_tmp / "next")
        os.rename(shared_tmp / "next", link)  # they own the link: allowed in a sticky dir

    try:
        _, err = agent.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        # The old behaviour: agent and sender run on the planted home. Swap it under them,
        # then have the (already running) sender talk to the agent.
        assert sender.stdout is not None
        assert sender.stdin is not None
        assert sender.stdout.readline().strip() == "ready"
        assert as_nobody(swap) == "ok"
        sender.stdin.write("go\n")
        sender.stdin.flush()
        sender.wait(timeout=60)
        agent.kill()
        _, err = agent.communicate(timeout=20)
    sender.kill()
    sender.wait(timeout=20)
    leaked = files_of(theirs) if theirs.exists() else ""
    assert "the secret" not in leaked
    assert agent.returncode == 2, err
    assert "is a symbolic link" in err, err
    assert "Traceback" not in err

    # A real home of ours in the same sticky directory: they can neither rename nor remove it.
    os.unlink(link)
    home = MeshHome.open(link)
    assert as_nobody(lambda: os.rename(home.root, shared_tmp / "stolen")) == "PermissionError"
    assert as_nobody(lambda: os.rmdir(home.root)) == "PermissionError"


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another uid needs root")
def test_home_under_a_directory_another_user_owns_is_refused(shared_tmp: Path) -> None:
    """A --home inside a directory owned by another user (who could replace it) is refused."""
    theirs = shared_tmp / "theirs"
    assert as_nobody(lambda: os.mkdir(theirs, 0o755)) == "ok"
    assert as_nobody(lambda: os.mkdir(theirs / "mesh", 0o777)) == "ok"
    with pytest.raises(UsageError, match="belongs to uid 65534"):
        MeshHome.open(theirs / "mesh" / "home")


def test_home_under_a_group_writable_directory_is_refused(tmp_path: Path) -> None:
    """A parent others can write without the sticky bit would let them swap the home."""
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    with pytest.raises(UsageError, match="writable by group or others"):
        MeshHome.open(loose / "home")
    with pytest.raises(UsageError, match="empty string"):
        MeshHome.open("")


def test_xdg_runtime_dir_preferred_only_when_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$XDG_RUNTIME_DIR/pipemesh is the default when that directory is ours and 0700;
    a shared or foreign one is not used."""
    monkeypatch.delenv("PIPEMESH_HOME", raising=False)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert default_home() == runtime / "pipemesh"
    os.chmod(runtime, 0o777)
    assert default_home() == Path(tempfile.gettempdir()) / f"pipemesh-{os.getuid()}"
    os.chmod(runtime, 0o700)
    link = tmp_path / "run-link"
    link.symlink_to(runtime)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(link))
    assert default_home() != link / "pipemesh"


UMASK0 = """
import os, sys
os.umask(0)
from pathlib import Path
from pipemesh import AgentBase, MeshClient
from pipemesh.integrations._inbox import InboxFile
from pipemesh.wire import Message
home = Path(sys.argv[1])
AgentBase("away", home=home, durable=True, heartbeat_s=0).close()
with AgentBase("here", home=home, heartbeat_s=0.05) as a, MeshClient("w", home) as w:
    w.send("away", "queued")
    w.send("here", "hi")
    assert a.receive(30) is not None
inbox = InboxFile.open(home, "mcpagent")
inbox.append(Message(sender="w", to="mcpagent", priority=1, msg_type="t", id="m1", body="x"))
print("done")
"""


@pytest.mark.integration
def test_everything_created_is_private_with_umask_0(tmp_path: Path, spawn: Spawner) -> None:
    """With umask 0, every directory pipemesh makes (missing --home parents included) is
    0700 and every file and FIFO 0600: logs, registry, locks, spool, MCP inbox."""
    top = tmp_path / "top"
    top.mkdir(mode=0o700)
    home = top / "a" / "b" / "mesh"
    proc = spawn.python(UMASK0, str(home))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == "done"
    wrong = {}
    for path in [top / "a", top / "a" / "b", home, *home.rglob("*")]:
        st = os.lstat(path)
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) != want:
            wrong[str(path.relative_to(top))] = oct(stat.S_IMODE(st.st_mode))
    assert wrong == {}
    assert (home / "mcp" / "mcpagent").is_dir()


class TestPipesNotFollowed:
    def test_status_pipe_never_writes_through_a_link_or_into_a_file(self, tmp_path: Path) -> None:
        """A .private pipe replaced by a symlink to a file, or by a file, gets no status."""
        victim = tmp_path / "victim.txt"
        victim.write_text("precious")
        path = tmp_path / "a.private"
        pipe = StatusPipe(path)
        try:
            path.unlink()
            path.symlink_to(victim)
            assert pipe.publish([b"status"]) is False
            path.unlink()
            path.write_text("")
            assert pipe.publish([b"status"]) is False
            assert path.read_text() == ""
        finally:
            pipe.close()
        assert victim.read_text() == "precious"

    def test_public_pipe_link_is_not_followed(self, tmp_path: Path) -> None:
        """A sender never writes through a symlink planted as an agent's public pipe."""
        transport = FifoTransport(tmp_path)
        inbox = transport.bind("good")
        try:
            (tmp_path / "evil.public").symlink_to(tmp_path / "good.public")
            with pytest.raises(DeliveryError, match="evil"):
                transport.connect("evil")
        finally:
            inbox.close()


def test_registry_contents_stay_json(tmp_path: Path) -> None:
    """The per-name lock holds the owner's record as JSON (what rebuilds use)."""
    with AgentBase("one", home=tmp_path / "mesh", heartbeat_s=0, log_messages=False):
        claim = json.loads((tmp_path / "mesh" / "names" / "one.lock").read_text())
        assert claim["state"] == "live"
        assert claim["record"]["pid"] == os.getpid()
