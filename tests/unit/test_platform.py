"""The platform helpers: liveness on both paths (/proc and psutil), locks, command lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipemesh import _platform


@pytest.fixture(params=["proc", "psutil"])
def liveness_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the Linux /proc path and on the psutil path macOS and Windows use."""
    if request.param == "proc" and not _platform._HAS_PROC:
        pytest.skip("no /proc here")
    monkeypatch.setattr(_platform, "_HAS_PROC", request.param == "proc")
    return str(request.param)


def test_pid_alive_same_process_reused_pid_and_dead(liveness_path: str) -> None:
    """A live pid with its start time is alive; another start time is a reused pid; a
    reaped child is dead."""
    me = os.getpid()
    started = _platform.process_start_time(me)
    assert started > 0
    assert _platform.pid_alive(me, started)
    assert _platform.pid_alive(me)
    assert not _platform.pid_alive(me, started + 1000)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not _platform.pid_alive(child.pid)
    assert not _platform.pid_alive(0)
    assert _platform.process_start_time(child.pid) == 0


def test_try_lock_is_exclusive_between_fds(tmp_path: Path) -> None:
    """An exclusive lock held on one fd refuses another; unlock frees it."""
    path = tmp_path / "x.lock"
    a = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    b = os.open(path, os.O_RDWR)
    try:
        assert _platform.try_lock(a, _platform.LOCK_EX)
        assert not _platform.try_lock(b, _platform.LOCK_EX)
        _platform.unlock(a)
        assert _platform.try_lock(b, _platform.LOCK_SH)
        _platform.unlock(b)
    finally:
        os.close(a)
        os.close(b)


def test_open_append_and_shared_read_survive_a_rename(tmp_path: Path) -> None:
    """A log open for appending and for reading can be renamed; both follow the file."""
    path = tmp_path / "x.log"
    fd = _platform.open_append(path)
    reader = _platform.open_shared_read(path)
    try:
        os.write(fd, b"one\n")
        os.replace(path, tmp_path / "x.log.1")
        os.write(fd, b"two\n")
        assert reader.read() == b"one\ntwo\n"
        assert (tmp_path / "x.log.1").read_bytes() == b"one\ntwo\n"
    finally:
        os.close(fd)
        reader.close()
