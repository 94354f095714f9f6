"""Sans-IO binary frame for agent-to-agent traffic, and a decoder that reads both kinds.

The seed's phase 4 ("more efficient than JSON headers, binary encoding for
speed"). A binary frame is::

    FF 50 4D 01   magic: 0xFF "PM" and format version 1 (0xFF never occurs in
                  UTF-8 or ASCII, and a text frame always starts with "[FROM:")
    LEN           4 bytes, big-endian: length of the payload that follows
    payload       one MessagePack array:
                  [from, to, priority, type, id, ts, re, ack, part, parts, body]
                  or, for a body kept in a body file, 12 elements:
                  [..., parts, b"", file_bytes]

``from``/``to``/``type``/``id``/``re`` are strings under the text frame's rules
(``to`` and ``re`` may be empty), ``priority`` 0..3, ``ts`` nanoseconds,
``ack`` a bool, ``part``/``parts`` the ``PART i/n`` of a multi-part message
(1/1 for a whole one) and ``body`` a MessagePack ``bin`` of this part's bytes.
An optional 12th element ``file_bytes`` (the text frame's ``FILE``) says the
body is in a body file of that size, not in the frame (docs/frames.md).
``LEN`` is capped at ``max_frame_body_bytes + max_header_bytes`` of the
decoder, and the decoded body at ``max_frame_body_bytes``: the text limits.
Trailing array elements a later version appends are ignored.

Both kinds share one pipe. :class:`AnyFrameDecoder` is a
:class:`~pipemesh.wire.FrameDecoder` that also reads binary frames and, after
garbage, resynchronises at the next ``[FROM:`` or binary magic, whichever comes
first. :func:`encode_message` encodes a message as either kind, split into
parts of at most ``max_frame_bytes`` (a FIFO write is atomic only up to
PIPE_BUF) that :class:`~pipemesh.wire.Reassembler` joins as for text.

Like :mod:`pipemesh.wire`, this module does no I/O, starts no threads and reads
no clock.
"""

from __future__ import annotations

import struct
from typing import Annotated, Final, Literal

import msgspec

from pipemesh import wire
from pipemesh.errors import DecodeError, EncodeError
from pipemesh.wire import (
    HEADER_START,
    MAX_PARTS,
    NEED_DATA,
    PIPE_BUF,
    Frame,
    FrameDecoder,
    Message,
    NeedData,
)

__all__ = [
    "BINARY",
    "FRAME_KINDS",
    "MAGIC",
    "TEXT",
    "AnyFrameDecoder",
    "FrameKind",
    "encode_binary",
    "encode_frame",
    "encode_message",
    "encode_whole",
]

FrameKind = Literal["text", "binary"]
TEXT: Final = "text"
BINARY: Final = "binary"
FRAME_KINDS: Final[tuple[FrameKind, ...]] = (TEXT, BINARY)
"""Every frame kind this version reads, in the order a registry record lists them."""

MAGIC: Final = b"\xffPM\x01"
"""First bytes of every binary frame: 0xFF "PM" and the format version."""

PREFIX_BYTES: Final = len(MAGIC) + 4
"""Magic plus the 4-byte payload length."""

MAX_TS: Final = (1 << 63) - 1
"""Largest ``ts`` a binary frame carries (an int64: the year 2262)."""

# Lengths and numbers are checked by msgspec while decoding (in C); the string
# charsets by _invalid() below, with the text frame's own rules.
_Str = Annotated[str, msgspec.Meta(max_length=64)]
_Name = Annotated[str, msgspec.Meta(max_length=2 * wire.NAME_MAX + 1)]  # name@host (wire.py)
_Priority = Annotated[int, msgspec.Meta(ge=0, le=3)]
_Ts = Annotated[int, msgspec.Meta(ge=0, le=MAX_TS)]
_Part = Annotated[int, msgspec.Meta(ge=1, le=MAX_PARTS)]


class _Payload(msgspec.Struct, array_like=True, frozen=True, gc=False):
    sender: _Name
    to: _Name
    priority: _Priority
    msg_type: _Str
    id: _Str
    sent_ns: _Ts
    reply_to: _Str
    ack: bool
    part: _Part
    parts: _Part
    body: bytes
    file_bytes: _Ts = 0


_KNOWN_MAX: Final = 4096
_names: set[str] = set()
_types: set[str] = set()
# Names and types that passed their check already (peers send the same few again and
# again); bounded (cleared when full), shared by every decoder (set operations are atomic).


def _remember(known: set[str], value: str) -> None:
    if len(known) >= _KNOWN_MAX:
        known.clear()
    known.add(value)


def _invalid(p: _Payload) -> str:
    """Why ``p`` breaks the text frame's rules, or ``""`` when it does not."""
    if p.sender not in _names:
        if not wire.is_valid_name(p.sender):
            return f"FROM {p.sender!r} is not a valid agent name"
        _remember(_names, p.sender)
    if p.to and p.to not in _names:
        if not wire.is_valid_name(p.to):
            return f"TO {p.to!r} is not a valid agent name"
        _remember(_names, p.to)
    if p.msg_type not in _types:
        if wire._TYPE_RE.fullmatch(p.msg_type) is None:
            return f"TYPE {p.msg_type!r} is not a valid message type"
        _remember(_types, p.msg_type)
    if not wire.is_valid_id(p.id):
        return f"ID {p.id!r} is not a valid message id"
    if p.reply_to and not wire.is_valid_id(p.reply_to):
        return f"RE {p.reply_to!r} is not a valid message id"
    if p.part > p.parts:
        return f"PART {p.part}/{p.parts} is not i/n with 1 <= i <= n"
    if p.file_bytes and (p.body or p.parts != 1):
        return f"FILE {p.file_bytes} comes with a body of {len(p.body)} bytes or parts"
    return ""


_FIELD_NAMES: Final = ("FROM", "TO", "PRIORITY", "TYPE", "ID", "TS", "RE", "ACK", "PART", "PART")


def _named(error: str) -> str:
    """msgspec's ``... - at `$[2]``` as ``... in PRIORITY`` (the text frame's field names)."""
    head, sep, where = error.rpartition(" - at `$[")
    index = where.removesuffix("]`")
    if not sep or not index.isdigit():
        return error
    names = (*_FIELD_NAMES, "body", "FILE")
    return f"{head} in {names[int(index)] if int(index) < len(names) else 'the payload'}"


_DECODE: Final = msgspec.msgpack.Decoder(_Payload).decode
_ID: Final = wire._ID_RE.fullmatch
_ENCODE: Final = msgspec.msgpack.Encoder().encode


_LENGTH: Final = struct.Struct(">I").unpack_from


def _prefix(length: int) -> bytes:
    return MAGIC + length.to_bytes(4, "big")


def encode_binary(frame: Frame) -> bytes:
    """Encode one frame as a binary frame.

    Raises:
        EncodeError: a header field cannot be carried by the format.
    """
    wire._check_frame(frame)
    if frame.sent_ns > MAX_TS:
        raise EncodeError(f"TS must be at most 2**63-1 in a binary frame, got {frame.sent_ns}")
    fields: tuple[object, ...] = (
        frame.sender,
        frame.to,
        int(frame.priority),
        frame.msg_type,
        frame.id,
        frame.sent_ns,
        frame.reply_to,
        bool(frame.ack),
        frame.part,
        frame.parts,
        frame.body,
    )
    if frame.file_bytes:  # (at most 2**63-1: _check_frame)
        fields = (*fields, frame.file_bytes)
    payload = _ENCODE(fields)
    return _prefix(len(payload)) + payload


def encode_whole(
    sender: str,
    to: str,
    priority: int,
    msg_type: str,
    msg_id: str,
    sent_ns: int,
    reply_to: str,
    ack: bool,
    body: bytes,
) -> bytes:
    """One binary frame of a one-part message, fields unchecked: the send hot path.

    The caller has checked every field and that the body fits one frame
    (``len(body) + 400 <= max_frame_bytes``, as :func:`encode_message` decides);
    the bytes are those :func:`encode_message` makes for the same arguments.
    """
    payload = _ENCODE((sender, to, priority, msg_type, msg_id, sent_ns, reply_to, ack, 1, 1, body))
    return MAGIC + len(payload).to_bytes(4, "big") + payload


def encode_frame(kind: FrameKind, frame: Frame) -> bytes:
    """Encode one frame as ``kind`` (for example a body-file reference, ``file_bytes`` > 0).

    Raises:
        EncodeError: a header field cannot be carried by the format.
    """
    return encode_binary(frame) if kind == BINARY else wire.encode(frame)


def encode_message(
    kind: FrameKind,
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
    """Encode a message as frames of ``kind``, each at most ``max_frame_bytes`` long.

    The arguments are those of :func:`pipemesh.wire.encode_message`; a message
    that does not fit one frame is split into parts.

    Raises:
        EncodeError: a header field is invalid, or ``max_frame_bytes`` leaves no
            room for a body.
    """
    if kind != BINARY:
        return wire.encode_message(
            sender,
            to,
            body,
            msg_id=msg_id,
            priority=priority,
            msg_type=msg_type,
            sent_ns=sent_ns,
            reply_to=reply_to,
            max_frame_bytes=max_frame_bytes,
            check=check,
            ack=ack,
        )
    if check:
        encode_binary(
            Frame(sender, to, priority, msg_type, msg_id, b"", sent_ns, reply_to, ack=ack)
        )
    fields = (sender, to, priority, msg_type, msg_id, sent_ns, reply_to, ack)
    # Hot path: names and ids are at most 64 bytes, so the header is under ~330 bytes.
    if len(body) + 400 <= max_frame_bytes:
        payload = _ENCODE((*fields, 1, 1, body))
        return [_prefix(len(payload)) + payload]
    # The widest header any part can have: the largest part numbers, a bin32 body length.
    worst = PREFIX_BYTES + len(_ENCODE((*fields, MAX_PARTS, MAX_PARTS, b""))) + 3
    if worst + len(body) <= max_frame_bytes:
        payload = _ENCODE((*fields, 1, 1, body))
        return [_prefix(len(payload)) + payload]
    room = max_frame_bytes - worst
    if room <= 0:
        raise EncodeError(f"max_frame_bytes={max_frame_bytes} leaves no room for a body")
    parts = -(-len(body) // room)
    if parts > MAX_PARTS:
        raise EncodeError(f"body of {len(body)} bytes needs {parts} parts, limit is {MAX_PARTS}")
    view = memoryview(body)
    out = []
    for i in range(parts):
        payload = _ENCODE((*fields, i + 1, parts, view[i * room : (i + 1) * room]))
        out.append(_prefix(len(payload)) + payload)
    return out


class AnyFrameDecoder(FrameDecoder):
    """A :class:`~pipemesh.wire.FrameDecoder` that reads text and binary frames.

    Frames of both kinds may follow each other in any order on one stream.
    Garbage is skipped up to the next ``[FROM:`` or binary :data:`MAGIC`.
    The arguments, verbs and errors are those of ``FrameDecoder``.
    """

    __slots__ = ()

    def next_frame(self) -> Frame | NeedData:
        """Return the next whole frame of either kind, or :data:`NEED_DATA`.

        Raises:
            DecodeError: bytes at the head of the stream are not a valid frame
                (they have been discarded), or the stream ended mid-frame.
        """
        if self._buf.startswith(MAGIC, self._pos):
            return self._binary(-1)  # type: ignore[return-value]  # -1: never a Message
        return FrameDecoder.next_frame(self)

    def _resync_point(self, start: int) -> int:
        buf = self._buf
        text = buf.find(HEADER_START, start)
        binary = buf.find(MAGIC, start, len(buf) if text < 0 else text)
        if binary >= 0:
            return binary
        if text >= 0:
            return text
        if not (self._eof or self._cut):
            # Keep a tail that may begin a frame of either kind split across feeds.
            for keep in range(min(len(HEADER_START) - 1, len(buf) - start), 0, -1):
                tail = buf[len(buf) - keep :]
                if HEADER_START.startswith(tail) or MAGIC.startswith(tail):
                    return len(buf) - keep
        return len(buf)

    def _incomplete(self, pos: int, what: str) -> NeedData:
        if self._eof:
            raise self._skip(pos, f"stream ended inside a binary frame {what}")
        if self._cut:
            raise self._skip(
                pos,
                f"binary frame {what} cut short with nothing more to read; a frame is one "
                "write, so it was skipped as garbage",
            )
        return NEED_DATA

    def decode_all(
        self, max_body_bytes: int, data: bytes = b""
    ) -> list[Message | Frame | DecodeError]:
        """Feed ``data`` (if any), then decode every whole frame the buffer holds, in order.

        The router's one call per read (``data`` saves it a :meth:`feed` call).

        A whole binary frame of a one-part message comes back as its :class:`Message`
        (built once, with no :class:`Frame` in between) when its body is at most
        ``max_body_bytes`` and valid UTF-8; every other frame (text frames, parts, a
        body the :class:`~pipemesh.wire.Reassembler` must refuse) comes back as a
        :class:`Frame`, for the reassembler, exactly as :meth:`next_frame` returns it.
        A bad frame comes back as the :class:`DecodeError` that :meth:`next_frame`
        would raise, in its place; decoding continues after it. Stops at the end of
        the buffer or at an incomplete frame (kept for the next :meth:`feed`).
        """
        out: list[Message | Frame | DecodeError] = []
        buf = self._buf
        if data:
            if self._pos:
                self.feed(data)  # it compacts the buffer first
            else:
                self._cut = False
                buf += data  # in place: the buffer is a bytearray
        while len(buf) > self._pos:
            try:
                if buf.startswith(MAGIC, self._pos):
                    item = self._binary(max_body_bytes)
                else:
                    item = FrameDecoder.next_frame(self)
            except DecodeError as exc:
                out.append(exc)
                continue
            if item is NEED_DATA:
                break
            out.append(item)  # type: ignore[arg-type]  # not NEED_DATA: checked above
        return out

    def _binary(self, max_body_bytes: int) -> Message | Frame | NeedData:
        """The binary frame at the head of the buffer: a Message if it may be one (see
        :meth:`decode_all`; never with ``max_body_bytes`` -1), else a Frame."""
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < PREFIX_BYTES:
            return self._incomplete(pos, "prefix")
        length = _LENGTH(buf, pos + 4)[0]
        if length > self._max_body + self._max_header:
            raise self._skip(
                pos,
                f"binary frame LEN {length} is over the limit of "
                f"{self._max_body + self._max_header} bytes for one frame",
            )
        start = pos + PREFIX_BYTES
        end = start + length
        if len(buf) < end:
            return self._incomplete(pos, "payload")
        try:
            p = _DECODE(bytes(buf[start:end]))  # a copy: a view would pin the buffer
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise self._skip(pos, f"binary frame is not valid: {_named(str(exc))}") from None
        body = p.body
        if len(body) > self._max_body:
            raise self._skip(
                pos,
                f"binary frame body of {len(body)} bytes is over the limit of "
                f"{self._max_body} bytes for one frame",
            )
        # The checks of _invalid(), inline for the common case: names and type seen
        # before, IDs checked each time; anything else takes _invalid() for its reason.
        reply_to = p.reply_to
        if not (
            p.sender in _names
            and (p.to in _names or not p.to)
            and p.msg_type in _types
            and _ID(p.id) is not None
            and (not reply_to or _ID(reply_to) is not None)
            and p.part <= p.parts
            and not p.file_bytes
        ):
            reason = _invalid(p)
            if reason:
                raise self._skip(pos, f"binary frame is not valid: {reason}")
        if end == len(buf):
            buf.clear()  # the common case: the read ended on a frame boundary
            self._offset += end
            self._pos = 0
        else:
            self._pos = end
        if p.parts == 1 and not p.file_bytes and len(body) <= max_body_bytes:
            try:
                text = body.decode()
            except UnicodeDecodeError:
                pass  # the Reassembler reports it, as for any frame
            else:
                return Message(
                    p.sender, p.to, p.priority, p.msg_type, p.id, text, p.sent_ns, reply_to, p.ack
                )
        return Frame(
            p.sender,
            p.to,
            p.priority,
            p.msg_type,
            p.id,
            body,
            p.sent_ns,
            reply_to,
            p.part,
            p.parts,
            p.ack,
            p.file_bytes,
        )
