"""Remote agents in the local registry: ``name@host`` entries a gateway owns.

Each remote agent the gateway heard of (from its host's heartbeat) gets a
registry entry named ``name@host`` with the *gateway's* pid, and, while it can
be reached, a real FIFO the gateway reads. A local sender therefore writes to
a remote agent exactly as to a local one, and gets the usual answers:

* reachable: the frames go into the gateway's FIFO (``DELIVERED``);
* not reachable (its host's gateway is silent, NATS is down, or it stopped):
  the entry reads ``inactive`` and has no FIFO, so a send raises
  ``AgentOffline``, or for a durable remote agent queues the message in its
  spool here (``QUEUED``), which the gateway forwards when it can;
* the gateway died: its pid is dead, so the entries read ``inactive`` for the
  same answers, and ``pipemesh gc`` (or any join) sweeps them.

This module does no networking: :class:`RemoteTable` is told what the
heartbeats say and whether NATS is up, and calls back with each message a
local agent wrote to a remote one.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from pipemesh.codec import AnyFrameDecoder
from pipemesh.errors import DecodeError, MeshError
from pipemesh.home import MeshHome
from pipemesh.registry import (
    ACTIVE,
    INACTIVE,
    AgentRecord,
    Registry,
    process_start_time,
    utc_now_iso,
)
from pipemesh.transport.base import Inbox
from pipemesh.transport.fifo import FifoTransport
from pipemesh.wire import Frame, Message, Reassembler

__all__ = ["Announcement", "RemoteAgent", "RemoteTable", "remote_name", "split_remote"]

_READ_POLL_S: Final = 0.2
_PARTIAL_MAX_AGE_S: Final = 30.0  # as AgentBase's partial_timeout_s


def remote_name(agent: str, host: str) -> str:
    """The local registry name of ``agent`` on ``host``."""
    return f"{agent}@{host}"


def split_remote(name: str) -> tuple[str, str]:
    """``(agent, host)`` of a ``name@host`` entry name."""
    agent, _, host = name.partition("@")
    return agent, host


@dataclass(frozen=True, slots=True)
class RemoteAgent:
    """One agent as its host's heartbeat describes it."""

    name: str
    active: bool
    durable: bool = False
    role: str = ""
    max_body_bytes: int = 16 * 1024 * 1024


OnMessage = Callable[[str, list[Message], threading.Event], None]  # the event: reader stopping
OnError = Callable[[str, str], None]
# (entry name, "join" or "leave", its record as JSON): what local agents must be told,
# as a local agent tells its peers, so their cached view of the registry stays true.
Announcement = tuple[str, str, str]


class _Reader:
    """Reads one remote entry's FIFO in a thread and hands on whole messages."""

    def __init__(
        self, name: str, inbox: Inbox, max_frame: int, on_message: OnMessage, on_error: OnError
    ) -> None:
        self.name = name
        self._inbox = inbox
        self._max_frame = max_frame
        self._on_message = on_message
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"gw-read-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        decoder = AnyFrameDecoder(max_frame_body_bytes=self._max_frame)
        joiner = Reassembler()
        while not self._stop.is_set():
            try:
                data = self._inbox.read(_READ_POLL_S)
            except MeshError as exc:
                self._on_error(self.name, str(exc))
                return
            if not data:
                for torn in joiner.expire(time.monotonic(), _PARTIAL_MAX_AGE_S):
                    self._on_error(self.name, f"partial message dropped: {torn}")
                continue
            decoder.feed(data)
            decoder.mark_boundary()
            batch: list[Message] = []
            while True:
                try:
                    frame = decoder.next_frame()
                    if not isinstance(frame, Frame):
                        break
                    msg = joiner.add(frame, time.monotonic())
                except DecodeError as exc:
                    self._on_error(self.name, f"frame dropped: {exc}")
                    continue
                if msg is not None:
                    batch.append(msg)
            if batch:  # one hand-over per read, not per message
                self._on_message(self.name, batch, self._stop)

    def stop_soon(self) -> None:
        """Ask the thread to stop without waiting (then :meth:`stop` waits one poll at most)."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)
        self._inbox.close()


class RemoteTable:
    """The ``name@host`` entries of one gateway, and the FIFOs it reads for them.

    Args:
        home: the local mesh home.
        on_message: called (in a reader thread) with the entry name and each
            whole message a local agent wrote to it, and an event set when the
            reader stops (a callback that waits must give up then).
        on_error: called with the entry name and a one-line description.
        max_body_cap: largest body a remote entry advertises (the NATS payload limit).
    """

    def __init__(
        self,
        home: MeshHome,
        on_message: OnMessage,
        on_error: OnError,
        *,
        max_body_cap: int = 1024 * 1024 - 4096,
    ) -> None:
        self.home = home
        self.registry = Registry(
            home.registry_path, home.lock_path, names_dir=home.names_dir, pipes_dir=home.pipes_dir
        )
        self.transport = FifoTransport(home.pipes_dir)
        self.max_body_cap = max_body_cap
        self._on_message = on_message
        self._on_error = on_error
        self._lock = threading.Lock()
        self._agents: dict[str, RemoteAgent] = {}  # name@host -> what its host said
        self._readers: dict[str, _Reader] = {}
        self._pid = os.getpid()
        self._pid_start = process_start_time(self._pid)
        self._closed = False

    def names(self) -> dict[str, RemoteAgent]:
        """The remote entries known now, by ``name@host``."""
        with self._lock:
            return dict(self._agents)

    def is_durable(self, name: str) -> bool:
        """True if the remote entry ``name`` is a durable agent."""
        with self._lock:
            agent = self._agents.get(name)
        return agent is not None and agent.durable

    def update(
        self, host: str, agents: list[RemoteAgent], *, reachable: bool
    ) -> list[Announcement]:
        """Make the entries of ``host`` match its heartbeat (``agents``).

        An entry is read (active, with a FIFO) when ``reachable`` and its agent
        is active, or durable (its gateway keeps the messages in JetStream);
        otherwise it stays, inactive and without a FIFO. Agents no longer listed
        lose their entries.
        """
        wanted = {remote_name(a.name, host): a for a in agents}
        with self._lock:
            if self._closed:
                return []
            gone = [n for n in self._agents if split_remote(n)[1] == host and n not in wanted]
            changes: dict[str, AgentRecord | None] = dict.fromkeys(gone)
            for name, agent in wanted.items():
                read = reachable and (agent.active or agent.durable)
                changes[name] = self._record(name, host, agent, read)
                self._agents[name] = agent
            for name in gone:
                del self._agents[name]
            return self._apply(changes)

    def set_all_unreachable(self) -> list[Announcement]:
        """NATS is down: every entry reads inactive (senders get AgentOffline, or queue)."""
        with self._lock:
            changes: dict[str, AgentRecord | None] = {
                name: self._record(name, split_remote(name)[1], agent, False)
                for name, agent in self._agents.items()
            }
            return self._apply(changes)

    def hosts(self) -> set[str]:
        """Hosts with entries here."""
        with self._lock:
            return {split_remote(n)[1] for n in self._agents}

    def _record(self, name: str, host: str, agent: RemoteAgent, read: bool) -> AgentRecord | None:
        return AgentRecord(
            name=name,
            role=agent.role or f"remote agent on {host}",
            pid=self._pid,
            registered_at=utc_now_iso(),
            public_pipe=str(self.transport.path(name)),
            private_pipe="",
            status=ACTIVE if read else INACTIVE,
            pid_start=self._pid_start,
            durable=agent.durable,
            max_body_bytes=max(1, min(agent.max_body_bytes, self.max_body_cap)),
            frames=("text", "binary"),
            gateway=host,
        )

    def _apply(self, changes: dict[str, AgentRecord | None]) -> list[Announcement]:
        """Start/stop readers and write the registry (under self._lock); say what changed."""
        told: list[Announcement] = []
        stopping: list[_Reader] = []  # all told at once, then joined: one poll, not one each
        for name, rec in changes.items():
            reading = name in self._readers
            if rec is not None and rec.status == ACTIVE and not reading:
                try:
                    inbox = self.transport.bind(name)
                except MeshError as exc:
                    self._on_error(name, str(exc))
                    changes[name] = replace(rec, status=INACTIVE)
                    continue
                self._readers[name] = _Reader(
                    name, inbox, self.transport.max_frame_bytes, self._on_message, self._on_error
                )
                told.append((name, "join", json.dumps(rec.to_json())))
            elif (rec is None or rec.status != ACTIVE) and reading:
                reader = self._readers.pop(name)
                reader.stop_soon()
                stopping.append(reader)
                told.append((name, "leave", json.dumps(rec.to_json() if rec else {})))
        for reader in stopping:
            reader.stop()
            self.transport.remove(reader.name)
        try:
            with self.registry.transaction() as records:
                for name, rec in changes.items():
                    old = records.get(name)
                    if rec is None:
                        if old is not None and old.gateway:
                            del records[name]
                        continue
                    if old is not None and not old.gateway:
                        continue  # never replace a local entry (cannot happen: '@' names)
                    if old is not None and _same(old, rec) and old.pid == rec.pid:
                        continue  # unchanged: no registry write per heartbeat
                    records[name] = rec
        except MeshError as exc:
            self._on_error("registry", str(exc))
        return told

    def close(self) -> list[Announcement]:
        """Stop reading; drop the entries, keeping durable ones as inactive. Idempotent."""
        with self._lock:
            if self._closed:
                return []
            self._closed = True
            changes: dict[str, AgentRecord | None] = {}
            for name, agent in self._agents.items():
                host = split_remote(name)[1]
                changes[name] = self._record(name, host, agent, False) if agent.durable else None
            told = self._apply(changes)
            for reader in self._readers.values():
                reader.stop()
            self._readers.clear()
            for name in changes:
                with contextlib.suppress(OSError):
                    self.transport.remove(name)
            return told


def _same(a: AgentRecord, b: AgentRecord) -> bool:
    """Equal but for the registration time."""
    return replace(a, registered_at="") == replace(b, registered_at="")
