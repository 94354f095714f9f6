"""The program ``pipemesh bench --instructions`` runs under callgrind: a fixed number of echo hops.

``python .../pipemesh/bench/_hops.py --transport mesh|raw-fifo --round-trips N --warmup W --dir D``
starts an echo process (a child of this one, so ``valgrind --trace-children=yes`` counts it
too), then ping-pongs ``W + N`` messages of ``--size`` bytes with it and exits. Nothing is
timed and nothing polls: set-up waits block on pipes (a wait that loops would add a
load-dependent number of instructions), so the instruction count depends on the hops, not
on how busy the machine is. `pipemesh.bench.instructions` runs it twice per transport,
with N hops and with 0, and divides the difference by the hops (2 per round trip).

- ``mesh``: two `AgentBase` agents of the public API in one private home, logging on as
  shipped; the pinger's ``on_message_received`` sends the next ``send_message`` (the
  ``ping-pong/mesh`` row's loop), the echo answers with ``reply``. The heartbeat is set
  to an hour: it is time-driven work, not per-hop work, and a run under valgrind lasts
  long enough for several beats that would otherwise differ between the two runs.
  The log writers hold their records until the end (`_hold_log_records`) and then write
  them in full batches of 256: as shipped they write every 50 ms of wall time, and
  under valgrind such a batch holds a load-dependent few records, whose fixed per-batch
  cost (lock, ``stat``, one ``write`` per file) made the count vary by ~10 % between runs.
- ``raw-fifo``: ``os.write`` / ``os.read`` of the same bytes through two FIFOs, the floor.

It is run as a script (by path, not ``-m``), and imports only the standard library at
the top: ``-m`` would import the ``pipemesh`` package, whose ``__init__`` loads the runtime
(~0.5 G instructions under callgrind, and with it ~0.1-0.4 M of run-to-run noise), which
the raw-FIFO count does not need. The mesh functions import the runtime themselves.
This module prints nothing and imports no harness code.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pipemesh.runtime.agent import AgentBase

TRANSPORT_MESH: Final = "mesh"
TRANSPORT_RAW: Final = "raw-fifo"
TRANSPORTS: Final = (TRANSPORT_RAW, TRANSPORT_MESH)

#: A heartbeat far beyond any run: keeps time-driven work out of the count.
_NO_HEARTBEAT_S: Final = 3600.0
#: The log writers' gathering time in the mesh runs: longer than any run, so every record
#: is written at close, in full batches (see `_hold_log_records`).
_HOLD_LOG_S: Final = 3600.0
#: Upper bound on the whole ping-pong (valgrind runs Python ~50x slower).
_DONE_TIMEOUT_S: Final = 1800.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="_hops.py")
    parser.add_argument("--transport", choices=TRANSPORTS, required=True)
    parser.add_argument("--round-trips", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--dir", required=True)
    # Internal: the echo child.
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--stop-fd", type=int, default=-1, help=argparse.SUPPRESS)
    return parser


def _read_byte(fd: int) -> bytes:
    data = os.read(fd, 1)
    os.close(fd)
    return data


# --------------------------------------------------------------------------- raw FIFO


def _raw_paths(work: Path) -> tuple[Path, Path]:
    return work / "to-echo.fifo", work / "to-ping.fifo"


def _raw_echo(work: Path, size: int, ready_fd: int) -> None:
    to_echo, to_ping = _raw_paths(work)
    os.write(ready_fd, b"r")
    os.close(ready_fd)
    # Same open order as the driver (to-echo first): blocking opens pair up.
    rfd = os.open(to_echo, os.O_RDONLY)
    wfd = os.open(to_ping, os.O_WRONLY)
    while True:
        data = os.read(rfd, size)
        if not data:
            return  # the driver closed its end
        os.write(wfd, data)


def _raw_drive(work: Path, size: int, hops: int) -> None:
    to_echo, to_ping = _raw_paths(work)
    wfd = os.open(to_echo, os.O_WRONLY)
    rfd = os.open(to_ping, os.O_RDONLY)
    body = b"x" * size
    for _ in range(hops):
        os.write(wfd, body)
        got = len(os.read(rfd, size))
        if got != size:
            raise RuntimeError(f"echo returned {got} bytes, expected {size}")
    os.close(wfd)
    os.close(rfd)


# --------------------------------------------------------------------------- mesh


def _hold_log_records() -> None:
    """Make the agents' log writers write only at close, in full batches of 256 records.

    Called before any agent starts. Each record still costs what it costs as shipped
    (queued on the hot path, JSON-encoded and appended by the writer thread); only the
    batch size no longer depends on wall time, so the per-batch cost per hop is fixed.
    """
    from pipemesh import observe  # noqa: PLC0415

    observe.FLUSH_INTERVAL_S = _HOLD_LOG_S


def _close_agent(agent: AgentBase) -> None:
    """Write the held records (all of them: raise if any was dropped), then close."""
    agent.events.close(timeout_s=_DONE_TIMEOUT_S)
    dropped = agent.events.dropped
    agent.close()
    if dropped:
        raise RuntimeError(f"the log writer dropped {dropped} records")


def _mesh_echo(home: str, ready_fd: int, stop_fd: int) -> None:
    from pipemesh.runtime.agent import AgentBase  # noqa: PLC0415  # the raw echo must not pay
    from pipemesh.wire import Message  # noqa: PLC0415

    class Echo(AgentBase):
        def on_message_received(self, msg: Message) -> None:
            self.reply(msg, msg.body)

    _hold_log_records()
    agent = Echo("echo", "bench-echo", home, heartbeat_s=_NO_HEARTBEAT_S)
    os.write(ready_fd, b"r")  # registered: the driver can send to it
    os.close(ready_fd)
    _read_byte(stop_fd)  # EOF: the driver is done
    _close_agent(agent)


def _mesh_drive(home: str, size: int, round_trips: int) -> None:
    from pipemesh.runtime.agent import AgentBase  # noqa: PLC0415
    from pipemesh.wire import Message  # noqa: PLC0415

    body = "x" * size
    done = threading.Event()
    state = {"left": round_trips, "errors": 0}

    class Pinger(AgentBase):
        def on_message_received(self, msg: Message) -> None:
            if len(msg.body) != size:
                state["errors"] += 1
            state["left"] -= 1
            if state["left"] <= 0:
                done.set()
                return
            self.send_message("echo", body)

    _hold_log_records()
    agent = Pinger("ping", "bench-ping", home, heartbeat_s=_NO_HEARTBEAT_S)
    try:
        if round_trips > 0:
            agent.send_message("echo", body)
            if not done.wait(_DONE_TIMEOUT_S):
                raise TimeoutError(f"{state['left']} round trips left after {_DONE_TIMEOUT_S:g}s")
        if state["errors"]:
            raise RuntimeError(f"{state['errors']} replies had the wrong size")
    finally:
        _close_agent(agent)


# --------------------------------------------------------------------------- driver


def _drive(ns: argparse.Namespace) -> None:
    work = Path(ns.dir)
    home = str(work / "mesh")
    if ns.transport == TRANSPORT_RAW:
        to_echo, to_ping = _raw_paths(work)
        os.mkfifo(to_echo, 0o600)
        os.mkfifo(to_ping, 0o600)
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    argv = [
        sys.executable,
        os.path.abspath(__file__),
        "--echo",
        "--transport",
        ns.transport,
        "--size",
        str(ns.size),
        "--dir",
        str(work),
        "--ready-fd",
        str(ready_w),
        "--stop-fd",
        str(stop_r),
    ]
    echo = subprocess.Popen(argv, pass_fds=(ready_w, stop_r), stdin=subprocess.DEVNULL)
    os.close(ready_w)
    os.close(stop_r)
    try:
        if _read_byte(ready_r) != b"r":
            raise RuntimeError(f"the echo process exited before it was ready ({echo.wait()})")
        total = ns.warmup + ns.round_trips
        if ns.transport == TRANSPORT_RAW:
            _raw_drive(work, ns.size, total)
        else:
            _mesh_drive(home, ns.size, total)
    finally:
        os.close(stop_w)
        code = echo.wait(timeout=_DONE_TIMEOUT_S)
    if code != 0:
        raise RuntimeError(f"the echo process exited {code}")


def main(argv: list[str] | None = None) -> int:
    """Run the driver (or, with ``--echo``, the echo child); returns the exit code."""
    ns = _parser().parse_args(argv)
    if ns.echo:
        if ns.transport == TRANSPORT_RAW:
            _raw_echo(Path(ns.dir), ns.size, ns.ready_fd)
        else:
            _mesh_echo(str(Path(ns.dir) / "mesh"), ns.ready_fd, ns.stop_fd)
        return 0
    _drive(ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
