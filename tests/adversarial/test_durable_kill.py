"""Durable means durable: plain send() to a durable agent survives its SIGKILL.

- A durable receiver SIGKILLed repeatedly, with a backlog, while a sender keeps
  sending plain ``send()``: after the last restart every message whose send()
  returned is handled, none twice (from the receiver's own record).
- ``sync=True`` survives the sender *and* the receiver dying; a plain send in
  the same situation is lost (the row of docs/delivery.md's table, shown).
- An acknowledgement means "handled": a retried ``ack=True`` message whose
  first copy still waits behind a slow handler is acknowledged only once that
  copy's handler returned.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from pipemesh import AckTimeout, AgentBase
from tests.adversarial.programs import RECEIVER, SENDER, read_lines
from tests.conftest import Spawner, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def start_receiver(
    spawn: Spawner,
    name: str,
    record: Path,
    *,
    durable: bool = True,
    work_us: float = 0.0,
) -> subprocess.Popen[str]:
    proc = spawn.python(RECEIVER, name, str(record), "1" if durable else "0", str(work_us))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def handled_ids(record: Path) -> Counter[str]:
    return Counter(fields[1] for fields in read_lines(record))


def test_durable_receiver_sigkilled_repeatedly_handles_every_send_once(
    mesh_home: Path, spawn: Spawner, tmp_path: Path
) -> None:
    """5 SIGKILLs of a busy durable receiver amid 12,000 plain sends: none lost, none twice."""
    total, kills = 12_000, 5
    record, sent_record = tmp_path / "handled.txt", tmp_path / "sent.txt"
    rng = random.Random(9)
    receiver = start_receiver(spawn, "sink", record, work_us=60)
    # Bursts of 400 back to back (faster than the receiver: a backlog), 0-0.2 s apart.
    sender = spawn.python(
        SENDER, "source", "sink", str(total), str(sent_record), "0.1", "1", "0", "400"
    )
    assert sender.stdout is not None
    assert sender.stdout.readline().strip() == "ready"
    just_handled: set[str] = set()  # per kill: the message whose handler returned last
    for k in range(kills):
        # Kill once it handled some more, with a backlog behind (the sender is faster).
        mark = len(read_lines(record)) + rng.randint(300, 1500)
        wait_for(
            lambda m=mark: len(read_lines(record)) >= m or sender.poll() is not None,
            timeout_s=60,
            interval_s=0.005,
        )
        receiver.send_signal(signal.SIGKILL)
        receiver.wait(timeout=10)
        lines = read_lines(record)
        if lines:
            just_handled.add(lines[-1][1])
        if k % 2:  # sometimes stay down a while: sends go to the spool meanwhile
            down = len(read_lines(sent_record)) + 200
            wait_for(
                lambda d=down: len(read_lines(sent_record)) >= d or sender.poll() is not None,
                timeout_s=30,
                interval_s=0.005,
            )
        receiver = start_receiver(spawn, "sink", record, work_us=60)
    _, err = sender.communicate(timeout=120)
    assert sender.returncode == 0, err
    sent = read_lines(sent_record)
    assert len(sent) == total
    errors = [f for f in sent if f[2].startswith("error")]
    assert not errors, errors[:5]
    ok = {f[1] for f in sent}
    assert {f[2] for f in sent} <= {"delivered", "queued"}
    deadline = time.monotonic() + 90
    while not ok <= set(handled_ids(record)) and time.monotonic() < deadline:
        time.sleep(0.05)  # bounded poll; the assertion below says what is missing
    counts = handled_ids(record)
    lost = ok - set(counts)
    assert not lost, f"{len(lost)} of {len(ok)} sent messages never handled"
    assert set(counts) == ok  # every message whose send() returned, nothing else
    # None twice, except what no mesh can tell apart without the handler's help: a
    # SIGKILL landing after a handler returned and before the runtime's record of it
    # (one write later) gets that one message handled again after the restart.
    twice = {i for i, n in counts.items() if n > 1}
    assert twice <= just_handled, f"handled twice: {sorted(twice - just_handled)[:5]}"
    assert max(counts.values()) <= 2
    outcomes = Counter(f[2] for f in sent)
    print(f"kills={kills} {dict(outcomes)} handled twice (killed in that window)={len(twice)}")
    assert not list((mesh_home / "spool" / "sink").glob("*.msg"))


def test_sync_send_survives_sender_and_receiver_dying(
    mesh_home: Path, spawn: Spawner, tmp_path: Path
) -> None:
    """Receiver stopped, sender then receiver SIGKILLed: sync=True sends all handled once.

    The same plain sends are lost: the sender's memory and the pipe died with them
    (the "both sides die" row of docs/delivery.md).
    """
    record = tmp_path / "handled.txt"
    receiver = start_receiver(spawn, "sink", record)
    receiver.send_signal(signal.SIGSTOP)  # alive, registered, not reading
    try:
        records = {}
        for mode in ("1", "0"):
            sent_record = tmp_path / f"sent-{mode}.txt"
            sender = spawn.python(
                SENDER, f"src{mode}", "sink", "50", str(sent_record), "0", "1", mode
            )
            assert sender.stdout is not None
            assert sender.stdout.readline().strip() == "ready"
            wait_for(lambda p=sent_record: len(read_lines(p)) >= 50, timeout_s=60)
            sender.send_signal(signal.SIGKILL)  # before its close() could spool anything
            sender.wait(timeout=10)
            records[mode] = read_lines(sent_record)
    finally:
        receiver.send_signal(signal.SIGKILL)
        receiver.send_signal(signal.SIGCONT)
        receiver.wait(timeout=10)
    assert {f[2] for f in records["1"]} == {"delivered"}  # in the spool, and it was told
    assert {f[2] for f in records["0"]} == {"delivered"}
    start_receiver(spawn, "sink", record)
    sync_ids = {f[1] for f in records["1"]}
    wait_for(lambda: sync_ids <= set(handled_ids(record)), timeout_s=30)
    counts = handled_ids(record)
    assert all(counts[i] == 1 for i in sync_ids)
    assert not {f[1] for f in records["0"]} & set(counts)  # plain: lost with both sides
    assert not list((mesh_home / "spool" / "sink").glob("*.msg"))


def test_retry_of_a_queued_ack_message_is_acked_only_once_handled(
    mesh_home: Path, spawn: Spawner, tmp_path: Path
) -> None:
    """A retried ack=True message whose first copy waits behind a slow handler is not acked early.

    Before the fix the router, reading between two handlers, found the retry while
    the first copy was still queued and acknowledged it at once, before its handler
    ran (with a slow handler the caller moved on while it had not run).
    """
    record = tmp_path / "handled.txt"
    gate1, gate2 = tmp_path / "gate1", tmp_path / "gate2"
    start_receiver(spawn, "slowpoke", record, durable=False)
    with AgentBase("asker", heartbeat_s=0) as asker:
        asker.send("slowpoke", f"slow:{gate1}")  # the handler is busy until gate1
        asker.send("slowpoke", f"slow:{gate2}")  # then until gate2
        with pytest.raises(AckTimeout) as info:
            asker.send("slowpoke", "job", ack=True, ack_timeout_s=0.5)
        msg_id = info.value.message_id
        assert msg_id is not None
        seen_at_ack: list[Counter[str]] = []

        def retry() -> None:
            res = asker.send("slowpoke", "job", ack=True, ack_timeout_s=60, msg_id=msg_id)
            seen_at_ack.append(handled_ids(record))  # what was handled when the ack came
            assert res.acked

        waiter = threading.Thread(target=retry)
        waiter.start()
        try:
            gate1.touch()  # the router reads the retry while "job" still waits behind gate2
            waiter.join(2.0)  # the old code acknowledged here, with "job" not handled
            gate2.touch()
        finally:
            gate1.touch()
            gate2.touch()
            waiter.join(60)
        assert seen_at_ack, "the retry was never acknowledged"
        assert seen_at_ack[0][msg_id] == 1  # acknowledged means handled
    wait_for(lambda: len(read_lines(record)) == 3)
    assert handled_ids(record)[msg_id] == 1


def test_durable_receiver_closing_with_a_backlog_loses_nothing(
    mesh_home: Path, spawn: Spawner, tmp_path: Path
) -> None:
    """A durable agent closed with more queued than it handles in its 5 s drain: none lost.

    Its drain gives up on the rest (``drain_timeout``); the sender, told by the
    agent's ``mesh.leave``, moves what was never reported handled to its spool,
    and the restarted agent handles exactly those.
    """
    record = tmp_path / "handled.txt"
    receiver = start_receiver(spawn, "sink", record, work_us=3000)  # ~300 messages/s
    with AgentBase("source", heartbeat_s=0, spool_fsync=False) as source:
        ids = [source.send("sink", f"m{i}").id for i in range(3000)]
        source.send("sink", "close", priority=3)  # handled next: closes with a backlog
        receiver.wait(timeout=60)
        wait_for(lambda: len(list((mesh_home / "spool" / "sink").glob("*.msg"))) > 0)
        handled_before = len(read_lines(record))
        assert handled_before < len(ids)  # the drain did not get through them all
        start_receiver(spawn, "sink", record)
        wait_for(lambda: set(ids) <= set(handled_ids(record)), timeout_s=60)
    counts = handled_ids(record)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
