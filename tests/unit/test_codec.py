"""The binary frame (codec.py): layout, limits, both kinds on one stream, properties.

Differential tests: the same Message through the text and the binary encoder
decodes to equal Messages.
"""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipemesh import wire
from pipemesh.codec import (
    BINARY,
    MAGIC,
    MAX_TS,
    PREFIX_BYTES,
    TEXT,
    AnyFrameDecoder,
    FrameKind,
    _named,
    encode_binary,
    encode_frame,
    encode_message,
    encode_whole,
)
from pipemesh.errors import DecodeError, EncodeError
from pipemesh.wire import (
    HEADER_START,
    MAX_HEADER_BYTES,
    MAX_PARTS,
    NEED_DATA,
    PIPE_BUF,
    Frame,
    Message,
    NeedData,
    Reassembler,
)

KINDS: tuple[FrameKind, ...] = (TEXT, BINARY)


def decode_all(
    data: bytes, *, chunk: int = 0, max_frame: int = PIPE_BUF, errors: list[str] | None = None
) -> list[Frame]:
    """Feed ``data`` (in chunks of ``chunk`` bytes, 0 = at once), then EOF; every frame."""
    dec = AnyFrameDecoder(max_frame_body_bytes=max_frame)
    out: list[Frame] = []
    pieces = [data] if chunk <= 0 else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in [*pieces, b""]:
        dec.feed(piece)
        for _ in range(len(data) + 10):
            try:
                frame = dec.next_frame()
            except DecodeError as exc:
                if errors is None:
                    raise
                errors.append(str(exc))
                continue
            if isinstance(frame, NeedData):
                break
            out.append(frame)
    return out


def messages_of(frames: list[bytes], chunk: int = 0) -> list[Message]:
    asm = Reassembler()
    out = []
    for frame in decode_all(b"".join(frames), chunk=chunk):
        msg = asm.add(frame, 0.0)
        if msg is not None:
            out.append(msg)
    return out


def encode_msg(kind: FrameKind, m: Message, max_frame_bytes: int = PIPE_BUF) -> list[bytes]:
    return encode_message(
        kind,
        m.sender,
        m.to,
        m.body.encode(),
        msg_id=m.id,
        priority=m.priority,
        msg_type=m.msg_type,
        sent_ns=m.sent_ns,
        reply_to=m.reply_to,
        ack=m.ack,
        max_frame_bytes=max_frame_bytes,
    )


def payload(*fields: object) -> bytes:
    """A binary frame around arbitrary MessagePack fields (for malformed frames)."""
    body = msgspec.msgpack.encode(list(fields))
    return MAGIC + len(body).to_bytes(4, "big") + body


GOOD = ("alice", "bob", 1, "question", "m1", 5, "", False, 1, 1, b"hi")


class TestLayout:
    def test_magic_can_never_start_a_text_frame(self) -> None:
        """0xFF starts no text frame and occurs in no UTF-8 text."""
        assert not MAGIC.startswith(HEADER_START[:1])
        assert MAGIC[:1] == b"\xff"
        with pytest.raises(UnicodeDecodeError):
            MAGIC.decode("utf-8")

    def test_frame_bytes(self) -> None:
        """Magic, big-endian payload length, then one MessagePack array."""
        data = encode_binary(Frame("alice", "bob", 2, "question", "m1", b"hi", 7, "r0", ack=True))
        assert data[:4] == MAGIC
        length = int.from_bytes(data[4:8], "big")
        assert length == len(data) - PREFIX_BYTES
        assert msgspec.msgpack.decode(data[8:]) == [
            "alice",
            "bob",
            2,
            "question",
            "m1",
            7,
            "r0",
            True,
            1,
            1,
            b"hi",
        ]

    def test_binary_is_smaller_than_text(self) -> None:
        """A 64-byte message costs fewer bytes as a binary frame."""
        m = Message("alice", "bob", 1, "question", "abcd1234-1", "x" * 64, 1 << 60)
        assert len(encode_msg(BINARY, m)[0]) < len(encode_msg(TEXT, m)[0])

    def test_trailing_fields_of_a_later_version_are_ignored(self) -> None:
        """Forward compatibility: extra array elements after the body (and FILE) are skipped."""
        (frame,) = decode_all(payload(*GOOD, 0, "future", 42))
        assert frame.body == b"hi"
        assert frame.sender == "alice"


class TestEncode:
    def test_invalid_fields_are_refused(self) -> None:
        """The encoder checks fields under the text rules."""
        with pytest.raises(EncodeError, match="FROM"):
            encode_message(BINARY, "a..b", "c", b"", msg_id="m")
        with pytest.raises(EncodeError, match="PRIORITY"):
            encode_message(BINARY, "a", "c", b"", msg_id="m", priority=4)

    def test_ts_over_int64_is_refused(self) -> None:
        """A binary frame carries ts up to 2**63-1."""
        encode_binary(Frame("a", "b", 1, "t", "m", b"", MAX_TS))
        with pytest.raises(EncodeError, match="TS"):
            encode_binary(Frame("a", "b", 1, "t", "m", b"", MAX_TS + 1))

    def test_text_kind_is_the_text_encoder(self) -> None:
        """kind='text' gives exactly wire.encode_message's frames."""
        assert encode_message(TEXT, "a", "b", b"x", msg_id="m") == wire.encode_message(
            "a", "b", b"x", msg_id="m"
        )

    @pytest.mark.parametrize("size", [0, 3000, 3700, 3900, 4096, 20_000, 100_000])
    @pytest.mark.parametrize("max_frame", [512, PIPE_BUF])
    def test_every_frame_fits_the_atomic_write_limit(self, size: int, max_frame: int) -> None:
        """Parts never exceed max_frame_bytes (PIPE_BUF) even with the widest header."""
        body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
        name = "n" * 64
        frames = encode_message(
            BINARY,
            name,
            name,
            body,
            msg_id="i" * 64,
            msg_type="t" * 32,
            reply_to="r" * 64,
            sent_ns=MAX_TS,
            max_frame_bytes=max_frame,
            check=False,
        )
        assert all(len(f) <= max_frame for f in frames)
        assert b"".join(f.body for f in decode_all(b"".join(frames), max_frame=max_frame)) == body
        if len(frames) > 1:  # parts are filled: no more parts than needed plus one
            assert len(frames) <= -(-size // (max_frame - 400)) + 1

    def test_no_room_for_a_body(self) -> None:
        """A frame limit smaller than the header is an EncodeError."""
        with pytest.raises(EncodeError, match="no room"):
            encode_message(BINARY, "a", "b", b"x" * 100, msg_id="m", max_frame_bytes=20)

    def test_too_many_parts(self) -> None:
        """A body that needs more than MAX_PARTS parts is refused."""
        big = b"x" * (MAX_PARTS * 60)
        with pytest.raises(EncodeError, match="parts"):
            encode_message(BINARY, "a", "b", big, msg_id="m", max_frame_bytes=60)


class TestDecode:
    def test_both_kinds_interleave_on_one_stream(self) -> None:
        """Text and binary frames follow each other in any order."""
        m = Message("alice", "bob", 2, "question", "m1", "héllo", 9, "r1", True)
        data = b"".join(encode_msg(TEXT, m) + encode_msg(BINARY, m) * 2 + encode_msg(TEXT, m))
        assert messages_of([data]) == [m] * 4

    @pytest.mark.parametrize(
        ("fields", "reason"),
        [
            ((*GOOD[:0], "a..b", *GOOD[1:]), "FROM 'a..b' is not a valid agent name"),
            (("alice", "b/c", *GOOD[2:]), "TO 'b/c' is not"),
            (("alice", "", 4, *GOOD[3:]), "<= 3 in PRIORITY"),
            (("alice", "", 1, "9t", *GOOD[4:]), "TYPE '9t' is not"),
            ((*GOOD[:4], "", *GOOD[5:]), "ID '' is not"),
            ((*GOOD[:4], "i" * 65, *GOOD[5:]), "length <= 64 in ID"),
            ((*GOOD[:5], -1, *GOOD[6:]), ">= 0 in TS"),
            ((*GOOD[:6], "a b", *GOOD[7:]), "RE 'a b' is not"),
            ((*GOOD[:7], 1, *GOOD[8:]), "`bool`, got `int` in ACK"),
            ((*GOOD[:8], 0, 1, b""), ">= 1 in PART"),
            ((*GOOD[:8], 3, 2, b""), "PART 3/2 is not i/n"),
            ((*GOOD[:8], 1, MAX_PARTS + 1, b""), f"<= {MAX_PARTS} in PART"),
            ((*GOOD[:10], "text"), "got `str` in body"),
            (GOOD[:10], "at least length 11"),
            ((*GOOD[:10], b"x", 0, {"a": {"b": [1]}}), "#ok"),
            ((*GOOD[:10], b"x", "big"), "got `str` in FILE"),
            ((*GOOD[:10], b"x", 5), "FILE 5 comes with a body of 1 bytes"),
            (({"nested": 1}, *GOOD[1:]), "got `object` in FROM"),
        ],
    )
    def test_bad_fields_are_decode_errors(self, fields: tuple[object, ...], reason: str) -> None:
        """Every field is checked under the text frame's rules; the error names the field."""
        errors: list[str] = []
        frames = decode_all(payload(*fields) + payload(*GOOD), errors=errors)
        if reason == "#ok":  # a trailing element of a later version, whatever its type
            assert [f.body for f in frames] == [b"x", b"hi"]
            return
        assert [f.body for f in frames] == [b"hi"]
        assert len(errors) == 1
        assert errors[0].startswith("binary frame is not valid: ")
        assert reason in errors[0]

    def test_an_error_without_a_position_is_kept_whole(self) -> None:
        """msgspec errors that name no array element pass through unchanged."""
        assert _named("Expected `array`, got `int`") == "Expected `array`, got `int`"
        assert _named("Expected `int` - at `$[99]`") == "Expected `int` in the payload"
        assert _named("Expected `int` - at `$[x]`") == "Expected `int` - at `$[x]`"

    def test_not_msgpack(self) -> None:
        """A payload that is not MessagePack is skipped."""
        errors: list[str] = []
        bad = MAGIC + (3).to_bytes(4, "big") + b"\xc1\xc1\xc1"
        assert [f.body for f in decode_all(bad + payload(*GOOD), errors=errors)] == [b"hi"]
        assert "not valid" in errors[0]

    def test_length_over_the_cap_is_rejected_at_once(self) -> None:
        """A LEN over body + header limits is refused before any payload arrives."""
        dec = AnyFrameDecoder(max_frame_body_bytes=PIPE_BUF)
        dec.feed(MAGIC + (PIPE_BUF + MAX_HEADER_BYTES + 1).to_bytes(4, "big"))
        with pytest.raises(DecodeError, match="over the limit"):
            dec.next_frame()
        assert dec.next_frame() is NEED_DATA

    def test_body_over_the_frame_cap(self) -> None:
        """A body longer than max_frame_body_bytes inside an allowed LEN is refused."""
        dec = AnyFrameDecoder(max_frame_body_bytes=10)
        dec.feed(payload(*GOOD[:10], b"x" * 11))
        with pytest.raises(DecodeError, match="body of 11 bytes"):
            dec.next_frame()

    @pytest.mark.parametrize("cut", [2, 6, 12])
    def test_cut_frame_at_eof(self, cut: int) -> None:
        """A stream that ends mid-frame (prefix or payload) is a DecodeError."""
        dec = AnyFrameDecoder()
        dec.feed(payload(*GOOD)[:cut])
        assert dec.next_frame() is NEED_DATA
        dec.feed(b"")
        if cut < len(MAGIC):  # a possible magic start at EOF is garbage
            with pytest.raises(DecodeError, match="garbage"):
                dec.next_frame()
        else:
            with pytest.raises(DecodeError, match="stream ended inside a binary frame"):
                dec.next_frame()
        assert dec.next_frame() is NEED_DATA

    @pytest.mark.parametrize("cut", [6, 12])
    def test_cut_frame_at_a_write_boundary(self, cut: int) -> None:
        """With mark_boundary, a frame that cannot complete is skipped, the next one read."""
        dec = AnyFrameDecoder()
        dec.feed(payload(*GOOD)[:cut])
        dec.mark_boundary()
        with pytest.raises(DecodeError, match="cut short"):
            dec.next_frame()
        dec.feed(payload(*GOOD))
        frame = dec.next_frame()
        assert isinstance(frame, Frame)
        assert frame.body == b"hi"

    def test_a_lying_length_does_not_hide_the_next_frame(self) -> None:
        """A LEN longer than the write skips only that frame (at the write boundary)."""
        good = payload(*GOOD)
        liar = MAGIC + (200).to_bytes(4, "big") + good[8:]
        dec = AnyFrameDecoder()
        dec.feed(liar + good)
        dec.mark_boundary()
        got = []
        for _ in range(10):
            with contextlib.suppress(DecodeError):
                frame = dec.next_frame()
                if isinstance(frame, NeedData):
                    break
                got.append(frame.body)
        assert got == [b"hi"]

    def test_garbage_before_each_kind(self) -> None:
        """Garbage is skipped up to the next frame of either kind, whichever is first."""
        text = wire.encode_message("t", "b", b"T", msg_id="m")[0]
        errors: list[str] = []
        frames = decode_all(
            b"junk" + payload(*GOOD) + b"\xff\xffPM" + text + b"x[FROM" + payload(*GOOD),
            errors=errors,
        )
        assert [f.body for f in frames] == [b"hi", b"T", b"hi"]
        assert len(errors) == 3

    @pytest.mark.parametrize("split", range(1, 9))
    def test_magic_split_across_feeds(self, split: int) -> None:
        """A frame whose magic/prefix is split across reads after garbage still decodes."""
        data = b"zz" + payload(*GOOD)
        dec = AnyFrameDecoder()
        dec.feed(data[: 2 + split])
        with pytest.raises(DecodeError, match="garbage"):
            dec.next_frame()
        assert dec.next_frame() is NEED_DATA
        dec.feed(data[2 + split :])
        frame = dec.next_frame()
        assert isinstance(frame, Frame)
        assert frame.body == b"hi"

    def test_many_distinct_names_stay_checked(self) -> None:
        """The cache of checked names is bounded, and a bad name never enters it."""
        good = [payload(f"n{i}", *GOOD[1:]) for i in range(5000)]
        errors: list[str] = []
        frames = decode_all(b"".join(good) + payload("a..b", *GOOD[1:]), errors=errors)
        assert len(frames) == 5000
        assert len(errors) == 1
        assert "FROM 'a..b'" in errors[0]

    def test_frame_after_a_frame_in_one_read(self) -> None:
        """Two frames in one feed: the second is read from the middle of the buffer."""
        dec = AnyFrameDecoder()
        dec.feed(payload(*GOOD) * 2)
        assert isinstance(dec.next_frame(), Frame)
        assert dec.buffered == len(payload(*GOOD))
        assert isinstance(dec.next_frame(), Frame)
        assert dec.buffered == 0


# -- property tests --

utf8_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12000)
names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}", fullmatch=True)
types = st.from_regex(r"[A-Za-z][A-Za-z0-9_.\-]{0,31}", fullmatch=True)
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", fullmatch=True)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    return Message(
        draw(names),
        draw(st.one_of(st.just(""), names)),
        draw(st.integers(0, 3)),
        draw(types),
        draw(ids),
        draw(utf8_text),
        draw(st.integers(0, MAX_TS)),
        draw(st.one_of(st.just(""), ids)),
        draw(st.booleans()),
    )


def unique(msgs: list[Message]) -> list[Message]:
    return [
        Message(
            m.sender, m.to, m.priority, m.msg_type, f"u{i}", m.body, m.sent_ns, m.reply_to, m.ack
        )
        for i, m in enumerate(msgs)
    ]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), min_size=1, max_size=4))
def test_property_round_trip(msgs: list[Message]) -> None:
    """decode(encode_binary(m)) == m, small and split into parts."""
    ms = unique(msgs)
    assert messages_of([f for m in ms for f in encode_msg(BINARY, m)]) == ms


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.sampled_from([512, 1024, PIPE_BUF]))
def test_property_differential_text_and_binary_agree(m: Message, max_frame: int) -> None:
    """The same Message through the text and the binary encoder decodes to equal Messages."""
    via_text = messages_of(encode_msg(TEXT, m, max_frame))
    via_binary = messages_of(encode_msg(BINARY, m, max_frame))
    assert via_text == via_binary == [m]


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.sampled_from(KINDS), messages()), min_size=1, max_size=4),
    st.integers(1, 5000),
)
def test_property_chunking_does_not_matter(
    items: list[tuple[FrameKind, Message]], chunk: int
) -> None:
    """Mixed kinds fed in arbitrary chunk sizes give the same messages."""
    ms = unique([m for _, m in items])
    frames = [f for (kind, _), m in zip(items, ms, strict=True) for f in encode_msg(kind, m)]
    assert messages_of(frames, chunk=chunk) == ms


def drain(dec: AnyFrameDecoder, limit: int) -> list[Frame]:
    out: list[Frame] = []
    for _ in range(limit):
        try:
            frame = dec.next_frame()
        except DecodeError:
            continue
        if isinstance(frame, NeedData):
            return out
        out.append(frame)
    pytest.fail("decoder did not converge")


@settings(max_examples=300)
@given(st.binary(max_size=3000), st.booleans())
def test_property_arbitrary_bytes_give_frames_or_decode_error(data: bytes, magic: bool) -> None:
    """Arbitrary bytes give frames or DecodeError, never another exception, never a hang."""
    dec = AnyFrameDecoder(max_frame_body_bytes=PIPE_BUF)
    dec.feed((MAGIC if magic else b"") + data)
    dec.feed(b"")
    asm = Reassembler()
    for frame in drain(dec, len(data) + 20):
        with contextlib.suppress(DecodeError):
            asm.add(frame, 0.0)


@settings(max_examples=150)
@given(st.binary(max_size=600), messages(), st.sampled_from(KINDS))
def test_property_valid_frame_after_garbage_arrives(
    garbage: bytes, m: Message, kind: FrameKind
) -> None:
    """Whatever garbage precedes it, a valid frame of either kind after it is decoded."""
    frames = encode_msg(kind, m)
    dec = AnyFrameDecoder(max_frame_body_bytes=PIPE_BUF)
    dec.feed(garbage + b"".join(frames) * 2)
    dec.mark_boundary()  # a FIFO reader: nothing more is readable now
    asm = Reassembler()
    got = []
    for frame in drain(dec, len(garbage) + 400):
        with contextlib.suppress(DecodeError):
            msg = asm.add(frame, 0.0)
            if msg is not None:
                got.append(msg)
    assert m in got


@settings(max_examples=150)
@given(st.binary(max_size=400), st.integers(0, 100), st.binary(min_size=1, max_size=3))
def test_property_mutated_binary_frame_never_crashes(body: bytes, where: int, junk: bytes) -> None:
    """A valid binary frame with bytes overwritten anywhere gives frames or DecodeError."""
    data = bytearray(encode_message(BINARY, "a", "b", body, msg_id="m")[0])
    pos = where * len(data) // 101
    data[pos : pos + len(junk)] = junk
    dec = AnyFrameDecoder(max_frame_body_bytes=PIPE_BUF)
    dec.feed(bytes(data))
    dec.feed(b"")
    asm = Reassembler()
    for frame in drain(dec, len(data) + 20):
        with contextlib.suppress(DecodeError):
            asm.add(frame, 0.0)


# -- decode_all: the router's path (a one-part binary frame straight to its Message) --


def via_next_frame(data: bytes, chunk: int, max_body: int) -> list[str | Message]:
    """Messages and error texts, in order, the old way: next_frame, then the Reassembler."""
    dec = AnyFrameDecoder(max_frame_body_bytes=PIPE_BUF)
    asm = Reassembler(max_body_bytes=max_body)
    out: list[str | Message] = []
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    for piece in [*pieces, b""]:
        dec.feed(piece)
        for _ in range(len(data) + 10):
            try:
                frame = dec.next_frame()
            except DecodeError as exc:
                out.append(str(exc))
                continue
            if isinstance(frame, NeedData):
                break
            try:
                msg = asm.add(frame, 0.0)
            except DecodeError as exc:
                out.append(str(exc))
                continue
            if msg is not None:
                out.append(msg)
    return out


def via_decode_all(data: bytes, chunk: int, max_body: int) -> list[str | Message]:
    """The same, the router's way: one decode_all per feed, Frames to the Reassembler."""
    dec = AnyFrameDecoder(max_frame_body_bytes=PIPE_BUF)
    asm = Reassembler(max_body_bytes=max_body)
    out: list[str | Message] = []
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    for piece in [*pieces, b""]:
        if not piece:
            dec.feed(piece)  # the end of the stream
        for item in dec.decode_all(max_body, piece):
            if isinstance(item, Message):
                out.append(item)
            elif isinstance(item, DecodeError):
                out.append(str(item))
            else:
                try:
                    msg = asm.add(item, 0.0)
                except DecodeError as exc:
                    out.append(str(exc))
                    continue
                if msg is not None:
                    out.append(msg)
    return out


class TestDecodeAll:
    def test_a_one_part_binary_frame_is_its_message(self) -> None:
        """A whole binary frame of a one-part message comes back as the Message itself."""
        m = Message("alice", "bob", 2, "question", "m1", "hi", 5, "m0", True)
        dec = AnyFrameDecoder(max_frame_body_bytes=PIPE_BUF)
        dec.feed(encode_msg(BINARY, m)[0] * 2)
        assert dec.decode_all(MAX_BODY) == [m, m]
        assert dec.buffered == 0

    @pytest.mark.parametrize("kind", ["text", "binary"])
    def test_a_body_file_reference_comes_back_as_a_frame(self, kind: FrameKind) -> None:
        """A FILE frame (empty body, one part) is never taken for a Message with an empty
        body: it comes back as its Frame, for the router's body-file hook."""
        ref = Frame("alice", "bob", 1, "t", "m1", b"", 5, file_bytes=70_000)
        dec = AnyFrameDecoder(max_frame_body_bytes=PIPE_BUF)
        dec.feed(encode_frame(kind, ref))
        assert dec.decode_all(MAX_BODY) == [ref]

    def test_text_frames_and_parts_come_back_as_frames(self) -> None:
        """Text frames and parts go to the Reassembler, as next_frame returns them."""
        m = Message("alice", "bob", 1, "question", "m1", "x" * 1500, 5)
        frames = encode_msg(TEXT, m) + encode_msg(BINARY, m, max_frame_bytes=512)
        dec = AnyFrameDecoder(max_frame_body_bytes=PIPE_BUF)
        dec.feed(b"".join(frames))
        items = dec.decode_all(MAX_BODY)
        assert len(items) == 1 + 4
        assert all(isinstance(item, Frame) for item in items)

    def test_a_body_that_is_not_utf8_is_left_to_the_reassembler(self) -> None:
        """A one-part body that is not UTF-8 comes back as a Frame: the Reassembler reports it."""
        data = encode_message(BINARY, "alice", "bob", b"\xff\xfe", msg_id="m1")[0]
        dec = AnyFrameDecoder(max_frame_body_bytes=PIPE_BUF)
        dec.feed(data)
        (item,) = dec.decode_all(MAX_BODY)
        assert isinstance(item, Frame)
        with pytest.raises(DecodeError, match="not UTF-8"):
            Reassembler().add(item, 0.0)

    def test_a_body_over_the_message_limit_is_left_to_the_reassembler(self) -> None:
        """A body over max_body_bytes comes back as a Frame: the Reassembler refuses it."""
        data = encode_message(BINARY, "alice", "bob", b"x" * 20, msg_id="m1")[0]
        dec = AnyFrameDecoder(max_frame_body_bytes=PIPE_BUF)
        dec.feed(data)
        (item,) = dec.decode_all(10)
        assert isinstance(item, Frame)
        with pytest.raises(DecodeError, match="limit is 10"):
            Reassembler(max_body_bytes=10).add(item, 0.0)

    def test_bad_frames_come_back_as_their_errors_in_place(self) -> None:
        """A bad frame is the DecodeError next_frame would raise; decoding goes on after it."""
        good = encode_msg(BINARY, Message("alice", "bob", 1, "question", "m1", "hi"))[0]
        dec = AnyFrameDecoder(max_frame_body_bytes=PIPE_BUF)
        dec.feed(good + payload("alice", "bob", 9, *GOOD[3:]) + good)
        first, error, last = dec.decode_all(MAX_BODY)
        assert isinstance(error, DecodeError)
        assert "PRIORITY" in str(error)
        assert first == last
        assert isinstance(first, Message)

    def test_an_incomplete_frame_waits_for_more(self) -> None:
        """decode_all stops at a frame not yet whole and returns it after the next feed."""
        m = Message("alice", "bob", 1, "question", "m1", "hi")
        data = encode_msg(BINARY, m)[0]
        dec = AnyFrameDecoder(max_frame_body_bytes=PIPE_BUF)
        dec.feed(data + data[:10])
        assert dec.decode_all(MAX_BODY) == [m]
        dec.feed(data[10:])
        assert dec.decode_all(MAX_BODY) == [m]
        assert dec.decode_all(MAX_BODY) == []


MAX_BODY = wire.MAX_BODY_BYTES


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Mixed text and binary frames, parts, bad bodies, bad fields and garbage."""
    out = []
    for i, (kind, drawn) in enumerate(
        draw(st.lists(st.tuples(st.sampled_from(KINDS), messages()), max_size=4))
    ):
        m = msgspec.structs.replace(drawn, id=f"u{i}")  # unique IDs: no reassembly clash
        out += encode_msg(kind, m, draw(st.sampled_from([512, PIPE_BUF])))
        extra = draw(st.sampled_from(["", "garbage", "not-utf8", "bad-field"]))
        if extra == "garbage":
            out.append(draw(st.binary(max_size=40)))
        elif extra == "not-utf8":
            out.append(encode_message(kind, m.sender, m.to, b"a\xffb", msg_id=f"n{i}")[0])
        elif extra == "bad-field":
            out.append(payload(m.sender, m.to, 7, *GOOD[3:]))
    return b"".join(out)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.integers(0, 700), st.sampled_from([8, 64, 2000, MAX_BODY]))
def test_property_decode_all_agrees_with_next_frame(data: bytes, chunk: int, max_body: int) -> None:
    """The router's decode_all gives the same messages and errors, in order, as next_frame."""
    assert via_decode_all(data, chunk, max_body) == via_next_frame(data, chunk, max_body)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_property_encode_whole_is_encode_message(m: Message) -> None:
    """The send hot path's encode_whole writes the bytes encode_message writes for one frame."""
    body = m.body.encode()
    frames = encode_msg(BINARY, m, max_frame_bytes=len(body) + 400)
    whole = encode_whole(
        m.sender, m.to, m.priority, m.msg_type, m.id, m.sent_ns, m.reply_to, m.ack, body
    )
    assert frames == [whole]
    assert messages_of([whole]) == [m]


# -- FILE: a body kept in a body file (docs/frames.md), both kinds --

file_sizes = st.integers(1, wire.MAX_FILE_BYTES)


@st.composite
def file_frames(draw: st.DrawFn) -> Frame:
    m = draw(messages())
    return Frame(
        m.sender,
        m.to,
        m.priority,
        m.msg_type,
        m.id,
        b"",
        m.sent_ns,
        m.reply_to,
        ack=m.ack,
        file_bytes=draw(file_sizes),
    )


def encode_kind(kind: FrameKind, frame: Frame) -> bytes:
    return encode_frame(kind, frame)


class TestFileField:
    def test_text_header_carries_file_and_len_0(self) -> None:
        """A text reference frame is the usual header with LEN:0 and FILE:<bytes>."""
        data = encode_frame(TEXT, Frame("alice", "bob", 1, "t", "m1", b"", 5, file_bytes=70000))
        assert data == b"[FROM:alice|TO:bob|PRIORITY:1|TYPE:t|ID:m1|LEN:0|TS:5|FILE:70000]\n" + (
            wire.TRAILER
        )

    def test_binary_frame_has_a_twelfth_element(self) -> None:
        """A binary reference frame appends file_bytes after an empty body."""
        data = encode_frame(BINARY, Frame("alice", "bob", 1, "t", "m1", b"", file_bytes=9))
        assert msgspec.msgpack.decode(data[8:])[10:] == [b"", 9]
        plain = encode_frame(BINARY, Frame("alice", "bob", 1, "t", "m1", b"x"))
        assert len(msgspec.msgpack.decode(plain[8:])) == 11  # unchanged without FILE

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize(
        "frame",
        [
            Frame("a", "b", 1, "t", "m", b"x", file_bytes=3),
            Frame("a", "b", 1, "t", "m", b"", part=1, parts=2, file_bytes=3),
            Frame("a", "b", 1, "t", "m", b"", file_bytes=-1),
            Frame("a", "b", 1, "t", "m", b"", file_bytes=wire.MAX_FILE_BYTES + 1),
        ],
    )
    def test_encode_refuses_file_with_body_parts_or_bad_size(
        self, kind: FrameKind, frame: Frame
    ) -> None:
        """FILE needs 1..2**63-1, an empty body and no PART."""
        with pytest.raises(EncodeError, match="FILE"):
            encode_frame(kind, frame)

    @pytest.mark.parametrize(
        ("header", "reason"),
        [
            ("LEN:0|TS:0|FILE:0", "FILE:0 needs a size of at least 1"),
            ("LEN:1|TS:0|FILE:7", "got LEN:1"),
            ("LEN:0|TS:0|PART:1/2|FILE:7", "PART 1/2"),
            ("LEN:0|TS:0|FILE:x", "FILE 'x' is not a non-negative integer"),
            (f"LEN:0|TS:0|FILE:{1 << 63}", "FILE 9223372036854775808 is over its limit"),
        ],
    )
    def test_text_decoder_refuses_bad_file_fields(self, header: str, reason: str) -> None:
        """A bad FILE is a DecodeError naming it; the next frame still arrives."""
        body = b"x" if "LEN:1" in header else b""
        bad = f"[FROM:a|TO:b|PRIORITY:1|TYPE:t|ID:m|{header}]\n".encode() + body + wire.TRAILER
        errors: list[str] = []
        frames = decode_all(bad + payload(*GOOD), errors=errors)
        assert [f.body for f in frames] == [b"hi"]
        assert len(errors) == 1
        assert reason in errors[0]

    def test_binary_decoder_refuses_file_with_parts(self) -> None:
        """file_bytes with PART i/n > 1 is not a valid binary frame."""
        errors: list[str] = []
        frames = decode_all(payload(*GOOD[:8], 1, 2, b"", 5) + payload(*GOOD), errors=errors)
        assert [f.body for f in frames] == [b"hi"]
        assert "FILE 5 comes with" in errors[0]

    def test_reassembler_refuses_a_file_frame(self) -> None:
        """Only an agent's router resolves a body file; the sans-IO reassembler says so."""
        with pytest.raises(DecodeError, match="body in a body file"):
            Reassembler().add(Frame("a", "b", 1, "t", "m", b"", file_bytes=4), 0.0)

    def test_named_field_after_body(self) -> None:
        """msgspec's position 11 is the FILE element."""
        assert _named("Expected `int` - at `$[11]`") == "Expected `int` in FILE"


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KINDS), file_frames()), min_size=1, max_size=4))
def test_property_file_frames_round_trip(items: list[tuple[FrameKind, Frame]]) -> None:
    """decode(encode(f)) == f for reference frames of both kinds, one stream."""
    data = b"".join(encode_kind(kind, f) for kind, f in items)
    assert decode_all(data) == [f for _, f in items]


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.sampled_from(KINDS), file_frames()), min_size=1, max_size=4),
    st.integers(1, 200),
)
def test_property_file_frames_in_chunks(items: list[tuple[FrameKind, Frame]], chunk: int) -> None:
    """Reference frames fed in arbitrary chunk sizes give the same frames."""
    data = b"".join(encode_kind(kind, f) for kind, f in items)
    assert decode_all(data, chunk=chunk) == [f for _, f in items]


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(file_frames())
def test_property_file_frame_differential(frame: Frame) -> None:
    """The same reference frame through the text and the binary encoder decodes equal."""
    assert decode_all(encode_frame(TEXT, frame)) == decode_all(encode_frame(BINARY, frame))
