"""Structured logs and latency statistics.

Three JSON Lines files under ``<home>/logs/``, as the seed names them:

* ``mesh_communication.log``: every message sent and received
  (events ``frame_sent``, ``frame_received``, ``frame_misrouted``);
* ``mesh_latency.log``: per received message, send-to-handler latency in µs
  (event ``message_handled``, ``reply_received``);
* ``mesh_errors.log``: decode failures, dropped parts, handler exceptions,
  delivery failures (events like ``frame_rejected``, ``handler_failed``).

Writing happens on a background thread: the send and receive paths only put a
tuple on a queue. Each batch is appended with one ``write`` on an ``O_APPEND``
fd, and every record is a whole line, so 100 processes appending at once never
split or interleave records on a local filesystem.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "COMM_LOG",
    "ERRORS_LOG",
    "LATENCY_LOG",
    "EventLog",
    "LatencySummary",
    "latency_summary",
    "percentile",
    "read_records",
]

COMM_LOG: Final = "mesh_communication.log"
LATENCY_LOG: Final = "mesh_latency.log"
ERRORS_LOG: Final = "mesh_errors.log"
_FILES: Final = (COMM_LOG, LATENCY_LOG, ERRORS_LOG)
_BATCH_BYTES: Final = 256 * 1024
# json's own string encoder (C): quotes a str exactly as json.dumps(..., ensure_ascii=False).
_encode_str: Final = json.encoder.encode_basestring
_END: Final = "}\n"
_TRUNCATED_END: Final = ',"truncated":true}\n'


class EventLog:
    """Appends records to the three mesh logs from one background thread.

    The hot path appends a tuple to a deque; the writer thread wakes at most
    every ``flush_interval_s`` while records flow, and not at all while idle,
    so logging neither steals the GIL per message nor polls.

    Args:
        logs_dir: directory of the log files.
        agent: name written into every record.
        enabled: False makes every call a no-op (nothing is written).
        max_body_chars: bodies longer than this are cut in the communication log.
        flush_interval_s: how long the writer gathers records before a write.
    """

    def __init__(
        self,
        logs_dir: Path,
        agent: str,
        *,
        enabled: bool = True,
        max_body_chars: int = 4096,
        flush_interval_s: float = 0.05,
    ) -> None:
        self.logs_dir = Path(logs_dir)
        self.agent = agent
        self.enabled = enabled
        self.max_body_chars = max_body_chars
        self.flush_interval_s = flush_interval_s
        self.dropped = 0
        self._records: deque[tuple[object, ...]] = deque()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._fds: list[int] = []
        self._thread: threading.Thread | None = None
        self._closed = not enabled
        if enabled:
            self.logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fds = [os.open(self.logs_dir / name, flags, 0o600) for name in _FILES]
            self._thread = threading.Thread(
                target=self._run, name=f"pipemesh-log-{agent}", daemon=True
            )
            self._thread.start()

    def _put(self, record: tuple[object, ...]) -> None:
        self._records.append(record)
        if not self._wake.is_set():
            self._wake.set()

    # -- the hot path: one tuple on a deque, nothing else --

    def message(
        self,
        event: str,
        *,
        sender: str,
        to: str,
        msg_type: str,
        priority: int,
        msg_id: str,
        body: str,
        reply_to: str = "",
        size: int = 0,
    ) -> None:
        """Record a message event in ``mesh_communication.log``."""
        if not self._closed:
            self._put(
                (
                    0,
                    time.time(),
                    event,
                    sender,
                    to,
                    msg_type,
                    priority,
                    msg_id,
                    reply_to,
                    size,
                    body,
                )
            )

    def latency(
        self,
        event: str,
        *,
        sender: str,
        msg_type: str,
        priority: int,
        msg_id: str,
        latency_us: float,
        size: int,
    ) -> None:
        """Record one received message's latency in ``mesh_latency.log``."""
        if not self._closed:
            self._put((1, time.time(), event, sender, msg_type, priority, msg_id, size, latency_us))

    def error(self, event: str, error: str, **fields: object) -> None:
        """Record a failure in ``mesh_errors.log``."""
        if not self._closed:
            self._put((2, time.time(), event, error, fields))

    # -- the writer thread --

    def _format(self, rec: tuple[object, ...]) -> tuple[int, bytes]:
        kind = rec[0]
        # Message and latency records (two or three per message handled) are built
        # as text directly: the same bytes json.dumps would write for the same dict,
        # at a third of the cost. This runs on the writer thread but holds the GIL
        # the router thread needs, so every microsecond here shows in latency.
        esc = _encode_str
        if kind == 0:
            _, ts, event, sender, to, msg_type, priority, msg_id, reply_to, size, body = rec
            text = str(body)
            cut = len(text) > self.max_body_chars
            line = (
                f'{{"ts":{ts!r},"event":{esc(str(event))},"agent":{esc(self.agent)},'
                f'"from":{esc(str(sender))},"to":{esc(str(to))},"type":{esc(str(msg_type))},'
                f'"priority":{priority:d},"id":{esc(str(msg_id))},'
                f'"re":{esc(str(reply_to))},"bytes":{size:d},'
                f'"body":{esc(text[: self.max_body_chars] if cut else text)}'
                f"{_TRUNCATED_END if cut else _END}"
            )
            return 0, line.encode()
        if kind == 1:
            _, ts, event, sender, msg_type, priority, msg_id, size, latency_us = rec
            if isinstance(latency_us, float):
                latency_us = round(latency_us, 1)
            line = (
                f'{{"ts":{ts!r},"event":{esc(str(event))},"agent":{esc(self.agent)},'
                f'"from":{esc(str(sender))},"type":{esc(str(msg_type))},'
                f'"priority":{priority:d},"id":{esc(str(msg_id))},"bytes":{size:d},'
                f'"latency_us":{latency_us!r}}}\n'
            )
            return 1, line.encode()
        _, ts, event, error, fields = rec
        out: dict[str, object] = {"ts": ts, "event": event, "agent": self.agent, "error": error}
        if isinstance(fields, dict):
            out.update(fields)
        text = json.dumps(out, ensure_ascii=False, separators=(",", ":"), default=str)
        return 2, text.encode() + b"\n"

    def _run(self) -> None:
        records = self._records
        while True:
            self._wake.wait()
            # Gather a batch (releases the GIL); close() cuts the wait short.
            self._closing.wait(self.flush_interval_s)
            self._wake.clear()  # before draining: a record added after this wakes us again
            batches: list[list[bytes]] = [[], [], []]
            size = 0
            while records:
                kind, line = self._format(records.popleft())
                batches[kind].append(line)
                size += len(line)
                if size >= _BATCH_BYTES:
                    self._flush(batches)
                    batches, size = [[], [], []], 0
            self._flush(batches)
            if self._closed and not records:
                return

    def _flush(self, batches: list[list[bytes]]) -> None:
        for fd, lines in zip(self._fds, batches, strict=True):
            if lines:
                self._append(fd, b"".join(lines))

    def _append(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except OSError:
            # A full disk must not kill the agent; the count shows in heartbeats.
            self.dropped += data.count(b"\n")

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what is queued and stop the writer thread; idempotent."""
        if self._closed and self._thread is None:
            return
        self._closed = True
        thread, self._thread = self._thread, None
        if thread is not None:
            self._closing.set()
            self._wake.set()
            thread.join(timeout_s)
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)


def read_records(path: Path) -> Iterator[dict[str, object]]:
    """Yield the JSON records of one log file, skipping lines that do not parse."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return
    with f:
        for line in f:
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(rec, dict):
                yield rec


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, nearest-rank."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency percentiles of one agent's received messages, in µs."""

    agent: str
    count: int
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float


def latency_summary(records: Iterable[dict[str, object]]) -> list[LatencySummary]:
    """Summarise latency records per receiving agent, sorted by agent name."""
    per_agent: dict[str, list[float]] = {}
    for rec in records:
        value = rec.get("latency_us")
        agent = rec.get("agent")
        if isinstance(value, int | float) and isinstance(agent, str):
            per_agent.setdefault(agent, []).append(float(value))
    out = []
    for agent in sorted(per_agent):
        values = sorted(per_agent[agent])
        out.append(
            LatencySummary(
                agent,
                len(values),
                percentile(values, 50),
                percentile(values, 90),
                percentile(values, 99),
                values[-1],
            )
        )
    return out
