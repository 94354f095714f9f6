"""Garbage written straight into a running agent's public pipe.

The router survives, each bad frame is exactly one line in mesh_errors.log,
memory stays bounded, and valid messages after the garbage still arrive.
"""

from __future__ import annotations

import os
import random
import select
from pathlib import Path

import pytest

from pipemesh import MeshClient
from pipemesh.observe import COMM_LOG, ERRORS_LOG, read_records
from pipemesh.wire import PIPE_BUF
from tests.conftest import Spawner, wait_for

pytestmark = pytest.mark.integration

PRINTER = """
from pipemesh import AgentBase
class Printer(AgentBase):
    def on_message_received(self, msg):
        print(msg.body, flush=True)
with Printer("victim", partial_timeout_s=60) as agent:
    print("ready", flush=True)
    agent.run_forever()
"""


def header(
    length: int, *, to: str = "victim", sender: str = "mallory", msg_id: str = "x1"
) -> bytes:
    return f"[FROM:{sender}|TO:{to}|PRIORITY:1|TYPE:t|ID:{msg_id}|LEN:{length}|TS:0]\n".encode()


TRAILER = b"\n===END_MESSAGE===\n"

# name -> (bytes written raw to the pipe, error events it must cause, exactly one line)
BAD_FRAMES: dict[str, tuple[bytes, str]] = {
    "oversized_len": (header(99_999) + b"short" + TRAILER, "frame_rejected"),
    "claims_100_mb": (header(100 * 1024 * 1024) + b"x" * 3000 + TRAILER, "frame_rejected"),
    "missing_end_marker": (header(5) + b"hello" + b"\nno marker here\n", "frame_rejected"),
    "invalid_utf8": (header(4) + b"\xff\xfe\xfd\xfc" + TRAILER, "message_rejected"),
    "forged_recipient": (
        header(6, to="someone_else", sender="victim_friend") + b"forged" + TRAILER,
        "frame_misrouted",
    ),
    "bad_name_in_header": (header(2, sender="../../etc") + b"hi" + TRAILER, "frame_rejected"),
    "random_bytes": (
        bytes(random.Random(3).randrange(256) for _ in range(3000)).replace(b"[", b"(") + b"\n",
        "frame_rejected",
    ),
}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def victim_errors(home: Path) -> list[dict[str, object]]:
    return [r for r in read_records(home / "logs" / ERRORS_LOG) if r["agent"] == "victim"]


def test_garbage_into_a_live_pipe(mesh_home: Path, spawn: Spawner) -> None:
    """Each bad frame is one error line; the router lives, memory is bounded, later ones arrive."""
    proc = spawn.python(PRINTER)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    pipe = mesh_home / "pipes" / "victim.public"
    fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
    try:
        with MeshClient("checker") as checker:

            def probe(tag: str) -> None:
                checker.send_message("victim", f"probe {tag}")
                assert proc.stdout is not None
                assert proc.stdout.readline().strip() == f"probe {tag}"

            probe("start")
            rss_before = rss_kib(proc.pid)
            for name, (data, event) in BAD_FRAMES.items():
                before = len(victim_errors(mesh_home))
                for i in range(0, len(data), PIPE_BUF):
                    os.write(fd, data[i : i + PIPE_BUF])
                probe(name)  # the router survived and still delivers
                wait_for(lambda b=before: len(victim_errors(mesh_home)) > b, timeout_s=10)
                # The log writer batches: the probe's arrival shows the error was queued first.
                new = victim_errors(mesh_home)[before:]
                assert [r["event"] for r in new] == [event], (name, new)
            # 8 MiB of header-free garbage must be discarded, not buffered.
            junk = bytes(range(256)).replace(b"[", b"(") * 16
            for _ in range(8 * 1024 * 1024 // len(junk)):
                written = False
                while not written:
                    try:
                        os.write(fd, junk)
                        written = True
                    except BlockingIOError:
                        # Bounded wait for room in the pipe; a dead router fails here.
                        assert select.select([], [fd], [], 10)[1], "the agent stopped reading"
            probe("after junk")
            assert rss_kib(proc.pid) - rss_before < 32 * 1024
    finally:
        os.close(fd)
    comm = [r for r in read_records(mesh_home / "logs" / COMM_LOG) if r["agent"] == "victim"]
    misrouted = [r for r in comm if r["event"] == "frame_misrouted"]
    assert [r["to"] for r in misrouted] == ["someone_else"]
    assert proc.poll() is None
