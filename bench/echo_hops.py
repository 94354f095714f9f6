"""Instructions per 64 B echo hop, for BENCHMARKS.md: a load-independent cost of the hot path.

One process, two agents on a fresh temporary home: ``ping`` sends a 64 B message with
the public API (``send_message``), ``echo``'s handler answers it (``reply``) on its
router thread, and ``ping`` takes the answer with ``receive()``. One hop = that round
trip (two messages, both sides' encode, read, decode, route, handler and logging).
Logging is on, as shipped.

Run it under callgrind twice, with N and 5N hops, and divide the difference (this
cancels start-up and shutdown)::

    for n in 300 1500; do
      valgrind --tool=callgrind --callgrind-out-file=/tmp/echo.$n.out \\
        .venv/bin/python bench/echo_hops.py $n
    done
    # total Ir: the "summary:" line of each file; (Ir(1500) - Ir(300)) / 1200 per hop

``--no-log`` turns the mesh logs off (the cost of logging is the difference).
Without valgrind it prints the wall time per hop (noisy on a loaded machine).
"""

from __future__ import annotations

import sys
import tempfile
import time

from pipemesh import AgentBase, Message


class Echo(AgentBase):
    def on_message_received(self, msg: Message) -> None:
        self.reply(msg, msg.body)


def main(hops: int, log_messages: bool) -> None:
    body = "x" * 64
    with (
        tempfile.TemporaryDirectory(prefix="pm-echo-") as home,
        Echo("echo", home=home, heartbeat_s=0, log_messages=log_messages) as _echo,
        AgentBase("ping", home=home, heartbeat_s=0, log_messages=log_messages) as ping,
    ):
        t0 = time.perf_counter()
        for i in range(hops):
            ping.send_message("echo", body)
            answer = ping.receive(timeout_s=30.0)
            if answer is None:
                raise SystemExit(f"no answer to hop {i} within 30 s")
        elapsed = time.perf_counter() - t0
    print(f"{hops} hops, {elapsed / hops * 1e6:.1f} us per hop (wall)")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--no-log"]
    main(int(args[0]) if args else 1000, "--no-log" not in sys.argv)
