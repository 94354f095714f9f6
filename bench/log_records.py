"""Instructions per mesh log record, for BENCHMARKS.md (the logging half of the hot path).

Puts N ``frame_sent`` records (64 B body) and N ``message_handled`` latency records on an
:class:`~pipemesh.observe.EventLog`, then closes it (the writer thread formats and writes
them all). Count it under callgrind for two N and divide the difference by the extra
records (this cancels start-up, the thread and the files)::

    for n in 2000 10000; do
      valgrind --tool=callgrind --callgrind-out-file=/tmp/log.$n.out \\
        .venv/bin/python bench/log_records.py $n
    done
    # (Ir(10000) - Ir(2000)) / 16000 per record (2 records per step)

``--off`` runs the same loop with logging disabled (the loop's own cost, to subtract);
``--batched`` lets the writer format everything at close, in its batches of 64.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from pipemesh.observe import EventLog


def main(n: int, enabled: bool, flush_interval_s: float) -> None:
    body = "x" * 64
    with tempfile.TemporaryDirectory(prefix="pm-log-") as tmp:
        events = EventLog(Path(tmp), "bench", enabled=enabled, flush_interval_s=flush_interval_s)
        t0 = time.perf_counter()
        for i in range(n):
            msg_id = f"0a1b2c3d-{i:x}"
            events.message(
                "frame_sent",
                sender="bench",
                to="peer",
                msg_type="directive",
                priority=1,
                msg_id=msg_id,
                body=body,
                reply_to="",
                size=64,
            )
            events.latency(
                "message_handled",
                sender="peer",
                msg_type="directive",
                priority=1,
                msg_id=msg_id,
                latency_us=123.456,
                size=64,
            )
        events.close()
        elapsed = time.perf_counter() - t0
    print(f"{2 * n} records, {elapsed / (2 * n) * 1e6:.2f} us per record (wall, with the writer)")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(
        int(args[0]) if args else 10_000,
        enabled="--off" not in sys.argv,
        # --batched: the writer waits until close() and then writes everything in
        # batches of 64 records; under callgrind (50x slower) the shipped 50 ms
        # interval would otherwise see a few records per batch and over-count.
        flush_interval_s=3600.0 if "--batched" in sys.argv else 0.05,
    )
