"""Fixtures for the end-to-end suite: the real CLIs, a fake model, a private sandbox each.

The CLIs come from ``.cache/e2e-npm`` (``make e2e`` installs the exact versions pinned in
``tests/e2e/package.json``); set ``PIPEMESH_E2E_BIN`` to use another ``node_modules/.bin``.
A test whose CLI is missing is skipped with the command that installs it.

Every CLI runs with a private ``HOME``, ``TMPDIR`` and XDG directories under the test's
``tmp_path``, talks only to the fake model on 127.0.0.1, and is killed with its process
group when the test ends. Nothing is read from or written to the real user's config.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.fakemodel import FakeModel

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(
    os.environ.get("PIPEMESH_E2E_BIN", ROOT / ".cache" / "e2e-npm" / "node_modules" / ".bin")
)
VENV_BIN = Path(sys.executable).parent
API_KEY = "fake-key-for-a-loopback-test-server"


def cli_path(name: str) -> Path:
    """The installed CLI ``name``, or skip the test saying how to install it."""
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed in {BIN}; run 'make e2e' (it installs the CLIs)")
    return path


@dataclass
class Sandbox:
    """A private world for one CLI: HOME, TMPDIR, project dir, mesh home, environment."""

    root: Path
    model: FakeModel
    home: Path = field(init=False)
    tmp: Path = field(init=False)
    project: Path = field(init=False)
    mesh: Path = field(init=False)
    env: dict[str, str] = field(init=False)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.home = self.root / "home"
        self.tmp = self.root / "tmp"
        self.project = self.root / "project dir"  # a space, as on many Windows/macOS paths
        self.mesh = self.root / "mesh home"  # quoting in hook commands
        for d in (self.home, self.tmp, self.project):
            d.mkdir(parents=True)
        self.mesh.mkdir(mode=0o700)
        path = os.pathsep.join([str(VENV_BIN), str(BIN), "/usr/local/bin", "/usr/bin", "/bin"])
        self.env = {
            "HOME": str(self.home),
            "USERPROFILE": str(self.home),
            "TMPDIR": str(self.tmp),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"),
            "XDG_STATE_HOME": str(self.home / ".local" / "state"),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "PATH": path,
            "LANG": "C.UTF-8",
            "PIPEMESH_HOME": str(self.mesh),
            "NO_COLOR": "1",
            "CI": "1",
            # Claude Code
            "ANTHROPIC_BASE_URL": self.model.url,
            "ANTHROPIC_API_KEY": API_KEY,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            # Gemini CLI
            "GOOGLE_GEMINI_BASE_URL": self.model.url,
            "GEMINI_API_KEY": API_KEY,
            "GEMINI_CLI_NO_RELAUNCH": "true",
            # Codex (the provider block in config.toml names this variable)
            "CODEX_HOME": str(self.home / ".codex"),
            "FAKE_OPENAI_KEY": API_KEY,
        }

    def write(self, rel: str, text: str) -> Path:
        """Write a file under HOME (``~/...``) or the project (anything else)."""
        path = self.home / rel[2:] if rel.startswith("~/") else self.project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def write_json(self, rel: str, data: object) -> Path:
        return self.write(rel, json.dumps(data, indent=2) + "\n")

    def run(
        self,
        argv: list[str],
        *,
        timeout_s: float = 120.0,
        input_text: str | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the sandbox to completion; kill its process group at the deadline."""
        proc = self.spawn(argv, cwd=cwd, env=env, stdin=subprocess.PIPE)
        try:
            out, err = proc.communicate(input_text, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            out, err = proc.communicate()
            pytest.fail(
                f"{argv[0]} did not finish within {timeout_s}s\nstdout: {out[-2000:]}\n"
                f"stderr: {err[-2000:]}"
            )
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def spawn(
        self,
        argv: list[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
    ) -> subprocess.Popen[str]:
        """Start ``argv`` in its own process group; killed at the end of the test."""
        proc = subprocess.Popen(
            argv,
            cwd=cwd or self.project,
            env={**self.env, **(env or {})},
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def pipemesh(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``pipemesh ARGS`` (this checkout's) in the sandbox."""
        return self.run([str(VENV_BIN / "pipemesh"), *args], timeout_s=timeout_s)

    def spawn_pipemesh(self, *args: str) -> subprocess.Popen[str]:
        return self.spawn([str(VENV_BIN / "pipemesh"), *args])

    def wait_registered(self, name: str, timeout_s: float = 60.0) -> None:
        """Wait until agent ``name`` is active on the mesh."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = self.pipemesh("--json", "agents").stdout
            with contextlib.suppress(ValueError, AttributeError):
                if json.loads(out or "{}").get(name, {}).get("status") == "active":
                    return
            time.sleep(0.2)
        pytest.fail(f"agent {name} did not join the mesh within {timeout_s}s")

    @staticmethod
    def _kill(proc: subprocess.Popen[str]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self._kill(proc)
            else:
                # The leader exited; its group (e.g. a pipemesh mcp it started) may live on.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


@pytest.fixture
def model() -> Iterator[FakeModel]:
    """A fake model server on 127.0.0.1 (its brain answers "done" until a test sets one).

    A brain that raised fails the test here (the CLI only saw an error text)."""
    with FakeModel() as fake:
        yield fake
    assert not fake.errors, fake.errors


@pytest.fixture
def sandbox(tmp_path: Path, model: FakeModel) -> Iterator[Sandbox]:
    """A private HOME/TMPDIR/project/mesh home whose processes die with the test."""
    box = Sandbox(tmp_path, model)
    try:
        yield box
    finally:
        box.close()
