"""The Windows suite: a real Windows CPython 3.13 under Wine, driven from Linux pytest.

``make test-windows`` builds the environment (``scripts/windows-env``, cached in
``.cache/windows/``) and runs this folder. The default ``pytest`` run does not
collect it (``testpaths``), and without Wine every test here is skipped with the
reason. Scripts under ``win/`` run inside Windows Python; they print one JSON line
with what they saw, and the tests assert on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WIN_SCRIPTS = Path(__file__).resolve().parent / "win"


def winpath(path: Path | str) -> str:
    """The path as Windows Python sees it under Wine (``/`` is drive ``Z:``)."""
    return "Z:" + str(Path(path).resolve()).replace("/", "\\")


class WinPython:
    """Runs the Windows ``python.exe`` under Wine; every process it starts is reaped."""

    def __init__(self, wine: str, python: str, prefix: str) -> None:
        self.wine = wine
        self.python = python
        self.prefix = prefix
        self.procs: list[subprocess.Popen[str]] = []

    @property
    def python_win(self) -> str:
        """The path of python.exe as Windows programs see it."""
        return winpath(self.python)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, "WINEPREFIX": self.prefix, "WINEDEBUG": "-all"}
        env.pop("PIPEMESH_HOME", None)
        env.update(extra or {})
        return env

    def argv(self, *args: str) -> list[str]:
        return [self.wine, self.python, *args]

    def run(
        self,
        *args: str,
        timeout_s: float = 120.0,
        input_text: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python.exe args...`` to completion (stdin is never left unset: Wine needs it)."""
        return subprocess.run(
            self.argv(*args),
            input=input_text if input_text is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=self.env(env),
            check=False,
        )

    def script(self, name: str, *args: str, timeout_s: float = 300.0) -> dict[str, object]:
        """Run ``win/<name>`` and return the JSON object on its last stdout line."""
        proc = self.run(winpath(WIN_SCRIPTS / name), *args, timeout_s=timeout_s)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        report = (
            f"{name} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
            f"stderr:\n{proc.stderr[-3000:]}"
        )
        assert proc.returncode == 0, report
        assert lines, report
        result: dict[str, object] = json.loads(lines[-1])
        return result

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start ``python.exe args...`` with pipes on stdin, stdout and stderr."""
        proc = subprocess.Popen(
            self.argv(*args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(env),
        )
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        deadline = time.monotonic() + 20
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self.procs.clear()


@pytest.fixture(scope="session")
def win_env() -> Iterator[dict[str, str]]:
    """Build (or reuse) the Wine environment once per session; skip if it cannot be had."""
    if not Path("/usr/lib/wine/wine64").exists() and os.environ.get("PIPEMESH_WIN_REQUIRED"):
        pytest.fail("wine64 is missing; run scripts/windows-env")
    proc = subprocess.run(
        [str(ROOT / "scripts" / "windows-env"), "--print-env"],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if proc.returncode != 0:
        message = f"scripts/windows-env failed: {proc.stderr[-2000:]}"
        if os.environ.get("PIPEMESH_WIN_REQUIRED"):
            pytest.fail(message)
        pytest.skip(message)
    env = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    # The first Wine process of a prefix starts wineserver, which inherits that process's
    # stdout/stderr and keeps them open while any Wine process runs: a test reading a
    # short command's output to EOF would then wait for the whole session (seen: `agents`
    # timed out with its output complete). So the server is started here, persistent,
    # with no stdio of ours, and stopped at the end.
    server_env = {**os.environ, "WINEPREFIX": env["WINEPREFIX"], "WINEDEBUG": "-all"}
    wineserver = str(Path(env["PIPEMESH_WINE"]).with_name("wineserver"))
    null = subprocess.DEVNULL
    subprocess.run(
        [wineserver, "-p"],
        env=server_env,
        stdin=null,
        stdout=null,
        stderr=null,
        timeout=60,
        check=False,
    )
    # The first Wine process also starts the prefix's services (winedevice.exe, ...), which
    # inherit its stdio the same way: boot them from a process with none.
    subprocess.run(
        [env["PIPEMESH_WINE"], env["PIPEMESH_WIN_PYTHON"], "-c", "pass"],
        env=server_env,
        stdin=null,
        stdout=null,
        stderr=null,
        timeout=120,
        check=False,
    )
    try:
        yield env
    finally:
        # -k ends what is left in this private prefix (every test reaps its own processes
        # first), then the server itself.
        subprocess.run(
            [wineserver, "-k"], env=server_env, timeout=60, check=False, capture_output=True
        )


@pytest.fixture
def win(win_env: dict[str, str]) -> Iterator[WinPython]:
    """Windows Python under Wine; its processes are reaped at teardown."""
    runner = WinPython(
        win_env["PIPEMESH_WINE"], win_env["PIPEMESH_WIN_PYTHON"], win_env["WINEPREFIX"]
    )
    try:
        yield runner
    finally:
        runner.cleanup()


@pytest.fixture
def win_home(tmp_path: Path) -> tuple[Path, str]:
    """A fresh mesh home: its Linux path and the same path as Windows sees it."""
    home = tmp_path / "mesh"
    home.mkdir()
    return home, winpath(home)
