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
LEFT: Final = "left"
_BACKLOG_BYTES: Final = 256 * 1024
_LATENCY_SAMPLES: Final = 2000
# Communication-log events that are counted: a message received, sent, or queued for later.
_COUNTED: Final = frozenset(("frame_received", "frame_sent", "frame_queued"))


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
    """One row of the agents table.

    ``status`` is the registry's word for the agent: ``active`` (registered,
    process alive), ``inactive`` (registered, process dead) or ``left`` (not in
    the registry: it left, or it was only ever seen in the logs).
    """

    name: str
    role: str = ""
    pid: int = 0
    status: str = LEFT
    registered_age_s: float = 0.0
    heartbeat: dict[str, Any] = field(default_factory=dict)
    beat_at: float = 0.0  # monotonic time of the last heartbeat; 0 if none
    msgs_in: int = 0  # frame_received records logged by this agent (see MeshView.counted_since)
    msgs_out: int = 0  # frame_sent/frame_queued records logged by this agent
    frozen_uptime_s: float | None = None  # uptime when it was seen to stop being active
    seen_at: float = 0.0  # monotonic time it was last in the registry or the logs
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_SAMPLES))

    def _live_uptime_s(self, now: float) -> float:
        up = self.heartbeat.get("uptime_s")
        if isinstance(up, int | float) and self.beat_at:
            return float(up) + (now - self.beat_at)
        return self.registered_age_s

    def uptime_s(self, now: float) -> float | None:
        """Seconds the process has run; frozen when it stopped; None when unknown.

        While active: the last heartbeat's uptime advanced by the time since,
        else the registry age. Once the dashboard sees it stop (killed, or
        left), the value it had then. An agent already gone when the dashboard
        started has no known uptime.
        """
        if self.status == ACTIVE:
            return self._live_uptime_s(now)
        return self.frozen_uptime_s

    def beat_age_s(self, now: float) -> float | None:
        """Seconds since the last heartbeat, or None if none came."""
        return now - self.beat_at if self.beat_at else None

    def set_status(self, status: str, now: float) -> None:
        """Move to ``status``, freezing the uptime when the agent stops being active."""
        if self.status == ACTIVE and status != ACTIVE:
            self.frozen_uptime_s = self._live_uptime_s(now)
        elif status == ACTIVE:
            self.frozen_uptime_s = None
        self.status = status

    def latency_p(self, q: float) -> float | None:
        """The q-th percentile of recent handler latencies (µs), or None."""
        return percentile(sorted(self.latencies), q) if self.latencies else None


_STATUS_ORDER: Final = {ACTIVE: 0, INACTIVE: 1, LEFT: 2}


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

    Counters are counted from the communication log, one way for every agent:
    ``msgs_in`` is the number of ``frame_received`` records an agent logged,
    ``msgs_out`` the number of messages it sent (a broadcast counts once),
    both since :attr:`counted_since` (the oldest record of the backlog read at
    start, or the start itself). Heartbeats and control frames are never
    logged, so never counted.

    Args:
        home: the mesh home to watch.
        stale_after_s: heartbeats older than this are shown as late.
        max_traffic: messages kept for the feed.
        max_errors: error records kept.
        max_left: ``left`` agents kept (the least recently seen are dropped).
    """

    def __init__(
        self,
        home: MeshHome,
        *,
        stale_after_s: float = 15.0,
        max_traffic: int = 1000,
        max_errors: int = 200,
        max_left: int = 100,
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
        self.max_left = max_left
        self._now = time.monotonic()
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
        stamps = [
            rec["ts"]
            for rec in self._pending[COMM_LOG]
            if isinstance(rec.get("ts"), int | float) and rec.get("event") in _COUNTED
        ]
        self.counted_since: float = float(min(stamps)) if stamps else time.time()

    def _agent(self, name: str) -> AgentView:
        view = self.agents.get(name)
        if view is None:
            view = self.agents[name] = AgentView(name)
        view.seen_at = self._now
        return view

    def _forget_old_left(self) -> None:
        """Keep at most ``max_left`` left agents (many short-lived senders come and go)."""
        left = [v for v in self.agents.values() if v.status == LEFT]
        if len(left) > self.max_left:
            left.sort(key=lambda v: v.seen_at)
            for view in left[: len(left) - self.max_left]:
                del self.agents[view.name]

    def ordered_agents(self) -> list[AgentView]:
        """Agents for display: active first, then inactive, then left; by name within."""
        return sorted(self.agents.values(), key=lambda a: (_STATUS_ORDER[a.status], a.name))

    def _refresh_registry(self, now: float) -> None:
        try:
            records: dict[str, AgentRecord] = self.registry.read()
        except MeshError as exc:
            self.registry_error = str(exc)
            return
        self.registry_error = ""
        for name, rec in records.items():
            view = self._agent(name)
            if rec.pid != view.pid and view.pid:
                # A new process under the same name: its own heartbeats and uptime.
                view.heartbeat, view.beat_at = {}, 0.0
                view.set_status(LEFT, now)
            view.role, view.pid, view.registered_age_s = rec.role, rec.pid, rec.age_s()
            view.set_status(ACTIVE if rec.is_active else INACTIVE, now)
        for name, view in self.agents.items():
            if name not in records:
                view.set_status(LEFT, now)
                view.pid = 0
        self.status.sync(n for n, r in records.items() if r.is_active)

    def _apply_heartbeats(self, now: float) -> None:
        for name, status in self.status.poll().items():
            view = self.agents.get(name)
            if view is None or view.status != ACTIVE:
                continue  # a beat written just before it left
            view.heartbeat, view.beat_at = status, now
            if not view.role and isinstance(status.get("role"), str):
                view.role = status["role"]

    def is_late(self, view: AgentView, now: float) -> bool:
        """True when an active agent's heartbeats stopped over ``stale_after_s`` ago."""
        age = view.beat_age_s(now)
        return view.status == ACTIVE and age is not None and age > self.stale_after_s

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
        now = self._now = time.monotonic()
        self._refresh_registry(now)
        self._apply_heartbeats(now)
        new_msgs: list[dict[str, Any]] = []
        for rec in self._take(COMM_LOG):
            event, msg_id, agent = rec.get("event"), str(rec.get("id", "")), rec.get("agent")
            if event not in _COUNTED or not isinstance(agent, str) or not agent:
                continue
            if event == "frame_received":
                # Keyed by receiver too: a broadcast is received once per agent; a record
                # read twice (the start-up backlog overlaps the tail) is counted once.
                if self._remember_id(f"{agent} {msg_id}"):
                    self._agent(agent).msgs_in += 1
            elif self._remember_id(msg_id):
                self._agent(agent).msgs_out += 1
                self.traffic.append(rec)
                new_msgs.append(rec)
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
            if isinstance(agent, str) and agent:
                self._agent(agent).latencies.append(float(lat))
        new_errors = self._take(ERRORS_LOG)
        self.errors.extend(new_errors)
        self._forget_old_left()
        return new_msgs, new_errors, updated

    def close(self) -> None:
        """Close the pipes and log files; idempotent."""
        self.status.close()
        for tail in self._tails.values():
            tail.close()
