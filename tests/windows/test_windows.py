"""pipemesh under a real Windows CPython 3.13 (Wine): transport, runtime, CLI, registry.

Run with ``make test-windows``. Every wait is bounded; Wine starts a Python in
about a second on the 2-core CI machine, so each test starts few of them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.windows.conftest import ROOT, WinPython, winpath

pytestmark = [pytest.mark.windows, pytest.mark.timeout(600)]


def test_conformance_suite_on_winpipe(win: WinPython) -> None:
    """The transport conformance suite passes on named pipes under Windows Python."""
    proc = win.run(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-rs",
        winpath(ROOT / "tests" / "integration" / "test_transport_conformance.py"),
        timeout_s=300,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert " passed" in out
    assert "failed" not in out
    # Every winpipe case ran (the FIFO cases are the ones skipped on Windows).
    assert "Windows named pipes" not in out


def test_twenty_concurrent_senders_none_torn(win: WinPython, win_home: tuple[Path, str]) -> None:
    """20 sender processes, bodies 10 B .. 1 MiB, into one agent: all arrive, none torn."""
    result = win.script("concurrent_senders.py", win_home[1])
    assert result["exit_codes"] == [0] * 20
    assert result["received"] == result["expected"] == 120
    assert result["torn"] == 0
    assert result["senders_complete"] == 20


def test_writer_terminated_mid_message_corrupts_nothing(win: WinPython, tmp_path: Path) -> None:
    """A writer killed (TerminateProcess) inside a 32 MiB WriteFile: its cut message is
    dropped, the message before it and the next writer's message arrive whole."""
    result = win.script("kill_writer.py", f"kw{time.monotonic_ns() % 10**9}")
    assert result["cut_seen"], result
    assert result["bodies"] == ["before", "after"], result
    assert result["writer_exit"] != 0


def test_registry_under_twenty_concurrent_joins(win: WinPython, win_home: tuple[Path, str]) -> None:
    """20 agents join at once: 20 active entries, and none left after they all leave."""
    result = win.script("joins.py", win_home[1])
    assert result["joined"] == 20
    assert result["active"] == [f"agent{i:02d}" for i in range(20)]
    assert result["exit_codes"] == [0] * 20
    assert result["left_after"] == []
    registry = json.loads((win_home[0] / "agent_registry.json").read_text())
    assert registry["agents"] == {}


def test_three_agent_demo(win: WinPython) -> None:
    """`pipemesh demo` runs the seed's flow in three Windows processes and leaves nothing."""
    proc = win.run("-m", "pipemesh", "demo", timeout_s=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 messages handled" in proc.stdout
    assert "shut down: clean" in proc.stdout


def _wait_registered(win: WinPython, home: str, name: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc = win.run("-m", "pipemesh", "--json", "agents", env={"PIPEMESH_HOME": home})
        if proc.returncode == 0:
            entry = json.loads(proc.stdout).get(name)
            if entry is not None and entry.get("status") == "active":
                return
    pytest.fail(f"{name} did not register within {timeout_s}s")


def test_cli_send_listen_ask_and_logs(win: WinPython, win_home: tuple[Path, str]) -> None:
    """CLI on Windows: listen receives what send sends, ask gets bob's reply, and
    agents/tail/history/stats read the mesh."""
    home = win_home[1]
    env = {"PIPEMESH_HOME": home}
    listener = win.popen(
        "-m", "pipemesh", "listen", "carol", "--count", "1", "--timeout", "120", env=env
    )
    bob = win.popen(winpath(Path(__file__).parent / "win" / "responder.py"), home)
    assert bob.stdout is not None
    assert bob.stdout.readline().strip() == "ready"
    _wait_registered(win, home, "carol")

    sent = win.run("-m", "pipemesh", "send", "carol", "hello from windows", env=env)
    assert sent.returncode == 0, sent.stderr
    out, err = listener.communicate(timeout=120)
    assert listener.returncode == 0, err
    assert "hello from windows" in out

    asked = win.run("-m", "pipemesh", "ask", "bob", "what is 6*7?", "--timeout", "60", env=env)
    assert asked.returncode == 0, asked.stderr
    assert "echo: what is 6*7?" in asked.stdout

    for args in (["agents"], ["tail", "--no-follow"], ["history"], ["stats"]):
        proc = win.run("-m", "pipemesh", *args, env=env)
        assert proc.returncode == 0, (args, proc.stderr)
        if args[0] in ("tail", "history"):
            assert "hello from windows" in proc.stdout, (args, proc.stdout)
    assert bob.stdin is not None
    bob.stdin.close()
    assert bob.wait(timeout=60) == 0
    registry = json.loads((win_home[0] / "agent_registry.json").read_text())
    assert registry["agents"] == {}


def test_run_command_agent_answers(win: WinPython, win_home: tuple[Path, str]) -> None:
    """`pipemesh run command` on Windows: a Windows program's stdout is the reply to `ask`."""
    home = win_home[1]
    env = {"PIPEMESH_HOME": home}
    answer = "import sys; sys.stdin.read(); print('answered on windows')"
    runner = win.popen(
        "-m",
        "pipemesh",
        "run",
        "command",
        "--name",
        "worker",
        "--",
        win.python_win,
        "-c",
        answer,
        env=env,
    )
    _wait_registered(win, home, "worker")
    asked = win.run("-m", "pipemesh", "ask", "worker", "do it", "--timeout", "90", env=env)
    assert asked.returncode == 0, asked.stderr
    assert "answered on windows" in asked.stdout
    assert runner.stdin is not None
    runner.stdin.close()
    runner.kill()  # SIGKILL of the Wine process: the entry reads inactive, and gc clears it
    runner.wait(timeout=30)
    gc = win.run("-m", "pipemesh", "gc", env=env)
    assert gc.returncode == 0, gc.stderr
    assert "worker" not in json.loads((win_home[0] / "agent_registry.json").read_text())["agents"]


def test_setup_writes_windows_commands_and_hooks_run(
    win: WinPython, win_home: tuple[Path, str], tmp_path: Path
) -> None:
    """`pipemesh setup claude --write` writes a hook command line a Windows shell can run
    (forward slashes, quoted where needed), and `pipemesh hook context` answers on Windows."""
    project = tmp_path / "proj dir"
    project.mkdir()
    env = {"PIPEMESH_HOME": win_home[1]}
    proc = win.run(
        "-m",
        "pipemesh",
        "setup",
        "claude",
        "--name",
        "alice",
        "--dir",
        winpath(project),
        "--write",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    settings = json.loads((project / ".claude" / "settings.json").read_text())
    commands = [
        hook["command"]
        for entries in settings["hooks"].values()
        for entry in entries
        for hook in entry["hooks"]
    ]
    # cmd.exe quoting (subprocess.list2cmdline), as setup_clients.shell_join writes on Windows.
    assert any(" hook stop --cli claude --name alice" in c for c in commands), commands
    assert all(c.startswith(("Z:\\", '"Z:\\')) for c in commands), commands
    mcp = json.loads((project / ".mcp.json").read_text())
    assert mcp["mcpServers"]["pipemesh"]["args"][-3:] == ["mcp", "--name", "alice"]
    hook = win.run(
        "-m",
        "pipemesh",
        "hook",
        "context",
        "--cli",
        "claude",
        "--name",
        "alice",
        input_text="{}",
        env=env,
    )
    assert hook.returncode == 0, hook.stderr


def test_mcp_server_on_windows_with_the_official_client(
    win: WinPython, win_home: tuple[Path, str]
) -> None:
    """Two `pipemesh mcp` servers run by Windows Python, driven over stdio by the official
    `mcp` client (running under Linux Python): send, waiting inbox read, reply."""
    import anyio
    from mcp import ClientSession, StdioServerParameters, stdio_client
    from mcp.types import CallToolResult, TextContent

    def text(result: CallToolResult) -> str:
        return "\n".join(c.text for c in result.content if isinstance(c, TextContent))

    async def connect(stack: AsyncExitStack, name: str) -> ClientSession:
        params = StdioServerParameters(
            command=win.wine,
            args=[win.python, "-m", "pipemesh", "--home", win_home[1], "mcp", "--name", name],
            env=win.env(),
        )
        # Wine 8 cannot give a Windows Python a regular file as stderr ("invalid handle"),
        # and pytest's capture is one: the server's stderr goes to a pipe we drain.
        read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
        session = await stack.enter_async_context(ClientSession(read, write))
        with anyio.fail_after(90):
            await session.initialize()
        return session

    async def call(session: ClientSession, tool: str, **args: object) -> CallToolResult:
        with anyio.fail_after(90):
            result = await session.call_tool(tool, dict(args))
        assert isinstance(result, CallToolResult)
        return result

    async def main() -> None:
        async with AsyncExitStack() as stack:
            alice = await connect(stack, "alice")
            bob = await connect(stack, "bob")
            got: dict[str, CallToolResult] = {}

            async def bob_waits() -> None:
                got["inbox"] = await call(bob, "inbox", wait_s=60)

            async with anyio.create_task_group() as tg:
                tg.start_soon(bob_waits)
                sent = await call(alice, "send", to="bob", text="build status?", type="question")
                assert not sent.is_error, text(sent)
            msg_id = text(sent).split()[1]
            assert "build status?" in text(got["inbox"])
            assert f"[{msg_id}] from alice, question" in text(got["inbox"])
            replied = await call(bob, "reply", id=msg_id, text="green on windows")
            assert not replied.is_error, text(replied)
            answer = await call(alice, "inbox", wait_s=60)
            assert "green on windows" in text(answer)

    r_fd, w_fd = os.pipe()
    errors: list[bytes] = []
    drain = threading.Thread(target=lambda: errors.extend(iter(lambda: os.read(r_fd, 65536), b"")))
    drain.start()
    errlog = os.fdopen(w_fd, "w")
    try:
        anyio.run(main)
    finally:
        errlog.close()
        drain.join(30)
        os.close(r_fd)
    assert b"Traceback" not in b"".join(errors), b"".join(errors)[-3000:]
    registry = json.loads((win_home[0] / "agent_registry.json").read_text())
    assert registry["agents"] == {}


@pytest.mark.parametrize(("signame", "code"), [("SIGINT", 130), ("SIGBREAK", 128 + 21)])
def test_ctrl_c_and_ctrl_break_leave_no_entry(
    win: WinPython, win_home: tuple[Path, str], signame: str, code: int
) -> None:
    """`pipemesh listen` stopped by Ctrl-C (SIGINT) or Ctrl-Break (SIGBREAK) unregisters.

    The signal is raised inside the process: Wine offers no console to send a real
    Ctrl-Break from, so this tests pipemesh's handlers, not the console's delivery."""
    result = win.script("stop_signals.py", win_home[1], signame)
    assert result["registered"] is True
    assert result["exit_code"] == code
    # Read once the process has exited: a signal that lands while the agent is still
    # being set up (after its entry is written, before `with agent:`) is cleaned up by
    # the agent's exit guard at interpreter exit, not before (seen once under load).
    # A signal that lands before the agent's first registry write leaves no file at all,
    # which is "no entry" too.
    path = win_home[0] / "agent_registry.json"
    registry = json.loads(path.read_text()) if path.exists() else {"agents": {}}
    assert registry["agents"] == {}, (registry, result["left"])


def test_log_appends_from_30_processes_all_whole(win: WinPython, tmp_path: Path) -> None:
    """30 Windows processes append 300 records each to one log: all 9000 whole and present."""
    logs = tmp_path / "logs"
    logs.mkdir()
    result = win.script("log_appends.py", winpath(logs), timeout_s=400)
    assert result["invalid"] == 0
    assert result["dropped"] == 0
    assert result["lines"] == result["unique_ids"] == result["expected"] == 9000


def test_rotation_and_platform_tests_under_windows(win: WinPython) -> None:
    """The log rotation tests that need no POSIX test helpers, and the platform unit tests,
    pass under Windows Python: rotation renames logs other processes hold open."""
    proc = win.run(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        winpath(ROOT / "tests" / "integration" / "test_rotation.py"),
        winpath(ROOT / "tests" / "unit" / "test_platform.py"),
        "-k",
        # test_logtail_follows_rotation is left out: under Wine it missed records across
        # two rotations between polls in about 1 run of 3 (docs/windows.md, known limits).
        "many_writers or keeps_only or platform",
        timeout_s=300,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "6 passed" in out or "5 passed" in out, out[-2000:]
    assert "failed" not in out


def test_hundred_writers_connect_while_the_inbox_reads(win: WinPython) -> None:
    """100 writers connect one after another while the inbox reads (spare instances keep
    coming, past 64 wait handles), and each one's message arrives."""
    result = win.script("many_writers.py", f"mw{time.monotonic_ns() % 10**9}")
    assert result["errors"] == []
    assert result["connected"] == 100
    assert result["received"] == list(range(100))
