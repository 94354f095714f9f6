"""The history index (SQLite FTS5): built incrementally from the logs, across rotation,
sorted by time, bodies stored once, 0600, and what 'pipemesh history "text"' prints."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from pipemesh import AgentBase
from pipemesh.history_index import INDEX_FILE, HistoryIndex, causal_order
from pipemesh.observe import COMM_LOG
from tests.conftest import PY, run_cli, wait_for

pytestmark = pytest.mark.integration


def _line(ts: float, msg_id: str, body: str, *, event: str = "frame_sent") -> str:
    return json.dumps(
        {
            "ts": ts,
            "event": event,
            "agent": "a" if event == "frame_sent" else "b",
            "from": "a",
            "to": "b",
            "type": "status",
            "priority": 1,
            "id": msg_id,
            "re": "",
            "bytes": len(body),
            "body": body if event == "frame_sent" else "",
        }
    )


def test_index_is_incremental_across_rotation_and_sorted(tmp_path: Path) -> None:
    """Records written out of time order come back sorted; a rotation (rename) and a new
    file are read from where the index stopped, nothing twice; a partial line waits."""
    logs = tmp_path / "logs"
    logs.mkdir()
    comm = logs / COMM_LOG
    comm.write_text(_line(20.0, "m-2", "second") + "\n" + _line(10.0, "m-1", "first") + "\n")
    with HistoryIndex(logs) as index:
        assert index.update().added == 2
        assert [r["id"] for r in index.search()] == ["m-1", "m-2"]  # by time, not file order
        with open(comm, "a") as f:
            f.write(_line(30.0, "m-3", "third") + "\n" + _line(31.0, "m-4", "fourth")[:20])
        assert index.update().added == 1  # the partial line is not read yet
        comm.rename(logs / f"{COMM_LOG}.1")  # rotation: same inode, new name
        with open(logs / f"{COMM_LOG}.1", "a") as f:
            f.write(_line(31.0, "m-4", "fourth")[20:] + "\n")
        comm.write_text(_line(40.0, "m-5", "fifth") + "\n" + _line(40.5, "m-5", "", event="x"))
        with open(comm, "a") as f:
            f.write("\n")
        update = index.update()
        assert update.added == 3  # m-4 (completed), m-5 sent and its other record
        assert update.skipped == 0
        assert index.update().added == 0
        assert [r["id"] for r in index.search()] == ["m-1", "m-2", "m-3", "m-4", "m-5"]
        assert [r["body"] for r in index.search(text="FOUR")] == ["fourth"]
        assert [r["id"] for r in index.search(text="i", limit=2)] == ["m-3", "m-5"]
        both = index.search(all_events=True, since=40.0)
        assert [r["body"] for r in both] == ["fifth", "fifth"]  # stored once, shown twice
    db = sqlite3.connect(logs / INDEX_FILE)
    assert db.execute("SELECT count(*) FROM bodies WHERE msg_id = 'm-5'").fetchone()[0] == 1
    db.close()


def test_index_truncated_log_is_reread_without_duplicates(tmp_path: Path) -> None:
    """A log truncated in place is read again from the start; the unique key keeps rows once."""
    logs = tmp_path / "logs"
    logs.mkdir()
    comm = logs / COMM_LOG
    comm.write_text(_line(1.0, "t-1", "one") + "\n" + _line(2.0, "t-2", "two") + "\n")
    with HistoryIndex(logs) as index:
        index.update()
        comm.write_text(_line(1.0, "t-1", "one") + "\n")
        index.update()
        with open(comm, "a") as f:
            f.write(_line(3.0, "t-3", "three") + "\n")
        index.update()
        assert [r["id"] for r in index.search()] == ["t-1", "t-2", "t-3"]


def test_history_command_uses_a_private_index(mesh_home: Path) -> None:
    """'pipemesh history "text"' finds the body from real traffic, builds the index under
    the home with mode 0600, and received records carry no second copy of the body."""
    os.umask(0o022)
    with AgentBase("gemini") as g, AgentBase("codex") as c:
        c.send_message("gemini", "Deploy the Pipeline today")
        assert g.receive(10) is not None
    comm = mesh_home / "logs" / COMM_LOG
    wait_for(lambda: comm.read_bytes().count(b"\n") >= 2, 30)
    records = [json.loads(line) for line in comm.read_text().splitlines()]
    received = [r for r in records if r["event"] == "frame_received"]
    assert received
    assert all(r["body"] == "" for r in received)  # the body is in the frame_sent record only
    out = run_cli("history", "the pipeline")
    assert out.returncode == 0, out.stderr
    assert "Deploy the Pipeline today" in out.stdout
    assert out.stdout.count("\n") == 1
    index = mesh_home / "logs" / INDEX_FILE
    assert stat.S_IMODE(index.stat().st_mode) == 0o600
    none = run_cli("history", "absent words")
    assert none.returncode == 0
    assert none.stdout == ""
    both = run_cli("history", "x", "--text", "y")
    assert both.returncode == 2


def _history(mesh_home: Path, *args: str, tz: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "pipemesh", "history", *args],
        env={**os.environ, "PIPEMESH_HOME": str(mesh_home), "TZ": tz},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_history_shows_and_reads_local_time(mesh_home: Path) -> None:
    """Times print as local time with the UTC offset, and a naive --since is local time
    (was: UTC shown unlabelled, and a naive --since read as UTC)."""
    logs = mesh_home / "logs"
    logs.mkdir(mode=0o700)
    ts = 1764500000.0  # 2025-11-30 10:53:20 UTC
    (logs / COMM_LOG).write_text(_line(ts, "z-1", "zoned") + "\n")
    tz = "IST-5:30"  # a POSIX TZ string: UTC+05:30, no tz database needed
    out = _history(mesh_home, tz=tz)
    assert out.returncode == 0, out.stderr
    assert "[2025-11-30 16:23:20.000 +05:30]" in out.stdout
    assert "zoned" in _history(mesh_home, "--since", "2025-11-30T16:23", tz=tz).stdout
    assert _history(mesh_home, "--since", "2025-11-30T16:24", tz=tz).stdout == ""
    assert "zoned" in _history(mesh_home, "--until", "2025-11-30 16:24", tz=tz).stdout


def test_causal_order_puts_replies_after_their_question() -> None:
    """A reply logged a moment before its question (busy sender) is shown after it;
    unrelated records keep their time order; a loop of 're' fields does not hang."""

    def rec(ts: float, msg_id: str, re: str = "") -> dict[str, object]:
        return {"ts": ts, "id": msg_id, "re": re}

    records = [rec(1.0, "r1", "q1"), rec(1.5, "other"), rec(2.0, "q1"), rec(2.1, "r2", "r1")]
    assert [r["id"] for r in causal_order(records)] == ["other", "q1", "r1", "r2"]
    loop = [rec(1.0, "a", "b"), rec(2.0, "b", "a")]
    assert sorted(r["id"] for r in causal_order(loop)) == ["a", "b"]


def test_concurrent_history_commands_share_the_index(mesh_home: Path) -> None:
    """Three 'history' processes building the index at once all answer the same."""
    logs = mesh_home / "logs"
    logs.mkdir(mode=0o700)
    with open(logs / COMM_LOG, "w") as f:
        for i in range(5000):
            f.write(_line(1000.0 + i, f"c-{i}", f"body number {i}") + "\n")
    procs = [
        subprocess.Popen(
            [PY, "-m", "pipemesh", "history", "--json", "number 4999"],
            env={**os.environ, "PIPEMESH_HOME": str(mesh_home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert [json.loads(line)["id"] for line in out.splitlines()] == ["c-4999"]
    with HistoryIndex(logs) as index:
        assert index.count() == 5000
