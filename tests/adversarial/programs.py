"""Child programs for the adversarial tests: receivers that keep their own record, senders.

Each receiver's handler appends ``<sender> <id>`` to its record file with one
``write`` (the record of its effect); the tests reconcile from those records
and from the senders' own records of what ``send()`` returned.
"""

from __future__ import annotations

from pathlib import Path

# argv: name record_path durable(0/1) work_us
# A handler that spins work_us per message (to build a backlog) and, for a body
# "slow:<path>", first waits (up to 60 s) until <path> exists: a slow handler
# (an LLM call) that the test releases; a body "close" closes the agent.
RECEIVER = """
import os, sys, time
from pipemesh import AgentBase
name, record, durable, work_us = sys.argv[1], sys.argv[2], sys.argv[3] == "1", float(sys.argv[4])
fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

class Receiver(AgentBase):
    def on_message_received(self, msg):
        if msg.body == "close":  # stop cleanly, from the handler, with a backlog queued
            self.close()
            return
        if msg.body.startswith("slow:"):
            deadline = time.monotonic() + 60
            while not os.path.exists(msg.body[5:]) and time.monotonic() < deadline:
                time.sleep(0.01)
        if work_us:
            end = time.perf_counter() + work_us / 1e6
            while time.perf_counter() < end:
                pass
        os.write(fd, f"{msg.sender} {msg.id}\\n".encode())

with Receiver(name, durable=durable, heartbeat_s=0, log_messages=False,
              spool_fsync=False) as agent:
    print("ready", flush=True)
    agent.run_forever()
"""

# argv: name targets(comma) count record_path pause_s seed [sync(0/1) [burst [stop_path]]]
# Sends up to `count` plain send()s to random targets, pausing up to 2 * pause_s
# after every `burst` messages (default 1), until stop_path exists; after each
# send() records "<to> <id> <outcome> <time>", outcome "delivered" / "queued" or
# "error:<ErrorName>" when send() raised.
SENDER = """
import os, random, sys, time
from pipemesh import AgentBase, MeshError
name, targets, count, record = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]
pause_s, rng = float(sys.argv[5]), random.Random(int(sys.argv[6]))
sync = len(sys.argv) > 7 and sys.argv[7] == "1"
burst = int(sys.argv[8]) if len(sys.argv) > 8 else 1
extra = {"sync": True} if sync else {}
stop = sys.argv[9] if len(sys.argv) > 9 else ""
fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
with AgentBase(name, heartbeat_s=0, log_messages=False, spool_fsync=False,
               send_timeout_s=2.0) as agent:
    print("ready", flush=True)
    for i in range(count):
        if stop and i % 16 == 0 and os.path.exists(stop):
            break
        to = rng.choice(targets)
        msg_id = f"{name}-{i}"
        try:
            res = agent.send(to, f"m{i}", msg_id=msg_id, **extra)
        except MeshError as exc:
            outcome = "error:" + type(exc).__name__
        else:
            outcome = res.delivery.value
        os.write(fd, f"{to} {msg_id} {outcome} {time.time():.6f}\\n".encode())
        if pause_s and i % burst == burst - 1:
            time.sleep(rng.uniform(0, 2 * pause_s))
print("done", flush=True)
"""


def read_lines(path: Path) -> list[list[str]]:
    """The whole lines of a record, split into fields (a torn last line is skipped)."""
    try:
        data = path.read_text()
    except FileNotFoundError:
        return []
    return [line.split() for line in data.split("\n")[:-1] if line]
