"""What the dashboard shows, without the dashboard: heartbeats, registry, log feed.

Reads only what the mesh already writes: the registry file, each agent's private
FIFO (heartbeat frames, decoded with the wire decoder), and the three logs
(followed incrementally across rotation with :class:`~pipemesh.observe.LogTail`).
It never writes to a pipe and never creates one, so agents pay nothing for it.

Private FIFOs are opened ``O_RDWR | O_NONBLOCK``: an ``O_RDONLY`` reader would
see EOF and then endless POLLHUP once the agent dies (FIFO-FACTS 6), and the
non-blocking flag lets one tick read every pipe without waiting. Holding the
read end is also what makes the agent publish at all (it writes only while a
reader exists). Everything here is polled by the caller; no threads.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pipemesh.errors import DecodeError, MeshError
from pipemesh.home import MeshHome
from pipemesh.observe import COMM_LOG, ERRORS_LOG, LATENCY_LOG, LogTail, percentile
from pipemesh.registry import AgentRecord, Registry
from pipemesh.wire import FrameDecoder, NeedData, Reassembler

__all__ = ["AgentView", "MeshView", "StatusReader", "TrafficFilter"]

ACTIVE: Final = "active"
INACTIVE: Final = "inactive"
STALE: Final = "stale"
LEFT: Final = "left"
_BACKLOG_BYTES: Final = 256 * 1024
_LATENCY_SAMPLES: Final = 2000


class _StatusPipe:
    """One open private FIFO and its decoder state."""

    def __init__(self, fd: int, ino: int) -> None:
        self.fd = fd
        self.ino = ino
        self.decoder = FrameDecoder()
        self.assembler = Reassembler(max_pending=16, max_pending_bytes=1 << 20)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class StatusReader:
    """Reads heartbeat/status frames from the private FIFOs of registered agents.

    Args:
        home: the mesh home whose ``pipes/<name>.private`` FIFOs are read.
    """

    def __init__(self, home: MeshHome) -> None:
        self.home = home
        self.rejected = 0
        self._pipes: dict[str, _StatusPipe] = {}

    def _open(self, name: str) -> _StatusPipe | None:
        path = self.home.private_pipe(name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        # Only our own FIFOs: never block on, or read, some other kind of file.
        if not stat.S_ISFIFO(st.st_mode) or st.st_uid != os.getuid():
            return None
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        if os.fstat(fd).st_ino != st.st_ino:
            os.close(fd)  # replaced between lstat and open; next sync retries
            return None
        return _StatusPipe(fd, st.st_ino)

    def sync(self, names: Iterable[str]) -> None:
        """Read the pipes of exactly ``names``: open new ones, close the others."""
        wanted = set(names)
        for name in list(self._pipes):
            pipe = self._pipes[name]
            try:
                same = os.stat(self.home.private_pipe(name)).st_ino == pipe.ino
            except FileNotFoundError:
                same = False
            if name not in wanted or not same:
                pipe.close()  # gone, or a restarted agent made a new FIFO
                del self._pipes[name]
        for name in wanted - self._pipes.keys():
            opened = self._open(name)
            if opened is not None:
                self._pipes[name] = opened

    def poll(self) -> dict[str, dict[str, Any]]:
        """The newest status read from each pipe since the last call."""
        out: dict[str, dict[str, Any]] = {}
        now = time.monotonic()
        for name, pipe in self._pipes.items():
            while True:
                try:
                    data = os.read(pipe.fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    break
                if not data:
                    break
                pipe.decoder.feed(data)
            while True:
                try:
                    frame = pipe.decoder.next_frame()
                    if isinstance(frame, NeedData):
                        break
                    msg = pipe.assembler.add(frame, now)
                except DecodeError:
                    self.rejected += 1
                    continue
                if msg is None or msg.sender != name:
                    continue
                with contextlib.suppress(ValueError):
                    status = json.loads(msg.body)
                    if isinstance(status, dict):
                        out[name] = status
        return out

    def close(self) -> None:
        """Close every pipe; idempotent."""
        for pipe in self._pipes.values():
            pipe.close()
        self._pipes.clear()


@dataclass(slots=True)
class AgentView:
    """One row of the agents table."""

    name: str
    role: str = ""
    pid: int = 0
    status: str = ACTIVE
    registered_age_s: float = 0.0
    heartbeat: dict[str, Any] = field(default_factory=dict)
    beat_at: float = 0.0  # monotonic time of the last heartbeat; 0 if none
    sent_seen: int = 0  # counted from the logs, for agents without heartbeats
    received_seen: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_SAMPLES))

    def uptime_s(self, now: float) -> float:
        """From the last heartbeat, advanced by the time since; else the registry age."""
        up = self.heartbeat.get("uptime_s")
        if isinstance(up, int | float) and self.beat_at:
            return float(up) + (now - self.beat_at)
        return self.registered_age_s

    @property
    def sent(self) -> int:
        """Messages sent: the heartbeat counter if any, else what the logs showed."""
        value = self.heartbeat.get("sent")
        return int(value) if isinstance(value, int) else self.sent_seen

    @property
    def received(self) -> int:
        """Messages received: the heartbeat counter if any, else what the logs showed."""
        value = self.heartbeat.get("received")
        return int(value) if isinstance(value, int) else self.received_seen

    def latency_p(self, q: float) -> float | None:
        """The q-th percentile of recent handler latencies (µs), or None."""
        return percentile(sorted(self.latencies), q) if self.latencies else None


@dataclass(frozen=True, slots=True)
class TrafficFilter:
    """Feed filter from text like ``agent:gemini type:question pipeline``.

    ``agent:`` matches FROM or TO, ``from:``/``to:``/``type:`` match exactly, and
    the remaining words must all appear (case-insensitive) in the body, names,
    type or ID.
    """

    agent: str = ""
    sender: str = ""
    to: str = ""
    msg_type: str = ""
    words: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> TrafficFilter:
        """Parse the filter box's text."""
        fields: dict[str, str] = {}
        words: list[str] = []
        for token in text.split():
            key, sep, value = token.partition(":")
            if sep and key in ("agent", "from", "to", "type") and value:
                fields[key] = value
            else:
                words.append(token.lower())
        return cls(
            fields.get("agent", ""),
            fields.get("from", ""),
            fields.get("to", ""),
            fields.get("type", ""),
            tuple(words),
        )

    def matches(self, rec: dict[str, Any]) -> bool:
        """True when ``rec`` passes."""
        sender, to = rec.get("from"), rec.get("to")
        if self.agent and self.agent not in (sender, to):
            return False
        if (self.sender and sender != self.sender) or (self.to and to != self.to):
            return False
        if self.msg_type and rec.get("type") != self.msg_type:
            return False
        if self.words:
            hay = " ".join(
                str(rec.get(k, "")) for k in ("from", "to", "type", "id", "body")
            ).lower()
            return all(w in hay for w in self.words)
        return True


def _recent_records(path: Path, max_bytes: int) -> list[dict[str, Any]]:
    """Whole records in the last ``max_bytes`` of ``path`` (first partial line dropped)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            data = f.read(max_bytes)
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if size > max_bytes:
        lines = lines[1:]
    out = []
    for line in lines:
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if isinstance(rec, dict):
                out.append(rec)
    return out


class MeshView:
    """The dashboard's model: call :meth:`refresh` on a timer, then read the fields.

    Args:
        home: the mesh home to watch.
        stale_after_s: an active agent whose heartbeats stopped this long ago
            shows as ``stale``.
        max_traffic: messages kept for the feed.
        max_errors: error records kept.
    """

    def __init__(
        self,
        home: MeshHome,
        *,
        stale_after_s: float = 15.0,
        max_traffic: int = 1000,
        max_errors: int = 200,
    ) -> None:
        self.home = home
        self.stale_after_s = stale_after_s
        self.registry = Registry(home.registry_path, home.lock_path)
        self.status = StatusReader(home)
        self.agents: dict[str, AgentView] = {}
        self.traffic: deque[dict[str, Any]] = deque(maxlen=max_traffic)
        self.errors: deque[dict[str, Any]] = deque(maxlen=max_errors)
        self.latency_by_id: OrderedDict[str, float] = OrderedDict()
        self.registry_error = ""
        self._seen_ids: OrderedDict[str, None] = OrderedDict()
        logs = home.logs_dir
        # Open the tails first, then read the recent past: a record written in
        # between shows twice at most, and sent records are de-duplicated by ID.
        self._tails = {
            name: LogTail(logs / name, from_end=True)
            for name in (COMM_LOG, LATENCY_LOG, ERRORS_LOG)
        }
        self._pending: dict[str, list[dict[str, Any]]] = {
            name: _recent_records(logs / name, _BACKLOG_BYTES) for name in self._tails
        }

    def _agent(self, name: str) -> AgentView:
        view = self.agents.get(name)
        if view is None:
            view = self.agents[name] = AgentView(name)
        return view

    def _refresh_registry(self) -> None:
        try:
            records: dict[str, AgentRecord] = self.registry.read()
        except MeshError as exc:
            self.registry_error = str(exc)
            return
        self.registry_error = ""
        for name, rec in records.items():
            view = self._agent(name)
            if rec.pid != view.pid and view.pid:
                view.heartbeat, view.beat_at = {}, 0.0  # a new process under the same name
            view.role, view.pid, view.registered_age_s = rec.role, rec.pid, rec.age_s()
            view.status = ACTIVE if rec.is_active else INACTIVE
        for name, view in self.agents.items():
            if name not in records and view.pid:
                view.status = LEFT
        self.status.sync(n for n, r in records.items() if r.is_active)

    def _apply_heartbeats(self, now: float) -> None:
        for name, status in self.status.poll().items():
            view = self._agent(name)
            view.heartbeat, view.beat_at = status, now
            if not view.role and isinstance(status.get("role"), str):
                view.role = status["role"]
        for view in self.agents.values():
            if view.status in (ACTIVE, STALE) and view.beat_at:
                view.status = STALE if now - view.beat_at > self.stale_after_s else ACTIVE

    def _take(self, name: str) -> list[dict[str, Any]]:
        records = self._pending.pop(name, [])
        return records + self._tails[name].poll()

    def _remember_id(self, msg_id: str) -> bool:
        """True the first time ``msg_id`` is seen (bounded memory)."""
        if msg_id in self._seen_ids:
            return False
        self._seen_ids[msg_id] = None
        if len(self._seen_ids) > 20_000:
            self._seen_ids.popitem(last=False)
        return True

    def refresh(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
        """Read everything new once.

        Returns:
            (new messages for the feed, new error records, IDs whose latency
            arrived), so a UI can append rather than redraw.
        """
        now = time.monotonic()
        self._refresh_registry()
        self._apply_heartbeats(now)
        new_msgs: list[dict[str, Any]] = []
        for rec in self._take(COMM_LOG):
            event, msg_id = rec.get("event"), str(rec.get("id", ""))
            if event == "frame_sent" and self._remember_id(msg_id):
                self.traffic.append(rec)
                new_msgs.append(rec)
                if isinstance(rec.get("from"), str) and rec["from"] in self.agents:
                    self.agents[rec["from"]].sent_seen += 1
            elif event == "frame_received" and rec.get("agent") in self.agents:
                self.agents[rec["agent"]].received_seen += 1
        updated: list[str] = []
        for rec in self._take(LATENCY_LOG):
            msg_id, lat, agent = str(rec.get("id", "")), rec.get("latency_us"), rec.get("agent")
            if not isinstance(lat, int | float):
                continue
            if msg_id not in self.latency_by_id:
                self.latency_by_id[msg_id] = float(lat)
                updated.append(msg_id)
                if len(self.latency_by_id) > 20_000:
                    self.latency_by_id.popitem(last=False)
            if isinstance(agent, str):
                self._agent(agent).latencies.append(float(lat))
        new_errors = self._take(ERRORS_LOG)
        self.errors.extend(new_errors)
        return new_msgs, new_errors, updated

    def close(self) -> None:
        """Close the pipes and log files; idempotent."""
        self.status.close()
        for tail in self._tails.values():
            tail.close()
