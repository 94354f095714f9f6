"""A search index over the mesh logs: SQLite FTS5 (standard library ``sqlite3``).

``pipemesh history`` keeps ``<home>/logs/history.sqlite3`` (0600) up to date before each
query, reading only what was appended to ``mesh_communication.log`` and
``mesh_latency.log`` (and their rotated files) since its last run. It is never written on
an agent's send or receive path: agents append JSON Lines as before, and only the
``history`` command builds the index.

How the logs are followed: each log file is remembered by inode with the byte offset read
so far and its first bytes. A rotation renames a file (same inode), so reading goes on at
the same offset under its new name; a new file at the path starts at 0; a file whose first
bytes changed (inode reused) or that shrank (truncated) is read again from 0, and a unique
key on each record keeps the rows from doubling. Rows stay in the index after their log
file is rotated away (delete the index file to forget them).

Bodies are stored once per message (sender, ID), in a table that the FTS5 index
(trigram tokenizer: case-insensitive substring search) reads as its external content.
Received records carry no body in the log; they show the sender's body.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pipemesh import _platform
from pipemesh._logfiles import COMM_LOG, LATENCY_LOG, log_files
from pipemesh.errors import UsageError

__all__ = ["INDEX_FILE", "HistoryIndex", "IndexUpdate", "causal_order", "clean_record"]

INDEX_FILE: Final = "history.sqlite3"
_SCHEMA_VERSION: Final = "3"
_HEAD_BYTES: Final = 256
_COMMON: Final = 2000  # a text in this many bodies is "common": scan by time instead
_CHUNK_BYTES: Final = 8 * 1024 * 1024
_MAX_TS: Final = 253_402_300_000.0  # year 9999: the last time datetime can show
_STR_FIELDS: Final = ("event", "agent", "from", "to", "type", "id", "re", "body")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files(
    log TEXT NOT NULL, ino INTEGER NOT NULL, head BLOB NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (log, ino));
CREATE TABLE IF NOT EXISTS bodies(
    id INTEGER PRIMARY KEY, sender TEXT NOT NULL, msg_id TEXT NOT NULL, body TEXT NOT NULL,
    truncated INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX IF NOT EXISTS bodies_key ON bodies(sender, msg_id);
CREATE VIRTUAL TABLE IF NOT EXISTS bodies_fts USING fts5(
    body, content='bodies', content_rowid='id', tokenize='trigram');
CREATE TABLE IF NOT EXISTS events(
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, event TEXT NOT NULL, agent TEXT NOT NULL,
    sender TEXT NOT NULL, recipient TEXT NOT NULL, type TEXT NOT NULL, priority INTEGER,
    msg_id TEXT NOT NULL, re TEXT NOT NULL, bytes INTEGER);
CREATE UNIQUE INDEX IF NOT EXISTS events_key
    ON events(msg_id, sender, event, agent, recipient, ts);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_re ON events(re);
CREATE INDEX IF NOT EXISTS events_pair ON events(sender, recipient, ts);
CREATE INDEX IF NOT EXISTS events_recipient ON events(recipient, ts);
CREATE TABLE IF NOT EXISTS latency(msg_id TEXT PRIMARY KEY, latency_us REAL NOT NULL);
"""

_COLUMNS: Final = (
    "e.ts, e.event, e.agent, e.sender, e.recipient, e.type, e.priority, e.msg_id, e.re, "
    "e.bytes, b.body, b.truncated, l.latency_us"
)
_JOINS: Final = (
    "LEFT JOIN bodies b ON b.sender = e.sender AND b.msg_id = e.msg_id "
    "LEFT JOIN latency l ON l.msg_id = e.msg_id"
)
_FROM_FTS: Final = (
    "bodies_fts f JOIN bodies b ON b.id = f.rowid "
    "JOIN events e ON e.msg_id = b.msg_id AND e.sender = b.sender "
    "LEFT JOIN latency l ON l.msg_id = e.msg_id WHERE bodies_fts MATCH ?"
)
_THREAD: Final = (
    "WITH RECURSIVE t(id) AS (SELECT ? UNION SELECT e.msg_id FROM events e JOIN t ON e.re = t.id)"
)


def clean_record(rec: object) -> dict[str, Any] | None:
    """``rec`` if it is a log record every reader can show, else None (skip it).

    A record needs a finite ``ts`` a clock can show; the name, type, id and body
    fields, when present, are strings; ``priority``/``bytes`` are integers.
    """
    if not isinstance(rec, dict):
        return None
    ts = rec.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    if not (math.isfinite(ts) and 0 <= ts < _MAX_TS):
        return None
    for key in _STR_FIELDS:
        if key in rec and not isinstance(rec[key], str):
            return None
    for key in ("priority", "bytes"):
        value = rec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return None
    lat = rec.get("latency_us")
    if lat is not None and (
        isinstance(lat, bool) or not isinstance(lat, int | float) or not math.isfinite(lat)
    ):
        return None
    return rec


@dataclass(frozen=True, slots=True)
class IndexUpdate:
    """What one :meth:`HistoryIndex.update` read: records added and lines skipped."""

    added: int
    skipped: int


class HistoryIndex:
    """The index file of one mesh home's logs.

    Args:
        logs_dir: the home's ``logs/`` directory; the index lives there.
        busy_timeout_s: how long to wait for another process updating the index.
    """

    def __init__(self, logs_dir: Path, *, busy_timeout_s: float = 30.0) -> None:
        self.logs_dir = Path(logs_dir)
        self.path = self.logs_dir / INDEX_FILE
        try:
            # Create it 0600 ourselves: sqlite would follow the umask (its journal copies
            # the database file's mode).
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | _platform.O_CLOEXEC, 0o600))
            os.chmod(self.path, 0o600)
            self.db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"cannot open the history index {self.path}: {exc}") from None
        try:
            self.db.execute("PRAGMA synchronous=NORMAL")
            version = self._meta_version()
            if version != _SCHEMA_VERSION:  # new file or older layout: (re)build it
                self.db.execute("BEGIN IMMEDIATE")
                if self._meta_version() != _SCHEMA_VERSION:  # another process may have won
                    self._drop_all()
                    for statement in _SCHEMA.split(";"):  # executescript would COMMIT
                        if statement.strip():
                            self.db.execute(statement)
                    self.db.execute(
                        "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', ?)",
                        (_SCHEMA_VERSION,),
                    )
                self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.db.close()
            raise UsageError(
                f"the history index {self.path} cannot be used ({exc}); delete it and run "
                "'pipemesh history' again (it is rebuilt from the logs)"
            ) from None

    def _meta_version(self) -> str | None:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.OperationalError:
            return None  # a new file
        return None if row is None else str(row[0])

    def _drop_all(self) -> None:
        for table in ("bodies_fts", "bodies", "events", "latency", "files", "meta"):
            self.db.execute(f"DROP TABLE IF EXISTS {table}")

    def close(self) -> None:
        """Close the database; idempotent."""
        self.db.close()

    def __enter__(self) -> HistoryIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- building, incrementally ------------------------------------------------------------

    def pending_bytes(self) -> int:
        """About how many bytes of log :meth:`update` would read now."""
        total = 0
        for log in (COMM_LOG, LATENCY_LOG):
            for path in log_files(self.logs_dir / log):
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                row = self.db.execute(
                    "SELECT offset FROM files WHERE log = ? AND ino = ?", (log, st.st_ino)
                ).fetchone()
                offset = int(row[0]) if row is not None else 0
                total += st.st_size - offset if st.st_size >= offset else st.st_size
        return total

    def update(self) -> IndexUpdate:
        """Add what the logs gained since the last update (one transaction per file)."""
        added = skipped = 0
        for log in (COMM_LOG, LATENCY_LOG):
            seen: set[int] = set()
            for path in log_files(self.logs_dir / log):
                a, s, ino = self._update_file(log, path)
                added, skipped = added + a, skipped + s
                if ino is not None:
                    seen.add(ino)
            # Forget files rotated away (their rows stay).
            rows = self.db.execute("SELECT ino FROM files WHERE log = ?", (log,)).fetchall()
            gone = [(log, ino) for (ino,) in rows if ino not in seen]
            if gone:
                self.db.executemany("DELETE FROM files WHERE log = ? AND ino = ?", gone)
        return IndexUpdate(added, skipped)

    def _update_file(self, log: str, path: Path) -> tuple[int, int, int | None]:
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            return 0, 0, None  # rotated away between the listing and now
        with f:
            st = os.fstat(f.fileno())
            head = f.read(_HEAD_BYTES)
            row = self.db.execute(
                "SELECT head, offset FROM files WHERE log = ? AND ino = ?", (log, st.st_ino)
            ).fetchone()
            offset = 0
            if row is not None:
                old_head, old_offset = bytes(row[0]), int(row[1])
                same_file = head.startswith(old_head) or (
                    len(head) < len(old_head) and old_head.startswith(head)
                )
                if same_file and old_offset <= st.st_size:
                    offset = old_offset
            if row is not None and offset == st.st_size:
                return 0, 0, st.st_ino  # nothing new
            added = skipped = 0
            f.seek(offset)
            insert = self._insert_comm if log == COMM_LOG else self._insert_latency
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for lines, consumed in _chunks(f):
                    a, s = insert(lines)
                    added, skipped = added + a, skipped + s
                    offset += consumed
                self.db.execute(
                    "INSERT OR REPLACE INTO files(log, ino, head, offset) VALUES (?, ?, ?, ?)",
                    (log, st.st_ino, head, offset),
                )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            return added, skipped, st.st_ino

    def _insert_comm(self, lines: list[bytes]) -> tuple[int, int]:
        events: list[tuple[object, ...]] = []
        bodies: list[tuple[object, ...]] = []
        skipped = 0
        for line in lines:
            rec = _parse(line)
            if rec is None or not isinstance(rec.get("event"), str):
                skipped += 1
                continue
            sender, msg_id = rec.get("from", ""), rec.get("id", "")
            events.append(
                (
                    float(rec["ts"]),
                    rec["event"],
                    rec.get("agent", ""),
                    sender,
                    rec.get("to", ""),
                    rec.get("type", ""),
                    rec.get("priority"),
                    msg_id,
                    rec.get("re", ""),
                    rec.get("bytes"),
                )
            )
            body = rec.get("body", "")
            if body or rec.get("event") in ("frame_sent", "frame_queued"):
                bodies.append((sender, msg_id, body, 1 if rec.get("truncated") else 0))
        before = self.db.total_changes
        self.db.executemany(
            "INSERT OR IGNORE INTO events(ts, event, agent, sender, recipient, type, priority,"
            " msg_id, re, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            events,
        )
        added = self.db.total_changes - before
        for sender, msg_id, body, truncated in bodies:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO bodies(sender, msg_id, body, truncated) VALUES (?, ?, ?, ?)",
                (sender, msg_id, body, truncated),
            )
            if cur.rowcount == 1:
                self.db.execute(
                    "INSERT INTO bodies_fts(rowid, body) VALUES (?, ?)", (cur.lastrowid, body)
                )
        return added, skipped

    def _insert_latency(self, lines: list[bytes]) -> tuple[int, int]:
        rows: list[tuple[str, float]] = []
        skipped = 0
        for line in lines:
            rec = _parse(line)
            if rec is None:
                skipped += 1
                continue
            msg_id, lat = rec.get("id"), rec.get("latency_us")
            if isinstance(msg_id, str) and isinstance(lat, int | float):
                rows.append((msg_id, float(lat)))
        self.db.executemany(
            "INSERT OR REPLACE INTO latency(msg_id, latency_us) VALUES (?, ?)", rows
        )
        return 0, skipped

    # -- queries ------------------------------------------------------------------------------

    def search(
        self,
        *,
        agent: str = "",
        peer: str = "",
        msg_type: str = "",
        since: float | None = None,
        until: float | None = None,
        text: str = "",
        all_events: bool = False,
        limit: int = 0,
    ) -> list[dict[str, Any]]:
        """Matching records, oldest first (the last ``limit`` if > 0); see :class:`Query`."""
        where: list[str] = []
        args: list[object] = []
        fts = ""
        if not all_events:
            where.append("e.event = 'frame_sent'")
        if agent and peer:
            where.append(
                "((e.sender = ? AND e.recipient = ?) OR (e.sender = ? AND e.recipient = ?)"
                " OR (e.recipient = '' AND e.sender IN (?, ?)))"
            )
            args += [agent, peer, peer, agent, agent, peer]
        elif agent or peer:
            where.append("(e.sender = ? OR e.recipient = ?)")
            args += [agent or peer] * 2
        if msg_type:
            where.append("e.type = ?")
            args.append(msg_type)
        if since is not None:
            where.append("e.ts >= ?")
            args.append(since)
        if until is not None:
            where.append("e.ts <= ?")
            args.append(until)
        if text:
            phrase = '"' + text.replace('"', '""') + '"'
            if len(text) >= 3 and not (limit > 0 and self._is_common(phrase)):
                # The trigram index finds substrings of 3+ characters, case-insensitively;
                # the query starts from its matches (see the FROM below).
                fts = phrase
            else:
                # Under 3 characters the trigram index cannot help; for a text found in
                # many bodies, walking the newest records until ``limit`` match is faster.
                where.append("b.body LIKE ? ESCAPE '\\'")
                escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                args.append(f"%{escaped}%")
        # Only constant SQL fragments are joined; every value is a bound parameter.
        sql = f"SELECT {_COLUMNS} FROM events e {_JOINS}"  # noqa: S608
        if fts:
            sql = f"SELECT {_COLUMNS} FROM {_FROM_FTS}"  # noqa: S608
            args.insert(0, fts)
        if where:
            sql += (" AND " if fts else " WHERE ") + " AND ".join(where)
        if limit > 0:
            sql += " ORDER BY e.ts DESC, e.id DESC LIMIT ?"
            rows = self.db.execute(sql, [*args, limit]).fetchall()
            rows.reverse()
        else:
            rows = self.db.execute(sql + " ORDER BY e.ts, e.id", args).fetchall()
        return causal_order([_record(row) for row in rows])

    def _is_common(self, phrase: str) -> bool:
        probe = self.db.execute(
            "SELECT count(*) FROM (SELECT rowid FROM bodies_fts WHERE bodies_fts MATCH ? LIMIT ?)",
            (phrase, _COMMON),
        ).fetchone()
        return int(probe[0]) >= _COMMON

    def thread(self, msg_id: str, *, all_events: bool = False) -> list[dict[str, Any]]:
        """The message ``msg_id`` and every reply to it or to its replies, by time."""
        # Constant fragments; the ID is a bound parameter.
        sql = f"{_THREAD} SELECT {_COLUMNS} FROM events e {_JOINS} WHERE e.msg_id IN t"  # noqa: S608
        if not all_events:
            sql += " AND e.event = 'frame_sent'"
        rows = self.db.execute(sql + " ORDER BY e.ts, e.id", (msg_id,)).fetchall()
        return causal_order([_record(row) for row in rows])

    def count(self) -> int:
        """How many records the index holds."""
        return int(self.db.execute("SELECT count(*) FROM events").fetchone()[0])


def causal_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` (sorted by ``ts``) with every reply after the message it answers.

    A record's ``ts`` is when its process logged it, after the write: a busy sender
    can log a question after the reply to it was logged. So a reply whose question is
    in the list moves just after it (and its own replies after it); the rest keeps
    its time order.
    """
    first: dict[str, int] = {}
    for i, rec in enumerate(records):
        first.setdefault(rec["id"], i)
    if not any(rec["re"] in first for rec in records):
        return records
    effective: dict[int, float] = {}

    def eff(i: int) -> float:
        chain: list[int] = []
        seen: set[int] = set()
        j: int | None = i
        while j is not None and j not in effective and j not in seen:  # iterative: no depth limit
            seen.add(j)
            chain.append(j)
            parent = first.get(records[j]["re"]) if records[j]["re"] else None
            j = parent if parent is not None and parent != j else None
        base = effective.get(j, -math.inf) if j is not None else -math.inf
        for k in reversed(chain):
            base = max(float(records[k]["ts"]), math.nextafter(base, math.inf))
            effective[k] = base
        return effective[i]

    order = sorted(range(len(records)), key=lambda i: (eff(i), i))
    return [records[i] for i in order]


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    ts, event, agent, sender, to, msg_type, priority, msg_id, re, size, body, cut, lat = row
    rec: dict[str, Any] = {
        "ts": ts,
        "event": event,
        "agent": agent,
        "from": sender,
        "to": to,
        "type": msg_type,
        "priority": priority,
        "id": msg_id,
        "re": re,
        "bytes": size,
        "body": body if body is not None else "",
    }
    if cut:
        rec["truncated"] = True
    if lat is not None:
        rec["latency_us"] = lat
    return rec


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None
    return clean_record(rec)


def _chunks(f: Any) -> Iterator[tuple[list[bytes], int]]:
    """Complete lines from ``f``'s position on, in chunks: (lines, bytes they took).

    A partial last line (a writer mid-append) is left for the next update.
    """
    pending = b""
    while True:
        data = f.read(_CHUNK_BYTES)
        if not data:
            return
        data = pending + data
        end = data.rfind(b"\n")
        if end < 0:
            pending = data
            continue
        pending = data[end + 1 :]
        yield [ln for ln in data[:end].split(b"\n") if ln.strip()], end + 1
