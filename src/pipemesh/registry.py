"""The agent registry: ``agent_registry.json`` in the mesh home.

The seed's shape, plus what liveness needs::

    {"agents": {"gemini": {"status": "active", "pid": 12346,
                           "registered_at": "2025-11-21T10:00:01Z",
                           "public_pipe": ".../pipes/gemini.public",
                           "private_pipe": ".../pipes/gemini.private",
                           "role": "collaborator", "pid_start": 81234}},
     "version": 1}

Writers take an exclusive ``flock`` on a separate lock file, read, change and
write a temporary file, then ``os.replace`` it over the registry: readers never
lock and always see a whole file, old or new, and a writer killed at any point
leaves a valid registry (the kernel drops its flock with its fds).

A *durable* agent (``"durable": true``) keeps its entry when it stops: the
entry reads ``inactive`` and senders queue messages for it in its spool (see
:mod:`pipemesh.spool`); :meth:`Registry.gc` leaves such entries alone.

Liveness is read, not stored: an entry whose pid is gone (or is a zombie, or
was reused by a newer process, checked with its start time: from /proc on
Linux, from psutil on macOS and Windows) reads as ``inactive``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import filelock

from pipemesh import _platform
from pipemesh.errors import NameTaken, RegistryCorrupt, RegistryLockTimeout
from pipemesh.wire import is_valid_name

__all__ = [
    "AgentRecord",
    "Registry",
    "pid_alive",
    "process_start_time",
    "utc_now_iso",
]

ACTIVE: Final = "active"
INACTIVE: Final = "inactive"
FORMAT_VERSION: Final = 1


def utc_now_iso() -> str:
    """Now, as the seed writes it: ``2025-11-21T10:00:00Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def process_start_time(pid: int) -> int:
    """A value that changes when ``pid`` is reused (its start time), or 0 if unknown."""
    return _platform.process_start_time(pid)


def pid_alive(pid: int, start_time: int = 0) -> bool:
    """True if ``pid`` runs and, when ``start_time`` is known, is the same process."""
    return _platform.pid_alive(pid, start_time)


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """One registry entry. ``status`` is computed from the pid when read."""

    name: str
    role: str
    pid: int
    registered_at: str
    public_pipe: str
    private_pipe: str
    status: str = ACTIVE
    pid_start: int = 0
    durable: bool = False

    @property
    def is_active(self) -> bool:
        """True when the entry's process is alive."""
        return self.status == ACTIVE

    def age_s(self, now: datetime | None = None) -> float:
        """Seconds since registration."""
        try:
            t = datetime.strptime(self.registered_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            return 0.0
        return ((now or datetime.now(UTC)) - t).total_seconds()

    def to_json(self) -> dict[str, object]:
        """The JSON object stored under the agent's name."""
        data = asdict(self)
        del data["name"]
        return data

    @classmethod
    def from_json(cls, name: str, data: object) -> AgentRecord:
        """Parse and check one entry; ValueError if it is malformed or unsafe."""
        if not is_valid_name(name):
            raise ValueError(f"agent name {name[:80]!r} is not valid")
        if not isinstance(data, dict):
            raise ValueError(f"entry {name} is not an object")
        try:
            rec = cls(
                name=name,
                role=str(data.get("role", "")),
                pid=int(data["pid"]),
                registered_at=str(data.get("registered_at", "")),
                public_pipe=str(data["public_pipe"]),
                private_pipe=str(data.get("private_pipe", "")),
                status=str(data.get("status", ACTIVE)),
                pid_start=int(data.get("pid_start", 0)),
                durable=data.get("durable", False) is True,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"entry {name} is malformed: {exc}") from None
        return rec

    def with_liveness(self) -> AgentRecord:
        """This record with ``status`` set from whether its pid is alive."""
        alive = self.status == ACTIVE and pid_alive(self.pid, self.pid_start)
        status = ACTIVE if alive else INACTIVE
        return self if status == self.status else replace(self, status=status)


class Registry:
    """Reads and changes ``agent_registry.json`` safely from many processes.

    Args:
        path: the registry file.
        lock_path: the separate lock file.
        lock_timeout_s: how long a writer waits for the lock.
    """

    def __init__(self, path: Path, lock_path: Path, *, lock_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.lock_path = Path(lock_path)
        self.lock_timeout_s = lock_timeout_s
        self.skipped: list[str] = []  # entries ignored on the last read, with reasons

    def _load(self) -> dict[str, AgentRecord]:
        try:
            raw = _platform.read_bytes(self.path)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise RegistryCorrupt(f"cannot read {self.path}: {exc.strerror}") from exc
        if not raw.strip():
            return {}
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistryCorrupt(
                f"{self.path} is not valid JSON ({exc}); fix it by hand, or delete it "
                "and restart the agents"
            ) from None
        agents = doc.get("agents") if isinstance(doc, dict) else None
        if not isinstance(agents, dict):
            raise RegistryCorrupt(
                f'{self.path} has no "agents" object; fix it by hand, or delete it '
                "and restart the agents"
            )
        records: dict[str, AgentRecord] = {}
        skipped: list[str] = []
        for name, data in agents.items():
            try:
                records[name] = AgentRecord.from_json(name, data)
            except ValueError as exc:
                skipped.append(str(exc))
        self.skipped = skipped
        return records

    def read(self) -> dict[str, AgentRecord]:
        """All entries, with ``status`` computed from liveness. Takes no lock.

        Raises:
            RegistryCorrupt: the file is not a registry document.
        """
        return {name: rec.with_liveness() for name, rec in self._load().items()}

    def _write(self, records: dict[str, AgentRecord]) -> None:
        doc = {
            "agents": {name: rec.to_json() for name, rec in sorted(records.items())},
            "version": FORMAT_VERSION,
        }
        data = json.dumps(doc, indent=2).encode() + b"\n"
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".agent_registry.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            _platform.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, AgentRecord]]:
        """Lock the registry and yield its entries, as stored, to change in place.

        Liveness is not computed here (it costs a /proc read per entry and the
        lock is held meanwhile); use :meth:`check_available` for one name.

        The dict is written back atomically when the block exits normally.

        Raises:
            RegistryLockTimeout: the lock was not acquired in time.
            RegistryCorrupt: the file is not a registry document.
        """
        lock = filelock.FileLock(self.lock_path, timeout=self.lock_timeout_s, mode=0o600)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise RegistryLockTimeout(
                f"registry lock on {self.lock_path} not acquired after "
                f"{self.lock_timeout_s:g}s; is another mesh process stuck?"
            ) from None
        try:
            records = self._load()
            before = dict(records)
            yield records
            if records != before:
                self._write(records)
        finally:
            lock.release()

    def check_available(self, records: dict[str, AgentRecord], name: str) -> None:
        """Raise NameTaken if a live agent holds ``name`` in ``records``."""
        held = records.get(name)
        if held is not None and held.with_liveness().is_active:
            raise NameTaken(
                f"agent name {name} is held by live process {held.pid} (role {held.role}); "
                "pick another name or stop that agent",
                agent_id=name,
                pid=held.pid,
            )

    def unregister(self, name: str, pid: int) -> bool:
        """Remove ``name`` if its entry belongs to ``pid``; return whether it did."""
        with self.transaction() as records:
            rec = records.get(name)
            if rec is None or rec.pid != pid:
                return False
            del records[name]
            return True

    def mark_stopped(self, name: str, pid: int) -> bool:
        """Keep ``name``'s entry as ``inactive`` (a durable agent's clean stop)."""
        with self.transaction() as records:
            rec = records.get(name)
            if rec is None or rec.pid != pid:
                return False
            records[name] = replace(rec, status=INACTIVE)
            return True

    def gc(self, *, keep_durable: bool = True) -> list[AgentRecord]:
        """Remove inactive entries and return the removed records.

        Args:
            keep_durable: leave inactive durable entries (their spools still
                take messages for them).
        """
        with self.transaction() as records:
            dead = [
                rec
                for rec in records.values()
                if not rec.with_liveness().is_active and not (keep_durable and rec.durable)
            ]
            for rec in dead:
                del records[rec.name]
        return dead
