"""Windows side: 20 sender processes, bodies from 10 B to 1 MiB, into one agent; none torn.

Usage: python concurrent_senders.py HOME            (the driver; prints one JSON line)
       python concurrent_senders.py HOME send NAME  (one sender; started by the driver)
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time

from pipemesh import AgentBase, MeshClient
from pipemesh.wire import Message

SENDERS = 20
SIZES = (10, 100, 1_000, 10_000, 100_000, 1_048_576)


def payload(name: str, size: int) -> str:
    seed = hashlib.sha256(f"{name}/{size}".encode()).hexdigest()
    return (seed * (size // len(seed) + 1))[:size]


def body(name: str, size: int) -> str:
    data = payload(name, size)
    return f"{name}:{size}:{hashlib.sha256(data.encode()).hexdigest()}:{data}"


def check(text: str) -> bool:
    _name, size, digest, data = text.split(":", 3)
    return len(data) == int(size) and hashlib.sha256(data.encode()).hexdigest() == digest


class Sink(AgentBase):
    def __init__(self, home: str) -> None:
        self.got: list[str] = []
        self.lock = threading.Lock()
        super().__init__("sink", home=home)

    def on_message_received(self, msg: Message) -> None:
        with self.lock:
            self.got.append(msg.body)


def send(home: str, name: str) -> int:
    client = MeshClient(name, home=home, send_timeout_s=60.0)
    try:
        for size in SIZES:
            client.send_message("sink", body(name, size))
    finally:
        client.close()
    return 0


def drive(home: str) -> int:
    want = SENDERS * len(SIZES)
    with Sink(home) as sink:
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, home, "send", f"s{i:02d}"],
                stdin=subprocess.DEVNULL,
            )
            for i in range(SENDERS)
        ]
        try:
            codes = [p.wait(timeout=240) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with sink.lock:
                if len(sink.got) >= want:
                    break
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        with sink.lock:
            got = list(sink.got)
    per_sender: dict[str, int] = {}
    for text in got:
        per_sender[text.split(":", 1)[0]] = per_sender.get(text.split(":", 1)[0], 0) + 1
    result = {
        "exit_codes": codes,
        "received": len(got),
        "expected": want,
        "torn": sum(1 for text in got if not check(text)),
        "senders_complete": sum(1 for n in per_sender.values() if n == len(SIZES)),
        "bytes": sum(len(t) for t in got),
        "seconds": round(elapsed, 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "send":
        raise SystemExit(send(sys.argv[1], sys.argv[3]))
    raise SystemExit(drive(sys.argv[1]))
