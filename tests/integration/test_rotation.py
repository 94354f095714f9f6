"""Log rotation with many processes appending: nothing lost, nothing split, and readers
(``LogTail``, ``pipemesh tail``) follow the renames."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path

import pytest

from pipemesh.observe import COMM_LOG, EventLog, LogTail, log_files, read_log
from tests.conftest import Spawner, wait_for

pytestmark = pytest.mark.integration

WRITERS = 6
RECORDS_EACH = 600
DEADLINE_S = 60.0

# argv: logs_dir writer_name count. Small max_bytes and keep_files high enough
# that no rotated file is dropped, so every record must still be there.
WRITER = """
import sys
from pathlib import Path
from pipemesh.observe import EventLog
logs, who, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
log = EventLog(logs, who, max_bytes=2048, keep_files=10_000, flush_interval_s=0.001)
for i in range(n):
    log.message("frame_sent", sender=who, to="x", msg_type="t", priority=1,
                msg_id=f"{who}-{i}", body="b" * (i % 200))
log.close()
"""


def write_batches(log: EventLog, path: Path, n: int, prefix: str, batch: int = 10) -> None:
    """Write ``n`` messages, waiting after each ``batch`` until they are on disk,
    so the writer thread makes many separate appends (and so many rotations)."""
    for i in range(n):
        log.message(
            "frame_sent",
            sender="a",
            to="b",
            msg_type="t",
            priority=1,
            msg_id=f"{prefix}{i}",
            body="y" * 50,
        )
        if i % batch == batch - 1 or i == n - 1:
            last = f"{prefix}{i}"
            wait_for(lambda last=last: any(r["id"] == last for r in read_log(path)), DEADLINE_S)


def test_rotation_many_writers_loses_and_splits_nothing(tmp_path: Path, spawn: Spawner) -> None:
    """Six processes appending across many rotations: every record once, every line whole."""
    logs = tmp_path / "logs"
    procs = [spawn.python(WRITER, str(logs), f"w{k}", str(RECORDS_EACH)) for k in range(WRITERS)]
    for proc in procs:
        assert proc.wait(timeout=DEADLINE_S) == 0, proc.stderr.read() if proc.stderr else ""
    files = log_files(logs / COMM_LOG)
    # Batches depend on scheduling; at least one rotation is certain (720 KB through 2 KiB files).
    assert len(files) > 1, "the test must actually rotate"
    for file in files:
        for line in file.read_bytes().splitlines():
            json.loads(line)  # a split or interleaved record would not parse
    ids = [rec["id"] for rec in read_log(logs / COMM_LOG)]
    expected = {f"w{k}-{i}" for k in range(WRITERS) for i in range(RECORDS_EACH)}
    assert len(ids) == len(expected)
    assert set(ids) == expected
    # Each writer's records stay in order across files (oldest file first).
    for k in range(WRITERS):
        mine = [int(i.split("-")[1]) for i in ids if i.startswith(f"w{k}-")]
        assert mine == sorted(mine)


def test_rotation_keeps_only_keep_files(tmp_path: Path) -> None:
    """Past ``keep_files`` rotations the oldest file is dropped, never the current one."""
    log = EventLog(tmp_path, "a", max_bytes=500, keep_files=2, flush_interval_s=0.001)
    try:
        for i in range(60):
            log.error("boom", f"error {i} " + "x" * 100)  # noqa: PLE1205 - not logging
            if i % 5 == 4:
                mark = f"error {i} "
                wait_for(
                    lambda mark=mark: any(
                        str(r["error"]).startswith(mark)
                        for r in read_log(tmp_path / "mesh_errors.log")
                    ),
                    DEADLINE_S,
                )
    finally:
        log.close()
    names = sorted(p.name for p in log_files(tmp_path / "mesh_errors.log"))
    assert names[0] == "mesh_errors.log"
    assert set(names) <= {"mesh_errors.log", "mesh_errors.log.1", "mesh_errors.log.2"}
    last = list(read_log(tmp_path / "mesh_errors.log"))[-1]
    assert last["error"].startswith("error 59 ")
    assert log.rotations > 2


def test_logtail_follows_rotation(tmp_path: Path) -> None:
    """A tail polled while a writer rotates, sometimes twice between polls, sees every
    record exactly once, in order."""
    path = tmp_path / COMM_LOG
    tail = LogTail(path)
    log = EventLog(tmp_path, "a", max_bytes=2048, keep_files=1000, flush_interval_s=0.001)
    seen: list[str] = []
    n = 200
    try:
        for start in range(0, n, 30):
            write_batches(log, path, 30, f"m{start}-", batch=10)
            seen += [str(r["id"]) for r in tail.poll()]
    finally:
        log.close()
    seen += [str(r["id"]) for r in tail.poll()]
    tail.close()
    assert log.rotations > 3
    assert seen == [f"m{start}-{i}" for start in range(0, n, 30) for i in range(30)]


def read_lines(proc: subprocess.Popen[str], count: int, lines: list[str]) -> None:
    """Read stdout lines of ``proc`` until ``lines`` holds ``count``, or the deadline.

    Reads the raw fd: a buffered readline could hold lines that select() no longer sees.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    partial = b""
    deadline = time.monotonic() + DEADLINE_S
    while len(lines) < count and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.01, deadline - time.monotonic()))
        if not ready:
            continue
        data = os.read(fd, 65536)
        if not data:
            return
        *done, partial = (partial + data).split(b"\n")
        lines += [line.decode() for line in done]


def test_cli_tail_survives_rotation(mesh_home: Path, spawn: Spawner) -> None:
    """``pipemesh tail`` keeps printing every record written after the file was renamed."""
    logs = mesh_home / "logs"
    path = logs / COMM_LOG
    log = EventLog(logs, "a", max_bytes=1024, keep_files=1000, flush_interval_s=0.001)
    n = 60
    lines: list[str] = []
    try:
        write_batches(log, path, 1, "r")
        proc = spawn.pipemesh("tail", "-n", "1", "--timeout", str(DEADLINE_S))
        read_lines(proc, 1, lines)  # tail is running: it printed the last record
        assert lines, "tail printed nothing"
        for start in range(1, n, 5):
            write_batches(log, path, 5, f"r{start}-", batch=5)
    finally:
        log.close()
    assert len(log_files(path)) > 3
    read_lines(proc, 1 + (n - 1 + 4) // 5 * 5, lines)
    got = [ln.split(" id ")[1].split()[0] for ln in lines]
    assert got == ["r0"] + [f"r{s}-{i}" for s in range(1, n, 5) for i in range(5)]


def test_log_lock_held_elsewhere_does_not_stall_or_lose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process holding the log lock forever (e.g. stopped) delays a writer, never loses."""
    import fcntl

    monkeypatch.setattr("pipemesh.observe._LOCK_TIMEOUT_S", 0.05)
    lock = os.open(tmp_path / "mesh_errors.log.lock", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        events = EventLog(tmp_path, "a", max_bytes=100, flush_interval_s=0.001)
        for i in range(3):
            events.error("boom", f"error {i} " + "x" * 100)
        events.close()
    finally:
        os.close(lock)
    records = [r["error"] for r in read_log(tmp_path / "mesh_errors.log")]
    assert [str(r).split()[1] for r in records] == ["0", "1", "2"]
    assert events.rotations == 0  # rotation waits for the lock; writing does not
