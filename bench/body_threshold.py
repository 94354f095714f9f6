"""Where body files pay: AgentBase ping-pong between two processes, body file vs PART frames.

For BENCHMARKS.md ("Large bodies out of band"), to choose
``pipemesh.runtime.bodies.DEFAULT_MIN_BYTES``. An echo agent in a child process
answers each message with the same body (``send_message`` from its handler); this
process sends with ``send_message`` and takes the answer with ``receive()``. Both
sides use body files (``body_file_min_bytes=1``) or never (``1 << 62``); the two
modes alternate three times and each size reports the median of the three
medians (one-way = round trip / 2, logging on as shipped)::

    .venv/bin/python bench/body_threshold.py /dev/shm 4,8,16,24,32,48,64 300

Arguments: the parent of the temporary mesh home (a tmpfs such as /dev/shm, or a
disk directory), body sizes in KiB, round trips per size and mode.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time

from pipemesh import AgentBase

ECHO = """
import sys
from pipemesh import AgentBase
class Echo(AgentBase):
    def on_message_received(self, m):
        self.send_message(m.sender, m.body, reply_to=m.id)
with Echo("echo", home=sys.argv[1], heartbeat_s=0) as e:
    e.body_file_min_bytes = int(sys.argv[2])
    print("ready", flush=True)
    sys.stdin.readline()
"""

WARMUP = 20


def main() -> None:
    parent, sizes_kib, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    home = tempfile.mkdtemp(prefix="pmt-", dir=parent) + "/mesh"
    sizes = [int(s) * 1024 for s in sizes_kib.split(",")]
    medians: dict[tuple[int, str], list[float]] = {}
    for _ in range(3):
        for label, threshold in (("file", 1), ("part", 1 << 62)):
            echo = subprocess.Popen(
                [sys.executable, "-c", ECHO, home, str(threshold)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert echo.stdout is not None
            assert echo.stdin is not None
            assert echo.stdout.readline().strip() == "ready"
            with AgentBase("ping", home=home, heartbeat_s=0) as ping:
                ping.body_file_min_bytes = threshold
                for size in sizes:
                    body = "x" * size
                    samples = []
                    for i in range(n + WARMUP):
                        start = time.perf_counter()
                        ping.send_message("echo", body)
                        answer = ping.receive(10)
                        assert answer is not None
                        assert len(answer.body) == size
                        if i >= WARMUP:
                            samples.append((time.perf_counter() - start) / 2 * 1e6)
                    medians.setdefault((size, label), []).append(statistics.median(samples))
            echo.stdin.close()
            echo.wait(30)
    for size in sizes:
        f = statistics.median(medians[(size, "file")])
        p = statistics.median(medians[(size, "part")])
        print(
            f"{size // 1024:>5} KiB  body file {f:7.1f} us  PART frames {p:7.1f} us  {f / p:4.2f}"
        )


if __name__ == "__main__":
    main()
