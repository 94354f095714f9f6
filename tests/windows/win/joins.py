"""Windows side: 20 agents join one mesh at once; the registry holds all 20, then none.

Usage: python joins.py HOME            (the driver; prints one JSON line)
       python joins.py HOME join NAME  (one agent: joins, says so, leaves at stdin EOF)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from pipemesh import AgentBase, Registry
from pipemesh.home import MeshHome

AGENTS = 20


def join(home: str, name: str) -> int:
    with AgentBase(name, role="joiner", home=home):
        print("joined", flush=True)
        sys.stdin.read()  # until the driver closes our stdin
    return 0


def drive(home: str) -> int:
    mesh = MeshHome.open(home)
    registry = Registry(mesh.registry_path, mesh.lock_path)
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, home, "join", f"agent{i:02d}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(AGENTS)
    ]
    try:
        joined = sum(1 for p in procs if p.stdout is not None and p.stdout.readline().strip())
        during = registry.read()
        active = sorted(n for n, r in during.items() if r.is_active)
        for p in procs:
            if p.stdin is not None:
                p.stdin.close()
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    deadline = time.monotonic() + 10
    after = registry.read()
    while after and time.monotonic() < deadline:
        time.sleep(0.05)
        after = registry.read()
    print(
        json.dumps(
            {
                "joined": joined,
                "active": active,
                "exit_codes": codes,
                "left_after": sorted(after),
            }
        )
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "join":
        raise SystemExit(join(sys.argv[1], sys.argv[3]))
    raise SystemExit(drive(sys.argv[1]))
