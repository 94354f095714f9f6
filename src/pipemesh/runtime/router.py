"""The router thread and the dispatcher thread of one agent.

The router thread reads the agent's inbox, decodes and reassembles frames and
hands each whole message to a callback; it never runs user code, so a slow
handler never stops the pipe from being drained (up to the queue bound, after
which the pipe fills and senders get ``SendTimeout``: backpressure, not loss).

The dispatcher thread pops messages highest PRIORITY first, first-in
first-out within a priority, and calls the handler. Exceptions from the
handler are reported and never stop it.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

from pipemesh.errors import DecodeError, MeshError
from pipemesh.transport.base import Inbox
from pipemesh.wire import FrameDecoder, Message, NeedData, Reassembler

__all__ = ["Dispatcher", "Router"]

RouteFn = Callable[[Message, int], bool]  # (message, received_ns) -> keep running?
ErrorFn = Callable[[str, str, dict[str, object]], None]  # (event, error, fields)


class Router:
    """Reads one inbox on its own thread and routes whole messages.

    Args:
        inbox: the agent's inbox.
        route: called on the router thread for each message with the receive
            time; returns False to stop the router (after a final drain).
        report: called with (event, error text, fields) for every bad frame.
        max_body_bytes: cap on one message body.
        max_frame_body_bytes: cap on one frame's ``LEN`` (PIPE_BUF on FIFOs).
        partial_timeout_s: parts of a message older than this are dropped.
    """

    def __init__(
        self,
        inbox: Inbox,
        route: RouteFn,
        report: ErrorFn,
        *,
        max_body_bytes: int,
        max_frame_body_bytes: int,
        partial_timeout_s: float = 30.0,
        name: str = "router",
    ) -> None:
        self._inbox = inbox
        self._route = route
        self._report = report
        self._decoder = FrameDecoder(max_frame_body_bytes=max_frame_body_bytes)
        self._assembler = Reassembler(max_body_bytes=max_body_bytes)
        self._partial_timeout_s = partial_timeout_s
        self._last_expire = time.monotonic()
        self.frames = 0
        self.rejected = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def thread(self) -> threading.Thread:
        """The router thread."""
        return self._thread

    def start(self) -> None:
        """Start reading."""
        self._thread.start()

    def join(self, timeout_s: float) -> bool:
        """Wait for the thread to end; True if it did."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            running = True
            while running:
                data = self._inbox.read()
                running = self._consume(data)
            # Final drain: whatever is already in the pipe still gets routed.
            for _ in range(10_000):
                data = self._inbox.read_nowait()
                if not data:
                    break
                self._consume(data, draining=True)
        except MeshError as exc:
            self._report("router_stopped", str(exc), {})
        finally:
            self._inbox.close()

    def _consume(self, data: bytes, *, draining: bool = False) -> bool:
        decoder = self._decoder
        decoder.feed(data)
        now_ns = time.time_ns()
        now = time.monotonic()
        running = True
        while True:
            try:
                frame = decoder.next_frame()
            except DecodeError as exc:
                self.rejected += 1
                self._report(
                    "frame_rejected", str(exc), {"offset": exc.offset, "skipped": exc.skipped}
                )
                continue
            if isinstance(frame, NeedData):
                break
            self.frames += 1
            try:
                msg = self._assembler.add(frame, now)
            except DecodeError as exc:
                self.rejected += 1
                self._report("message_rejected", str(exc), {"from": frame.sender, "id": frame.id})
                continue
            if msg is not None:
                try:
                    if not self._route(msg, now_ns):
                        running = False
                except Exception as exc:  # a routing bug must not kill the router
                    self._report(
                        "route_failed",
                        f"{type(exc).__name__}: {exc}",
                        {"from": msg.sender, "id": msg.id},
                    )
        if self._assembler.pending and now - self._last_expire > 1.0:
            self._last_expire = now
            for expired in self._assembler.expire(now, self._partial_timeout_s):
                self._report("parts_expired", str(expired), {})
        return running or draining


class Dispatcher:
    """A bounded priority queue drained by one handler thread.

    Args:
        handle: called on the dispatcher thread for each message.
        max_queue: messages held before :meth:`put` waits (backpressure).
    """

    def __init__(
        self,
        handle: Callable[[Message, int], None],
        *,
        max_queue: int = 10_000,
        name: str = "dispatcher",
    ) -> None:
        self._handle = handle
        self._max_queue = max_queue
        self._heap: list[tuple[int, int, Message, int]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def thread(self) -> threading.Thread:
        """The dispatcher thread."""
        return self._thread

    @property
    def backlog(self) -> int:
        """Messages waiting for the handler."""
        return len(self._heap)

    def start(self) -> None:
        """Start handling."""
        self._thread.start()

    def put(self, msg: Message, received_ns: int) -> bool:
        """Queue a message; wait while the queue is full. False once closing."""
        with self._cond:
            while len(self._heap) >= self._max_queue and not self._closing:
                self._cond.wait()
            if self._closing and len(self._heap) >= self._max_queue:
                return False
            heapq.heappush(self._heap, (-msg.priority, next(self._seq), msg, received_ns))
            self._cond.notify_all()
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap and not self._closing:
                    self._cond.wait()
                if not self._heap:
                    return
                _, _, msg, received_ns = heapq.heappop(self._heap)
                self._cond.notify_all()
            self._handle(msg, received_ns)

    def close(self, timeout_s: float) -> bool:
        """Handle what is queued (within ``timeout_s``), then stop; True if it stopped."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if threading.current_thread() is self._thread or not self._thread.is_alive():
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
