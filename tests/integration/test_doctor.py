"""`pipemesh doctor`: what a project lacks per agent CLI, with a private HOME and a fake CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path: Path) -> dict[str, str]:
    """A private HOME, a project, and a `claude` on PATH that only knows --version."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "claude"
    fake.write_text("#!/bin/sh\necho '9.9.9 (Claude Code)'\n")
    fake.chmod(0o755)
    (tmp_path / "home").mkdir()
    (tmp_path / "project").mkdir()
    (tmp_path / "mesh").mkdir(mode=0o700)
    pipemesh_bin = Path(sys.executable).parent
    return {
        "HOME": str(tmp_path / "home"),
        "PATH": os.pathsep.join([str(bin_dir), str(pipemesh_bin), "/usr/bin", "/bin"]),
        "PIPEMESH_HOME": str(tmp_path / "mesh"),
        "PROJECT": str(tmp_path / "project"),
    }


def _pipemesh(world: dict[str, str], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipemesh", *args],
        env={**os.environ, **world, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_doctor_says_what_is_missing_until_setup_is_complete(world: dict[str, str]) -> None:
    """Nothing set up, then set up but not approved, then all set: exit 1, 1, 0."""
    project = world["PROJECT"]
    bare = _pipemesh(world, "doctor", "--dir", project)
    assert bare.returncode == 1
    assert "no agent CLI is set up" in bare.stdout
    assert (
        _pipemesh(world, "setup", "claude", "--name", "cc", "--dir", project, "--write").returncode
        == 0
    )
    half = _pipemesh(world, "doctor", "--dir", project)
    assert half.returncode == 1, half.stdout
    assert "ok       installed" in half.stdout
    assert "9.9.9 (Claude Code)" in half.stdout
    assert "MISSING  approved" in half.stdout
    assert "--write --approve" in half.stdout
    approve = ("setup", "claude", "--name", "cc", "--dir", project, "--write", "--approve")
    assert _pipemesh(world, *approve).returncode == 0
    done = _pipemesh(world, "doctor", "--dir", project)
    assert done.returncode == 0, done.stdout
    assert done.stdout.rstrip().endswith("all set")


def test_doctor_finds_another_mesh_home_and_a_missing_cli(world: dict[str, str]) -> None:
    """A server set up for one mesh home, checked from a shell on another; gemini absent."""
    project = world["PROJECT"]
    approve = ("setup", "claude", "--name", "cc", "--dir", project, "--write", "--approve")
    assert _pipemesh(world, *approve).returncode == 0
    other = _pipemesh(world, "doctor", "--dir", project, PIPEMESH_HOME=world["HOME"])
    assert other.returncode == 1
    assert "MISSING  mesh home" in other.stdout
    assert "agents would not see each other" in other.stdout
    gemini = _pipemesh(world, "doctor", "--cli", "gemini", "--dir", project)
    assert gemini.returncode == 1
    assert "gemini is not on PATH; install it: npm install -g @google/gemini-cli" in gemini.stdout
