"""The parent/worker protocol of the benchmark: start barrier, measuring loops, result file.

Both sides import this module: the harness (parent) to build worker argv and read results,
and every worker process (baseline endpoints now, mesh agents later) to signal readiness,
wait for the start signal, measure, and hand its samples back.

The protocol, in full:

- The parent passes ``--ready-fd N``: the write end of a pipe. A worker writes one byte to
  it once it can take traffic (socket bound, FIFO open, channel subscribed). One-byte writes
  to a pipe are atomic, so a hundred workers can share one ready pipe.
- The parent may pass ``--go-fd M``: the read end of a second pipe whose write end only the
  parent holds. A worker blocks in ``read()`` on it; the parent closes its end when every
  worker is ready, so all blocked readers see EOF at the same moment (a start barrier
  without polling or sleeping).
- A measuring worker writes one JSON object (see `WorkerResult`) to ``--out PATH`` and
  exits 0. Samples are nanoseconds from ``time.perf_counter_ns()`` (round trips) or from
  ``CLOCK_MONOTONIC`` stamps compared across processes (one-way, fan-in).

This module must not import the harness, the baselines, or any optional dependency: it is
loaded by every worker, and worker start-up time is paid a hundred times in fan-in.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

#: Kinds of samples a worker can report.
KIND_ROUND_TRIP: Final = "round_trip"
KIND_ONE_WAY: Final = "one_way"

#: Writes up to this size are atomic on a Linux pipe (see FIFO-FACTS.md, fact 4).
PIPE_BUF: Final = 4096


@dataclass(frozen=True, slots=True)
class WorkerResult:
    """What a measuring worker reports back to the harness.

    Attributes:
        kind: ``"round_trip"`` (samples are full round trips; the harness halves them) or
            ``"one_way"`` (samples are already one-way delivery times).
        samples_ns: one latency sample per measured message, in nanoseconds.
        messages: messages delivered during the measured phase (both directions count).
        elapsed_ns: wall-clock duration of the measured phase.
        errors: messages that arrived malformed (wrong size, torn frame); zero in a sound run.
        extra: other named numbers the row's JSON should carry.
    """

    kind: str
    samples_ns: list[int]
    messages: int
    elapsed_ns: int
    errors: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def dump(self, path: str) -> None:
        """Write the result as JSON to `path` (written whole, then renamed into place)."""
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "kind": self.kind,
                    "samples_ns": self.samples_ns,
                    "messages": self.messages,
                    "elapsed_ns": self.elapsed_ns,
                    "errors": self.errors,
                    "extra": self.extra,
                },
                fh,
            )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> WorkerResult:
        """Read a result written by `dump`.

        Raises:
            ValueError: the file is not a well-formed result.
        """
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
        try:
            samples = raw["samples_ns"]
            extra = raw.get("extra", {})
            if raw["kind"] not in (KIND_ROUND_TRIP, KIND_ONE_WAY):
                raise ValueError(f"unknown kind {raw['kind']!r}")
            if not isinstance(samples, list) or not all(isinstance(s, int) for s in samples):
                raise ValueError("samples_ns is not a list of integers")
            return cls(
                kind=str(raw["kind"]),
                samples_ns=samples,
                messages=int(raw["messages"]),
                elapsed_ns=int(raw["elapsed_ns"]),
                errors=int(raw.get("errors", 0)),
                extra={str(k): float(v) for k, v in extra.items()},
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"worker result {path} is malformed: {exc}") from exc


def add_protocol_args(parser: argparse.ArgumentParser) -> None:
    """Add the flags every worker understands (`--ready-fd`, `--go-fd`, `--out`, `--cpu`)."""
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--go-fd", type=int, default=-1)
    parser.add_argument("--out", default="")
    parser.add_argument("--cpu", type=int, default=-1, help="pin this process to one CPU")


def pin_to_cpu(cpu: int) -> None:
    """Pin the calling thread, and every thread it starts later, to `cpu` (-1: leave as is).

    ``sched_setaffinity(0, ...)`` sets the calling thread's mask; threads inherit it when
    they are created. So a worker calls this first, before it starts an agent (router,
    log writer and heartbeat threads all land on the same CPU).
    """
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})


def signal_ready(ready_fd: int) -> None:
    """Tell the parent this worker can take traffic, and drop the ready pipe."""
    # One byte is far below PIPE_BUF, so concurrent workers never interleave partial writes.
    os.write(ready_fd, b"r")
    os.close(ready_fd)


def wait_go(go_fd: int) -> None:
    """Block until the parent closes the go pipe (EOF is the start signal)."""
    if go_fd < 0:
        return
    while os.read(go_fd, 1):
        pass
    os.close(go_fd)


def monotonic_ns() -> int:
    """CLOCK_MONOTONIC in ns: one clock for the machine, so stamps compare across processes."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def steady_rate(marks_ns: Sequence[int], marks_count: Sequence[int]) -> tuple[int, int]:
    """Messages and nanoseconds over the middle 80% of a receive log.

    `marks_ns[i]` is when the i-th read returned and `marks_count[i]` how many messages
    had arrived by then. Starting N sender processes on 2 cores takes a while, and the
    last stragglers trickle in alone; both would make the rate say more about process
    start-up than about the transport. The full window is still reported alongside.

    Returns:
        (messages, elapsed_ns) between the reads that crossed 10% and 90% of the total,
        or the whole log when it is too short to trim.
    """
    if not marks_count:
        return 0, 0
    total = marks_count[-1]
    lo = next(i for i, n in enumerate(marks_count) if n >= total * 0.1)
    hi = next(i for i, n in enumerate(marks_count) if n >= total * 0.9)
    if hi <= lo or marks_ns[hi] <= marks_ns[lo]:
        return total, max(0, marks_ns[-1] - marks_ns[0])
    return marks_count[hi] - marks_count[lo], marks_ns[hi] - marks_ns[lo]


def measure_round_trips(
    round_trip: Callable[[], None],
    *,
    warmup: int,
    count: int,
    time_limit_s: float,
) -> WorkerResult:
    """Run `round_trip` `warmup` times unmeasured, then up to `count` times measured.

    The measured phase also stops at `time_limit_s`, so a slow transport gives fewer
    samples instead of overrunning the scenario. Each sample is one full round trip timed
    with ``time.perf_counter_ns()`` on the initiating side.

    Args:
        round_trip: sends one message and returns once the whole reply has arrived.
        warmup: unmeasured round trips first (connection set-up, caches, lazy imports).
        count: upper bound on measured round trips.
        time_limit_s: upper bound on the measured phase.

    Returns:
        A ``"round_trip"`` result; `messages` counts both directions.
    """
    for _ in range(warmup):
        round_trip()
    samples = array("q")
    clock = time.perf_counter_ns
    start = clock()
    deadline = start + int(time_limit_s * 1e9)
    for _ in range(count):
        t0 = clock()
        round_trip()
        t1 = clock()
        samples.append(t1 - t0)
        if t1 >= deadline:
            break
    elapsed = clock() - start
    return WorkerResult(
        kind=KIND_ROUND_TRIP,
        samples_ns=samples.tolist(),
        messages=2 * len(samples),
        elapsed_ns=elapsed,
    )
