"""Evidence for BENCHMARKS.md: the cost of the wire codec alone, without the mesh runtime.

Two processes ping-pong a 64 B message over two raw FIFOs, single-threaded, encoding with
``pipemesh.wire.encode_message`` and decoding with ``FrameDecoder`` + ``Reassembler``: no
registry, no router thread, no logging, no handler. Compare with a raw ``os.write`` /
``os.read`` ping-pong of the same bytes, in the same run.

    .venv/bin/python bench/wire_pingpong.py [count]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipemesh.wire import FrameDecoder, NeedData, Reassembler, encode_message


def _loop(
    rfd: int, wfd: int, me: str, peer: str, n: int, initiator: bool, raw: bool
) -> list[float]:
    dec, asm = FrameDecoder(max_frame_body_bytes=4096), Reassembler()
    lat: list[float] = []
    payload = b"x" * 64
    t0 = time.perf_counter_ns()
    if initiator:
        os.write(
            wfd, payload if raw else encode_message(me, peer, payload, msg_id="m0", check=False)[0]
        )
    for i in range(n):
        if raw:
            body = os.read(rfd, 65536)
        else:
            while True:
                dec.feed(os.read(rfd, 65536))
                frame = dec.next_frame()
                if not isinstance(frame, NeedData):
                    break
            msg = asm.add(frame, 0.0)
            assert msg is not None
            body = msg.body.encode()
        if initiator:
            t1 = time.perf_counter_ns()
            lat.append((t1 - t0) / 2000)
            t0 = t1
        if raw:
            os.write(wfd, body)
        else:
            frames = encode_message(
                me, peer, body, msg_id=f"m{i}", reply_to=msg.id, sent_ns=time.time_ns(), check=False
            )
            os.write(wfd, frames[0])
    return lat


def main() -> None:
    if sys.argv[1:2] == ["--echo"]:
        a, b, raw = sys.argv[2], sys.argv[3], sys.argv[4] == "raw"
        _loop(os.open(a, os.O_RDWR), os.open(b, os.O_RDWR), "e", "p", 10**9, False, raw)
        return
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("raw", "wire"):
            a, b = Path(tmp) / f"{mode}-a", Path(tmp) / f"{mode}-b"  # fresh pipes per mode
            os.mkfifo(a)
            os.mkfifo(b)
            echo = subprocess.Popen([sys.executable, __file__, "--echo", str(a), str(b), mode])
            rfd, wfd = os.open(b, os.O_RDWR), os.open(a, os.O_RDWR)
            try:
                lat = _loop(rfd, wfd, "p", "e", count, True, mode == "raw")
            finally:
                echo.kill()
                echo.wait()
                os.close(rfd)
                os.close(wfd)
            lat = sorted(lat[count // 20 :])
            p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
            print(f"{mode:>4}: one-way p50 {p50:.1f} us, p99 {p99:.1f} us")


if __name__ == "__main__":
    main()
