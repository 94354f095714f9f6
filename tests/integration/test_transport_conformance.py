"""One conformance suite, run against every transport (memory and real FIFOs)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipemesh import AgentOffline, PeerGone, SendTimeout, TransportClosed, codec
from pipemesh.transport import FifoTransport, MemoryNetwork, MemoryTransport, Transport
from pipemesh.wire import PIPE_BUF, FrameDecoder, NeedData, Reassembler, encode_message

pytestmark = pytest.mark.integration


WINDOWS = sys.platform == "win32"


@pytest.fixture(
    params=[
        "memory",
        pytest.param("fifo", marks=pytest.mark.skipif(WINDOWS, reason="no FIFOs on Windows")),
        pytest.param(
            "winpipe", marks=pytest.mark.skipif(not WINDOWS, reason="Windows named pipes")
        ),
    ]
)
def transport(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Transport]:
    """Each transport under test, with a small buffer so 'full' is quick to reach."""
    if request.param == "memory":
        yield MemoryTransport(MemoryNetwork(capacity_bytes=64 * 1024))
    elif request.param == "winpipe":
        from pipemesh.transport.winpipe import WinPipeTransport, mesh_id

        yield WinPipeTransport(mesh_id(tmp_path), pipe_size_bytes=64 * 1024)
    else:
        pipes = tmp_path / "pipes"
        yield FifoTransport(pipes, pipe_size_bytes=64 * 1024)


def drain(transport_inbox: object, decoder: FrameDecoder, want: int) -> list[bytes]:
    """Read until ``want`` frames decoded; bounded by a timeout per read."""
    bodies: list[bytes] = []
    for _ in range(10_000):
        if len(bodies) >= want:
            break
        data = transport_inbox.read(5.0)  # type: ignore[attr-defined]
        assert data, "no data within 5s"
        decoder.feed(data)
        while not isinstance(frame := decoder.next_frame(), NeedData):
            bodies.append(frame.body)
    return bodies


def test_connect_without_reader_is_offline(transport: Transport) -> None:
    """No inbox bound: AgentOffline at once."""
    with pytest.raises(AgentOffline):
        transport.connect("nobody")


def test_frames_arrive_in_order(transport: Transport) -> None:
    """1000 frames written by one writer arrive whole and in order."""
    inbox = transport.bind("r")
    out = transport.connect("r")
    frames = [encode_message("s", "r", f"{i}".encode(), msg_id=f"m{i}")[0] for i in range(1000)]
    writer = threading.Thread(target=lambda: out.write_frames(frames, 10.0))
    writer.start()
    bodies = drain(inbox, FrameDecoder(), 1000)
    writer.join(10)
    assert bodies == [f"{i}".encode() for i in range(1000)]
    out.close()
    inbox.close()


def test_large_message_parts_reassemble(transport: Transport) -> None:
    """A 1 MiB message in PIPE_BUF parts passes through and reassembles exactly."""
    inbox = transport.bind("r")
    out = transport.connect("r")
    body = ("large body " * 100_000)[: 1024 * 1024]
    frames = encode_message(
        "s", "r", body.encode(), msg_id="big", max_frame_bytes=transport.max_frame_bytes
    )
    assert all(len(f) <= transport.max_frame_bytes for f in frames)
    writer = threading.Thread(target=lambda: out.write_frames(frames, 30.0))
    writer.start()
    dec, asm = FrameDecoder(max_frame_body_bytes=transport.max_frame_bytes), Reassembler()
    got = None
    for _ in range(10_000):
        data = inbox.read(5.0)
        assert data
        dec.feed(data)
        while not isinstance(frame := dec.next_frame(), NeedData):
            got = asm.add(frame, 0.0) or got
        if got is not None:
            break
    writer.join(10)
    assert got is not None
    assert got.body == body
    out.close()
    inbox.close()


def test_read_timeout_returns_empty(transport: Transport) -> None:
    """read(timeout) returns b'' when nothing arrives; read(0) never blocks."""
    inbox = transport.bind("r")
    assert inbox.read(0) == b""
    assert inbox.read(0.05) == b""
    inbox.close()


def test_full_endpoint_times_out(transport: Transport) -> None:
    """Nobody reading: writes fill the buffer, then SendTimeout; earlier frames stay whole."""
    inbox = transport.bind("r")
    out = transport.connect("r")
    frame = encode_message("s", "r", b"z" * 3000, msg_id="m")[0]
    written = 0

    def fill() -> None:
        nonlocal written
        for _ in range(1000):
            out.write_frames([frame], 0.2)
            written += 1

    with pytest.raises(SendTimeout, match="stayed full"):
        fill()
    assert 10 <= written < 1000
    assert drain(inbox, FrameDecoder(), written) == [b"z" * 3000] * written
    out.close()
    inbox.close()


def test_reader_gone_gives_peer_gone(transport: Transport) -> None:
    """A writer whose reader closed gets PeerGone (then reconnect says offline)."""
    inbox = transport.bind("r")
    out = transport.connect("r")
    inbox.close()
    transport.remove("r")
    frame = encode_message("s", "r", b"x", msg_id="m")[0]
    with pytest.raises(PeerGone):
        out.write_frames([frame], 1.0)
    with pytest.raises(AgentOffline):
        transport.connect("r")
    out.close()


def test_close_twice_and_use_after_close(transport: Transport) -> None:
    """close() is idempotent; using a closed endpoint raises TransportClosed."""
    inbox = transport.bind("r")
    out = transport.connect("r")
    out.close()
    out.close()
    with pytest.raises(TransportClosed):
        out.write_frames([b"x"], 1.0)
    inbox.close()
    inbox.close()
    with pytest.raises(TransportClosed):
        inbox.read(0)


def test_oversized_frame_is_refused(transport: Transport) -> None:
    """A frame over PIPE_BUF would not be atomic: refused before any byte is written."""
    if transport.max_frame_bytes > PIPE_BUF:
        pytest.skip("message pipes keep any write whole: no PIPE_BUF limit to refuse")
    inbox = transport.bind("r")
    out = transport.connect("r")
    with pytest.raises(ValueError, match="over PIPE_BUF"):
        out.write_frames([b"x" * (PIPE_BUF + 1)], 1.0)
    assert inbox.read(0) == b""
    out.close()
    inbox.close()


@pytest.mark.skipif(WINDOWS, reason="no FIFOs on Windows")
def test_fifo_files_are_private(tmp_path: Path) -> None:
    """FIFOs are created 0600 in a 0700 directory; a non-FIFO in the way is replaced."""
    t = FifoTransport(tmp_path / "pipes")
    (tmp_path / "pipes" / "x.public").write_text("not a fifo")
    inbox = t.bind("x")
    mode = (tmp_path / "pipes" / "x.public").stat().st_mode
    assert mode & 0o777 == 0o600
    assert (tmp_path / "pipes").stat().st_mode & 0o777 == 0o700
    inbox.close()
    t.remove("x")
    t.remove("x")


def test_both_frame_kinds_interleave_from_concurrent_writers(transport: Transport) -> None:
    """Text and binary writers share one endpoint: small and multi-part messages all arrive."""
    inbox = transport.bind("r")
    big = ("é" + "x" * 99) * 300  # 30,300 bytes: parts of at most max_frame_bytes
    writers = []
    want: list[tuple[str, str]] = []
    for kind in ("text", "binary"):
        out = transport.connect("r")
        frames: list[bytes] = []
        for i in range(200):
            body = big if i % 50 == 0 else f"{kind}-{i}"
            want.append((f"{kind}{i}", body))
            frames += codec.encode_message(
                kind,
                "s",
                "r",
                body.encode(),
                msg_id=f"{kind}{i}",
                max_frame_bytes=transport.max_frame_bytes,
            )
        assert all(len(f) <= transport.max_frame_bytes for f in frames)
        writers.append((threading.Thread(target=out.write_frames, args=(frames, 30.0)), out))
    for thread, _ in writers:
        thread.start()
    dec = codec.AnyFrameDecoder(max_frame_body_bytes=transport.max_frame_bytes)
    asm = Reassembler()
    got: list[tuple[str, str]] = []
    for _ in range(10_000):
        if len(got) >= len(want):
            break
        data = inbox.read(5.0)
        assert data, "no data within 5s"
        dec.feed(data)
        dec.mark_boundary()
        while not isinstance(frame := dec.next_frame(), NeedData):
            msg = asm.add(frame, 0.0)
            if msg is not None:
                got.append((msg.id, msg.body))
    for thread, out in writers:
        thread.join(10)
        out.close()
    inbox.close()
    assert sorted(got) == sorted(want)
    for kind in ("text", "binary"):  # each writer's messages keep their order
        assert [i for i, _ in got if i.startswith(kind)] == [f"{kind}{i}" for i in range(200)]
