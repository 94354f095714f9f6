"""Ping-pong over the Windows named-pipe transport and the runtime, for BENCHMARKS.md.

Run it with the Windows Python of `make test-windows` (under Wine here):

    WINEPREFIX=$PWD/.cache/windows/prefix WINEDEBUG=-all /usr/lib/wine/wine64 \
        .cache/windows/cp313/python.exe bench/winpipe_pingpong.py

Prints one JSON line: one-way latency (round trip / 2) of whole frames over
``WinPipeTransport`` between two processes, for 64 B and 1 MiB bodies, and the
round trip of ``AgentBase.ask`` (send, handler reply, wake-up) between two agents.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

from pipemesh import AgentBase
from pipemesh.transport.winpipe import WinPipeTransport
from pipemesh.wire import FrameDecoder, Message, NeedData, encode_message

SIZES = ((64, 5000), (1024 * 1024, 100))


def frames_for(t: WinPipeTransport, size: int) -> list[bytes]:
    return encode_message("a", "b", b"x" * size, msg_id="m", max_frame_bytes=t.max_frame_bytes)


def read_one(inbox: object, decoder: FrameDecoder) -> None:
    for _ in range(1_000_000):
        frame = decoder.next_frame()
        if not isinstance(frame, NeedData):
            return
        decoder.feed(inbox.read(30.0))  # type: ignore[attr-defined]
    raise RuntimeError("no frame")


def echo(mesh: str) -> int:
    t = WinPipeTransport(mesh)
    inbox = t.bind("b")
    print("ready", flush=True)
    out = None
    decoder = FrameDecoder(max_frame_body_bytes=t.max_frame_bytes)
    for size, n in SIZES:
        frames = frames_for(t, size)
        for _ in range(n):
            read_one(inbox, decoder)
            if out is None:
                out = t.connect("a")
            out.write_frames(frames, 30.0)
    inbox.close()
    return 0


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


class Echo(AgentBase):
    def on_message_received(self, msg: Message) -> None:
        if msg.msg_type == "question":
            self.reply(msg, msg.body)


def main() -> int:
    mesh = f"bench{time.time_ns() % 10**9}"
    t = WinPipeTransport(mesh)
    inbox = t.bind("a")
    peer = subprocess.Popen(
        [sys.executable, __file__, mesh, "echo"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    assert peer.stdout is not None
    assert peer.stdout.readline().strip() == b"ready"
    out = t.connect("b")
    decoder = FrameDecoder(max_frame_body_bytes=t.max_frame_bytes)
    result: dict[str, object] = {
        "python": sys.version.split()[0],
        # platform.platform() asks WMI, which Wine 8 lacks (propsys.VariantToString).
        "windows": ".".join(str(v) for v in sys.getwindowsversion()[:3]),  # type: ignore[attr-defined,unused-ignore]
        "note": "Windows CPython under Wine on Linux; not native Windows",
    }
    for size, n in SIZES:
        frames = frames_for(t, size)
        one_way: list[float] = []
        for _ in range(n):
            t0 = time.perf_counter()
            out.write_frames(frames, 30.0)
            read_one(inbox, decoder)
            one_way.append((time.perf_counter() - t0) / 2 * 1e6)
        result[f"winpipe_{size}B_one_way_us"] = {
            "n": n,
            "p50": round(pct(one_way, 0.5), 1),
            "p90": round(pct(one_way, 0.9), 1),
            "p99": round(pct(one_way, 0.99), 1),
        }
    peer.wait(60)
    out.close()
    inbox.close()
    home = tempfile.mkdtemp()
    with Echo("echo", home=home), AgentBase("asker", home=home) as asker:
        for size, n in ((64, 1000), (1024 * 1024, 50)):
            body = "y" * size
            rtt: list[float] = []
            for _ in range(n):
                t0 = time.perf_counter()
                asker.ask("echo", body, timeout_s=30)
                rtt.append((time.perf_counter() - t0) * 1e6)
            result[f"ask_{size}B_round_trip_us"] = {
                "n": n,
                "p50": round(pct(rtt, 0.5), 1),
                "p90": round(pct(rtt, 0.9), 1),
            }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "echo":
        raise SystemExit(echo(sys.argv[1]))
    raise SystemExit(main())
