"""How fast ``pipemesh history`` answers over a large log: build the index, time queries.

Writes N communication records (default 1,000,000: a frame_sent and a frame_received per
message, so N/2 messages) as JSON Lines in the logger's format into a temporary mesh home,
rotated into 32 MiB files like the real logger, plus one latency record per message. Then:

1. builds the index from scratch (``HistoryIndex.update``), timed;
2. appends 1,000 more records and times the incremental update;
3. times indexed queries in-process (median of 5 after one warm-up), and the whole
   ``pipemesh history ...`` command (process start to exit).

Usage: ``.venv/bin/python bench/history_index.py [--records N] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipemesh.history_index import HistoryIndex
from pipemesh.observe import COMM_LOG, LATENCY_LOG

WORDS = [
    "ingest",
    "transform",
    "publish",
    "schema",
    "pipeline",
    "review",
    "plan",
    "status",
    "build",
    "test",
    "deploy",
    "cache",
    "index",
    "query",
    "latency",
    "agent",
    "mesh",
    "pipe",
    "frame",
    "router",
    "spool",
    "durable",
    "broadcast",
    "question",
    "answer",
    "directive",
    "module",
    "stage",
    "owner",
    "report",
    "error",
    "retry",
    "timeout",
    "budget",
]
AGENTS = [f"agent{i:02d}" for i in range(20)]
ROTATE_BYTES = 32 * 1024 * 1024


def _body(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30)))


def generate(logs: Path, records: int, *, seed: int = 7, start_ts: float = 1.7e9) -> list[str]:
    """Write the logs; return the message IDs (for thread queries)."""
    rng = random.Random(seed)
    logs.mkdir(parents=True, exist_ok=True)
    comm, lat = logs / COMM_LOG, logs / LATENCY_LOG
    ids: list[str] = []
    files: list[Path] = []
    out = open(comm, "w", encoding="utf-8")  # noqa: SIM115 - rotated below
    written = 0
    with open(lat, "w", encoding="utf-8") as lat_out:
        for i in range(records // 2):
            ts = start_ts + i * 0.01
            sender, to = rng.sample(AGENTS, 2)
            msg_id = f"{i // 1000:08x}-{i % 1000}"
            re = ids[rng.randrange(len(ids))] if ids and rng.random() < 0.3 else ""
            body = _body(rng)
            if i == records // 4:
                body += " the needle-in-the-haystack marker"
            ids.append(msg_id)
            common = (
                f'"from":"{sender}","to":"{to}","type":"question","priority":1,'
                f'"id":"{msg_id}","re":"{re}","bytes":{len(body)}'
            )
            sent = f'{{"ts":{ts!r},"event":"frame_sent","agent":"{sender}",{common},'
            sent += f'"body":{json.dumps(body)}}}\n'
            got = f'{{"ts":{ts + 0.0005!r},"event":"frame_received","agent":"{to}",{common},'
            got += '"body":""}\n'
            out.write(sent + got)
            written += len(sent) + len(got)
            lat_out.write(
                f'{{"ts":{ts + 0.0005!r},"event":"message_handled","agent":"{to}",'
                f'"from":"{sender}","type":"question","priority":1,"id":"{msg_id}",'
                f'"bytes":{len(body)},"latency_us":{rng.uniform(40, 900):.1f}}}\n'
            )
            if written >= ROTATE_BYTES:
                out.close()
                files.append(comm.rename(logs / f"{COMM_LOG}.tmp{len(files)}"))
                out = open(comm, "w", encoding="utf-8")  # noqa: SIM115 - closed at the end
                written = 0
    out.close()
    # Name the rotated files like the logger does: x.log.1 is the newest.
    for age, path in enumerate(reversed(files), start=1):
        path.rename(logs / f"{COMM_LOG}.{age}")
    return ids


def _timed(fn: object, repeat: int = 5) -> float:
    assert callable(fn)
    fn()  # warm-up (page cache, sqlite cache)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, default=None, help="use/keep this home")
    args = parser.parse_args()
    home = args.keep or Path(tempfile.mkdtemp(prefix="pipemesh-histbench-"))
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    logs = home / "logs"
    try:
        t0 = time.perf_counter()
        ids = generate(logs, args.records)
        gen_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in logs.iterdir())
        mib = size / 2**20
        print(f"generated {args.records:,} records ({mib:.0f} MiB of logs) in {gen_s:.1f}s")
        with HistoryIndex(logs) as index:
            t0 = time.perf_counter()
            update = index.update()
            build_s = time.perf_counter() - t0
            print(
                f"index built: {update.added:,} records in {build_s:.1f}s "
                f"({update.added / build_s:,.0f} records/s), "
                f"{(logs / 'history.sqlite3').stat().st_size / 2**20:.0f} MiB"
            )
            with open(logs / COMM_LOG, "a", encoding="utf-8") as f:
                for i in range(1000):
                    f.write(
                        f'{{"ts":{2e9 + i},"event":"frame_sent","agent":"late","from":"late",'
                        f'"to":"agent00","type":"status","priority":1,"id":"late-{i}","re":"",'
                        f'"bytes":4,"body":"late {i}"}}\n'
                    )
            t0 = time.perf_counter()
            update = index.update()
            print(
                f"incremental update: {update.added:,} new records in "
                f"{(time.perf_counter() - t0) * 1000:.0f} ms"
            )
            nothing = _timed(index.update)
            print(f"update with nothing new: {nothing:.1f} ms")
            queries = {
                'text "needle-in-the" (1 match)': lambda: index.search(text="needle-in-the"),
                'text "budget" -n 20 (common word)': lambda: index.search(text="budget", limit=20),
                "--agent agent03 --peer agent07 -n 50": lambda: index.search(
                    agent="agent03", peer="agent07", limit=50
                ),
                "--since/--until one minute": lambda: index.search(
                    since=1.7e9 + 3000, until=1.7e9 + 3060
                ),
                f"--thread {ids[1000]}": lambda: index.thread(ids[1000]),
            }
            for name, fn in queries.items():
                found = len(fn())
                print(f"query {name}: {_timed(fn):.1f} ms (median of 5), {found} results")
        env = {**os.environ, "PIPEMESH_HOME": str(home)}
        for argv in (["history", "needle-in-the"], ["history", "budget", "-n", "20"]):
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "pipemesh", *argv],
                    env=env,
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                times.append(time.perf_counter() - t0)
            print(
                f"command 'pipemesh {' '.join(argv)}': {statistics.median(times) * 1000:.0f} ms "
                "(median of 5, whole process)"
            )
    finally:
        if args.keep is None:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
