"""Structured logs and latency statistics.

Three JSON Lines files under ``<home>/logs/``, as the seed names them:

* ``mesh_communication.log``: every message sent and received
  (events ``frame_sent``, ``frame_received``, ``frame_misrouted``);
* ``mesh_latency.log``: per received message, send-to-handler latency in µs
  (event ``message_handled``, ``reply_received``);
* ``mesh_errors.log``: decode failures, dropped parts, handler exceptions,
  delivery failures (events like ``frame_rejected``, ``handler_failed``).

Writing happens on a background thread: the send and receive paths only put one
record on a queue (a ``msgspec.Struct``, built in C), and the writer turns each
batch into JSON Lines with one compiled ``encode_lines`` call, so a record costs
the hot path and the GIL a few hundred instructions, not a Python-formatted line.
Each batch is appended with one ``write`` on an ``O_APPEND`` fd, and every
record is a whole line, so 100 processes appending at once never split or
interleave records on a local filesystem.

Rotation by size (``max_bytes``, ``keep_files``; defaults from
``$PIPEMESH_LOG_MAX_BYTES`` and ``$PIPEMESH_LOG_KEEP``) happens on the writer
thread, never on the send path. Every file has a lock file next to it
(``x.log.lock``): a writer appends under a shared ``flock`` after checking that
its fd is still the file at ``x.log`` (reopening if not), and the writer that
sees the file over the limit renames ``x.log.N-1`` -> ``x.log.N`` ... ``x.log`` ->
``x.log.1`` under the exclusive lock. So a batch lands whole in exactly one
file, and no append goes to a file after it was rotated away. Readers use
:func:`log_files` / :func:`read_log` (oldest file first) and :class:`LogTail`,
which follows the file across renames by inode.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import msgspec

from pipemesh import _platform
from pipemesh._logfiles import COMM_LOG, ERRORS_LOG, LATENCY_LOG, log_files
from pipemesh.errors import UsageError

__all__ = [
    "COMM_LOG",
    "DEFAULT_KEEP_FILES",
    "DEFAULT_MAX_BYTES",
    "ERRORS_LOG",
    "LATENCY_LOG",
    "EventLog",
    "LatencySummary",
    "LogTail",
    "latency_summary",
    "log_files",
    "percentile",
    "read_log",
    "read_records",
]

_FILES: Final = (COMM_LOG, LATENCY_LOG, ERRORS_LOG)
# Records per write. Encoding 256 records in C holds the GIL for less time than
# formatting 64 lines in Python did; the write then releases it.
_BATCH_LINES: Final = 256
_LOCK_TIMEOUT_S: Final = 5.0  # log-lock wait before writing unlocked
# A rotation waits this long for the appenders already inside (new ones queue at the
# turnstile); past it, a later write rotates instead.
_ROTATE_WAIT_S: Final = 0.5
_NEVER: Final = threading.Event()  # a stop that is never set (see _locked_write)
DEFAULT_MAX_BYTES: Final = 32 * 1024 * 1024
DEFAULT_KEEP_FILES: Final = 5
#: Default of `EventLog`'s ``flush_interval_s``. Only ``pipemesh bench --instructions``
#: changes it (to an hour, before its agents start): the writers then hold every record
#: until `EventLog.close` and write them in full batches of `_BATCH_LINES`, so the
#: instructions per hop do not depend on how many records wall time put in a batch.
FLUSH_INTERVAL_S: float = 0.05
_LOCK_FLAGS: Final = (
    os.O_RDWR
    | os.O_CREAT
    | _platform.O_CLOEXEC
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_BINARY", 0)
)
ENV_MAX_BYTES: Final = "PIPEMESH_LOG_MAX_BYTES"
ENV_KEEP_FILES: Final = "PIPEMESH_LOG_KEEP"


def _env_int(name: str, default: int) -> int:
    try:
        return max(0, int(os.environ.get(name, "")))
    except ValueError:
        return default


_RENAME: Final = {
    "sender": "from",
    "msg_type": "type",
    "msg_id": "id",
    "reply_to": "re",
    "size": "bytes",
}


class _MessageLine(msgspec.Struct, rename=_RENAME, omit_defaults=True, gc=False):
    """One ``mesh_communication.log`` line; the field order is the line's key order."""

    ts: float
    event: str
    agent: str
    sender: str
    to: str
    msg_type: str
    priority: int
    msg_id: str
    reply_to: str
    size: int
    body: str
    truncated: bool = False


class _LatencyLine(msgspec.Struct, rename=_RENAME, gc=False):
    """One ``mesh_latency.log`` line."""

    ts: float
    event: str
    agent: str
    sender: str
    msg_type: str
    priority: int
    msg_id: str
    size: int
    latency_us: float


_LINES: Final = msgspec.json.Encoder()


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
        flush_interval_s: how long the writer gathers records before a write
            (default `FLUSH_INTERVAL_S`, 50 ms).
        max_bytes: rotate a file once it reaches this size; 0 never rotates
            (default ``$PIPEMESH_LOG_MAX_BYTES``, else 32 MiB).
        keep_files: rotated files kept per log, ``x.log.1`` newest
            (default ``$PIPEMESH_LOG_KEEP``, else 5; at least 1).
    """

    def __init__(
        self,
        logs_dir: Path,
        agent: str,
        *,
        enabled: bool = True,
        max_body_chars: int = 4096,
        flush_interval_s: float | None = None,
        max_bytes: int | None = None,
        keep_files: int | None = None,
    ) -> None:
        self.logs_dir = Path(logs_dir)
        self.max_bytes = (
            _env_int(ENV_MAX_BYTES, DEFAULT_MAX_BYTES) if max_bytes is None else max_bytes
        )
        keep = _env_int(ENV_KEEP_FILES, DEFAULT_KEEP_FILES) if keep_files is None else keep_files
        self.keep_files = max(1, keep)
        self.rotations = 0
        self.agent = agent
        self.enabled = enabled
        self.max_body_chars = max_body_chars
        self.flush_interval_s = FLUSH_INTERVAL_S if flush_interval_s is None else flush_interval_s
        self.dropped = 0
        # One queue per file: the writer takes a batch with no per-record dispatch.
        self._messages: deque[_MessageLine] = deque()
        self._latencies: deque[_LatencyLine] = deque()
        self._records: deque[tuple[object, ...]] = deque()  # errors
        self._torn = [False, False, False]  # per file: our last write left half a line
        self._wake = threading.Event()
        # Mirrors _wake for the hot path (a bool test, not a Python-level Event.is_set):
        # the writer resets both before it drains, so a record is never left unwritten.
        self._woken = False
        self._closing = threading.Event()
        self._fds: list[int] = []
        self._inos: list[int] = []  # per file: the inode our fd writes to (fixed while open)
        self._lock_fds: list[int] = []
        self._turn_fds: list[int] = []
        self._paths = [self.logs_dir / name for name in _FILES]
        self._thread: threading.Thread | None = None
        self._closed = not enabled
        if enabled:
            try:
                self.logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                for path in self._paths:
                    self._fds.append(self._open(path))
                    self._inos.append(os.fstat(self._fds[-1]).st_ino)
                    self._lock_fds.append(os.open(_lock_path(path), _LOCK_FLAGS, 0o600))
                    self._turn_fds.append(os.open(_turn_path(path), _LOCK_FLAGS, 0o600))
            except OSError as exc:
                for fd in self._fds + self._lock_fds + self._turn_fds:
                    os.close(fd)
                raise UsageError(
                    f"cannot open the mesh logs in {self.logs_dir}: {exc.strerror}; use a "
                    "writable mesh home (--home), or turn message logging off"
                ) from exc
            self._thread = threading.Thread(
                target=self._run, name=f"pipemesh-log-{agent}", daemon=True
            )
            self._thread.start()

    def _put(self, record: tuple[object, ...]) -> None:
        self._records.append(record)
        if not self._woken:
            self._woken = True
            self._wake.set()

    # -- the hot path: one record (built in C) on a deque, nothing else --

    def message(
        self,
        event: str,
        sender: str,
        to: str,
        msg_type: str,
        priority: int,
        msg_id: str,
        body: str,
        reply_to: str = "",
        size: int = 0,
    ) -> None:
        """Record a message event in ``mesh_communication.log``.

        The hot path passes the fields positionally, in this order (cheaper than keywords).
        Its three records per message (``frame_sent``, ``frame_received`` and the
        ``message_handled`` latency) are queued inline by runtime/client.py and
        runtime/receive.py (one Python call less each): keep them in step with this.
        """
        if self._closed:
            return
        cut = len(body) > self.max_body_chars
        self._messages.append(
            _MessageLine(
                time.time(),
                event,
                self.agent,
                sender,
                to,
                msg_type,
                priority,
                msg_id,
                reply_to,
                size,
                body[: self.max_body_chars] if cut else body,
                cut,
            )
        )
        if not self._woken:
            self._woken = True
            self._wake.set()

    def latency(
        self,
        event: str,
        sender: str,
        msg_type: str,
        priority: int,
        msg_id: str,
        latency_us: float,
        size: int,
    ) -> None:
        """Record a received message's latency in ``mesh_latency.log`` (``latency_us`` as given)."""
        if self._closed:
            return
        self._latencies.append(
            _LatencyLine(
                time.time(),
                event,
                self.agent,
                sender,
                msg_type,
                priority,
                msg_id,
                size,
                latency_us,
            )
        )
        if not self._woken:
            self._woken = True
            self._wake.set()

    def error(self, event: str, error: str, **fields: object) -> None:
        """Record a failure in ``mesh_errors.log``."""
        if not self._closed:
            self._put((2, time.time(), event, error, fields))

    # -- the writer thread --

    def _format(self, rec: tuple[object, ...]) -> tuple[int, bytes]:
        """An error line (rare: built with json, any field goes)."""
        _, ts, event, error, fields = rec
        out: dict[str, object] = {"ts": ts, "event": event, "agent": self.agent, "error": error}
        if isinstance(fields, dict):
            out.update(fields)
        text = json.dumps(out, ensure_ascii=False, separators=(",", ":"), default=str)
        # A lone surrogate (an error text from surrogateescape'd bytes) becomes the JSON
        # escape \udXXX, which reads back as the same string.
        return 2, text.encode("utf-8", "backslashreplace") + b"\n"

    def _format_safely(self, rec: tuple[object, ...]) -> tuple[int, bytes]:
        # The writer thread must outlive any record: a bad one becomes an error line.
        try:
            return self._format(rec)
        except Exception as exc:  # any failure here would kill the writer thread
            self.dropped += 1
            line = json.dumps(
                {
                    "ts": time.time(),
                    "event": "log_record_unwritable",
                    "agent": self.agent,
                    "error": f"{type(exc).__name__}: {exc}"[:500],
                },
                ensure_ascii=True,
                default=repr,
            )
            return 2, line.encode() + b"\n"

    def _encode_lines(self, recs: Sequence[_MessageLine | _LatencyLine]) -> bytes:
        """JSON Lines for a batch, in one compiled call; a record msgspec refuses (a lone
        surrogate in a body) goes through json, as the escape ``\\udXXX``."""
        try:
            return _LINES.encode_lines(recs)
        except Exception:  # one bad record: encode one by one
            out: list[bytes] = []
            for rec in recs:
                try:
                    out.append(_LINES.encode_lines((rec,)))
                except Exception:
                    try:
                        text = json.dumps(
                            msgspec.to_builtins(rec), ensure_ascii=False, separators=(",", ":")
                        )
                        out.append(text.encode("utf-8", "backslashreplace") + b"\n")
                    except Exception as exc:
                        self.dropped += 1
                        self._records.append(  # written as an error line instead
                            (2, time.time(), "log_record_unwritable", f"{type(exc).__name__}", {})
                        )
            return b"".join(out)

    def _run(self) -> None:
        messages, latencies, records = self._messages, self._latencies, self._records
        while True:
            self._wake.wait()
            # Gather a batch (releases the GIL); close() cuts the wait short.
            self._closing.wait(self.flush_interval_s)
            self._wake.clear()  # before draining: a record added after this wakes us again
            self._woken = False
            while messages or latencies or records:
                # Write often: the write releases the GIL, so the router thread
                # never waits long behind the log writer (it shares the GIL).
                self._flush(
                    [
                        self._encode_batch(messages),
                        self._encode_batch(latencies),
                        [
                            self._format_safely(records.popleft())[1]
                            for _ in range(min(_BATCH_LINES, len(records)))
                        ],
                    ]
                )
            if self._closed and not (messages or latencies or records):
                return

    def _encode_batch(self, queue: deque[_MessageLine] | deque[_LatencyLine]) -> list[bytes]:
        """Up to a batch of records from ``queue`` as one JSON Lines chunk (or none)."""
        n = min(_BATCH_LINES, len(queue))
        if not n:
            return []
        pop = queue.popleft
        return [self._encode_lines([pop() for _ in range(n)])]

    @staticmethod
    def _open(path: Path) -> int:
        # O_NOFOLLOW: a symlink planted at a log path never redirects the records.
        # On Windows the log is opened renamable while open (FILE_SHARE_DELETE).
        return _platform.open_append(path, nofollow=True)

    def _flush(self, batches: list[list[bytes]]) -> None:
        for i, lines in enumerate(batches):
            if lines:
                try:
                    self._append(i, lines[0] if len(lines) == 1 else b"".join(lines))
                except Exception:  # the writer thread must never die
                    self.dropped += sum(chunk.count(b"\n") for chunk in lines)

    def _append(self, i: int, data: bytes) -> None:
        written = [0]
        try:
            size = self._locked_write(i, data, written)
            if self.max_bytes and size >= self.max_bytes:
                self._rotate(i)
        except OSError:
            # A full disk must not kill the agent; the count shows in heartbeats. Lines
            # written whole before the failure count as written.
            if written[0] >= 0:  # the write failed part-way (else the rotation did)
                self.dropped += data.count(b"\n") - written[0]

    def _locked_write(self, i: int, data: bytes, written: list[int]) -> int:
        """Append under the shared lock to the file now at the path; return its size.

        ``written[0]`` counts the records (lines) of ``data`` that reached the file whole
        when the write fails, and is -1 when all of it was written.
        """
        lock_fd, path = self._lock_fds[i], self._paths[i]
        # Without the lock (a stopped process holds it, or we are closing and must not
        # wait) we still append: the record lands in the current or the just-rotated
        # file, both of which history reads.
        # The turnstile: a rotator waiting for the exclusive lock holds it, so new
        # appenders queue here instead of starving the rotation with shared holds.
        turn_fd = self._turn_fds[i]
        # Windows: appends without the lock can tear (no atomic O_APPEND there), so a
        # closing writer still waits its turn, within _LOCK_TIMEOUT_S; what close()
        # cannot wait for is counted in ``dropped``, never torn.
        stop = _NEVER if _platform.IS_WINDOWS else self._closing
        if _flock(turn_fd, _platform.LOCK_SH, _LOCK_TIMEOUT_S, stop):
            _platform.unlock(turn_fd)
        locked = _flock(lock_fd, _platform.LOCK_SH, _LOCK_TIMEOUT_S, stop)
        try:
            fd = self._fds[i]
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = -1
            if current != self._inos[i]:
                # Another process rotated (or someone removed) the file: follow the path.
                self._fds[i] = self._open(path)
                os.close(fd)
                fd = self._fds[i]
                self._inos[i] = os.fstat(fd).st_ino
                self._torn[i] = False  # a torn line, if any, stays in the old file
            lead = b"\n" if self._torn[i] else b""  # our torn line could not be cut back
            data = lead + data
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(fd, view) :]
            except OSError:
                done = len(data) - len(view)
                written[0] = data.count(b"\n", 0, done) - (1 if lead and done else 0)
                if done:
                    self._torn[i] = False
                partial = done - (data.rfind(b"\n", 0, done) + 1)
                if partial:
                    # A write cut short (disk full, size limit) left half a line: cut it
                    # back, or else start the next record on a new line, so the torn
                    # line never swallows a whole record written after it.
                    self._torn[i] = not self._cut_back(i, fd, partial)
                raise
            self._torn[i] = False
            written[0] = -1  # all of it (counting lines costs ~4 instructions a byte)
            if _platform.IS_WINDOWS:
                return os.fstat(fd).st_size
            # The file's size without building a stat result (~10x the cost of lseek).
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            if locked:
                _platform.unlock(lock_fd)

    def _cut_back(self, i: int, fd: int, partial: int) -> bool:
        """Truncate our ``partial`` torn bytes off the end of the file, if they still end it."""
        end = os.lseek(fd, 0, os.SEEK_CUR)  # O_APPEND: just past our last write
        # Exclusive, so no one appends between the size check and the truncate.
        if not _flock(self._lock_fds[i], _platform.LOCK_EX, _ROTATE_WAIT_S, self._closing):
            return False
        try:
            if os.fstat(fd).st_size != end:
                return False  # someone appended after us; the next record starts a line
            os.ftruncate(fd, end - partial)  # frees space: works on a full disk
        except OSError:
            return False
        return True

    def _rotate(self, i: int) -> None:
        """Shift ``x.log`` to ``x.log.1`` (and older ones up) under the exclusive lock."""
        lock_fd, path, turn_fd = self._lock_fds[i], self._paths[i], self._turn_fds[i]
        if not _flock(turn_fd, _platform.LOCK_EX, 0.0, self._closing):
            return  # another writer is rotating this file right now
        try:
            # New appenders now wait at the turnstile; the ones inside finish one write.
            if _flock(lock_fd, _platform.LOCK_EX, _ROTATE_WAIT_S, self._closing):
                try:
                    self._rotate_locked(i, path)
                finally:
                    _platform.unlock(lock_fd)
        finally:
            _platform.unlock(turn_fd)

    def _rotate_locked(self, i: int, path: Path) -> None:
        try:
            if os.stat(path).st_size < self.max_bytes:
                return  # another writer rotated it first
        except FileNotFoundError:
            return
        # Shift only the files that exist (one directory scan), newest last, so
        # a rotation costs O(files kept), not O(keep_files) rename attempts.
        existing = sorted(
            (int(p.name.rsplit(".", 1)[1]) for p in log_files(Path(path))[:-1]),
            reverse=True,
        )
        for n in existing:
            if n >= self.keep_files:
                os.unlink(f"{path}.{n}")  # past the limit: the oldest goes
            else:
                os.rename(f"{path}.{n}", f"{path}.{n + 1}")
        os.rename(path, f"{path}.1")
        fd, self._fds[i] = self._fds[i], self._open(path)
        self._inos[i] = os.fstat(self._fds[i]).st_ino
        os.close(fd)
        self.rotations += 1

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
            if thread.is_alive():
                # Never close fds under a writer still appending (its records would be
                # lost, or worse, go to a reused fd); the daemon thread ends with the process.
                self.dropped += len(self._messages) + len(self._latencies) + len(self._records)
                return
        fds, self._fds = self._fds, []
        lock_fds, self._lock_fds = self._lock_fds + self._turn_fds, []
        self._turn_fds = []
        for fd in fds + lock_fds:
            os.close(fd)


def _flock(fd: int, op: int, timeout_s: float, stop: threading.Event) -> bool:
    """Take ``flock(fd, op)`` within ``timeout_s``; False if not granted by then or by ``stop``.

    ``stop`` is set by close(): a closing writer appends what it has without the lock
    rather than wait (and so never runs past close()'s bound and loses records).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if _platform.try_lock(fd, op):
            return True
        if time.monotonic() >= deadline or stop.is_set():
            return False
        time.sleep(0.001)  # held only around one write or a few renames


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _turn_path(path: Path) -> Path:
    return path.with_name(path.name + ".turn")


def read_log(path: Path) -> Iterator[dict[str, object]]:
    """The records of ``path`` and its rotated files, oldest first.

    A rotation during the read may show a few records twice, never split one.
    """
    for file in log_files(path):
        yield from read_records(file)


class LogTail:
    """Reads the records appended to one log since the last call, across rotation.

    Keeps its file open and remembers the offset: a rename (rotation) is seen
    as a new inode at the path; the old file is read to its end, then any
    rotated files newer than it, then the new file from the start. A file that
    shrank (truncated) is read again from the start. Partial last lines wait
    for their end.

    Args:
        path: the log file (``x.log``).
        from_end: start at the current end instead of the beginning.
    """

    def __init__(self, path: Path, *, from_end: bool = False) -> None:
        self.path = Path(path)
        self._file: BinaryIO | None = None
        self._ino = -1
        self._partial = b""
        self._open_current(seek_end=from_end)
        # With no file yet, rotated files that exist now are old; any later ones are new.
        self._before: set[int] = set()
        if self._file is None:
            for file in log_files(self.path):
                with contextlib.suppress(FileNotFoundError):
                    self._before.add(os.stat(file).st_ino)

    def _open_current(self, *, seek_end: bool = False) -> None:
        try:
            f = _platform.open_shared_read(self.path)  # kept open; closed in close()
        except FileNotFoundError:
            self._file, self._ino = None, -1
            return
        self._file, self._ino = f, os.fstat(f.fileno()).st_ino
        if seek_end:
            f.seek(0, os.SEEK_END)

    def _lines(self, data: bytes) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        if not data:
            return out
        *complete, self._partial = (self._partial + data).split(b"\n")
        for line in complete:
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def poll(self) -> list[dict[str, object]]:
        """The whole records appended since the last call (possibly none)."""
        out: list[dict[str, object]] = []
        f = self._file
        if f is not None:
            if os.fstat(f.fileno()).st_size < f.tell():
                f.seek(0)  # truncated in place
                self._partial = b""
            out += self._lines(f.read())
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            return out
        if ino == self._ino:
            return out
        old_ino = self._ino
        if f is not None:
            out += self._lines(f.read())
            f.close()
        self._partial = b""
        # Files rotated after ours but before the current one (several rotations per poll).
        newer: list[Path] = []
        for file in reversed(log_files(self.path)[:-1]):  # x.log.1, x.log.2, ...
            try:
                file_ino = os.stat(file).st_ino
            except FileNotFoundError:
                continue
            if file_ino == old_ino or file_ino in self._before:
                break
            newer.append(file)
        else:
            if old_ino != -1:
                newer = []  # ours is gone (dropped past keep_files): do not guess
        self._before = set()
        for file in reversed(newer):
            out += list(read_records(file))
        self._open_current()
        if self._file is not None:
            out += self._lines(self._file.read())
        return out

    def close(self) -> None:
        """Close the file; idempotent."""
        f, self._file = self._file, None
        if f is not None:
            f.close()

    def __enter__(self) -> LogTail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: Path) -> Iterator[dict[str, object]]:
    """Yield the JSON records of one log file, skipping lines that do not parse."""
    try:
        f = _platform.open_shared_read(path)  # closed by the with below
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
