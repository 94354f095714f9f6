"""Hooks, the MCP server, `run` and `setup` under bad input, dead parents and failing disks.

Each test here failed on the code before issue 12/9's fixes (the reason is in its docstring).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipemesh.home import MeshHome
from pipemesh.integrations._inbox import InboxFile
from pipemesh.integrations.mcp import McpAgent
from pipemesh.registry import Registry
from pipemesh.runtime.agent import AgentBase, MeshClient
from tests.adversarial.conftest import fill
from tests.conftest import PY, Spawner, run_cli, wait_for

pytestmark = pytest.mark.integration

STOP = {"session_id": "s1", "hook_event_name": "Stop", "stop_hook_active": False}


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaps counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :][:1] != "Z"


def _registered(home: Path, name: str) -> bool:
    mesh = MeshHome.open(home)
    rec = Registry(mesh.registry_path, mesh.lock_path).read().get(name)
    return rec is not None and rec.is_active


# -- hook input --


def test_hook_wait_nan_is_refused(mesh_home: Path) -> None:
    """`--wait nan` passed the range check and spun forever in select(0) (the CLI timed out)."""
    with McpAgent("nanny", home=mesh_home, heartbeat_s=0):
        for bad in ("nan", "inf", "-1"):
            out = run_cli(
                "--home", str(mesh_home), "hook", "stop", "--name", "nanny", "--wait", bad,
                input_text=json.dumps(STOP), timeout_s=60,
            )  # fmt: skip
            assert out.returncode == 1, (bad, out.stderr)
            assert "is not a number of seconds from 0 to 3600" in out.stderr


def test_hook_with_stdin_closed_is_no_traceback(mesh_home: Path) -> None:
    """A hook started with stdin closed raised AttributeError on sys.stdin (a traceback)."""
    cmd = f"exec {PY} -m pipemesh --home {mesh_home} hook stop --name cc <&-"
    out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in out.stderr
    assert out.returncode == 0, out.stderr  # no input is the same as {}: nothing to hand over
    assert out.stdout == ""


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("[" * 100_000, "hook input on stdin is not JSON (nested too deeply)"),
        (" " * (1 << 20) + "{}", "hook input on stdin is too large (over 1048576 bytes)"),
        ('{"hook_event_name": "Stop", "x": "\udcff"}', "not UTF-8"),
    ],
    ids=["nested", "over-1MiB", "not-utf8"],
)
def test_hook_bad_input_is_one_line(mesh_home: Path, payload: str, expected: str) -> None:
    """Nested JSON gave a RecursionError traceback; >1 MiB was called "not JSON"."""
    data = payload.encode("utf-8", "surrogateescape")
    out = subprocess.run(
        [PY, "-m", "pipemesh", "--home", str(mesh_home), "hook", "stop", "--name", "cc"],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )
    err = out.stderr.decode()
    assert out.returncode == 1, err
    assert "Traceback" not in err
    assert expected in err
    assert len(err.strip().splitlines()) == 1


def test_hook_bad_name_exits_1_not_2(mesh_home: Path) -> None:
    """Exit 2 tells Claude Code to block with stderr as the reason: a bad name must be 1."""
    out = run_cli(
        "--home", str(mesh_home), "hook", "stop", "--name", "bad name",
        input_text=json.dumps(STOP),
    )  # fmt: skip
    assert out.returncode == 1
    assert "agent name 'bad name' is not valid" in out.stderr


# -- hooks outlive nobody --

# A stand-in for a CLI: starts the hook command given as argv (stdin: one Stop event),
# prints the hook's pid, then waits to be killed.
LAUNCHER = textwrap.dedent(
    """\
    import json, subprocess, sys, time
    proc = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, start_new_session=True)
    proc.stdin.write(json.dumps({"session_id": "s1", "hook_event_name": "Stop"}).encode())
    proc.stdin.close()
    print(proc.pid, flush=True)
    time.sleep(600)
    """
)


@pytest.mark.parametrize("kind", ["stop", "wake"])
def test_waiting_hook_exits_when_its_cli_is_killed(
    mesh_home: Path, spawn: Spawner, kind: str
) -> None:
    """`hook stop --wait` kept waiting after its CLI was gone (an orphan ran 110 s more)."""
    args = ["--wait", "300"] if kind == "stop" else ["--max-wait", "300"]
    with McpAgent("orph", home=mesh_home, heartbeat_s=0):
        cli = spawn.python(
            LAUNCHER, PY, "-m", "pipemesh", "--home", str(mesh_home),
            "hook", kind, "--name", "orph", *args,
        )  # fmt: skip
        assert cli.stdout is not None
        hook_pid = int(cli.stdout.readline())
        waiters = mesh_home / "mcp" / "orph" / "waiters"
        wait_for(lambda: any(waiters.iterdir()), timeout_s=30)
        cli.kill()
        cli.wait(timeout=10)
        try:
            wait_for(lambda: not _alive(hook_pid), timeout_s=30)
        finally:
            if _alive(hook_pid):
                os.kill(hook_pid, signal.SIGKILL)
        wait_for(lambda: not any(waiters.iterdir()), timeout_s=10)  # it cleaned up its FIFO


# A CLI that dies right after starting a hook through a shell: the shell (kept as the
# hook's parent by a `; true`, else it execs the hook) is orphaned before the hook
# sets up its watch.
ORPHANING_LAUNCHER = textwrap.dedent(
    """\
    import subprocess, sys
    sh = subprocess.Popen(["sh", "-c", sys.argv[1]], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    print(sh.pid, flush=True)
    """
)


@pytest.mark.parametrize("tail", ["; true", ""], ids=["shell-stays", "shell-execs"])
def test_wake_hook_orphaned_at_start_does_not_wait(
    mesh_home: Path, spawn: Spawner, tail: str
) -> None:
    """Seen with Claude Code killed as it ran a Stop hook: the hook's shell was already
    orphaned, only the shell was watched, and the hook waited on for nobody."""
    cmd = shlex.join(
        [PY, "-m", "pipemesh", "--home", str(mesh_home), "hook", "wake", "--name", "orph2",
         "--max-wait", "300"]
    ) + tail  # fmt: skip
    with McpAgent("orph2", home=mesh_home, heartbeat_s=0):
        cli = spawn.python(ORPHANING_LAUNCHER, cmd)
        assert cli.stdout is not None
        sh_pid = int(cli.stdout.readline())
        cli.wait(timeout=30)
        try:
            wait_for(lambda: not _alive(sh_pid), timeout_s=60)
        finally:
            if _alive(sh_pid):
                os.killpg(sh_pid, signal.SIGKILL)


def test_wake_hook_exits_2_with_the_message_and_newer_supersedes_older(
    mesh_home: Path, spawn: Spawner
) -> None:
    """hook wake: a second wake of the same session ends the first; arrival -> exit 2."""
    event = json.dumps({"session_id": "sess-A", "hook_event_name": "Stop"})
    waiters = mesh_home / "mcp" / "wk" / "waiters"
    with McpAgent("wk", home=mesh_home, heartbeat_s=0):
        procs = []
        for n in (1, 2):
            proc = spawn.pipemesh(
                "--home", str(mesh_home), "hook", "wake", "--name", "wk",
                stdin=subprocess.PIPE,
            )  # fmt: skip
            assert proc.stdin is not None
            proc.stdin.write(event)
            proc.stdin.close()
            procs.append(proc)
            wait_for(lambda n=n: len(list(waiters.iterdir())) == 1, timeout_s=30)
        first, second = procs
        assert first.wait(timeout=30) == 0  # superseded: hands over nothing
        assert first.stderr is not None
        assert first.stderr.read() == ""
        start = time.monotonic()
        with MeshClient("peer", mesh_home) as client:
            client.send_message("wk", "wake up, review PR 9", msg_type="directive")
        assert second.wait(timeout=30) == 2
        elapsed = time.monotonic() - start
    assert second.stderr is not None
    err = second.stderr.read()
    assert "wake up, review PR 9" in err
    assert "from peer" in err
    assert elapsed < 20  # woken by the arrival, long before --max-wait
    assert InboxFile.open(mesh_home, "wk").take() == []  # handed over once


def test_wake_hook_never_holds_a_headless_claude(mesh_home: Path) -> None:
    """`claude -p` runs async hooks to the end: in a headless run the wake hook must not wait."""
    with McpAgent("hl", home=mesh_home, heartbeat_s=0):
        start = time.monotonic()
        out = subprocess.run(
            [PY, "-m", "pipemesh", "--home", str(mesh_home), "hook", "wake", "--name", "hl"],
            input=json.dumps({"session_id": "s", "hook_event_name": "SessionStart"}),
            env={**os.environ, "CLAUDE_CODE_ENTRYPOINT": "sdk-cli"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - start < 30  # the default --max-wait is a day


# -- the MCP agent's inbox file --


def _errors_log(home: Path) -> str:
    path = MeshHome.open(home).logs_dir / "mesh_errors.log"
    return path.read_text() if path.exists() else ""


@contextlib.contextmanager
def _full_disk(directory: Path) -> Iterator[None]:
    """A tiny tmpfs mounted over ``directory`` and filled up (ENOSPC); unmounted on exit.

    (Inbox files are opened without following symlinks, so a link to /dev/full would be
    refused before any write: a real full filesystem is the honest way.)
    """
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8192,mode=0700", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    try:
        fill(directory / "filler")
        yield
    finally:
        subprocess.run(
            ["umount", "-l", str(directory)], capture_output=True, timeout=30, check=False
        )


def test_mcp_inbox_full_disk_keeps_and_retries(
    mesh_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A full disk (ENOSPC on inbox.jsonl) lost the message."""
    with McpAgent("full", home=mesh_home, heartbeat_s=0) as agent:
        inbox = agent.inbox_file
        with _full_disk(inbox.path.parent):
            with MeshClient("peer", mesh_home) as client:
                client.send_message("full", "keep me", msg_type="directive")
                client.send_message("full", "and me", msg_type="directive")
            wait_for(lambda: agent.unsaved_count == 2, timeout_s=30)
            wait_for(lambda: "inbox_append_failed" in _errors_log(mesh_home), timeout_s=30)
        # space again (the tmpfs is gone)
        wait_for(lambda: agent.unsaved_count == 0, timeout_s=30)
        assert [m.body for m in inbox.take()] == ["keep me", "and me"]
    assert "No space left on device" in capfd.readouterr().err


def test_mcp_inbox_still_full_at_exit_names_what_is_lost(
    mesh_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A server that must exit while the disk is still full says which messages it loses."""
    with (
        McpAgent("doomed", home=mesh_home, heartbeat_s=0) as agent,
        _full_disk(agent.inbox_file.path.parent),
    ):
        with MeshClient("peer", mesh_home) as client:
            msg_id = client.send_message("doomed", "sorry", msg_type="directive")
        wait_for(lambda: agent.unsaved_count == 1, timeout_s=30)
        agent.close()
    err = capfd.readouterr().err
    assert "1 received message(s) could not be written to" in err
    assert f"before exit and are lost: {msg_id}" in err


HOLDER = textwrap.dedent(
    """\
    import sys, time, filelock
    with filelock.FileLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(600)
    """
)


def test_mcp_inbox_lock_held_by_stopped_process_keeps_message(
    mesh_home: Path, spawn: Spawner
) -> None:
    """Inbox lock held by a SIGSTOPped process: the append timed out, the message was lost."""
    with McpAgent("stuck", home=mesh_home, heartbeat_s=0) as agent:
        inbox = agent.inbox_file
        holder = spawn.python(HOLDER, str(inbox.directory / "inbox.lock"))
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        holder.send_signal(signal.SIGSTOP)
        try:
            with MeshClient("peer", mesh_home) as client:
                client.send_message("stuck", "do not drop me", msg_type="directive")
            wait_for(lambda: "inbox_append_failed" in _errors_log(mesh_home), timeout_s=60)
            assert agent.unsaved_count == 1
        finally:
            holder.send_signal(signal.SIGCONT)
            holder.kill()
            holder.wait(timeout=10)
        wait_for(lambda: agent.unsaved_count == 0, timeout_s=60)
        assert [m.body for m in inbox.take()] == ["do not drop me"]


# -- the MCP server leaves with its client --


def test_mcp_server_leaves_when_its_client_dies_with_stdin_still_open(
    mesh_home: Path, spawn: Spawner, tmp_path: Path
) -> None:
    """Its client gone but stdin held open elsewhere (Codex's daemon case): it stayed active."""
    fifo = tmp_path / "stdin.fifo"
    os.mkfifo(fifo)
    keep_open = os.open(fifo, os.O_RDWR)  # the test holds the write end: no EOF ever
    try:
        client = spawn.python(
            LAUNCHER_STDIN, str(fifo), PY, "-m", "pipemesh", "--home", str(mesh_home),
            "mcp", "--name", "orphan_mcp",
        )  # fmt: skip
        assert client.stdout is not None
        server_pid = int(client.stdout.readline())
        wait_for(lambda: _registered(mesh_home, "orphan_mcp"), timeout_s=60)
        client.kill()
        client.wait(timeout=10)
        try:
            wait_for(lambda: not _alive(server_pid), timeout_s=30)
        finally:
            if _alive(server_pid):
                os.kill(server_pid, signal.SIGKILL)
        assert not _registered(mesh_home, "orphan_mcp")
    finally:
        os.close(keep_open)


LAUNCHER_STDIN = textwrap.dedent(
    """\
    import os, subprocess, sys, time
    stdin = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(stdin, True)
    proc = subprocess.Popen(sys.argv[2:], stdin=stdin, stdout=subprocess.DEVNULL,
                            start_new_session=True)
    print(proc.pid, flush=True)
    time.sleep(600)
    """
)


# -- pipemesh run command --


def _start_run(spawn: Spawner, home: Path, name: str, code: str) -> subprocess.Popen[str]:
    proc = spawn.pipemesh(
        "--home", str(home), "run", "command", "--name", name, "--", PY, "-c", code
    )

    def online() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        return _registered(home, name)

    wait_for(online, timeout_s=60)
    return proc


def test_run_command_non_utf8_output_still_replies(mesh_home: Path, spawn: Spawner) -> None:
    """Output that is not UTF-8 raised UnicodeDecodeError in the worker: the asker timed out."""
    code = "import sys; sys.stdin.read(); sys.stdout.buffer.write(b'caf\\xe9 \\xff ok')"
    _start_run(spawn, mesh_home, "latin", code)
    with AgentBase("asker", "test", mesh_home, heartbeat_s=0) as asker:
        reply = asker.ask("latin", "hello?", timeout_s=60)
    assert reply.msg_type != "error", reply.body
    assert reply.body == "caf\ufffd \ufffd ok"


def test_run_command_ansi_colours_are_stripped(mesh_home: Path, spawn: Spawner) -> None:
    """Replies carried the CLI's colour codes."""
    code = (
        "import sys; sys.stdin.read(); "
        "print('\\x1b[1;31mred\\x1b[0m and \\x1b]0;title\\x07plain\\x1b[K')"
    )
    _start_run(spawn, mesh_home, "colour", code)
    with AgentBase("asker", "test", mesh_home, heartbeat_s=0) as asker:
        reply = asker.ask("colour", "hello?", timeout_s=60)
    assert reply.body == "red and plain"


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_run_command_huge_output_is_an_error_reply_and_memory_stays_bounded(
    mesh_home: Path, spawn: Spawner
) -> None:
    """200 MB of output: the agent held it all (RSS grew with it) and the asker timed out."""
    code = (
        "import sys; sys.stdin.read(); chunk = b'x' * (1 << 20)\n"
        "for _ in range(200): sys.stdout.buffer.write(chunk)"
    )
    proc = _start_run(spawn, mesh_home, "flood", code)
    with AgentBase("asker", "test", mesh_home, heartbeat_s=0) as asker:
        reply = asker.ask("flood", "hello?", timeout_s=110)
    assert reply.msg_type == "error"
    assert "printed 209715200 bytes, more than the" in reply.body
    # The kept part is bounded by 2 x the 16 MiB body limit; far below the 200 MiB printed.
    assert _peak_rss_kib(proc.pid) < 150 * 1024


# -- setup --


@pytest.mark.parametrize("cli", ["claude", "codex"])
def test_setup_write_onto_a_directory_is_one_line(
    mesh_home: Path, tmp_path: Path, cli: str
) -> None:
    """A config path that is a directory gave an IsADirectoryError traceback."""
    target = tmp_path / (".mcp.json" if cli == "claude" else ".codex/config.toml")
    target.mkdir(parents=True)
    out = run_cli(
        "--home", str(mesh_home), "setup", cli, "--name", "x", "--dir", str(tmp_path), "--write"
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert f"cannot read {target} (Is a directory)" in out.stderr
