"""Acknowledgements, the spool and handled reports: the slow paths of receiving.

``ack=True`` sends wait for a ``mesh.ack``; a durable agent records what it
handled (:class:`~pipemesh.runtime.durable.HandledLog`) and reports it to
senders in batched ``mesh.handled`` frames; messages queued in its spool are
drained into its router. See docs/delivery.md.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from pathlib import Path
from typing import Final

from pipemesh.codec import AnyFrameDecoder
from pipemesh.errors import (
    DecodeError,
    MeshError,
    SendTimeout,
)
from pipemesh.registry import pid_alive
from pipemesh.runtime.client import MeshClient
from pipemesh.runtime.durable import ACK_BATCH, HandledLog, Unacked
from pipemesh.runtime.router import Router
from pipemesh.runtime.send import (
    ACK,
    CONTROL_PREFIX,
    HANDLED,
)
from pipemesh.spool import Spool, SpoolEntry
from pipemesh.wire import (
    Message,
    NeedData,
    Reassembler,
)

__all__ = ["Acknowledging"]

_MAX_OWED: Final = 4096  # handled IDs owed to one sender whose pipe stays full
_REPORT_BYTES: Final = 3500  # IDs in one mesh.handled frame (with its header: under PIPE_BUF)


class Acknowledging(MeshClient):
    """AgentBase's acknowledgements, spool drain and handled reports (a mixin step)."""

    _router: Router
    _stopped: threading.Event
    _acks: dict[str, tuple[str, threading.Event]]
    _inflight: dict[tuple[str, str], bool]
    _from_spool: dict[tuple[str, str], tuple[SpoolEntry, Message | None]]
    _spool_injected: set[Path]
    _handled_log: HandledLog | None
    _owed: dict[str, list[str]]
    _owed_at: float

    def _unacked_for_send(self) -> Unacked | None:
        unacked = self._unacked
        if unacked is None:
            with self._unacked_lock:
                if self._unacked is None:
                    self._unacked = Unacked(
                        self.spool,
                        self._notify_spooled,
                        self.events.error,
                    )
                    self._unacked.watch(self._peer_gone)
                unacked = self._unacked
        return unacked

    def _peer_gone(self, name: str) -> bool:
        """Watcher thread: True if no process of ``name``'s registry entry runs any more."""
        rec = self._peers.get(name)
        if rec is None:
            rec = self.refresh_peers().get(name)
        return rec is None or not pid_alive(rec.pid, rec.pid_start)

    def _expect_ack(self, to: str, msg_id: str) -> threading.Event:
        event = threading.Event()
        self._acks[msg_id] = (to, event)
        return event

    def _wait_ack(self, waiter: threading.Event, timeout_s: float) -> None:
        if threading.current_thread() is self._router.thread:
            self._router.pump(waiter.is_set, timeout_s)  # we are the reader of the ack
        elif not self._stopped.is_set():
            waiter.wait(timeout_s)

    def _drop_ack(self, msg_id: str) -> None:
        self._acks.pop(msg_id, None)

    def _send_ack(self, msg: Message) -> None:
        try:
            self._send_control(msg.sender, ACK, "", min(self.send_timeout_s, 1.0), msg.id)
        except MeshError as exc:
            self.events.error("ack_failed", str(exc), to=msg.sender, id=msg.id)

    def _drain_spool(self, file_name: str = "") -> None:
        """Route every message waiting in our spool, oldest first (router thread or start).

        With ``file_name`` (a sender's ``mesh.spooled`` names the file it
        queued) only that file, if it is one of ours; otherwise the whole spool.
        """
        try:
            entries = self._spool_entries(file_name)
        except MeshError as exc:
            self.events.error("spool_unreadable", str(exc))
            return
        now_ns = time.time_ns()
        for entry in entries:
            if entry.path in self._spool_injected:
                continue  # already in the router's queue
            msg = self._read_spooled(entry)
            if msg is None:
                continue
            key = (msg.sender, msg.id)
            if key in self._from_spool:
                Spool.remove(entry)  # the same message queued twice (a retry): one is enough
                continue
            self._from_spool[key] = (entry, msg)
            self._spool_injected.add(entry.path)
            if not self._router.inject(msg, now_ns):
                if key in self._inflight:
                    # Another copy (from the pipe) waits for the handler: keep the file
                    # until that copy is handled, so a crash meanwhile loses nothing.
                    self._from_spool[key] = (entry, None)
                else:
                    self._spooled_done(key)

    def _spool_entries(self, file_name: str) -> list[SpoolEntry]:
        if file_name:
            directory = self.spool.directory(self.agent_name)
            fields = file_name.split("-", 4)
            path = directory / file_name
            if (
                "/" not in file_name
                and file_name.endswith(".msg")
                and len(fields) == 5
                and fields[3].isdigit()
            ):  # gone already: a full drain took it
                return [SpoolEntry(path, int(fields[3]))] if path.exists() else []
        return self.spool.entries(self.agent_name)

    def _read_spooled(self, entry: SpoolEntry) -> Message | None:
        data = Spool.read(entry)
        if data is None:
            return None
        decoder = AnyFrameDecoder(max_frame_body_bytes=self.transport.max_frame_bytes)
        assembler = Reassembler(max_body_bytes=self.max_body_bytes)
        decoder.feed(data)
        decoder.feed(b"")
        msg: Message | None = None
        error = ""
        try:
            while msg is None:
                frame = decoder.next_frame()
                if isinstance(frame, NeedData):
                    break
                msg = assembler.add(frame, 0.0)
        except DecodeError as exc:
            error = str(exc)
        if msg is not None and (msg.msg_type.startswith(CONTROL_PREFIX) or msg.sender == ""):
            error = f"control message {msg.msg_type} in a spool file"
            msg = None
        if msg is None:
            bad = entry.path.with_name(entry.path.name + ".rejected")
            with contextlib.suppress(OSError):
                os.replace(entry.path, bad)
            self.events.error(
                "spool_rejected",
                f"{entry.path.name} is not one whole message ({error or 'no frame'}); "
                f"kept as {bad.name}",
            )
        return msg

    def _spooled_done(self, key: tuple[str, str]) -> None:
        spooled = self._from_spool.pop(key, None)
        if spooled is not None:
            self._spool_injected.discard(spooled[0].path)
            Spool.remove(spooled[0])

    # -- durable: the record of handled messages and the reports to their senders --

    def _mark_handled(self, msg: Message) -> None:
        """Record (sender, ID) as handled, before anything acknowledges it."""
        log = self._handled_log
        if log is None:
            return
        try:
            log.record(msg.sender, msg.id)
        except OSError as exc:
            self.events.error(
                "handled_record_failed",
                f"cannot record message {msg.id} as handled in {log.path}: {exc.strerror}; "
                "it may be handled again after a crash",
                id=msg.id,
            )
        self._owe_report(msg.sender, msg.id)

    def _owe_report(self, sender: str, msg_id: str) -> None:
        rec = self._peers.get(sender)
        if rec is None or not rec.is_active:
            return  # a bare client (it spooled first) or a sender that is gone: nobody to tell
        owed = self._owed.get(sender)
        if owed is None:
            owed = self._owed[sender] = []
        owed.append(msg_id)
        if len(owed) >= ACK_BATCH:
            self._send_reports(sender)

    def _send_reports(self, only: str = "") -> None:
        """Tell senders which of their messages were handled (``mesh.handled``, batched)."""
        for name in [only] if only else list(self._owed):
            ids = self._owed.pop(name, None)
            start = 0
            while ids and start < len(ids):
                # One frame per report (a write of one frame is all or nothing), no waiting.
                end, size = start, 0
                while end < len(ids) and size + len(ids[end]) < _REPORT_BYTES:
                    size += len(ids[end]) + 1
                    end += 1
                try:
                    self._send_control(name, HANDLED, " ".join(ids[start:end]), 0.0)
                except SendTimeout:
                    # Its pipe is full (a stopped process?): retry with the next batch,
                    # bounded; what it never hears of it keeps, and we drop its replays.
                    self._owed[name] = (ids[start:] + self._owed.get(name, []))[-_MAX_OWED:]
                    break
                except MeshError:
                    break  # gone: what it kept went (or goes) to our spool; replays are dropped
                start = end
        self._owed_at = time.monotonic()

    def _settle_unacked(self, timeout_s: float) -> None:
        """On close: wait a little for durable peers' reports, then spool what they still lack.

        A peer that is merely slow handles its pipe copy and drops the spooled
        one; a peer that dies later finds the message in its spool.
        """
        unacked = self._unacked
        if unacked is None:
            return
        deadline = time.monotonic() + timeout_s
        left = unacked.count()
        while left and time.monotonic() < deadline:  # as long as the peers make progress
            if threading.current_thread() is self._router.thread:
                self._router.pump(functools.partial(_fewer, unacked, left), 1.0)
            else:
                unacked.wait_empty(1.0)
            now_left = unacked.count()
            if now_left >= left:
                break
            left = now_left
        self._spool_unacked(unacked)
        unacked.close()

    def _spool_unacked(self, unacked: Unacked) -> None:
        for peer in unacked.peers():
            try:
                unacked.move_to_spool(peer)
            except MeshError as exc:
                self.events.error("unacked_not_spooled", str(exc), to=peer)


def _fewer(unacked: Unacked, than: int) -> bool:
    return unacked.count() < than
