"""Shared fixtures: a private mesh home per test, a process spawner that always
reaps, and deadline-bounded polling instead of sleeps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PY = sys.executable


def wait_for(
    condition: Callable[[], object], timeout_s: float = 10.0, interval_s: float = 0.01
) -> object:
    """Poll ``condition`` until it returns a truthy value; fail the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s}s: {condition}")
        time.sleep(interval_s)


@pytest.fixture
def mesh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh 0700 mesh home; also exported as $PIPEMESH_HOME for child processes."""
    home = tmp_path / "mesh"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("PIPEMESH_HOME", str(home))
    return home


class Spawner:
    """Starts child processes and guarantees they are killed and reaped."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def __call__(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = subprocess.PIPE,
        stderr: int | None = subprocess.PIPE,
        cwd: str | Path | None = None,
    ) -> subprocess.Popen[str]:
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.Popen(
            argv,
            env=full_env,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            text=True,
            cwd=cwd,
        )
        self.procs.append(proc)
        return proc

    def python(self, code: str, *args: str, **kw: object) -> subprocess.Popen[str]:
        """Run ``python -c code args...``."""
        return self([PY, "-c", code, *args], **kw)  # type: ignore[arg-type]

    def pipemesh(self, *args: str, **kw: object) -> subprocess.Popen[str]:
        """Run ``python -m pipemesh args...``."""
        return self([PY, "-m", "pipemesh", *args], **kw)  # type: ignore[arg-type]

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    stream.close()


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    """Spawn real child processes; all are terminated and reaped at teardown."""
    spawner = Spawner()
    try:
        yield spawner
    finally:
        spawner.cleanup()


def run_cli(
    *args: str, timeout_s: float = 60.0, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pipemesh args...`` to completion and return the result."""
    return subprocess.run(
        [PY, "-m", "pipemesh", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        input=input_text,
        check=False,
    )
