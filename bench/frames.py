"""Evidence for BENCHMARKS.md: the text frame against the binary frame, in one run.

1. codec: encode and decode cost of one 64 B message as each kind (``codec.encode_message``
   with ``check=False`` as the runtime calls it; ``AnyFrameDecoder`` + ``Reassembler`` to a
   ``Message``, as the router does), best of 7 timeit repeats.
2. wire ping-pong: two processes, two raw FIFOs, the codec only (no runtime), one-way p50.
3. mesh ping-pong: the public API (``AgentBase.ask`` to an echo agent in another process,
   logging on as shipped), one-way p50/p99 = round trip / 2, both agents ``frames=kind``.

Kinds alternate in rounds so that load changes hit both alike.

    .venv/bin/python bench/frames.py [round_trips]
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

from pipemesh import AgentBase, Message, codec
from pipemesh.codec import AnyFrameDecoder, FrameKind, encode_message
from pipemesh.wire import Frame, FrameDecoder, NeedData, Reassembler

KINDS: tuple[FrameKind, ...] = ("text", "binary")
BODY = b"x" * 64


def _encode(kind: FrameKind, i: int = 1, reply_to: str = "") -> bytes:
    return encode_message(
        kind,
        "bench-sender",
        "bench-echo",
        BODY,
        msg_id=f"a1b2c3d4-{i:x}",
        msg_type="question",
        sent_ns=time.time_ns(),
        reply_to=reply_to,
        check=False,
    )[0]


def codec_costs() -> None:
    print("# codec, one 64 B message (best of 7 repeats, us per call)")
    for kind in KINDS:
        frame = _encode(kind)
        enc = min(timeit.repeat(functools.partial(_encode, kind), number=20000, repeat=7)) / 20000
        dec, asm = AnyFrameDecoder(max_frame_body_bytes=4096), Reassembler()

        def decode(dec: FrameDecoder = dec, asm: Reassembler = asm, frame: bytes = frame) -> None:
            dec.feed(frame)
            f = dec.next_frame()
            assert not isinstance(f, NeedData)
            asm.add(f, 0.0)

        d = min(timeit.repeat(decode, number=20000, repeat=7)) / 20000
        print(
            f"{kind:>6}: {len(frame)} bytes, encode {enc * 1e6:.2f} us, "
            f"decode to Message {d * 1e6:.2f} us"
        )
    # Where the binary decode goes: msgspec, the charset checks, then the shared objects.
    frame = _encode("binary")
    p = codec._DECODE(frame[codec.PREFIX_BYTES :])
    f = Frame(p.sender, p.to, p.priority, p.msg_type, p.id, p.body, p.sent_ns, p.reply_to)
    asm = Reassembler()
    steps = {
        "msgspec decode": lambda: codec._DECODE(frame[codec.PREFIX_BYTES :]),
        "charset checks": lambda: codec._invalid(p),
        "Frame object": lambda: Frame(
            p.sender, p.to, p.priority, p.msg_type, p.id, p.body, p.sent_ns, p.reply_to, 1, 1
        ),
        "Reassembler.add -> Message": lambda: asm.add(f, 0.0),
    }
    parts = ", ".join(
        f"{name} {min(timeit.repeat(fn, number=20000, repeat=7)) / 20000 * 1e6:.2f} us"
        for name, fn in steps.items()
    )
    print(f"binary decode, by step: {parts}")


def _wire_loop(rfd: int, wfd: int, kind: FrameKind, n: int, initiator: bool) -> list[float]:
    dec, asm = AnyFrameDecoder(max_frame_body_bytes=4096), Reassembler()
    lat: list[float] = []
    t0 = time.perf_counter_ns()
    if initiator:
        os.write(wfd, _encode(kind))
    for i in range(n):
        while True:
            dec.feed(os.read(rfd, 65536))
            frame = dec.next_frame()
            if not isinstance(frame, NeedData):
                break
        msg = asm.add(frame, 0.0)
        assert msg is not None
        if initiator:
            t1 = time.perf_counter_ns()
            lat.append((t1 - t0) / 2000)
            t0 = t1
        os.write(wfd, _encode(kind, i, msg.id))
    return lat


def _pct(lat: list[float]) -> tuple[float, float]:
    lat = sorted(lat[len(lat) // 20 :])  # drop the first 5%: warm-up
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99)]


def wire_pingpong(count: int, tmp: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in KINDS}
    for rnd in range(2):
        for kind in KINDS:
            a, b = tmp / f"w{rnd}{kind}-a", tmp / f"w{rnd}{kind}-b"
            os.mkfifo(a)
            os.mkfifo(b)
            echo = subprocess.Popen([sys.executable, __file__, "--wire-echo", str(a), str(b), kind])
            rfd, wfd = os.open(b, os.O_RDWR), os.open(a, os.O_RDWR)
            try:
                out[kind] += _wire_loop(rfd, wfd, kind, count, True)
            finally:
                echo.kill()
                echo.wait()
                os.close(rfd)
                os.close(wfd)
    return out


class _Echo(AgentBase):
    def on_message_received(self, msg: Message) -> None:
        self.reply(msg, msg.body)


def mesh_pingpong(count: int, tmp: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in KINDS}
    body = "x" * 64
    for rnd in range(2):
        for kind in KINDS:
            home = tmp / f"m{rnd}{kind}"
            home.mkdir(mode=0o700)
            echo = subprocess.Popen([sys.executable, __file__, "--mesh-echo", str(home), kind])
            try:
                with AgentBase("pinger", home=home, frames=kind, heartbeat_s=0) as me:
                    deadline = time.monotonic() + 60
                    while "echo" not in me.refresh_peers():
                        if time.monotonic() > deadline or echo.poll() is not None:
                            raise SystemExit("the echo agent did not start")
                        time.sleep(0.05)
                    for _ in range(200):  # warm-up: opens, caches
                        me.ask("echo", body, 10.0)
                    for _ in range(count):
                        t0 = time.perf_counter_ns()
                        me.ask("echo", body, 10.0)
                        out[kind].append((time.perf_counter_ns() - t0) / 2000)
            finally:
                echo.terminate()
                try:
                    echo.wait(30)
                except subprocess.TimeoutExpired:
                    echo.kill()
                    echo.wait()
    return out


def main() -> None:
    if sys.argv[1:2] == ["--wire-echo"]:
        a, b, kind = sys.argv[2], sys.argv[3], sys.argv[4]
        _wire_loop(os.open(a, os.O_RDWR), os.open(b, os.O_RDWR), kind, 10**9, False)  # type: ignore[arg-type]
        return
    if sys.argv[1:2] == ["--mesh-echo"]:
        with _Echo("echo", home=sys.argv[2], frames=sys.argv[3], heartbeat_s=0) as echo:  # type: ignore[arg-type]
            echo.run_forever()
        return
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    codec_costs()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"# wire ping-pong (codec only, raw FIFOs), {2 * count} round trips per kind")
        for kind, lat in wire_pingpong(count, Path(tmp)).items():
            p50, p99 = _pct(lat)
            print(f"{kind:>6}: one-way p50 {p50:.1f} us, p99 {p99:.1f} us")
        print(f"# mesh ping-pong (AgentBase.ask, logging on), {2 * count} round trips per kind")
        for kind, lat in mesh_pingpong(count, Path(tmp)).items():
            p50, p99 = _pct(lat)
            print(f"{kind:>6}: one-way p50 {p50:.1f} us, p99 {p99:.1f} us")


if __name__ == "__main__":
    main()
