"""Baseline transports: the endpoints pipemesh is measured against, as worker processes.

Each function here is one end of one transport, run inside a worker process started by
``python -m pipemesh.bench._worker``, and written the way a careful user of that transport
would write it: every message is read whole (loops until the full body has arrived), big
bodies go into preallocated buffers. The parent half (creating FIFOs, starting
``redis-server``, building worker argv) is in `pipemesh.bench.scenarios`.

Baselines: raw FIFO ``os.write``/``os.read`` (the floor, default 64 KiB pipe buffer), the
same with the pipe buffer raised to ``pipe-max-size`` by ``F_SETPIPE_SZ`` (what a bigger
pipe buys for large bodies; a mesh cannot give every agent one, see FIFO-FACTS.md fact 3),
Unix domain socket (SOCK_STREAM, 4-byte length prefix), ``multiprocessing.Pipe``
(``send_bytes``/``recv_bytes``), pyzmq ``ipc://`` PAIR and DEALER/ROUTER, and Redis pub/sub
through redis-py. Fan-in has a raw-FIFO floor too: N writer processes, frames of at most
PIPE_BUF bytes, into one FIFO.

This module must stay cheap to import: a fan-in row starts a hundred workers, and a worker
must not pay for the harness (or weigh more in an RSS measurement). It imports only the
standard library and `pipemesh.bench._proto`; pyzmq and redis-py (the optional ``bench``
extra) are imported inside the functions that use them.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import time
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from pipemesh.bench._proto import (
    KIND_ONE_WAY,
    PIPE_BUF,
    WorkerResult,
    measure_round_trips,
    monotonic_ns,
    pin_to_cpu,
    signal_ready,
    steady_rate,
    wait_go,
)

if TYPE_CHECKING:
    import redis
    import redis.client

RAW_FIFO: Final = "raw-fifo"
RAW_FIFO_BIG_PIPE: Final = "raw-fifo-big-pipe"
UNIX_SOCKET: Final = "unix-socket"
MP_PIPE: Final = "mp-pipe"
ZMQ_PAIR: Final = "zmq-pair"
ZMQ_DEALER_ROUTER: Final = "zmq-dealer-router"
REDIS_PUBSUB: Final = "redis-pubsub"
TRANSPORTS: Final = (
    RAW_FIFO,
    RAW_FIFO_BIG_PIPE,
    UNIX_SOCKET,
    MP_PIPE,
    ZMQ_PAIR,
    ZMQ_DEALER_ROUTER,
    REDIS_PUBSUB,
)

ROLE_SERVER: Final = "server"
ROLE_CLIENT: Final = "client"
ROLE_FAN_IN_RECEIVER: Final = "fanin-receiver"
ROLE_FAN_IN_SENDER: Final = "fanin-sender"
ROLE_BCAST_RECEIVER: Final = "bcast-receiver"
ROLE_BCAST_WRITER: Final = "bcast-writer"
ROLES: Final = (
    ROLE_SERVER,
    ROLE_CLIENT,
    ROLE_FAN_IN_RECEIVER,
    ROLE_FAN_IN_SENDER,
    ROLE_BCAST_RECEIVER,
    ROLE_BCAST_WRITER,
)

#: Seconds to wait for Redis to confirm a subscription.
REDIS_TIMEOUT_S: Final = 10.0

#: Fan-in frame head: magic, sender id, sequence number, CLOCK_MONOTONIC send stamp.
FRAME_HEAD: Final = struct.Struct("<4sIIq")
_FRAME_MAGIC: Final = b"PMBF"

#: Broadcast acknowledgement: sequence number, receive stamp minus send stamp (ns).
_ACK: Final = struct.Struct("<qq")

#: Unix socket length prefix (network order, 4 bytes).
_LENGTH: Final = struct.Struct("!I")

_REDIS_PING: Final = "pipemesh-bench-ping"
_REDIS_PONG: Final = "pipemesh-bench-pong"


@dataclass(frozen=True, slots=True)
class WorkerArgs:
    """A worker's parsed command line (see ``pipemesh.bench._worker``)."""

    transport: str
    role: str
    size: int
    addr: tuple[str, ...]
    fd: int
    count: int
    warmup: int
    time_limit_s: float
    sender_id: int
    ready_fd: int
    go_fd: int
    out: str
    cpu: int = -1


def run_worker(args: WorkerArgs) -> int:
    """Run one endpoint of one baseline until its part of the scenario is done; return 0."""
    pin_to_cpu(args.cpu)
    if args.role == ROLE_FAN_IN_RECEIVER:
        _fan_in_receiver(args)
    elif args.role == ROLE_FAN_IN_SENDER:
        _fan_in_sender(args)
    elif args.role == ROLE_BCAST_RECEIVER:
        _bcast_receiver(args)
    elif args.role == ROLE_BCAST_WRITER:
        _bcast_writer(args)
    elif args.role == ROLE_SERVER:
        _SERVERS[args.transport](args)
    else:
        round_trip = _CLIENTS[args.transport](args)
        wait_go(args.go_fd)
        result = measure_round_trips(
            round_trip, warmup=args.warmup, count=args.count, time_limit_s=args.time_limit_s
        )
        result.dump(args.out)
    return 0


def _check_size(reply_size: int, expected: int) -> None:
    if reply_size != expected:
        raise ValueError(f"reply is {reply_size} bytes, expected {expected}")


# --------------------------------------------------------------------------- raw FIFO


def _write_all(fd: int, data: bytes | memoryview) -> None:
    # A blocking pipe write returns short only when a signal interrupts it; loop anyway.
    written = os.write(fd, data)
    if written < len(data):
        view = memoryview(data)
        while written < len(data):
            written += os.write(fd, view[written:])


def _fifo_reader(fd: int, size: int) -> Callable[[], bytes | memoryview]:
    """A function reading exactly `size` bytes from `fd` (EOFError at end of stream)."""
    if size <= PIPE_BUF:
        # Small bodies: plain os.read, usually one call.
        def read_small() -> bytes:
            data = os.read(fd, size)
            while len(data) < size:
                more = os.read(fd, size - len(data))
                if not more:
                    raise EOFError
                data += more
            return data

        return read_small

    # Large bodies arrive in pipe-sized pieces. os.read(fd, n) allocates n bytes per call
    # (an mmap for n >= 128 KiB), which made 1 MiB ping-pong ~60% slower than reading
    # into one preallocated buffer with os.readv (1.6 ms vs 1.0 ms one-way, measured).
    view = memoryview(bytearray(size))

    def read_large() -> memoryview:
        got = 0
        while got < size:
            n = os.readv(fd, [view[got:]])
            if n == 0:
                raise EOFError
            got += n
        return view

    return read_large


def _fifo_open(args: WorkerArgs) -> tuple[int, int]:
    """Open (read_fd, write_fd). Both ends open c2s first, then s2c: blocking opens pair up."""
    to_server, to_client = args.addr
    if args.role == ROLE_SERVER:
        rfd = os.open(to_server, os.O_RDONLY)
        wfd = os.open(to_client, os.O_WRONLY)
    else:
        wfd = os.open(to_server, os.O_WRONLY)
        rfd = os.open(to_client, os.O_RDONLY)
    if args.transport == RAW_FIFO_BIG_PIPE:
        # Both ends ask; the size belongs to the pipe, so the later call just confirms it.
        for fd in (rfd, wfd):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _pipe_max_size())
    return rfd, wfd


def _pipe_max_size() -> int:
    """The largest pipe buffer an unprivileged process may ask for (Linux: usually 1 MiB)."""
    try:
        with open("/proc/sys/fs/pipe-max-size", encoding="ascii") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 1 << 20


def _serve_raw_fifo(args: WorkerArgs) -> None:
    # Ready before opening: a blocking open only returns once the client opens its end.
    signal_ready(args.ready_fd)
    rfd, wfd = _fifo_open(args)
    read = _fifo_reader(rfd, args.size)
    try:
        while True:
            _write_all(wfd, read())
    except EOFError:
        return


def _client_raw_fifo(args: WorkerArgs) -> Callable[[], None]:
    rfd, wfd = _fifo_open(args)
    signal_ready(args.ready_fd)
    read = _fifo_reader(rfd, args.size)
    body = os.urandom(args.size)

    def round_trip() -> None:
        _write_all(wfd, body)
        read()

    return round_trip


def _fan_in_receiver(args: WorkerArgs) -> None:
    (path,) = args.addr
    # O_NONBLOCK only for the open (no writer exists yet); reads then block normally.
    # Not O_RDWR: this reader must see EOF once every sender has closed its end.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(fd, True)
    signal_ready(args.ready_fd)
    # Reading before every sender has opened could see EOF at once; go comes after that.
    wait_go(args.go_fd)
    size = args.size
    frame = struct.Struct(f"{FRAME_HEAD.format}{size - FRAME_HEAD.size}x")
    sent_at = array("q")
    latency = array("q")
    marks_ns = array("q")  # when each read returned ...
    marks_count = array("q")  # ... and how many good frames had arrived by then
    errors = 0
    pending = b""
    while True:
        chunk = os.read(fd, 65536)
        now = monotonic_ns()
        if not chunk:
            break
        if pending:
            chunk = pending + chunk
        usable = len(chunk) - len(chunk) % size
        pending = chunk[usable:]
        for magic, _sender, _seq, stamp in frame.iter_unpack(memoryview(chunk)[:usable]):
            if magic != _FRAME_MAGIC:
                errors += 1
                continue
            sent_at.append(stamp)
            latency.append(now - stamp)
        marks_ns.append(now)
        marks_count.append(len(latency))
    os.close(fd)
    errors += 1 if pending else 0
    messages, elapsed = steady_rate(marks_ns, marks_count)
    # The whole window, from the earliest send stamp to the last receipt, for the record.
    whole_ns = marks_ns[-1] - min(sent_at) if sent_at else 0
    extra = {"msgs_per_s_whole": len(latency) / (whole_ns / 1e9)} if whole_ns > 0 else {}
    if elapsed <= 0 < whole_ns:
        # Everything came in one read (tiny quick runs on a loaded machine): no steady
        # window to trim, so the whole window is the only rate there is.
        messages, elapsed = len(latency), whole_ns
    WorkerResult(
        kind=KIND_ONE_WAY,
        samples_ns=latency.tolist(),
        messages=messages,
        elapsed_ns=elapsed,
        errors=errors,
        extra=extra,
    ).dump(args.out)


def _fan_in_sender(args: WorkerArgs) -> None:
    (path,) = args.addr
    # The receiver holds the read end already, so this blocking open returns at once.
    fd = os.open(path, os.O_WRONLY)
    signal_ready(args.ready_fd)
    wait_go(args.go_fd)
    buf = bytearray(args.size)
    pack_into = FRAME_HEAD.pack_into
    clock, clock_id = time.clock_gettime_ns, time.CLOCK_MONOTONIC
    deadline = clock(clock_id) + int(args.time_limit_s * 1e9)
    sender = args.sender_id
    try:
        for seq in range(args.count):
            pack_into(buf, 0, _FRAME_MAGIC, sender, seq, clock(clock_id))
            # <= PIPE_BUF: the kernel writes the whole frame or nothing, never interleaved.
            os.write(fd, buf)
            if not seq & 255 and clock(clock_id) > deadline:
                break
    except BrokenPipeError:
        pass  # the receiver stopped first; what it counted stands
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- raw broadcast


def _bcast_receiver(args: WorkerArgs) -> None:
    """Read each broadcast frame from its own FIFO and ack (seq, delay) on the shared ack FIFO."""
    data_path, ack_path = args.addr
    # O_RDWR on both: the opens never block (no writer or reader exists yet), and this
    # receiver never sees EOF (FIFO-FACTS.md, fact 6); like the mesh's broadcast
    # receivers, it runs until the harness kills it. It never reads the ack FIFO.
    rfd = os.open(data_path, os.O_RDWR)
    afd = os.open(ack_path, os.O_RDWR)
    signal_ready(args.ready_fd)
    read = _fifo_reader(rfd, args.size)
    unpack, pack = FRAME_HEAD.unpack_from, _ACK.pack
    while True:
        frame = read()
        now = monotonic_ns()
        _magic, _sender, seq, stamp = unpack(frame)
        # 16 bytes <= PIPE_BUF: acks of concurrent receivers never interleave.
        os.write(afd, pack(seq, now - stamp))


def _bcast_writer(args: WorkerArgs) -> None:
    """Write one frame to every receiver's FIFO, wait for every ack; a sample is the latest."""
    ack_path, *paths = args.addr
    # Every receiver holds its FIFOs O_RDWR, so these blocking opens return at once.
    afd = os.open(ack_path, os.O_RDONLY)
    fds = [os.open(path, os.O_WRONLY) for path in paths]
    signal_ready(args.ready_fd)
    size, peers = args.size, len(fds)
    buf = bytearray(size)
    pack_into = FRAME_HEAD.pack_into
    samples = array("q")
    errors = 0
    wait_go(args.go_fd)
    started = time.perf_counter_ns()
    deadline = started + int(args.time_limit_s * 1e9)
    for i in range(args.warmup + args.count):
        pack_into(buf, 0, _FRAME_MAGIC, 0, i, monotonic_ns())
        for fd in fds:
            os.write(fd, buf)  # <= PIPE_BUF into a pipe with room: written whole
        latest, acked, pending = 0, 0, b""
        while acked < peers:
            pending += os.read(afd, _ACK.size * peers)
            whole = len(pending) - len(pending) % _ACK.size
            for seq, delay in _ACK.iter_unpack(pending[:whole]):
                errors += seq != i
                latest = max(latest, delay)
                acked += 1
            pending = pending[whole:]
        if i < args.warmup:
            started = time.perf_counter_ns()
            deadline = started + int(args.time_limit_s * 1e9)
            continue
        samples.append(latest)
        if time.perf_counter_ns() >= deadline:
            break
    elapsed = time.perf_counter_ns() - started
    WorkerResult(
        kind=KIND_ONE_WAY,
        samples_ns=samples.tolist(),
        messages=len(samples) * peers,
        elapsed_ns=elapsed,
        errors=errors,
    ).dump(args.out)


# --------------------------------------------------------------------------- Unix socket


class _FramedSocket:
    """Length-prefixed messages over a SOCK_STREAM socket, with a buffered reader.

    The reader pulls as much as the socket has into one buffer and cuts messages out of
    it, so a small message costs one ``recv_into`` instead of two (prefix, then body).
    """

    def __init__(self, sock: socket.socket, size: int) -> None:
        self._sock = sock
        self._buf = bytearray(max(65536, _LENGTH.size + size))
        self._view = memoryview(self._buf)
        self._start = 0  # first unread byte
        self._end = 0  # one past the last received byte

    def send(self, body: bytes | memoryview) -> None:
        head = _LENGTH.pack(len(body))
        if len(body) <= PIPE_BUF:
            self._sock.sendall(head + body)  # one syscall; the copy is cheap at this size
            return
        # Large bodies: scatter-gather instead of copying the body behind the prefix.
        sent = self._sock.sendmsg([head, body])
        if sent < len(head):
            self._sock.sendall(head[sent:])
            sent = len(head)
        if sent - len(head) < len(body):
            self._sock.sendall(memoryview(body)[sent - len(head) :])

    def recv(self) -> memoryview:
        """The next whole message body (valid until the next call)."""
        self._fill(_LENGTH.size)
        (size,) = _LENGTH.unpack_from(self._buf, self._start)
        self._fill(_LENGTH.size + size)
        body = self._view[self._start + _LENGTH.size : self._start + _LENGTH.size + size]
        self._start += _LENGTH.size + size
        return body

    def _fill(self, wanted: int) -> None:
        """Receive until `wanted` unread bytes are buffered (EOFError at end of stream)."""
        if self._end - self._start >= wanted:
            return
        if self._start == self._end:
            self._start = self._end = 0
        if self._start + wanted > len(self._buf):
            # Not enough room behind the unread bytes: move them to the front, grow if needed.
            unread = self._end - self._start
            if wanted > len(self._buf):
                self._buf = bytearray(wanted)
                self._buf[:unread] = self._view[self._start : self._end]
                self._view = memoryview(self._buf)
            else:
                self._view[:unread] = self._view[self._start : self._end]
            self._start, self._end = 0, unread
        while self._end - self._start < wanted:
            n = self._sock.recv_into(self._view[self._end :])
            if n == 0:
                raise EOFError
            self._end += n


def _serve_unix_socket(args: WorkerArgs) -> None:
    (path,) = args.addr
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        signal_ready(args.ready_fd)
        conn, _ = listener.accept()
    with conn:
        framed = _FramedSocket(conn, args.size)
        try:
            while True:
                framed.send(framed.recv())
        except (EOFError, ConnectionError):
            return


def _client_unix_socket(args: WorkerArgs) -> Callable[[], None]:
    (path,) = args.addr
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    signal_ready(args.ready_fd)
    framed = _FramedSocket(sock, args.size)
    body = os.urandom(args.size)
    size = args.size

    def round_trip() -> None:
        framed.send(body)
        _check_size(len(framed.recv()), size)

    return round_trip


# --------------------------------------------------------------------------- multiprocessing.Pipe


def _serve_mp_pipe(args: WorkerArgs) -> None:
    from multiprocessing.connection import Connection  # noqa: PLC0415  # worker-only import

    conn = Connection(args.fd)
    signal_ready(args.ready_fd)
    try:
        while True:
            conn.send_bytes(conn.recv_bytes())
    except (EOFError, ConnectionError):
        return


def _client_mp_pipe(args: WorkerArgs) -> Callable[[], None]:
    from multiprocessing.connection import Connection  # noqa: PLC0415  # worker-only import

    conn = Connection(args.fd)
    signal_ready(args.ready_fd)
    body = os.urandom(args.size)
    size = args.size

    def round_trip() -> None:
        conn.send_bytes(body)
        _check_size(len(conn.recv_bytes()), size)

    return round_trip


# --------------------------------------------------------------------------- pyzmq


def _serve_zmq(args: WorkerArgs) -> None:
    import zmq  # noqa: PLC0415  # optional dependency (bench extra)

    (addr,) = args.addr
    ctx = zmq.Context()
    kind = zmq.PAIR if args.transport == ZMQ_PAIR else zmq.ROUTER
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(addr)
    signal_ready(args.ready_fd)
    # Runs until the harness kills it: zmq has no end-of-stream to wait for.
    if kind == zmq.PAIR:
        while True:
            sock.send(sock.recv())
    while True:
        sock.send_multipart(sock.recv_multipart())  # [identity, body] back to the sender


def _client_zmq(args: WorkerArgs) -> Callable[[], None]:
    import zmq  # noqa: PLC0415  # optional dependency (bench extra)

    (addr,) = args.addr
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR if args.transport == ZMQ_PAIR else zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(addr)
    signal_ready(args.ready_fd)
    body = os.urandom(args.size)
    size = args.size

    def round_trip() -> None:
        sock.send(body)
        _check_size(len(sock.recv()), size)

    return round_trip


# --------------------------------------------------------------------------- Redis pub/sub


def _redis_subscribe(args: WorkerArgs, channel: str) -> tuple[redis.Redis, redis.client.PubSub]:
    import redis  # noqa: PLC0415  # optional dependency (bench extra)

    host, port = args.addr[0].rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port))
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    pubsub.subscribe(channel)
    # Wait for the confirmation: a publish before it would reach nobody.
    deadline = time.monotonic() + REDIS_TIMEOUT_S
    while time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=1.0)
        if msg is not None and msg["type"] == "subscribe":
            return client, pubsub
    raise TimeoutError(f"no subscribe confirmation for {channel} from redis at {args.addr[0]}")


def _serve_redis(args: WorkerArgs) -> None:
    client, pubsub = _redis_subscribe(args, _REDIS_PING)
    signal_ready(args.ready_fd)
    for msg in pubsub.listen():  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        if msg["type"] == "message":
            client.publish(_REDIS_PONG, msg["data"])


def _client_redis(args: WorkerArgs) -> Callable[[], None]:
    client, pubsub = _redis_subscribe(args, _REDIS_PONG)
    signal_ready(args.ready_fd)
    body = os.urandom(args.size)
    size = args.size
    replies = pubsub.listen()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

    def round_trip() -> None:
        if client.publish(_REDIS_PING, body) != 1:
            raise RuntimeError("the echo server is not subscribed to the ping channel")
        for msg in replies:
            if msg["type"] == "message":
                _check_size(len(msg["data"]), size)
                return

    return round_trip


_SERVERS: Final[Mapping[str, Callable[[WorkerArgs], None]]] = MappingProxyType(
    {
        RAW_FIFO: _serve_raw_fifo,
        RAW_FIFO_BIG_PIPE: _serve_raw_fifo,
        UNIX_SOCKET: _serve_unix_socket,
        MP_PIPE: _serve_mp_pipe,
        ZMQ_PAIR: _serve_zmq,
        ZMQ_DEALER_ROUTER: _serve_zmq,
        REDIS_PUBSUB: _serve_redis,
    }
)
_CLIENTS: Final[Mapping[str, Callable[[WorkerArgs], Callable[[], None]]]] = MappingProxyType(
    {
        RAW_FIFO: _client_raw_fifo,
        RAW_FIFO_BIG_PIPE: _client_raw_fifo,
        UNIX_SOCKET: _client_unix_socket,
        MP_PIPE: _client_mp_pipe,
        ZMQ_PAIR: _client_zmq,
        ZMQ_DEALER_ROUTER: _client_zmq,
        REDIS_PUBSUB: _client_redis,
    }
)
