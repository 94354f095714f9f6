"""Windows side: 30 processes append 300 log records each at once; every record lands whole.

Appends are atomic on POSIX (O_APPEND); on Windows (measured under Wine: 65 of 9000
records lost, one torn, with shared locks) appenders must take the log lock in turn,
which :func:`pipemesh._platform.try_lock` does there. Prints one JSON line.

Usage: python log_appends.py LOGS_DIR             (the driver)
       python log_appends.py LOGS_DIR NAME write  (one appender)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipemesh.observe import COMM_LOG, EventLog

PROCS, RECORDS = 30, 300


def write(logs: str, name: str) -> int:
    log = EventLog(Path(logs), name, flush_interval_s=0.001, max_bytes=0)
    for i in range(RECORDS):
        log.message(
            "frame_sent",
            sender=name,
            to="x",
            msg_type="t",
            priority=1,
            msg_id=f"{name}-{i}",
            body="b" * (i * 37 % 3000),
        )
    log.close(timeout_s=240)  # bounded, but long: 30 processes take turns under Wine
    print(log.dropped, flush=True)
    return 0


def drive(logs: str) -> int:
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, logs, f"p{k}", "write"], stdout=subprocess.PIPE, text=True
        )
        for k in range(PROCS)
    ]
    dropped = sum(int(p.communicate(timeout=300)[0].strip() or 0) for p in procs)
    lines = (Path(logs) / COMM_LOG).read_bytes().splitlines()
    ids, invalid = set(), 0
    for line in lines:
        try:
            ids.add(json.loads(line)["id"])
        except ValueError:
            invalid += 1
    print(
        json.dumps(
            {
                "lines": len(lines),
                "unique_ids": len(ids),
                "expected": PROCS * RECORDS,
                "invalid": invalid,
                "dropped": dropped,
            }
        )
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[3] == "write":
        raise SystemExit(write(sys.argv[1], sys.argv[2]))
    raise SystemExit(drive(sys.argv[1]))
