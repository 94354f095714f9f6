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

Name ownership does not rest on the JSON file alone: every live agent holds an
exclusive ``flock`` on ``<home>/names/<name>.lock`` for its whole life (see
:class:`NameLock`), taken *before* the registry lock. A joiner that cannot take
it gets ``NameTaken`` even when ``agent_registry.json`` was deleted, and the
lock file carries the holder's record, so a lost or corrupt registry is rebuilt
from the live agents (:meth:`Registry.repair`, or a reader that finds no file).
Sweeping (``gc``, and every join) removes a dead entry and its pipes only while
holding that entry's name lock and the registry lock: never a live agent's
pipe, never under a race with a join of the same name.

Every field read back is checked (type, range, size): a hand-edited or hostile
entry is skipped and reported in :attr:`Registry.skipped`, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from pipemesh import _locks, _platform
from pipemesh.errors import NameTaken, RegistryCorrupt, RegistryError, RegistryLockTimeout
from pipemesh.wire import MAX_BODY_BYTES, is_valid_name

__all__ = [
    "AgentRecord",
    "GcReport",
    "NameLock",
    "Registry",
    "pid_alive",
    "process_start_time",
    "utc_now_iso",
]

ACTIVE: Final = "active"
INACTIVE: Final = "inactive"
NO_PIPE: Final = "no pipe"  # shown by `pipemesh agents`: alive, but its FIFO is gone
FORMAT_VERSION: Final = 1
MAX_PID: Final = 2**31 - 1  # pid_t; os.kill() overflows past it
_O_NOFOLLOW: Final[int] = getattr(os, "O_NOFOLLOW", 0)  # POSIX only: hardening
_O_NONBLOCK: Final[int] = getattr(os, "O_NONBLOCK", 0)
MAX_REGISTRY_BYTES: Final = 16 * 1024 * 1024
_MAX_TEXT: Final = 4096
_NAME_WAIT_POLL_S: Final = 0.01


def utc_now_iso() -> str:
    """Now, as the seed writes it: ``2025-11-21T10:00:00Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def process_start_time(pid: int) -> int:
    """A value that changes when ``pid`` is reused (its start time), or 0 if unknown."""
    return _platform.process_start_time(pid)


def pid_alive(pid: int, start_time: int = 0) -> bool:
    """True if ``pid`` runs and, when ``start_time`` is known, is the same process."""
    if not 0 < pid <= MAX_PID:
        return False
    return _platform.pid_alive(pid, start_time)


def _int(data: dict[str, object], key: str, default: int | None, low: int, high: int) -> int:
    value = data.get(key, default)
    if value is None:
        raise KeyError(key)
    # bool is an int in Python, and a float (1e400 is inf) is not a pid.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{key} is not an integer")
    if not low <= value <= high:
        raise ValueError(f"{key} {str(value)[:24]} is out of range {low}..{high}")
    return value


def _text(data: dict[str, object], key: str, default: str | None) -> str:
    value = data.get(key, default)
    if value is None:
        raise KeyError(key)
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    if len(value) > _MAX_TEXT or "\0" in value:
        raise ValueError(f"{key} is over {_MAX_TEXT} characters or holds a NUL")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{key} holds a lone surrogate") from None
    return value


def _frames(data: dict[str, object]) -> tuple[str, ...]:
    """The ``frames`` list: short lowercase kind names; absent means text only."""
    value = data.get("frames", ["text"])
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= 8
        or not all(isinstance(v, str) and v.isascii() and v.isalnum() for v in value)
        or any(len(v) > 16 for v in value)
    ):
        raise ValueError('frames is not a list of 1-8 frame kind names such as "text"')
    return tuple(value)


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
    max_body_bytes: int = MAX_BODY_BYTES  # largest body it accepts; senders check it
    # Frame kinds its pipe reads (docs/frames.md); a record without the field, from an
    # older agent or another writer, reads text only, so senders write it text frames.
    frames: tuple[str, ...] = ("text",)
    # The host whose gateway relays this entry (``name@host``, docs/gateway.md); "" = local.
    gateway: str = ""

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
        if not self.gateway:
            del data["gateway"]  # local entries keep the format older readers know
        return data

    @classmethod
    def from_json(cls, name: str, data: object) -> AgentRecord:
        """Parse and check one entry; ValueError if it is malformed, out of range or unsafe."""
        if not is_valid_name(name):
            raise ValueError(f"agent name {name[:80]!r} is not valid")
        if not isinstance(data, dict):
            raise ValueError(f"entry {name} is not an object")
        try:
            status = _text(data, "status", ACTIVE)
            if status not in (ACTIVE, INACTIVE):
                raise ValueError(f"status {status[:40]!r} is not active or inactive")
            durable = data.get("durable", False)
            if not isinstance(durable, bool):
                raise ValueError("durable is not true or false")
            rec = cls(
                name=name,
                # The role is free text shown in tables: keep it printable.
                role="".join(c if c.isprintable() else "?" for c in _text(data, "role", "")[:200]),
                pid=_int(data, "pid", None, 1, MAX_PID),
                registered_at=_text(data, "registered_at", ""),
                public_pipe=_text(data, "public_pipe", None),
                private_pipe=_text(data, "private_pipe", ""),
                status=status,
                pid_start=_int(data, "pid_start", 0, 0, 2**63 - 1),
                durable=durable,
                max_body_bytes=_int(data, "max_body_bytes", MAX_BODY_BYTES, 1, 2**62),
                frames=_frames(data),
                gateway=_text(data, "gateway", ""),
            )
            if name.partition("@")[2] != rec.gateway:
                raise ValueError("only a gateway's entry is named name@host, host its gateway's")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"entry {name} is malformed: {exc}") from None
        return rec

    def with_liveness(self) -> AgentRecord:
        """This record with ``status`` set from whether its pid is alive."""
        alive = self.status == ACTIVE and pid_alive(self.pid, self.pid_start)
        status = ACTIVE if alive else INACTIVE
        return self if status == self.status else replace(self, status=status)


LIVE: Final = "live"
CLOSING: Final = "closing"
STOPPED: Final = "stopped"


def _os_hint(exc: OSError) -> str:
    """What to do about a failed write in the mesh home."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space in the mesh home"
    if exc.errno == errno.EROFS:
        return "the filesystem is read-only: use a writable mesh home (--home)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "check the owner and permissions of the mesh home"
    return "check the mesh home"


class NameLock:
    """An agent's hold on its name: an exclusive ``flock`` on ``<names>/<name>.lock``.

    Held from before the agent's registry entry is written until after its
    pipes are removed, so no other process can take the name (or sweep its
    pipes) meanwhile, whatever happened to ``agent_registry.json``. The file
    holds the owner's state and record as JSON, for ``NameTaken`` messages and
    for rebuilding the registry. Use :meth:`Registry.lock_name` to get one.
    """

    def __init__(self, name: str, path: Path, fd: int, pipe_backup: Path) -> None:
        self.name = name
        self.path = path
        self._fd = fd
        self._pipe_backup = pipe_backup
        self._keep = False
        self._record: AgentRecord | None = None

    @property
    def is_held(self) -> bool:
        """True until :meth:`release`."""
        return self._fd >= 0

    def _store(self, state: str, record: AgentRecord | None) -> None:
        if self._fd < 0:
            return
        doc: dict[str, object] = {"state": state, "pid": os.getpid()}
        if record is not None:
            doc["record"] = record.to_json()
        data = json.dumps(doc).encode()
        with contextlib.suppress(OSError):  # content is advisory; the flock is the claim
            _platform.pwrite(self._fd, data, 0)
            os.ftruncate(self._fd, len(data))

    def publish(self, record: AgentRecord, public_pipe: Path | None = None) -> None:
        """Store ``record`` as the live owner's; keep a hard link to its FIFO.

        The link (``<names>/<name>.pipe``) lets ``pipemesh gc`` put the FIFO
        back if someone removes ``pipes/<name>.public`` under a live agent.
        """
        self._record = record
        self._keep = False  # a durable predecessor's stop record is replaced by ours
        self._store(LIVE, record)
        if public_pipe is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._pipe_backup)  # a dead predecessor's link
        with contextlib.suppress(OSError):  # best effort: only a repair aid
            if stat.S_ISFIFO(os.lstat(public_pipe).st_mode):
                os.link(public_pipe, self._pipe_backup, follow_symlinks=False)

    def closing(self) -> None:
        """Say the owner is leaving: a joiner of this name waits instead of failing."""
        self._store(CLOSING, self._record)

    def stopped(self, record: AgentRecord) -> None:
        """Keep the file, holding ``record`` (a durable agent's clean stop)."""
        self._keep = True
        self._store(STOPPED, record)

    def release(self) -> None:
        """Remove the pipe link and (unless :meth:`stopped`) the lock file; unlock. Idempotent."""
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._pipe_backup)
            if not self._keep and _locks.is_same_file(fd, self.path):
                # Unlinked while held: a joiner that opened the old file sees it
                # is no longer at the path after locking it, and retries.
                # Windows refuses to unlink a file open here: the lock file stays
                # (harmless: the lock itself ends with the close below).
                with contextlib.suppress(FileNotFoundError, PermissionError):
                    os.unlink(self.path)
        finally:
            os.close(fd)


def _read_claim(fd: int) -> dict[str, object]:
    """The JSON a name lock holder stored, or {} while it is being written."""
    try:
        data = _platform.pread(fd, 64 * 1024, 0)
        doc = json.loads(data)
    except (OSError, ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


@dataclass(slots=True)
class GcReport:
    """What :meth:`Registry.repair` did."""

    removed: list[AgentRecord] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)  # entries rebuilt from name locks
    pipes_removed: list[str] = field(default_factory=list)  # orphan FIFOs unlinked
    pipes_restored: list[str] = field(default_factory=list)  # live agents' FIFOs put back
    no_pipe: list[str] = field(default_factory=list)  # live, FIFO gone, could not restore
    skipped: list[str] = field(default_factory=list)  # malformed entries dropped
    moved_aside: Path | None = None  # where a corrupt registry file was kept


class Registry:
    """Reads and changes ``agent_registry.json`` safely from many processes.

    Args:
        path: the registry file.
        lock_path: the separate lock file.
        lock_timeout_s: how long a writer waits for the lock.
        names_dir: directory of the per-name locks (default ``names`` next to ``path``).
        pipes_dir: directory of the agents' FIFOs that sweeping removes
            (default ``pipes`` next to ``path``).
    """

    def __init__(
        self,
        path: Path,
        lock_path: Path,
        *,
        lock_timeout_s: float = 5.0,
        names_dir: Path | None = None,
        pipes_dir: Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.lock_path = Path(lock_path)
        self.lock_timeout_s = lock_timeout_s
        self.names_dir = Path(names_dir) if names_dir else self.path.parent / "names"
        self.pipes_dir = Path(pipes_dir) if pipes_dir else self.path.parent / "pipes"
        self.skipped: list[str] = []  # entries ignored on the last read, with reasons

    # -- the file --

    def _corrupt(self, what: str) -> RegistryCorrupt:
        return RegistryCorrupt(
            f"{self.path} {what}; run 'pipemesh gc' to set it aside and rebuild it "
            "from the live agents"
        )

    def _load(self) -> dict[str, AgentRecord]:
        try:
            fd = _platform.open_retrying(
                self.path, os.O_RDONLY | _platform.O_CLOEXEC | _O_NOFOLLOW | _O_NONBLOCK
            )
        except FileNotFoundError:
            # Deleted (or never written): the live agents' name locks still say who is here.
            self.skipped = []
            return self._claims()
        except OSError as exc:
            raise RegistryCorrupt(
                f"cannot read {self.path}: {exc.strerror}; run 'pipemesh gc' to rebuild it"
            ) from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise self._corrupt("is not a regular file")
            with os.fdopen(fd, "rb", closefd=False) as f:
                raw = f.read(MAX_REGISTRY_BYTES + 1)
        except OSError as exc:
            raise RegistryCorrupt(f"cannot read {self.path}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        if len(raw) > MAX_REGISTRY_BYTES:
            raise self._corrupt(f"is over {MAX_REGISTRY_BYTES} bytes")
        if not raw.strip():
            self.skipped = []
            return {}
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, too deep, huge ints
            raise self._corrupt(f"is not valid JSON ({str(exc)[:120]})") from None
        agents = doc.get("agents") if isinstance(doc, dict) else None
        if not isinstance(agents, dict):
            raise self._corrupt('has no "agents" object')
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
        tmp = ""
        try:
            fd, tmp = tempfile.mkstemp(
                dir=self.path.parent, prefix=".agent_registry.", suffix=".tmp"
            )
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            _platform.replace(tmp, self.path)
        except OSError as exc:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise RegistryError(
                f"cannot write the registry {self.path}: {exc.strerror}; {_os_hint(exc)} "
                "(the registry was left as it was)"
            ) from exc
        except BaseException:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise

    # -- the registry lock --

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            fd = _locks.open_lock_file(self.lock_path)
        except OSError as exc:
            raise _lock_error(self.lock_path, "registry lock", exc) from exc
        try:
            if not _locks.lock_within(fd, self.lock_timeout_s):
                raise RegistryLockTimeout(
                    f"registry lock on {self.lock_path} not acquired after "
                    f"{self.lock_timeout_s:g}s; is another mesh process stuck?"
                )
            yield
        finally:
            os.close(fd)  # releases the flock

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, AgentRecord]]:
        """Lock the registry and yield its entries, as stored, to change in place.

        Liveness is not computed here (it costs a /proc read per entry and the
        lock is held meanwhile); use :meth:`check_available` for one name.

        The dict is written back atomically when the block exits normally.

        Raises:
            RegistryLockTimeout: the lock was not acquired in time.
            RegistryCorrupt: the file is not a registry document.
            RegistryError: the lock file or the registry cannot be written.
        """
        with self._locked():
            existed = self.path.exists()
            records = self._load()
            before = dict(records)
            yield records
            if records != before or (records and not existed):
                self._write(records)

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

    # -- name locks --

    def _name_path(self, name: str) -> Path:
        return self.names_dir / f"{name}.lock"

    def _open_name(self, name: str, *, create: bool) -> int:
        try:
            if create:
                self.names_dir.mkdir(mode=0o700, exist_ok=True)
            return _locks.open_lock_file(self._name_path(name), create=create)
        except FileNotFoundError:
            if create:
                raise RegistryError(
                    f"cannot create {self._name_path(name)}: the mesh home is gone"
                ) from None
            raise
        except OSError as exc:
            raise _lock_error(self._name_path(name), f"name lock of {name}", exc) from exc

    def _try_name(self, name: str, *, create: bool = True) -> NameLock | None:
        """``name``'s lock if nobody holds it now (never waits), else None."""
        path = self._name_path(name)
        for _ in range(10):  # the file is replaced only by a release; bounded retries
            try:
                fd = self._open_name(name, create=create)
            except FileNotFoundError:
                return None
            if not _locks.try_lock(fd):
                os.close(fd)
                return None
            if _locks.is_same_file(fd, path):
                lock = NameLock(name, path, fd, self.names_dir / f"{name}.pipe")
                claim = _read_claim(fd)
                lock._keep = claim.get("state") == STOPPED  # a durable agent's stop record
                return lock
            os.close(fd)  # released and unlinked between our open and lock: retry
        return None

    def lock_name(self, name: str, *, wait_s: float | None = None) -> NameLock:
        """Take ``name`` for this process until :meth:`NameLock.release`.

        Waits (up to ``wait_s``, default the lock timeout) only while the holder
        is leaving or still joining; a live holder is refused at once.

        Raises:
            NameTaken: a live process holds the name.
            RegistryError: the names directory or lock file is unusable.
        """
        deadline = time.monotonic() + (self.lock_timeout_s if wait_s is None else wait_s)
        while True:
            lock = self._try_name(name)
            if lock is not None:
                return lock
            claim: dict[str, object] = {}
            with contextlib.suppress(FileNotFoundError):  # released meanwhile: retry below
                fd = self._open_name(name, create=False)
                try:
                    claim = _read_claim(fd)
                finally:
                    os.close(fd)
            pid = claim.get("pid")
            pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else 0
            live = claim.get("state") == LIVE and pid_alive(pid)
            if live or time.monotonic() >= deadline:
                who = f"live process {pid}" if pid else "another live process"
                raise NameTaken(
                    f"agent name {name} is held by {who}; pick another name or stop that agent",
                    agent_id=name,
                    pid=pid,
                )
            time.sleep(_NAME_WAIT_POLL_S)  # the holder is closing or mid-join: bounded wait

    def _claims(self) -> dict[str, AgentRecord]:
        """Entries rebuilt from name locks: live holders, and durable agents' stop records."""
        out: dict[str, AgentRecord] = {}
        try:
            names = sorted(os.listdir(self.names_dir))
        except OSError:
            return out
        for fname in names:
            name = fname[: -len(".lock")]
            if not fname.endswith(".lock") or not is_valid_name(name):
                continue
            try:
                fd = _locks.open_lock_file(self.names_dir / fname, create=False)
            except OSError:
                continue
            try:
                held = not _locks.try_lock(fd)
                claim = _read_claim(fd)
            finally:
                os.close(fd)
            if not held and claim.get("state") != STOPPED:
                continue
            try:
                rec = AgentRecord.from_json(name, claim.get("record"))
            except ValueError:
                continue
            out[name] = replace(rec, status=ACTIVE if held else INACTIVE)
        return out

    # -- leaving and sweeping --

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

    def _unlink_pipes(self, name: str) -> None:
        for suffix in (".public", ".private"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.pipes_dir / f"{name}{suffix}")

    def sweep(
        self, records: dict[str, AgentRecord], *, keep_durable: bool = True, skip: str = ""
    ) -> list[AgentRecord]:
        """Remove dead entries from ``records`` (inside :meth:`transaction`) and their pipes.

        An entry goes only if its pid is dead *and* its name lock can be
        taken: a live holder (or a joiner of that name) keeps it. Inactive
        durable entries stay (their spools take messages) but lose their
        leftover pipes. Returns the removed records.
        """
        removed: list[AgentRecord] = []
        for rec in list(records.values()):
            if rec.name == skip or pid_alive(rec.pid, rec.pid_start):
                continue
            lock = self._try_name(rec.name)
            if lock is None:
                continue  # a live process holds the name (a joiner, or a fork of the agent)
            try:
                self._unlink_pipes(rec.name)
                if keep_durable and rec.durable:
                    lock.stopped(replace(rec, status=INACTIVE))  # kept for a rebuild
                else:
                    del records[rec.name]
                    removed.append(rec)
            finally:
                lock.release()
        return removed

    def _sweep_orphans(self, records: dict[str, AgentRecord], report: GcReport) -> None:
        """Unlink FIFOs and name-lock files that no entry and no live agent owns."""
        names: set[str] = set()
        with contextlib.suppress(OSError):
            for fname in os.listdir(self.pipes_dir):
                base, dot, suffix = fname.rpartition(".")
                if dot and suffix in ("public", "private") and is_valid_name(base):
                    names.add(base)
        with contextlib.suppress(OSError):
            for fname in os.listdir(self.names_dir):
                base, dot, suffix = fname.rpartition(".")
                if dot and suffix in ("lock", "pipe") and is_valid_name(base):
                    names.add(base)
        for name in sorted(names):
            rec = records.get(name)
            if rec is not None and rec.with_liveness().is_active:
                if Path(rec.public_pipe) == self.pipes_dir / f"{name}.public":
                    self._restore_pipe(name, report)  # a FIFO agent: its pipe must exist
                continue
            lock = self._try_name(name)
            if lock is None:
                continue  # held by a live process (joining now): not ours to touch
            try:
                had_pipe = any(
                    (self.pipes_dir / f"{name}{s}").exists() for s in (".public", ".private")
                )
                self._unlink_pipes(name)
                if had_pipe:
                    report.pipes_removed.append(name)
            finally:
                lock.release()

    def _restore_pipe(self, name: str, report: GcReport) -> None:
        public = self.pipes_dir / f"{name}.public"
        try:
            os.lstat(public)
            return
        except FileNotFoundError:
            pass
        try:
            os.link(self.names_dir / f"{name}.pipe", public, follow_symlinks=False)
            report.pipes_restored.append(name)
        except OSError:
            report.no_pipe.append(name)

    def gc(self, *, keep_durable: bool = True) -> list[AgentRecord]:
        """:meth:`repair`, returning only the removed entries (the older API)."""
        return self.repair(keep_durable=keep_durable).removed

    def repair(self, *, keep_durable: bool = True) -> GcReport:
        """Repair the registry and remove what dead agents left behind (``pipemesh gc``).

        Under the registry lock: a corrupt file is moved aside (to
        ``agent_registry.json.corrupt``) and rebuilt; malformed entries are
        dropped; live agents missing from the file are put back from their
        name locks; dead entries go with their pipes (see :meth:`sweep`);
        orphan FIFOs and name locks are removed; a live agent's removed FIFO
        is put back from its hard link when possible.

        Args:
            keep_durable: leave inactive durable entries (their spools still
                take messages for them).

        Raises:
            RegistryLockTimeout: the lock was not acquired in time.
            RegistryError: the registry cannot be written.
        """
        report = GcReport()
        with self._locked():
            try:
                records = self._load()
                before = dict(records)
            except RegistryCorrupt:
                aside = self.path.with_name(self.path.name + ".corrupt")
                try:
                    os.replace(self.path, aside)
                except OSError as exc:
                    raise RegistryError(
                        f"cannot move the corrupt registry {self.path} aside: {exc.strerror}; "
                        f"{_os_hint(exc)}"
                    ) from exc
                report.moved_aside = aside
                records, before = {}, {}
                self.skipped = []
            report.skipped = list(self.skipped)
            for name, rec in self._claims().items():
                if name not in records:
                    records[name] = rec
                    report.restored.append(name)
            report.removed = self.sweep(records, keep_durable=keep_durable)
            self._sweep_orphans(records, report)
            if records != before or report.skipped or report.moved_aside or not self.path.exists():
                self._write(records)
        return report


def _lock_error(path: Path, what: str, exc: OSError) -> RegistryError:
    """A one-line error for a lock path that cannot be used."""
    if exc.errno == errno.ELOOP:
        return RegistryError(
            f"the {what} {path} is a symbolic link; remove it (pipemesh never follows a link "
            "there) and retry"
        )
    if exc.errno in (errno.EISDIR, errno.EINVAL):
        return RegistryError(
            f"the {what} {path} is not a regular file; remove it (pipemesh recreates it) and retry"
        )
    if exc.errno == errno.EPERM and exc.strerror == "owned by another user":
        return RegistryError(f"the {what} {path} is owned by another user; remove it and retry")
    return RegistryError(f"cannot open the {what} {path}: {exc.strerror}; {_os_hint(exc)}")
