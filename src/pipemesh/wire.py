"""Sans-IO framing for pipemesh: bytes in, frames out; frames in, bytes out.

The frame is the seed's readable text frame, with a few extra header fields::

    [FROM:claude_code|TO:gemini|PRIORITY:1|TYPE:question|ID:msg_001|LEN:43|TS:1732183200000000000]
    How should we structure the data pipeline?
    ===END_MESSAGE===

* ``LEN`` is the body length in bytes, so a body may contain anything, the end
  marker line included; the marker after the body becomes a check.
* ``TS`` is the sender's wall clock in nanoseconds (for latency).
* ``RE`` (optional) is the ID of the message this one answers.
* ``ACK:1`` (optional) asks the receiver for a ``mesh.ack`` control frame
  (``RE`` = this ID) once its handler has taken the message.
* ``FILE`` (optional, bytes) says the body is not in the frame (``LEN:0``) but in
  a file of that size in the mesh home, at a path the *reader* derives from
  (its own name, ``FROM``, ``ID``); the runtime reads it (docs/frames.md). This
  module never does: :class:`Reassembler` refuses such a frame.
* ``PART`` (optional, ``i/n``) marks one part of a message split into parts.
  A FIFO write is atomic only up to PIPE_BUF (4096 B on Linux, 512 B on macOS),
  so the FIFO transport writes every message as parts of at most its platform's
  PIPE_BUF each; parts from many writers may interleave, and :class:`Reassembler`
  joins them by ID.

An empty ``TO`` is a broadcast. Unknown header keys are ignored (forward
compatibility); a header never holds ``|``, ``]`` or a newline inside a value
because every value is validated against a strict charset.

Three verbs, as in h11: ``decoder.feed(data)``, ``decoder.next_frame()`` (a
:class:`Frame` or :data:`NEED_DATA`), and :func:`encode`. The decoder skips
garbage and resynchronises on the next ``[FROM:``; it raises nothing but
:class:`~pipemesh.errors.DecodeError`, and after raising it stays usable.
A reader whose writers send each frame in one atomic write (a FIFO) calls
``decoder.mark_boundary()`` when nothing more is readable: a frame still
incomplete then can never complete (its ``LEN`` lies), so it is reported and
skipped instead of stalling every later frame.

This module does no I/O, starts no threads, reads no clock and logs nothing:
timestamps and ids are passed in by the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import msgspec

from pipemesh.errors import DecodeError, EncodeError

__all__ = [
    "END_MARKER",
    "MAX_BODY_BYTES",
    "MAX_FILE_BYTES",
    "MAX_HEADER_BYTES",
    "NEED_DATA",
    "PART_COST_BYTES",
    "PIPE_BUF",
    "Frame",
    "FrameDecoder",
    "Message",
    "NeedData",
    "Priority",
    "Reassembler",
    "encode",
    "encode_message",
    "is_valid_id",
    "is_valid_name",
    "validate_name",
    "validate_type",
]

PIPE_BUF: Final = 4096
"""Default frame size: Linux's PIPE_BUF (POSIX minimum 512). The FIFO transport
asks the platform for its own value; this module never does I/O."""

MAX_HEADER_BYTES: Final = 1024
"""Longest header line accepted, ``[`` to ``]`` inclusive."""

MAX_BODY_BYTES: Final = 16 * 1024 * 1024
"""Default cap on one message body (all parts together)."""

MAX_PARTS: Final = 1 << 20
"""Upper bound on the part count a header may announce."""

MAX_FILE_BYTES: Final = (1 << 63) - 1
"""Upper bound on a ``FILE`` size (the reader's ``max_body_bytes`` is the real cap)."""

PART_COST_BYTES: Final = 256
"""What each held part counts against ``max_pending_bytes`` on top of its body.

Roughly a part's header plus the memory Python spends to keep it: without it,
empty parts would cost nothing and a peer could make a reader hold a million.
"""

HEADER_START: Final = b"[FROM:"
HEADER_END: Final = b"]\n"
END_MARKER: Final = b"===END_MESSAGE==="
TRAILER: Final = b"\n" + END_MARKER + b"\n"

NAME_MAX: Final = 64
TYPE_MAX: Final = 32
ID_MAX: Final = 64

# A name, or ``name@host``: a remote agent's entry, written by a gateway (docs/gateway.md).
_NAME_RE: Final = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}(?:@[A-Za-z0-9][A-Za-z0-9_.\-]{0,63})?"
)
_TYPE_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,31}")
_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_KEY_RE: Final = re.compile(r"[A-Z][A-Z0-9_]{0,15}")
_REQUIRED: Final = ("FROM", "TO", "PRIORITY", "TYPE", "ID", "LEN")
_N = rb"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"
_A = _N + rb"(?:@" + _N + rb")?"  # FROM/TO: a name or name@host
# The header exactly as encode() writes it; anything else takes the general parser.
_FAST_HEADER: Final = re.compile(
    rb"\[FROM:(" + _A + rb")\|TO:((?:" + _A + rb")?)\|PRIORITY:([0-3])"
    rb"\|TYPE:([A-Za-z][A-Za-z0-9_.\-]{0,31})\|ID:(" + _N + rb")\|LEN:([0-9]{1,10})"
    rb"\|TS:([0-9]{1,19})(?:\|RE:(" + _N + rb"))?(\|ACK:1)?"
    rb"(?:\|PART:([0-9]{1,7})/([0-9]{1,7}))?\]\n"
)


class Priority(IntEnum):
    """The seed's four priorities; higher is handled first under a backlog."""

    LOW = 0
    NORMAL = 1
    URGENT = 2
    CRITICAL = 3


class NeedData:
    """Type of the :data:`NEED_DATA` sentinel."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()
"""Returned by :meth:`FrameDecoder.next_frame` when more bytes are needed."""


def is_valid_name(name: str) -> bool:
    """Return True if ``name`` is a valid agent name."""
    return _NAME_RE.fullmatch(name) is not None and ".." not in name


def is_valid_id(msg_id: str) -> bool:
    """Return True if ``msg_id`` is a valid message id."""
    return isinstance(msg_id, str) and _ID_RE.fullmatch(msg_id) is not None


def validate_name(name: str, what: str = "agent name") -> str:
    """Return ``name`` if it is a valid agent name, else raise ValueError.

    Valid names are 1 to 64 characters of ``A-Z a-z 0-9 _ . -``, start with a
    letter or digit and hold no ``..``: they can never escape the pipes
    directory or inject a header field. ``name@host`` (two such names) is a
    remote agent: only a gateway registers it (docs/gateway.md).
    """
    if not isinstance(name, str) or not is_valid_name(name):
        raise ValueError(
            f"{what} {name!r} is not valid: use 1-{NAME_MAX} characters of A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit"
        )
    return name


def validate_type(msg_type: str) -> str:
    """Return ``msg_type`` if it is a valid message type, else raise ValueError."""
    if not isinstance(msg_type, str) or _TYPE_RE.fullmatch(msg_type) is None:
        raise ValueError(
            f"message type {msg_type!r} is not valid: use 1-{TYPE_MAX} characters of "
            "A-Z a-z 0-9 _ . -, starting with a letter"
        )
    return msg_type


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame on the wire: a header and the raw body bytes of this part."""

    sender: str
    to: str
    priority: int
    msg_type: str
    id: str
    body: bytes
    sent_ns: int = 0
    reply_to: str = ""
    part: int = 1
    parts: int = 1
    ack: bool = False
    file_bytes: int = 0  # FILE: the body (this many bytes) is in a body file; body is b""


class Message(msgspec.Struct, frozen=True, gc=False):
    """A whole message as an agent sees it: the header plus the UTF-8 body text.

    Immutable, compared and hashed by value, with a dataclass-style ``repr``. It is a
    ``msgspec.Struct`` rather than a frozen dataclass because one is built per message
    on the hot path: a Struct is built in C (~0.2 us), a frozen dataclass's ``__init__``
    sets each field through ``object.__setattr__`` in Python (~2.5 us). The only
    difference for users: copy with changes via ``msgspec.structs.replace``, not
    ``dataclasses.replace``.

    Attributes:
        sender: the seed's ``FROM``.
        to: the seed's ``TO``; empty for a broadcast.
        priority: 0 low, 1 normal, 2 urgent, 3 critical.
        msg_type: the seed's ``TYPE`` (question, response, status, directive, ...).
        id: the seed's ``ID``, unique per message.
        body: the message text, exactly as sent.
        sent_ns: sender's ``time.time_ns()`` when it sent the message.
        reply_to: ID of the message this one answers, or empty.
        ack: the sender waits for a ``mesh.ack`` (the runtime sends it).
    """

    sender: str
    to: str
    priority: int
    msg_type: str
    id: str
    body: str
    sent_ns: int = 0
    reply_to: str = ""
    ack: bool = False

    @property
    def is_broadcast(self) -> bool:
        """True when the message was sent to every agent (empty ``TO``)."""
        return self.to == ""


def _check_frame(frame: Frame) -> None:
    if not is_valid_name(frame.sender):
        raise EncodeError(f"FROM {frame.sender!r} is not a valid agent name")
    if frame.to and not is_valid_name(frame.to):
        raise EncodeError(f"TO {frame.to!r} is not a valid agent name")
    if _TYPE_RE.fullmatch(frame.msg_type) is None:
        raise EncodeError(f"TYPE {frame.msg_type!r} is not a valid message type")
    if _ID_RE.fullmatch(frame.id) is None:
        raise EncodeError(f"ID {frame.id!r} is not a valid message id")
    if frame.reply_to and _ID_RE.fullmatch(frame.reply_to) is None:
        raise EncodeError(f"RE {frame.reply_to!r} is not a valid message id")
    if isinstance(frame.priority, bool) or not isinstance(frame.priority, int):
        raise EncodeError(f"PRIORITY must be an int 0..3, got {frame.priority!r}")
    if not 0 <= frame.priority <= 3:
        raise EncodeError(f"PRIORITY must be 0..3, got {frame.priority}")
    if frame.sent_ns < 0:
        raise EncodeError(f"TS must be >= 0, got {frame.sent_ns}")
    if not 1 <= frame.part <= frame.parts <= MAX_PARTS:
        raise EncodeError(f"PART {frame.part}/{frame.parts} is out of range")
    if frame.file_bytes and (
        not 0 < frame.file_bytes <= MAX_FILE_BYTES or frame.body or frame.parts != 1
    ):
        raise EncodeError(
            f"FILE {frame.file_bytes} needs 1..2**63-1, an empty body and no PART "
            f"(got a body of {len(frame.body)} bytes, PART {frame.part}/{frame.parts})"
        )


def _header(frame: Frame, body_len: int, part: int, parts: int) -> bytes:
    text = (
        f"[FROM:{frame.sender}|TO:{frame.to}|PRIORITY:{int(frame.priority)}|TYPE:{frame.msg_type}"
        f"|ID:{frame.id}|LEN:{body_len}|TS:{frame.sent_ns}"
    )
    if frame.reply_to:
        text += f"|RE:{frame.reply_to}"
    if frame.ack:
        text += "|ACK:1"
    if parts != 1:
        text += f"|PART:{part}/{parts}"
    if frame.file_bytes:
        text += f"|FILE:{frame.file_bytes}"
    return (text + "]\n").encode("ascii")


def encode(frame: Frame) -> bytes:
    """Encode one frame to bytes.

    Raises:
        EncodeError: a header field cannot be carried by the format.
    """
    _check_frame(frame)
    return _header(frame, len(frame.body), frame.part, frame.parts) + frame.body + TRAILER


def encode_message(
    sender: str,
    to: str,
    body: bytes,
    *,
    msg_id: str,
    priority: int = 1,
    msg_type: str = "response",
    sent_ns: int = 0,
    reply_to: str = "",
    max_frame_bytes: int = PIPE_BUF,
    check: bool = True,
    ack: bool = False,
) -> list[bytes]:
    """Encode a message as one or more frames, each at most ``max_frame_bytes`` long.

    A message whose single frame fits is one frame without ``PART``; a larger
    one is split into ``PART:i/n`` frames that :class:`Reassembler` joins.

    Args:
        check: validate every header field (pass False only when the caller
            already validated them, as the runtime does once per peer name).
        ack: ask the receiver for an acknowledgement (``ACK:1``).

    Raises:
        EncodeError: a header field is invalid, or ``max_frame_bytes`` leaves no
            room for a body.
    """
    if not check and len(body) + 400 <= max_frame_bytes:
        # Hot path: names, type and ids were validated by the caller, so the
        # header is at most ~330 bytes and the message fits one frame.
        re_field = f"|RE:{reply_to}" if reply_to else ""
        if ack:
            re_field += "|ACK:1"
        head = (
            f"[FROM:{sender}|TO:{to}|PRIORITY:{priority}|TYPE:{msg_type}"
            f"|ID:{msg_id}|LEN:{len(body)}|TS:{sent_ns}{re_field}]\n"
        )
        return [b"".join((head.encode("ascii"), body, TRAILER))]
    proto = Frame(sender, to, priority, msg_type, msg_id, b"", sent_ns, reply_to, ack=ack)
    if check:
        _check_frame(proto)
    single = _header(proto, len(body), 1, 1)
    if len(single) + len(body) + len(TRAILER) <= max_frame_bytes:
        return [single + body + TRAILER]
    # Size the part budget for the widest header this message can have.
    worst = _header(proto, max_frame_bytes, MAX_PARTS, MAX_PARTS)
    room = max_frame_bytes - len(worst) - len(TRAILER)
    if room <= 0:
        raise EncodeError(f"max_frame_bytes={max_frame_bytes} leaves no room for a body")
    parts = -(-len(body) // room)
    if parts > MAX_PARTS:
        raise EncodeError(f"body of {len(body)} bytes needs {parts} parts, limit is {MAX_PARTS}")
    view = memoryview(body)
    out = []
    for i in range(parts):
        chunk = view[i * room : (i + 1) * room]
        out.append(b"".join((_header(proto, len(chunk), i + 1, parts), chunk, TRAILER)))
    return out


class FrameDecoder:
    """Incremental decoder: feed bytes, take frames.

    Args:
        max_frame_body_bytes: largest ``LEN`` accepted in one frame. A FIFO
            reader sets this to PIPE_BUF, since every well-behaved FIFO writer
            sends parts that small; a bigger claim is then rejected at once.
        max_header_bytes: longest header accepted.

    After :meth:`next_frame` raises :class:`DecodeError`, the bad bytes are
    already discarded; call it again to continue with the next frame.
    """

    __slots__ = ("_buf", "_cut", "_eof", "_max_body", "_max_header", "_offset", "_pos")

    def __init__(
        self,
        *,
        max_frame_body_bytes: int = MAX_BODY_BYTES,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._offset = 0  # stream offset of _buf[0]
        self._eof = False
        self._cut = False  # mark_boundary() was called and nothing was fed since
        self._max_body = max_frame_body_bytes
        self._max_header = max_header_bytes

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet part of a returned frame."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes from the stream; ``b""`` means end of stream."""
        if not data:
            self._eof = True
            return
        self._cut = False
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._offset += self._pos
            self._pos = 0
        self._buf += data

    def mark_boundary(self) -> None:
        """Say that no more bytes are available now, and that frames are never split.

        For streams where every frame arrives in one atomic write (a FIFO
        written in frames of at most PIPE_BUF, read with a buffer at least the
        pipe's size): a frame that is still incomplete at the end of the data
        will never be completed by later bytes. :meth:`next_frame` then raises
        :class:`DecodeError` for it and resynchronises at the next frame start,
        instead of waiting for bytes that belong to later frames. The next
        :meth:`feed` clears the mark.
        """
        self._cut = True

    def _resync_point(self, start: int) -> int:
        """Index of the next possible frame start at or after ``start``.

        Keeps a tail that may be the beginning of a header split across feeds.
        """
        buf = self._buf
        nxt = buf.find(HEADER_START, start)
        if nxt >= 0:
            return nxt
        if not (self._eof or self._cut):
            for keep in range(min(len(HEADER_START) - 1, len(buf) - start), 0, -1):
                if HEADER_START.startswith(buf[len(buf) - keep :]):
                    return len(buf) - keep
        return len(buf)

    def _skip(self, start: int, reason: str) -> DecodeError:
        """Discard the bad frame at ``start`` up to the next candidate header."""
        end = self._resync_point(start + 1)
        skipped = end - self._pos
        offset = self._offset + self._pos
        self._pos = end
        return DecodeError(reason, offset=offset, skipped=skipped)

    def next_frame(self) -> Frame | NeedData:
        """Return the next whole frame, or :data:`NEED_DATA`.

        Raises:
            DecodeError: bytes at the head of the stream are not a valid frame
                (they have been discarded), or the stream ended mid-frame.
        """
        buf = self._buf
        pos = self._pos
        if not buf.startswith(HEADER_START, pos):
            start = self._resync_point(pos)
            if start == pos:  # empty, or only a possible header start awaiting more bytes
                return NEED_DATA
            self._pos = start
            raise DecodeError(
                f"skipped {start - pos} bytes of garbage before a frame",
                offset=self._offset + pos,
                skipped=start - pos,
            )
        fast = _FAST_HEADER.match(buf, pos)
        if fast is not None:
            return self._fast_frame(fast)
        end = buf.find(HEADER_END, pos, pos + self._max_header)
        if end < 0:
            if len(buf) - pos >= self._max_header:
                raise self._skip(pos, f"header longer than {self._max_header} bytes")
            if self._eof:
                raise self._skip(pos, "stream ended inside a frame header")
            if self._cut:
                raise self._skip(pos, "frame header cut short with nothing more to read")
            return NEED_DATA
        try:
            header = self._parse_header(bytes(buf[pos + 1 : end]))
        except DecodeError as exc:
            raise self._skip(pos, str(exc)) from None
        body = self._take_body(pos, end + len(HEADER_END), header[5])
        if body is None:
            return NEED_DATA
        sender, to, priority, msg_type, msg_id, _, sent_ns, reply_to, part, parts, ack, file_b = (
            header
        )
        return Frame(
            sender,
            to,
            priority,
            msg_type,
            msg_id,
            body,
            sent_ns,
            reply_to,
            part,
            parts,
            ack,
            file_b,
        )

    def _take_body(self, pos: int, body_start: int, length: int) -> bytes | None:
        """Consume and return the body of the frame at ``pos``; None until it is all here.

        Raises:
            DecodeError: the stream ended first, or the end marker is missing.
        """
        buf = self._buf
        frame_end = body_start + length + len(TRAILER)
        if len(buf) < frame_end:
            if self._eof:
                raise self._skip(pos, "stream ended inside a frame body")
            if self._cut:
                got = max(0, len(buf) - body_start)
                raise self._skip(
                    pos,
                    f"frame says LEN:{length} but only {got} body bytes came and nothing "
                    "more is readable; a frame is one write, so it was skipped as garbage",
                )
            return None
        if not buf.startswith(TRAILER, body_start + length):
            raise self._skip(pos, f"no {END_MARKER.decode()} after a body of LEN:{length} bytes")
        body = bytes(buf[body_start : body_start + length])
        if frame_end == len(buf):
            buf.clear()  # the common case: the read ended on a frame boundary
            self._offset += frame_end
            self._pos = 0
        else:
            self._pos = frame_end
        return body

    def _fast_frame(self, m: re.Match[bytes]) -> Frame | NeedData:
        """A canonical header matched in one regex; values still get their semantic checks."""
        sender_b, to_b, prio_b, type_b, id_b, len_b, ts_b, re_b, ack_b, part_b, parts_b = m.groups()
        pos = self._pos
        length = int(len_b)
        if b".." in sender_b or b".." in to_b or length > self._max_body:
            # Let the general parser produce the precise error.
            end = m.end() - len(HEADER_END)
            try:
                self._parse_header(bytes(self._buf[pos + 1 : end]))
            except DecodeError as exc:
                raise self._skip(pos, str(exc)) from None
        part, parts = 1, 1
        if part_b is not None:
            part, parts = int(part_b), int(parts_b)
            if not 1 <= part <= parts:
                raise self._skip(pos, f"PART {part}/{parts} is not i/n with 1 <= i <= n")
        body = self._take_body(pos, m.end(), length)
        if body is None:
            return NEED_DATA
        return Frame(
            sender_b.decode(),
            to_b.decode(),
            int(prio_b),
            type_b.decode(),
            id_b.decode(),
            body,
            int(ts_b),
            re_b.decode() if re_b is not None else "",
            part,
            parts,
            ack_b is not None,
        )

    def _parse_header(
        self, raw: bytes
    ) -> tuple[str, str, int, str, str, int, int, str, int, int, bool, int]:
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise DecodeError("header is not ASCII") from None
        fields: dict[str, str] = {}
        for item in text.split("|"):
            key, sep, value = item.partition(":")
            if not sep or _KEY_RE.fullmatch(key) is None:
                raise DecodeError(f"header field {item[:40]!r} is not KEY:VALUE")
            if key in fields:
                raise DecodeError(f"header field {key} appears twice")
            fields[key] = value
        for key in _REQUIRED:
            if key not in fields:
                raise DecodeError(f"header has no {key} field")
        sender = fields["FROM"]
        to = fields["TO"]
        msg_type = fields["TYPE"]
        msg_id = fields["ID"]
        reply_to = fields.get("RE", "")
        if not is_valid_name(sender):
            raise DecodeError(f"FROM {sender[:80]!r} is not a valid agent name")
        if to and not is_valid_name(to):
            raise DecodeError(f"TO {to[:80]!r} is not a valid agent name")
        if _TYPE_RE.fullmatch(msg_type) is None:
            raise DecodeError(f"TYPE {msg_type[:80]!r} is not a valid message type")
        if _ID_RE.fullmatch(msg_id) is None:
            raise DecodeError(f"ID {msg_id[:80]!r} is not a valid message id")
        if reply_to and _ID_RE.fullmatch(reply_to) is None:
            raise DecodeError(f"RE {reply_to[:80]!r} is not a valid message id")
        priority = _small_int(fields["PRIORITY"], "PRIORITY", 3)
        length = _small_int(fields["LEN"], "LEN", self._max_body)
        sent_ns = _small_int(fields.get("TS", "0"), "TS", 1 << 63)
        part, parts = 1, 1
        if "PART" in fields:
            a, sep, b = fields["PART"].partition("/")
            part = _small_int(a, "PART", MAX_PARTS)
            parts = _small_int(b, "PART", MAX_PARTS) if sep else 0
            if not 1 <= part <= parts:
                raise DecodeError(f"PART {fields['PART'][:20]!r} is not i/n with 1 <= i <= n")
        ack = fields.get("ACK", "") == "1"
        file_bytes = 0
        if "FILE" in fields:
            file_bytes = _small_int(fields["FILE"], "FILE", MAX_FILE_BYTES)
            if file_bytes == 0 or length or parts != 1:
                raise DecodeError(
                    f"FILE:{file_bytes} needs a size of at least 1, LEN:0 and no PART "
                    f"(got LEN:{length}, PART {part}/{parts})"
                )
        return (
            sender,
            to,
            priority,
            msg_type,
            msg_id,
            length,
            sent_ns,
            reply_to,
            part,
            parts,
            ack,
            file_bytes,
        )


def _small_int(text: str, key: str, limit: int) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 20:
        raise DecodeError(f"{key} {text[:30]!r} is not a non-negative integer")
    value = int(text)
    if value > limit:
        if key == "LEN":
            raise DecodeError(f"LEN {value} is over the limit of {limit} bytes for one frame")
        raise DecodeError(f"{key} {value} is over its limit of {limit}")
    return value


@dataclass(slots=True)
class _Partial:
    first: Frame
    chunks: dict[int, bytes]
    size: int
    started: float


class Reassembler:
    """Joins ``PART:i/n`` frames into whole messages; bounded in count, bytes and age.

    Parts of one message are matched by (FROM, ID); parts of many messages may
    interleave. A message whose parts stop coming (its sender died or gave up)
    is dropped by :meth:`expire` or when a limit is hit, and reported then.

    Args:
        max_body_bytes: cap on one assembled body.
        max_pending: cap on messages being assembled at once.
        max_pending_bytes: cap on bytes held for unfinished messages; each
            held part counts :data:`PART_COST_BYTES` on top of its body, so
            empty parts cannot escape it.
    """

    def __init__(
        self,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_pending: int = 1024,
        max_pending_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._pending: dict[tuple[str, str], _Partial] = {}
        self._pending_bytes = 0

    @property
    def pending(self) -> int:
        """Messages currently being assembled."""
        return len(self._pending)

    def add(self, frame: Frame, now: float) -> Message | None:
        """Take one frame; return the whole message once it is complete.

        Args:
            frame: a decoded frame.
            now: the caller's monotonic clock, in seconds, for :meth:`expire`.

        Raises:
            DecodeError: the body is not UTF-8, is over the size limit, or the
                part does not match the other parts of its message.
        """
        if frame.parts == 1:
            if frame.file_bytes:
                raise DecodeError(
                    f"message {frame.id} from {frame.sender} keeps its {frame.file_bytes}-byte "
                    "body in a body file (FILE), which only an agent's router reads; "
                    "message dropped"
                )
            return _to_message(frame, frame.body, self.max_body_bytes)
        key = (frame.sender, frame.id)
        partial = self._pending.get(key)
        if partial is None:
            if frame.parts > self.max_body_bytes:
                raise DecodeError(
                    f"message {frame.id} from {frame.sender} announces {frame.parts} parts, "
                    f"more than a {self.max_body_bytes}-byte body can need"
                )
            partial = _Partial(frame, {}, 0, now)
            self._pending[key] = partial
        else:
            first = partial.first
            if (first.parts, first.to, first.msg_type, first.priority) != (
                frame.parts,
                frame.to,
                frame.msg_type,
                frame.priority,
            ):
                self._drop(key)
                raise DecodeError(
                    f"part {frame.part}/{frame.parts} of message {frame.id} from {frame.sender} "
                    "does not match its other parts; message dropped"
                )
        if frame.part in partial.chunks:
            return None  # a duplicate part, for example resent after a reader restart
        partial.chunks[frame.part] = frame.body
        partial.size += len(frame.body)
        self._pending_bytes += len(frame.body) + PART_COST_BYTES
        if partial.size > self.max_body_bytes:
            self._drop(key)
            raise DecodeError(
                f"message {frame.id} from {frame.sender} is over {self.max_body_bytes} bytes; "
                "message dropped"
            )
        if len(partial.chunks) == frame.parts:
            self._drop(key)
            body = b"".join(partial.chunks[i] for i in range(1, frame.parts + 1))
            return _to_message(partial.first, body, self.max_body_bytes)
        if len(self._pending) > self.max_pending or self._pending_bytes > self.max_pending_bytes:
            oldest = min(self._pending, key=lambda k: self._pending[k].started)
            victim = self._pending[oldest].first
            self._drop(oldest)
            raise DecodeError(
                f"too many unfinished messages; dropped message {victim.id} from {victim.sender}"
            )
        return None

    def expire(self, now: float, max_age_s: float) -> list[DecodeError]:
        """Drop messages whose first part is older than ``max_age_s``; report each."""
        errors = []
        for key, partial in list(self._pending.items()):
            if now - partial.started > max_age_s:
                self._drop(key)
                f = partial.first
                errors.append(
                    DecodeError(
                        f"message {f.id} from {f.sender} got {len(partial.chunks)} of {f.parts} "
                        f"parts in {max_age_s:g}s; the sender died or gave up, message dropped"
                    )
                )
        return errors

    def _drop(self, key: tuple[str, str]) -> None:
        partial = self._pending.pop(key)
        self._pending_bytes -= partial.size + len(partial.chunks) * PART_COST_BYTES


def _to_message(frame: Frame, body: bytes, max_body_bytes: int) -> Message:
    if len(body) > max_body_bytes:
        raise DecodeError(
            f"message {frame.id} from {frame.sender} has a body of {len(body)} bytes, "
            f"limit is {max_body_bytes}"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"message {frame.id} from {frame.sender} has a body that is not UTF-8 "
            f"(bad byte at {exc.start})"
        ) from None
    return Message(
        frame.sender,
        frame.to,
        frame.priority,
        frame.msg_type,
        frame.id,
        text,
        frame.sent_ns,
        frame.reply_to,
        frame.ack,
    )
