"""The worker processes of one benchmark scenario: start, release together, kill and reap.

Part of the harness (`pipemesh.bench.harness` re-exports every name here). Workers are
plain interpreters started with `subprocess` (the harness docstring says why); they share
a ready pipe and a go pipe with the pool (see `pipemesh.bench._proto`). Nothing started
here outlives `WorkerPool.close`. This module must not print.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pipemesh.bench._proto import WorkerResult

__all__ = ["Worker", "WorkerFailed", "WorkerPool", "WorkerSpec", "rss_bytes"]

#: Seconds to wait for a killed worker to be reaped before giving up on it.
_REAP_TIMEOUT_S: Final = 5.0


class WorkerFailed(Exception):
    """A worker exited badly, or did not get ready or finish in time.

    Internal to the bench: `run_scenario` turns it into an error row, so it never escapes
    `run_bench` (which is why it is not part of `pipemesh.errors`).
    """


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """How to start one worker: ``python -m module *args`` plus inherited fds."""

    module: str
    args: tuple[str, ...]
    pass_fds: tuple[int, ...] = ()


@dataclass(slots=True)
class Worker:
    """A started worker process and the files that hold its output."""

    name: str
    proc: subprocess.Popen[bytes]
    stderr_path: Path
    out_path: Path | None

    def stderr_tail(self, max_chars: int = 400) -> str:
        """The end of the worker's stderr, one line, for an error row."""
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines())[-max_chars:]

    def result(self) -> WorkerResult:
        """The result file the worker wrote.

        Raises:
            WorkerFailed: the worker wrote no result.
        """
        if self.out_path is None or not self.out_path.exists():
            raise WorkerFailed(f"worker {self.name} exited without writing a result")
        return WorkerResult.load(str(self.out_path))


class WorkerPool:
    """Starts one scenario's processes and guarantees they are all killed and reaped.

    Workers started with `spawn` share two pipes: a ready pipe they write one byte to, and
    a go pipe whose EOF starts them all at once (see `pipemesh.bench._proto`).
    """

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._workers: list[Worker] = []
        self._ready_seen = 0  # ready bytes read from the pipe
        self._ready_claimed = 0  # of those, how many a wait_ready call has accounted for
        self._ready_r, self._ready_w = os.pipe()
        self._go_r, self._go_w = os.pipe()
        self._closed = False

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def spawn(self, name: str, spec: WorkerSpec, *, measuring: bool = False) -> Worker:
        """Start a protocol worker; a measuring worker also gets ``--out``."""
        out_path = self._workdir / f"{name}.json" if measuring else None
        argv = [
            sys.executable,
            "-m",
            spec.module,
            *spec.args,
            "--ready-fd",
            str(self._ready_w),
            "--go-fd",
            str(self._go_r),
        ]
        if out_path is not None:
            argv += ["--out", str(out_path)]
        fds = (self._ready_w, self._go_r, *spec.pass_fds)
        return self._start(name, argv, fds, out_path)

    def spawn_command(self, name: str, argv: Sequence[str]) -> Worker:
        """Start a helper process that does not speak the protocol (e.g. ``redis-server``)."""
        return self._start(name, list(argv), (), None)

    def _start(
        self, name: str, argv: list[str], fds: tuple[int, ...], out_path: Path | None
    ) -> Worker:
        if self._closed:
            raise WorkerFailed(f"worker pool closed; cannot start {name}")
        stdout_path = self._workdir / f"{name}.stdout"
        stderr_path = self._workdir / f"{name}.stderr"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, pass_fds=fds
            )
        worker = Worker(name, proc, stderr_path, out_path)
        self._workers.append(worker)
        return worker

    def discard(self, worker: Worker) -> None:
        """Kill and reap `worker` now and stop watching it (a failed helper start)."""
        if worker.proc.poll() is None:
            worker.proc.kill()
        try:
            worker.proc.wait(timeout=_REAP_TIMEOUT_S)
        finally:
            self._workers.remove(worker)

    def wait_ready(self, count: int, timeout_s: float) -> None:
        """Block until `count` more workers have signalled ready, and claim those signals.

        Each call claims its own signals, so a scenario can start groups one after the
        other (say 100 idle agents, then a ping-pong pair) and wait for each group.

        Raises:
            WorkerFailed: a worker exited badly first, or the timeout passed.
        """
        target = self._ready_claimed + count
        deadline = time.monotonic() + timeout_s
        while self._ready_seen < target:
            self._check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerFailed(
                    f"{self._ready_seen - self._ready_claimed} of {count} workers ready "
                    f"after {timeout_s:.0f}s"
                )
            # The pool itself holds the ready pipe's write end, so the read never sees
            # EOF; the short select timeout is only there to notice a crashed worker.
            readable, _, _ = select.select([self._ready_r], [], [], min(remaining, 0.05))
            if readable:
                self._ready_seen += len(os.read(self._ready_r, 4096))
        self._ready_claimed = target

    def go(self) -> None:
        """Start every worker blocked on the go pipe (they all see EOF at once).

        There is one go per pool: a worker started after it finds the pipe closed and
        starts at once.
        """
        if self._go_w >= 0:
            os.close(self._go_w)
            self._go_w = -1

    def wait_exit(self, worker: Worker, timeout_s: float) -> None:
        """Wait for `worker` to exit 0.

        Raises:
            WorkerFailed: it exited non-zero or is still running after `timeout_s`.
        """
        try:
            code = worker.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise WorkerFailed(
                f"worker {worker.name} still running after {timeout_s:.0f}s"
            ) from exc
        if code != 0:
            raise WorkerFailed(f"worker {worker.name} exited {code}: {worker.stderr_tail()}")

    def _check_alive(self) -> None:
        for worker in self._workers:
            code = worker.proc.poll()
            if code is not None and code != 0:
                raise WorkerFailed(f"worker {worker.name} exited {code}: {worker.stderr_tail()}")

    def close(self) -> None:
        """Kill every worker still running, reap all of them, close the pipes (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            for worker in self._workers:
                if worker.proc.poll() is None:
                    worker.proc.kill()
            for worker in self._workers:
                try:
                    worker.proc.wait(timeout=_REAP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    # SIGKILL was sent; a process stuck in uninterruptible sleep is the
                    # kernel's to finish. Nothing more we can do without hanging the run.
                    continue
        finally:
            for fd in (self._ready_r, self._ready_w, self._go_r, self._go_w):
                if fd >= 0:
                    os.close(fd)
            self._ready_r = self._ready_w = self._go_r = self._go_w = -1


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` (Linux ``/proc/<pid>/status`` VmRSS), in bytes.

    Raises:
        OSError: the process is gone or /proc is not readable.
    """
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS line in /proc/{pid}/status; is it a kernel thread?")
