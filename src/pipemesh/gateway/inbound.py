"""Inbound: NATS -> local pipes, for plain messages and broadcasts.

Each frame from NATS is checked (size, one whole frame, fields, no body file, UTF-8 body, FROM
without ``@``, TO equal to the subject's agent, the source host not ours), its
FROM rewritten to ``sender@source-host``, and written to the local agent's pipe.
Anything else is logged and dropped. Durable messages come in via :mod:`.durable`.
"""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg

from pipemesh.codec import AnyFrameDecoder
from pipemesh.errors import DecodeError, MeshError
from pipemesh.gateway import subjects
from pipemesh.gateway.liveness import Liveness
from pipemesh.wire import NEED_DATA, Frame

__all__ = ["Inbound"]


class Inbound(Liveness):
    """Frames from NATS checked, rewritten and written to local agents."""

    def _check(self, route: subjects.Route, data: bytes, what: str) -> Frame | None:
        """The one frame ``data`` holds, if it is acceptable from ``route.src``."""
        nc = self._nc
        limit = min(nc.max_payload if nc is not None else 1 << 20, self.max_message_bytes)
        if route.src == self.host:
            if what != "broadcast":  # our own broadcasts come back by design; nothing else does
                self._drop("spoofed origin", f"{what} claims to come from this host")
            return None
        if len(data) > limit:
            self._drop("oversized", f"{what} from {route.src}: {len(data)} bytes")
            return None
        decoder = AnyFrameDecoder(max_frame_body_bytes=limit)
        decoder.feed(data)
        decoder.feed(b"")
        try:
            frame = decoder.next_frame()
            extra = decoder.next_frame() if frame is not NEED_DATA else NEED_DATA
        except DecodeError as exc:
            self._drop("malformed", f"{what} from {route.src}: {exc}")
            return None
        if not isinstance(frame, Frame) or extra is not NEED_DATA or frame.parts != 1:
            self._drop("malformed", f"{what} from {route.src}: not exactly one whole frame")
            return None
        if frame.file_bytes:  # the body is in a file on the sender's host: nothing to carry
            self._drop("malformed", f"{what} from {route.src}: a body-file reference (FILE:)")
            return None
        if "@" in frame.sender:
            self._drop("spoofed FROM", f"{what} from {route.src} claims FROM {frame.sender}")
            return None
        try:
            frame.body.decode("utf-8")
        except UnicodeDecodeError:
            self._drop("malformed", f"{what} from {route.src}: body is not UTF-8")
            return None
        return frame

    async def _on_direct(self, msg: Msg) -> None:
        route = subjects.parse(self.mesh, msg.subject)
        if route is None or route.kind != subjects.DIRECT or route.dst != self.host:
            return
        frame = self._check(route, msg.data, "message")
        if frame is None:
            return
        if frame.to != route.agent:
            self._drop("malformed", f"TO {frame.to} does not match subject agent {route.agent}")
            return
        await self._deliver(route.src, frame, frame.to)

    async def _on_broadcast(self, msg: Msg) -> None:
        route = subjects.parse(self.mesh, msg.subject)
        if route is None or route.kind != subjects.BROADCAST:
            return
        frame = self._check(route, msg.data, "broadcast")
        if frame is None or frame.to != "":
            return
        for name, rec in list(self._local.items()):
            if rec.is_active and await self._deliver(route.src, frame, name, broadcast=True):
                continue
            if rec.durable:  # as a local broadcast does: queued for a durable agent away
                frames = self._encode_for(route.src, frame, "", rec)
                try:
                    await self._queue_local(name, frames, frame.id)
                except MeshError as exc:
                    self._drop("not queued", f"broadcast {frame.id} for {name}: {exc}")

    async def _deliver(self, src: str, frame: Frame, to: str, *, broadcast: bool = False) -> bool:
        await self._know_sender(src, frame.sender)
        rec = self._local.get(to) or await asyncio.get_running_loop().run_in_executor(
            None, self._local_record, to
        )
        if rec is None:
            if not broadcast:
                self._drop("unknown agent", f"{frame.id} from {frame.sender}@{src} to {to}")
            return False
        frames = self._encode_for(src, frame, "" if broadcast else to, rec)
        return await self._write_local(to, frames, quiet=broadcast and rec.durable)
