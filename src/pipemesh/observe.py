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
import queue
import threading
import time
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

Record = tuple[int, dict[str, object]]  # (file index, fields)


class EventLog:
    """Appends records to the three mesh logs from one background thread.

    Args:
        logs_dir: directory of the log files.
        agent: name written into every record.
        enabled: False makes every call a no-op (nothing is written).
        max_body_chars: bodies longer than this are cut in the communication log.
    """

    def __init__(
        self,
        logs_dir: Path,
        agent: str,
        *,
        enabled: bool = True,
        max_body_chars: int = 4096,
    ) -> None:
        self.logs_dir = Path(logs_dir)
        self.agent = agent
        self.enabled = enabled
        self.max_body_chars = max_body_chars
        self.dropped = 0
        self._queue: queue.SimpleQueue[Record | None] = queue.SimpleQueue()
        self._fds: list[int] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        if enabled:
            self.logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fds = [os.open(self.logs_dir / name, flags, 0o600) for name in _FILES]
            self._thread = threading.Thread(
                target=self._run, name=f"pipemesh-log-{agent}", daemon=True
            )
            self._thread.start()

    # -- the hot path: build a dict, put it on the queue, nothing else --

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
        if self.enabled and not self._closed:
            self._queue.put(
                (
                    0,
                    {
                        "ts": time.time(),
                        "event": event,
                        "agent": self.agent,
                        "from": sender,
                        "to": to,
                        "type": msg_type,
                        "priority": priority,
                        "id": msg_id,
                        "re": reply_to,
                        "bytes": size,
                        "body": body,
                    },
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
        if self.enabled and not self._closed:
            self._queue.put(
                (
                    1,
                    {
                        "ts": time.time(),
                        "event": event,
                        "agent": self.agent,
                        "from": sender,
                        "type": msg_type,
                        "priority": priority,
                        "id": msg_id,
                        "bytes": size,
                        "latency_us": round(latency_us, 1),
                    },
                )
            )

    def error(self, event: str, error: str, **fields: object) -> None:
        """Record a failure in ``mesh_errors.log``."""
        if self.enabled and not self._closed:
            record: dict[str, object] = {
                "ts": time.time(),
                "event": event,
                "agent": self.agent,
                "error": error,
            }
            record.update(fields)
            self._queue.put((2, record))

    # -- the writer thread --

    def _format(self, fields: dict[str, object]) -> bytes:
        body = fields.get("body")
        if isinstance(body, str) and len(body) > self.max_body_chars:
            fields["body"] = body[: self.max_body_chars]
            fields["truncated"] = True
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            batches: list[list[bytes]] = [[], [], []]
            size = 0
            stop = False
            while True:
                if item is None:
                    stop = True
                else:
                    line = self._format(item[1])
                    batches[item[0]].append(line)
                    size += len(line)
                if stop or size >= _BATCH_BYTES:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            for fd, lines in zip(self._fds, batches, strict=True):
                if lines:
                    self._append(fd, b"".join(lines))
            if stop:
                return

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
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout_s)
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
