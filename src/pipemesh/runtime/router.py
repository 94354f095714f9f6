"""The router thread of one agent: read, decode, route, and run the handler.

One thread does it all, on purpose: on small VMs every hand-off between
threads costs a wake-up and a GIL transfer (tens of microseconds here), more
than the whole pipe round trip. So the router reads the inbox, decodes and
reassembles frames, routes each whole message (control frames, replies to
``ask``, misrouted frames are settled right there), and queues the rest in a
priority heap. Between two handler calls it reads whatever arrived meanwhile
without blocking, so under a backlog the highest PRIORITY is always handled
next, first-in first-out within a priority.

The heap is bounded: when it is full the router stops reading, the pipe
fills, and senders get ``SendTimeout`` (backpressure, never silent loss).
That holds while a handler waits in ``ask()`` too (:meth:`Router.pump`).
Exceptions from the handler are reported and never stop the router.

Every frame arrives in one atomic write (FIFO writes of at most PIPE_BUF, the
memory transport's whole frames), and a read takes everything readable. So a
frame still incomplete when nothing more is readable will never complete: its
``LEN`` lied. The router then tells the decoder (``mark_boundary``), which
reports the frame and resynchronises, instead of letting it stall every later
message until that many bytes arrive.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

from pipemesh.codec import AnyFrameDecoder
from pipemesh.errors import DecodeError, MeshError
from pipemesh.transport.base import Inbox
from pipemesh.wire import Frame, Message, Reassembler

__all__ = ["Router"]

RouteFn = Callable[[Message, int], bool]  # (message, received_ns) -> queue it for the handler?
HandleFn = Callable[[Message, int], None]
ErrorFn = Callable[[str, str, dict[str, object]], None]  # (event, error, fields)


class Router:
    """Reads one inbox on its own thread, routes messages and runs the handler.

    Args:
        inbox: the agent's inbox.
        route: called for each whole message with its receive time; returns
            True to queue it for ``handle``.
        handle: runs the user's handler (must not raise).
        report: called with (event, error text, fields) for every bad frame.
        max_body_bytes: cap on one message body.
        max_frame_body_bytes: cap on one frame's ``LEN`` (PIPE_BUF on FIFOs).
        max_queue: messages held for the handler before reading pauses.
        partial_timeout_s: parts of a message older than this are dropped.
        on_exit: called on the router thread when it ends, for whatever reason.
        take_body: reads the body file a ``FILE`` frame refers to and returns the
            whole message, or raises DecodeError (runtime/bodies.py); None: such
            frames are rejected.
    """

    def __init__(
        self,
        inbox: Inbox,
        route: RouteFn,
        handle: HandleFn,
        report: ErrorFn,
        *,
        max_body_bytes: int,
        max_frame_body_bytes: int,
        max_queue: int = 10_000,
        partial_timeout_s: float = 30.0,
        name: str = "router",
        on_exit: Callable[[], None] = lambda: None,
        take_body: Callable[[Frame], Message] | None = None,
    ) -> None:
        self._on_exit = on_exit
        self._take_body = take_body
        self._inbox = inbox
        self._route = route
        self._handle = handle
        self._report = report
        self._decoder = AnyFrameDecoder(max_frame_body_bytes=max_frame_body_bytes)
        self._assembler = Reassembler(max_body_bytes=max_body_bytes)
        self._max_body_bytes = max_body_bytes
        self._partial_timeout_s = partial_timeout_s
        self._max_queue = max_queue
        self._heap: list[tuple[int, int, Message, int]] = []
        self._seq = itertools.count()
        self._last_expire = time.monotonic()
        self._direct_ns = 0  # receive time of the message _consume returned
        self._stopping = False
        self._stop_event = threading.Event()
        self._full_reported = False
        # Called once when the pipe stayed empty for idle_delay_s, then cleared (set by a
        # durable agent that owes its senders a report of what it handled: batched).
        self.idle_hook: Callable[[], None] | None = None
        self.idle_delay_s = 0.0
        self.frames = 0
        self.rejected = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def thread(self) -> threading.Thread:
        """The router thread."""
        return self._thread

    @property
    def backlog(self) -> int:
        """Messages waiting for the handler."""
        return len(self._heap)

    def start(self) -> None:
        """Start reading."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the router to finish: it drains the pipe and the heap, then exits.

        The caller must then make a blocked read return (write to the inbox).
        """
        self._stopping = True
        self._stop_event.set()

    def join(self, timeout_s: float) -> bool:
        """Wait for the thread to end; True if it did (or it never started)."""
        if self._thread.ident is not None and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        inbox = self._inbox
        heap = self._heap
        handle = self._handle
        heappop = heapq.heappop
        # True when a handler ran since the last read: only then can something have
        # arrived that the heap does not hold yet. Right after a blocking read the
        # extra non-blocking read would almost always fail with EAGAIN, and raising
        # and catching that BlockingIOError cost more per message than the decode.
        stale = False
        try:
            while not self._stopping:
                if not heap:
                    hook = self.idle_hook
                    if hook is not None:
                        data = inbox.read(self.idle_delay_s)
                        if not data:  # idle: run the hook, then block
                            self.idle_hook = None
                            hook()
                            data = inbox.read()
                        msg = self._consume(data, True)
                    else:
                        msg = self._consume(inbox.read(), True)
                    if msg is None:
                        stale = False
                        continue
                    # The read's only message, nothing queued: handled without the heap.
                    handle(msg, self._direct_ns)
                    stale = True
                    continue
                if stale and len(heap) < self._max_queue:
                    data = inbox.read(0)  # pick up what arrived, so priority is honoured
                    if data:
                        self._consume(data)
                _, _, msg, received_ns = heappop(heap)  # _handle_next, inline
                handle(msg, received_ns)
                stale = True
            self._drain(drain_s=5.0)
        except MeshError as exc:
            self._report("router_stopped", str(exc), {})
        except Exception as exc:  # a bug here must be reported, never silent
            self._report("router_crashed", f"{type(exc).__name__}: {exc}", {})
        finally:
            inbox.close()
            self._on_exit()

    def _drain(self, drain_s: float) -> None:
        """On stop: route what is already in the pipe and handle the heap, bounded in time."""
        deadline = time.monotonic() + drain_s
        for _ in range(1_000_000):
            data = self._inbox.read(0)
            if data:
                self._consume(data)
            if self._heap:
                self._handle_next()
            elif not data:
                return
            if time.monotonic() > deadline:
                self._report(
                    "drain_timeout",
                    f"stopped with {len(self._heap)} messages not handled after {drain_s:g}s",
                    {"dropped": len(self._heap)},
                )
                return

    def _handle_next(self) -> None:
        _, _, msg, received_ns = heapq.heappop(self._heap)
        self._handle(msg, received_ns)

    def pump(self, done: Callable[[], bool], timeout_s: float) -> None:
        """Read and route (without handling) until ``done()`` or the timeout.

        For ``ask`` called from inside a handler: the router thread is busy in
        that handler, so it reads the reply itself; other messages are queued,
        up to ``max_queue``. Past that it stops reading (senders then see a full
        pipe and ``SendTimeout``) and waits for the timeout or :meth:`stop`; the
        reply, stuck behind them in the pipe, is then not seen.
        """
        deadline = time.monotonic() + timeout_s
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if len(self._heap) >= self._max_queue:
                if not self._full_reported:
                    self._full_reported = True
                    self._report(
                        "queue_full",
                        f"{len(self._heap)} messages wait while a handler waits in ask(); "
                        "not reading the pipe until the handler returns",
                        {"backlog": len(self._heap)},
                    )
                if self._stop_event.wait(min(remaining, 1.0)):
                    return
                continue
            self._full_reported = False
            data = self._inbox.read(remaining)
            if data:
                self._consume(data)

    def inject(self, msg: Message, received_ns: int) -> bool:
        """Route one whole message that did not come through the pipe (a spooled one).

        Call it on the router thread, or before :meth:`start`. Returns whether
        the message was queued for the handler.
        """
        if self._route(msg, received_ns):
            heapq.heappush(self._heap, (-msg.priority, next(self._seq), msg, received_ns))
            return True
        return False

    def _consume(self, data: bytes, direct: bool = False) -> Message | None:
        """Decode and route one read's bytes; routed messages go on the heap.

        With ``direct`` (the run loop, heap empty): a read that brought exactly one
        routed message and nothing else is returned instead, for the caller to handle
        at once (its receive time in ``_direct_ns``): the heap would hand it straight
        back anyway, so the order is the same, without the push and the pop.
        """
        decoder = self._decoder
        now_ns = time.time_ns()
        now = time.monotonic()
        single: Message | None = None
        items = decoder.decode_all(self._max_body_bytes, data)
        if len(items) == 1 and items[0].__class__ is Message:
            # _route_items, inline for its common case: one whole message per read.
            msg: Message = items[0]  # checked just above
            self.frames += 1
            try:
                if self._route(msg, now_ns):
                    if direct:
                        single = msg
                    else:
                        heapq.heappush(self._heap, (-msg.priority, next(self._seq), msg, now_ns))
            except Exception as exc:  # a routing bug must not kill the router
                self._report(
                    "route_failed",
                    f"{type(exc).__name__}: {exc}",
                    {"from": msg.sender, "id": msg.id},
                )
        else:
            self._route_items(items, now_ns, now)
        if len(decoder._buf) > decoder._pos:  # .buffered, inline; rare: the read ended mid-frame
            # Bounded: each round either takes new bytes or marks the boundary.
            for _ in range(16):
                more = self._inbox.read(0)
                if more:
                    decoder.feed(more)
                else:
                    # Nothing more is readable, so the incomplete frame never will be.
                    decoder.mark_boundary()
                    self._route_frames(now_ns, now)
                    break
                self._route_frames(now_ns, now)
                if not decoder.buffered:
                    break
        if now - self._last_expire > 1.0 and self._assembler.pending:
            self._last_expire = now
            for expired in self._assembler.expire(now, self._partial_timeout_s):
                self._report("parts_expired", str(expired), {})
        if single is not None:
            if not self._heap:
                self._direct_ns = now_ns
                return single
            # More arrived in the same read (a frame cut by the read): priority order.
            heapq.heappush(self._heap, (-single.priority, next(self._seq), single, now_ns))
        return None

    def _route_frames(self, now_ns: int, now: float) -> None:
        """Decode and route every whole frame the decoder holds."""
        self._route_items(self._decoder.decode_all(self._max_body_bytes), now_ns, now)

    def _route_items(
        self, items: list[Message | Frame | DecodeError], now_ns: int, now: float
    ) -> None:
        """Route what one decode_all call returned.

        A one-part binary frame arrives as its Message already; text frames and
        parts go through the reassembler; bad frames arrive as their DecodeError.
        """
        heap = self._heap
        route = self._route
        for item in items:
            if item.__class__ is Message:
                msg = item
            elif isinstance(item, DecodeError):
                self.rejected += 1
                self._report(
                    "frame_rejected", str(item), {"offset": item.offset, "skipped": item.skipped}
                )
                continue
            else:
                frame: Frame = item  # type: ignore[assignment]  # the only other kind
                whole: Message | None
                try:
                    if frame.file_bytes and self._take_body is not None:  # hook: body file
                        whole = self._take_body(frame)
                    else:
                        whole = self._assembler.add(frame, now)
                except DecodeError as exc:
                    self.frames += 1
                    self.rejected += 1
                    self._report(
                        "message_rejected", str(exc), {"from": frame.sender, "id": frame.id}
                    )
                    continue
                if whole is None:
                    self.frames += 1
                    continue
                msg = whole
            self.frames += 1
            try:
                if route(msg, now_ns):
                    heapq.heappush(heap, (-msg.priority, next(self._seq), msg, now_ns))
            except Exception as exc:  # a routing bug must not kill the router
                self._report(
                    "route_failed",
                    f"{type(exc).__name__}: {exc}",
                    {"from": msg.sender, "id": msg.id},
                )
