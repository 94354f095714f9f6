"""The log writer under faults: 100 rotating writers, held locks, bad text, a full disk."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipemesh.observe import COMM_LOG, ERRORS_LOG, EventLog, log_files, read_log
from tests.adversarial.conftest import fill
from tests.conftest import Spawner, wait_for

WRITERS = 100
RECORDS_EACH = 200

# argv: logs_dir writer_name count. Small files, and keep_files high enough that rotation
# drops nothing, so every record must be found.
WRITER = """
import sys
from pathlib import Path
from pipemesh.observe import EventLog
logs, who, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
log = EventLog(logs, who, max_bytes=16 * 1024, keep_files=100_000, flush_interval_s=0.001)
for i in range(n):
    log.message("frame_sent", sender=who, to="x", msg_type="t", priority=1,
                msg_id=f"{who}-{i}", body="b" * (i * 37 % 500))
log.close()
print(log.dropped, flush=True)
"""


def log_lines(path: Path) -> list[bytes]:
    return [line for f in log_files(path) for line in f.read_bytes().splitlines()]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_100_rotating_writers_lose_nothing(tmp_path: Path, spawn: Spawner) -> None:
    """100 processes append 200 records each through 16 KiB files: all 20,000 records are
    in the files exactly once, every line whole, and no writer reports a drop."""
    logs = tmp_path / "logs"
    procs = [
        spawn.python(WRITER, str(logs), f"w{k:03d}", str(RECORDS_EACH)) for k in range(WRITERS)
    ]
    dropped = 0
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        dropped += int(out.strip())
    lines = log_lines(logs / COMM_LOG)
    ids = [json.loads(line)["id"] for line in lines]  # a torn line would not parse
    expected = {f"w{k:03d}-{i}" for k in range(WRITERS) for i in range(RECORDS_EACH)}
    missing = len(expected - set(ids))
    assert (missing, dropped) == (0, 0), f"{missing} records missing, {dropped} reported dropped"
    assert len(ids) == len(expected)
    assert len(log_files(logs / COMM_LOG)) > 10, "the test must actually rotate"


def test_close_writes_everything_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    """With the log lock held exclusively elsewhere (a stopped process), close() still
    writes every queued record, and promptly (it does not wait out the lock)."""
    log = EventLog(tmp_path, "me", flush_interval_s=0.001)
    blocker = os.open(tmp_path / (COMM_LOG + ".lock"), os.O_RDWR)
    try:
        fcntl.flock(blocker, fcntl.LOCK_EX)
        for i in range(500):
            log.message(
                "frame_sent", sender="me", to="x", msg_type="t", priority=1, msg_id=f"m{i}", body=""
            )
        started = time.monotonic()
        log.close()
        took = time.monotonic() - started
    finally:
        os.close(blocker)
    ids = [r["id"] for r in read_log(tmp_path / COMM_LOG)]
    assert ids == [f"m{i}" for i in range(500)]
    assert log.dropped == 0
    assert took < 4.0, f"close() took {took:.1f}s behind a held lock"


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def test_bad_text_never_kills_the_writer(tmp_path: Path) -> None:
    """Lone surrogates in an error text and a body, and a field that cannot be turned into
    text, are written (or replaced by an error line); the writer thread lives on."""
    log = EventLog(tmp_path, "me", flush_interval_s=0.001)
    try:
        log.error(  # noqa: PLE1205 - not logging
            "handler_failed", "bad \udc80 bytes"
        )
        log.message(
            "frame_sent",
            sender="me",
            to="x",
            msg_type="t",
            priority=1,
            msg_id="s1",
            body="a\ud800b",
        )
        log.error(  # noqa: PLE1205 - not logging
            "odd_field", "fine", detail=_Unprintable()
        )
        log.error(  # noqa: PLE1205 - not logging
            "after", "still writing"
        )
        wait_for(
            lambda: any(r.get("event") == "after" for r in read_log(tmp_path / ERRORS_LOG)),
            timeout_s=30,
        )
        assert log._thread is not None
        assert log._thread.is_alive()
    finally:
        log.close()
    errors = [json.loads(line) for line in log_lines(tmp_path / ERRORS_LOG)]
    assert [r["event"] for r in errors] == [
        "handler_failed",
        "log_record_unwritable",
        "after",
    ]
    assert errors[0]["error"] == "bad \udc80 bytes"
    (sent,) = [json.loads(line) for line in log_lines(tmp_path / COMM_LOG)]
    assert sent["body"] == "a\ud800b"


@pytest.mark.integration
def test_disk_full_mid_record_leaves_no_glued_line(tiny_fs: Callable[[int], Path]) -> None:
    """A write cut short by a full disk (one page left for two 3 KB records) must not leave
    half a line for the next record to be glued to: once there is space again, every line
    reads back whole, the next record included, and only the torn record counts as dropped."""
    point = tiny_fs(1 << 20)
    logs = point / "logs"
    log = EventLog(logs, "me", flush_interval_s=0.001, max_bytes=0)
    try:
        filler = fill(point / "filler")
        os.truncate(filler, max(0, filler.stat().st_size - 4096))  # one page free
        log.message(
            "frame_sent",
            sender="me",
            to="x",
            msg_type="t",
            priority=1,
            msg_id="big",
            body="y" * 3000,
        )
        log.message(
            "frame_sent",
            sender="me",
            to="x",
            msg_type="t",
            priority=1,
            msg_id="big2",
            body="z" * 3000,
        )
        wait_for(lambda: log.dropped >= 1, timeout_s=30)
        assert (logs / COMM_LOG).read_bytes(), "the first record must have been written"
        filler.unlink()
        log.message(
            "frame_sent", sender="me", to="x", msg_type="t", priority=1, msg_id="after", body="ok"
        )
        wait_for(lambda: b'"id":"after"' in (logs / COMM_LOG).read_bytes(), timeout_s=30)
    finally:
        log.close()
    lines = log_lines(logs / COMM_LOG)
    ids = [str(json.loads(line)["id"]) for line in lines]  # every line whole
    assert ids == ["big", "after"]
    assert log.dropped == 1


# A size limit (RLIMIT_FSIZE) stands in for a full disk where no tmpfs can be mounted:
# a write crossing it is cut short, the next fails with EFBIG (Python ignores SIGXFSZ).
FSIZE = """
import resource, sys, time
from pathlib import Path
from pipemesh.observe import EventLog
logs = Path(sys.argv[1])
log = EventLog(logs, "me", flush_interval_s=0.001, max_bytes=0)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (5000, hard))
def send(msg_id, body):
    log.message("frame_sent", sender="me", to="x", msg_type="t", priority=1, msg_id=msg_id,
                body=body)
send("big", "y" * 3000)
send("big2", "z" * 3000)
deadline = time.monotonic() + 30
while log.dropped < 1 and time.monotonic() < deadline:
    time.sleep(0.01)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
send("after", "ok")
log.close()
print(log.dropped)
"""


@pytest.mark.integration
def test_size_limit_mid_record_leaves_no_glued_line(tmp_path: Path, spawn: Spawner) -> None:
    """The same as a full disk, with a file size limit: after the limit is lifted, the next
    record reads back whole and only the cut record counts as dropped."""
    proc = spawn.python(FSIZE, str(tmp_path))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == "1"
    ids = [str(json.loads(line)["id"]) for line in log_lines(tmp_path / COMM_LOG)]
    assert ids == ["big", "after"]
