"""How long `pipemesh mcp` takes to answer `initialize`, and where the time goes.

Run: ``.venv/bin/python bench/mcp_startup.py [RUNS]`` (default 7). Each run starts
``pipemesh mcp`` on a fresh mesh home, writes one MCP ``initialize`` request to its stdin
and times the answer from the moment the process was started: what a CLI waits for
before it can offer pipemesh's tools. Then, for the breakdown, it times a bare Python
start, ``import pipemesh.cli`` and ``import mcp.server.mcpserver`` (the MCP SDK) in fresh
interpreters. Prints medians (and min/max) in seconds.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIPEMESH = Path(sys.executable).parent / "pipemesh"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "mcp_startup", "version": "1"},
    },
}


def time_initialize(run: int) -> float:
    """Seconds from starting `pipemesh mcp` to its answer to `initialize`."""
    home = tempfile.mkdtemp(prefix="pm-startup-")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(PIPEMESH), "--home", home, "mcp", "--name", f"startup{run}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        took = time.perf_counter() - start
        if b'"id":1' not in line.replace(b" ", b""):
            raise SystemExit(f"unexpected answer to initialize: {line[:200]!r}")
        return took
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        shutil.rmtree(home, ignore_errors=True)


def time_python(code: str) -> float:
    """Seconds a fresh interpreter takes to run ``code``."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    return time.perf_counter() - start


def _line(label: str, values: list[float]) -> str:
    return (
        f"{label:42} median {statistics.median(values):.3f} s  "
        f"(min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"
    )


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    print(
        _line(
            "pipemesh mcp: start -> initialize answered", [time_initialize(i) for i in range(runs)]
        )
    )
    for label, code in [
        ("python start", "pass"),
        ("python + import pipemesh.cli", "import pipemesh.cli"),
        ("python + import the MCP SDK", "import mcp.server.mcpserver"),
    ]:
        print(_line(label, [time_python(code) for _ in range(runs)]))


if __name__ == "__main__":
    main()
