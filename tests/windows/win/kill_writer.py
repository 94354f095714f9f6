"""Windows side: a writer killed (TerminateProcess) in the middle of a message corrupts nothing.

The reader reads part of a 32 MiB message, the writer is then terminated, and
the reader must hand on the whole message written before it, none of the cut
one, and the next writer's message whole. Prints one JSON line.

Usage: python kill_writer.py MESH_ID          (the driver)
       python kill_writer.py MESH_ID write    (the writer it starts and kills)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from pipemesh.transport.winpipe import WinPipeTransport
from pipemesh.wire import FrameDecoder, NeedData, encode_message

BIG = 32 * 1024 * 1024


def frame(body: bytes, msg_id: str) -> bytes:
    t = WinPipeTransport("x")
    return encode_message("w", "r", body, msg_id=msg_id, max_frame_bytes=t.max_frame_bytes + BIG)[0]


def write(mesh: str) -> int:
    out = WinPipeTransport(mesh).connect("r")
    out.write_frames([frame(b"before", "m1")], 10.0)
    print("wrote-first", flush=True)
    out.write_frames([frame(b"B" * BIG, "m2")], 600.0)  # killed while this is under way
    return 0


def drive(mesh: str) -> int:
    transport = WinPipeTransport(mesh, pipe_size_bytes=64 * 1024)
    inbox = transport.bind("r")
    decoder = FrameDecoder(max_frame_body_bytes=BIG + 4096)
    bodies: list[bytes] = []

    def take(data: bytes) -> None:
        decoder.feed(data)
        while not isinstance(f := decoder.next_frame(), NeedData):
            bodies.append(f.body)

    writer = subprocess.Popen(
        [sys.executable, __file__, mesh, "write"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    import _winapi

    first = len(frame(b"before", "m1"))
    in_pipe = 0
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == b"wrote-first"
        # Nothing is read yet: wait until part of the 32 MiB message sits in the pipe
        # (the writer is then blocked inside its one WriteFile), and kill it there.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and in_pipe <= first:
            in_pipe = max(
                (int(_winapi.PeekNamedPipe(i.handle)[0]) for i in inbox._instances if i.connected),
                default=0,
            )
            if in_pipe <= first:
                take(inbox.read(0))  # sees the connection and "before"; hands on no partial
                time.sleep(0.01)
        writer.kill()  # TerminateProcess, mid-message
        writer.wait(30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    cut_seen = in_pipe > first
    # Drain what is left: the broken instance must be dropped, not handed on.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        take(inbox.read(0.05))
    after = transport.connect("r")
    after.write_frames([frame(b"after", "m3")], 10.0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and b"after" not in bodies:
        take(inbox.read(0.1))
    after.close()
    inbox.close()
    print(
        json.dumps(
            {
                "cut_seen": cut_seen,
                "bytes_in_pipe_at_kill": in_pipe,
                "bodies": [b.decode() if len(b) < 100 else f"<{len(b)} bytes>" for b in bodies],
                "dropped_partial": inbox.dropped_partial,
                "writer_exit": writer.returncode,
            }
        )
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "write":
        raise SystemExit(write(sys.argv[1]))
    raise SystemExit(drive(sys.argv[1]))
