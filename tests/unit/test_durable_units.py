"""The durable-delivery parts on their own, on real files: the record of handled
messages (reload, torn last line, compaction) and the sender's kept messages
(reports, retries with the same ID, overflow to the spool, moves in order, a spool
that cannot be written)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipemesh import SpoolError
from pipemesh.runtime.durable import HANDLED_DIR, HandledLog, Unacked
from pipemesh.spool import Spool


def test_handled_log_reloads_and_skips_a_torn_last_line(tmp_path: Path) -> None:
    log = HandledLog(tmp_path, "agent", window=10)
    for i in range(3):
        log.record("src", f"m{i}")
    log.close()
    log.close()  # idempotent
    path = tmp_path / HANDLED_DIR / "agent"
    assert path.stat().st_mode & 0o777 == 0o600
    with path.open("ab") as fh:
        fh.write(b"src m3-torn")  # a writer killed mid-line: no newline, no record
    again = HandledLog(tmp_path, "agent", window=10)
    assert again.recent_keys() == [("src", "m0"), ("src", "m1"), ("src", "m2")]
    again.record("src", "m4")
    again.close()
    again.record("src", "m5")  # after close: kept in memory only, no error
    assert ("src", "m4") in HandledLog(tmp_path, "agent", window=10).recent_keys()


def test_handled_log_compacts_to_its_window(tmp_path: Path) -> None:
    log = HandledLog(tmp_path, "agent", window=5)
    for i in range(21):  # over 4 windows: rewritten with the last 5
        log.record("src", f"m{i}")
    lines = (tmp_path / HANDLED_DIR / "agent").read_text().splitlines()
    assert lines == [f"src m{i}" for i in range(16, 21)]
    log.record("src", "m21")
    log.close()
    assert HandledLog(tmp_path, "agent", window=5).recent_keys()[-1] == ("src", "m21")
    assert not [p for p in (tmp_path / HANDLED_DIR).iterdir() if p.name != "agent"]


def test_handled_log_that_cannot_be_opened_is_a_spool_error(tmp_path: Path) -> None:
    (tmp_path / HANDLED_DIR).write_text("a file where the directory should be")
    with pytest.raises(SpoolError, match="cannot open the record of handled messages"):
        HandledLog(tmp_path, "agent", window=5)


class Recorder:
    def __init__(self) -> None:
        self.notified: list[str] = []
        self.reports: list[tuple[str, str]] = []

    def notify(self, name: str) -> None:
        self.notified.append(name)

    def report(self, event: str, error: str) -> None:
        self.reports.append((event, error))


def spooled_ids(spool: Spool, name: str) -> list[str]:
    return [e.path.name.split("-", 4)[4].removesuffix(".msg") for e in spool.entries(name)]


def test_unacked_keeps_until_reported_and_moves_the_rest_in_order(tmp_path: Path) -> None:
    spool, rec = Spool(tmp_path, fsync=False), Recorder()
    kept = Unacked(spool, rec.notify, rec.report)
    for i in range(5):
        kept.keep("peer", f"m{i}", f"body{i}".encode())
    kept.keep("peer", "m1", b"body1-again")  # a retry with the same ID: the latest send
    assert kept.count("peer") == 5
    assert kept.handled("peer", ["m0", "m2", "unknown"]) == 2
    assert kept.handled("stranger", ["m1"]) == 0
    kept.forget("peer", "m4")  # its write failed: the caller was told
    assert kept.peers() == ["peer"]
    assert kept.move_to_spool("peer", ("m5", b"body5"))
    assert spooled_ids(spool, "peer") == ["m3", "m1", "m5"]
    assert rec.notified == ["peer"]
    assert kept.count() == 0
    assert kept.wait_empty(0.1)
    assert not kept.move_to_spool("peer")  # nothing kept: nothing moved, nobody told
    assert rec.notified == ["peer"]


def test_unacked_over_its_bound_spills_the_oldest_to_the_spool(tmp_path: Path) -> None:
    spool, rec = Spool(tmp_path, fsync=False, max_messages=1), Recorder()
    kept = Unacked(spool, rec.notify, rec.report, max_messages=20)
    for i in range(21):
        kept.keep("peer", f"m{i}", b"x")
    # The oldest tenth went to the spool (its message bound does not refuse them).
    assert spooled_ids(spool, "peer") == ["m0", "m1"]
    assert kept.count("peer") == 19
    assert rec.notified == ["peer"]


def test_unacked_keeps_what_the_spool_refuses(tmp_path: Path) -> None:
    (tmp_path / "peer").write_text("not a directory")  # the spool cannot be written
    spool, rec = Spool(tmp_path, fsync=False), Recorder()
    kept = Unacked(spool, rec.notify, rec.report)
    kept.keep("peer", "m0", b"a")
    kept.keep("peer", "m1", b"b")
    assert kept.move_to_spool("peer")  # nothing lost: still kept, reported
    assert kept.count("peer") == 2
    assert rec.reports[0][0] == "unacked_not_spooled"
    with pytest.raises(SpoolError):  # the caller's own message: its error is raised
        kept.move_to_spool("peer", ("m2", b"c"))
    assert kept.count("peer") == 2
    assert rec.notified == []
    kept.close()
