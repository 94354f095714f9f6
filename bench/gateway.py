"""Evidence for BENCHMARKS.md: two meshes bridged by `pipemesh gateway` over one nats-server.

Two mesh homes ("hosts" a and b, on loopback: the figures are the bridge's cost, not a
network's), a nats-server with JetStream on 127.0.0.1, one gateway per home, and on b an
echo agent (replies to questions, counts the rest; durable or not). From a, in this process:

* bridge one-way latency: ``AgentBase.ask`` to ``echo@b``, one-way = round trip / 2;
* bridge throughput: N plain sends to ``echo@b`` (then to the durable ``decho@b``, whose
  path is JetStream), timed from the first send to the echo's "done" reply;
* raw nats-py, same server, same run: request/reply latency (one-way = round trip / 2) to a
  responder in another process, and publish throughput to a subscriber in another process.

    .venv/bin/python bench/gateway.py [round_trips] [messages]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats

from pipemesh import AgentBase
from pipemesh.registry import Registry

PY = sys.executable

ECHO = r"""
import sys, time
from pipemesh import AgentBase
name, n, durable = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
class Echo(AgentBase):
    count = 0
    def on_message_received(self, msg):
        if msg.msg_type == "question":
            self.reply(msg, msg.body)
            return
        self.count += 1
        if self.count == n:
            self.send_message(msg.sender, "done", msg_type="done")
            self.count = 0
with Echo(name, durable=durable, log_messages=False, spool_fsync=False) as a:
    print("ready", flush=True)
    a.run_forever()
"""

RESPONDER = r"""
import asyncio, sys
import nats
async def main():
    nc = await nats.connect(sys.argv[1])
    n = int(sys.argv[2]); got = 0; done = asyncio.Event()
    async def reply(msg):
        await msg.respond(msg.data)
    async def count(msg):
        nonlocal got
        got += 1
        if got == n:
            await nc.publish(msg.reply or "bench.done", b"done")
            got = 0
    await nc.subscribe("bench.rr", cb=reply)
    await nc.subscribe("bench.tp", cb=count)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    server = Path(PY).parent / "nats-server"
    binary = str(server) if server.exists() else shutil.which("nats-server")
    if binary is None:
        print("no nats-server: run 'make setup'", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="pm-gw-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    load0 = os.getloadavg()
    try:
        port = _free_port()
        url = f"nats://127.0.0.1:{port}"
        procs.append(
            subprocess.Popen(
                [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp / "js")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        homes = {h: tmp / h for h in ("a", "b")}
        for home in homes.values():
            home.mkdir(mode=0o700)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        for h, home in homes.items():
            env = {**os.environ, "PIPEMESH_HOME": str(home)}
            procs.append(
                subprocess.Popen(
                    [
                        PY,
                        "-m",
                        "pipemesh",
                        "gateway",
                        "--nats",
                        url,
                        "--mesh",
                        "bench",
                        "--host",
                        h,
                        "--heartbeat",
                        "0.5",
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        env_b = {**os.environ, "PIPEMESH_HOME": str(homes["b"])}
        for name, durable in (("echo", "0"), ("decho", "1")):
            p = subprocess.Popen(
                [PY, "-c", ECHO, name, str(count), durable], env=env_b, stdout=subprocess.PIPE
            )
            procs.append(p)
            assert p.stdout is not None
            p.stdout.readline()
        resp = subprocess.Popen([PY, "-c", RESPONDER, url, str(count)], stdout=subprocess.PIPE)
        procs.append(resp)
        assert resp.stdout is not None
        resp.stdout.readline()
        reg = Registry(homes["a"] / "agent_registry.json", homes["a"] / "agent_registry.json.lock")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            recs = reg.read()
            if all(n in recs and recs[n].is_active for n in ("echo@b", "decho@b")):
                break
            time.sleep(0.1)
        rows: list[tuple[str, str, str, str]] = []
        with AgentBase("driver", home=homes["a"], log_messages=False) as me:
            for _ in range(100):
                me.ask("echo@b", "x" * 64, 30)
            lat = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                me.ask("echo@b", "x" * 64, 30)
                lat.append((time.perf_counter() - t0) / 2 * 1e6)
            rows.append(
                (
                    "bridge, ask/reply (one-way)",
                    f"{statistics.median(lat):.0f}",
                    f"{_pct(lat, 0.99):.0f}",
                    "-",
                )
            )
            for target, label in (("echo@b", "plain"), ("decho@b", "durable (JetStream)")):
                t0 = time.perf_counter()
                for _ in range(count):
                    me.send(target, "y" * 64)
                while True:
                    msg = me.receive(timeout_s=120)
                    if msg is None:
                        raise SystemExit(f"no 'done' from {target} within 120 s")
                    if msg.msg_type == "done":
                        break
                took = time.perf_counter() - t0
                rows.append((f"bridge, one-way stream, {label}", "-", "-", f"{count / took:,.0f}"))

        async def raw() -> None:
            nc = await nats.connect(url)
            for _ in range(100):
                await nc.request("bench.rr", b"x" * 64, timeout=10)
            lat = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                await nc.request("bench.rr", b"x" * 64, timeout=10)
                lat.append((time.perf_counter() - t0) / 2 * 1e6)
            rows.append(
                (
                    "raw nats-py, request/reply (one-way)",
                    f"{statistics.median(lat):.0f}",
                    f"{_pct(lat, 0.99):.0f}",
                    "-",
                )
            )
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            t0 = time.perf_counter()
            for _ in range(count):
                await nc.publish("bench.tp", b"y" * 64, reply=inbox)
            await nc.flush()
            await sub.next_msg(timeout=120)
            rows.append(
                (
                    "raw nats-py, publish stream",
                    "-",
                    "-",
                    f"{count / (time.perf_counter() - t0):,.0f}",
                )
            )
            await nc.close()

        asyncio.run(raw())
        load1 = os.getloadavg()
        print(
            f"# bench/gateway.py {rounds} {count}: 2 mesh homes on loopback, 1 nats-server "
            f"(JetStream), 64 B bodies"
        )
        print(
            f"# load average {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} at the start, "
            f"{load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} at the end; {os.cpu_count()} cpus"
        )
        print("| path | p50 us | p99 us | msgs/s |")
        print("|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
