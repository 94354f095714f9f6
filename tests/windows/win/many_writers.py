"""Windows side: 100 writers connect to one inbox while it reads; each message arrives.

Regression: under Wine a finished ConnectNamedPipe may show a set event but a pending
status; the inbox then kept no spare instance and writers failed with "every instance
... stayed busy" after 6-35 connections. 100 connections also take the inbox past the
64 handles one WaitForMultipleObjects can wait on. Prints one JSON line.

Usage: python many_writers.py MESH_ID
"""

from __future__ import annotations

import json
import sys
import threading
import time

from pipemesh.errors import MeshError
from pipemesh.transport.winpipe import WinPipeOutbox, WinPipeTransport

WRITERS = 100


def main(mesh: str) -> int:
    transport = WinPipeTransport(mesh)
    inbox = transport.bind("r")
    outs: list[WinPipeOutbox] = []
    errors: list[str] = []

    def connect_all() -> None:
        try:
            for _ in range(WRITERS):
                outs.append(transport.connect("r"))
            for i, out in enumerate(outs):
                out.write_frames([f"<{i}>".encode()], 10.0)
        except MeshError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=connect_all)
    thread.start()
    got = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (thread.is_alive() or got.count(b"<") < len(outs)):
        got += inbox.read(0.05)
    thread.join(10)
    instances = len(inbox._instances)
    for out in outs:
        out.close()
    inbox.close()
    received = sorted(int(x) for x in got.replace(b"<", b" ").replace(b">", b" ").split())
    print(
        json.dumps(
            {"connected": len(outs), "errors": errors, "received": received, "instances": instances}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
