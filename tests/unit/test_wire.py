"""The sans-IO wire module: framing, parts, resynchronisation, limits, properties."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipemesh.errors import DecodeError, EncodeError
from pipemesh.wire import (
    END_MARKER,
    NEED_DATA,
    PART_COST_BYTES,
    PIPE_BUF,
    TRAILER,
    Frame,
    FrameDecoder,
    Message,
    NeedData,
    Priority,
    Reassembler,
    encode,
    encode_message,
    is_valid_id,
    is_valid_name,
    validate_name,
    validate_type,
)


def decode_all(data: bytes, *, chunk: int = 0, max_frame: int = 16 * 1024 * 1024) -> list[Frame]:
    """Feed ``data`` (in chunks of ``chunk`` bytes, 0 = at once) and return every frame."""
    dec = FrameDecoder(max_frame_body_bytes=max_frame)
    out: list[Frame] = []
    pieces = [data] if chunk <= 0 else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in [*pieces, b""]:
        dec.feed(piece)
        while True:
            frame = dec.next_frame()
            if isinstance(frame, NeedData):
                break
            out.append(frame)
    return out


def messages_of(frames_bytes: list[bytes]) -> list[Message]:
    """Decode and reassemble a list of encoded frames."""
    asm = Reassembler()
    out = []
    for frame in decode_all(b"".join(frames_bytes), max_frame=PIPE_BUF):
        msg = asm.add(frame, 0.0)
        if msg is not None:
            out.append(msg)
    return out


def one(body: str = "hello", **kw: object) -> bytes:
    args: dict[str, object] = {
        "sender": "claude_code",
        "to": "gemini",
        "msg_id": "msg_001",
        "msg_type": "question",
        "sent_ns": 1,
    }
    args.update(kw)
    frames = encode_message(
        str(args.pop("sender")),
        str(args.pop("to")),
        body.encode(),
        **args,  # type: ignore[arg-type]
    )
    assert len(frames) == 1
    return frames[0]


class TestEncode:
    def test_encode_message_is_the_seed_frame(self) -> None:
        """The frame reads exactly like the seed's, with LEN and TS added."""
        data = one("How should we structure the data pipeline?")
        text = data.decode()
        assert text.startswith("[FROM:claude_code|TO:gemini|PRIORITY:1|TYPE:question|ID:msg_001|")
        assert "|LEN:42|TS:1]\n" in text
        assert text.endswith("How should we structure the data pipeline?\n===END_MESSAGE===\n")

    def test_encode_broadcast_has_empty_to(self) -> None:
        """An empty TO is a broadcast."""
        assert b"|TO:|" in one(to="")
        (msg,) = messages_of([one(to="")])
        assert msg.is_broadcast

    def test_encode_reply_carries_re_field(self) -> None:
        """A reply names the question's ID in RE."""
        data = one(reply_to="msg_000")
        assert b"|RE:msg_000]" in data
        assert messages_of([data])[0].reply_to == "msg_000"

    def test_encode_frame_round_trips(self) -> None:
        """encode() of a Frame decodes to the same Frame."""
        frame = Frame("a", "b", 3, "status", "x-1", b"\x00\xff body", 99, "y-2", 2, 5)
        assert decode_all(encode(frame)) == [frame]

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("sender", "bad/name"),
            ("sender", ""),
            ("to", "a|b"),
            ("msg_type", "has space"),
            ("id", "id]x"),
            ("reply_to", "re\nx"),
            ("priority", 4),
            ("priority", True),
            ("sent_ns", -1),
            ("part", 3),
        ],
    )
    def test_encode_rejects_fields_the_format_cannot_carry(self, field: str, value: object) -> None:
        """Every header field is validated before a byte is produced."""
        base: dict[str, object] = {
            "sender": "a",
            "to": "b",
            "priority": 1,
            "msg_type": "t",
            "id": "i",
            "body": b"",
            "sent_ns": 0,
            "reply_to": "",
            "part": 1,
            "parts": 1,
        }
        base[field] = value
        with pytest.raises(EncodeError):
            encode(Frame(**base))  # type: ignore[arg-type]

    def test_encode_message_checks_fields(self) -> None:
        """encode_message validates too, unless the caller says it already did."""
        with pytest.raises(EncodeError):
            encode_message("a", "../etc", b"x", msg_id="m")

    def test_encode_message_without_room_raises(self) -> None:
        """A frame size too small for any body is an EncodeError."""
        with pytest.raises(EncodeError, match="no room"):
            encode_message("a", "b", b"x" * 1000, msg_id="m", max_frame_bytes=60)

    @pytest.mark.parametrize("ack", [False, True])
    def test_encode_message_unchecked_matches_checked(self, ack: bool) -> None:
        """The hot-path encoder writes the same bytes as the checked one."""
        kw = {"msg_id": "m-1", "priority": 2, "msg_type": "q", "sent_ns": 7, "reply_to": "r-1"}
        fast = encode_message("a", "b", b"hi", check=False, ack=ack, **kw)  # type: ignore[arg-type]
        assert fast == encode_message("a", "b", b"hi", ack=ack, **kw)  # type: ignore[arg-type]
        assert (b"|ACK:1]" in fast[0]) is ack

    def test_priority_enum_values_match_seed(self) -> None:
        """0 low, 1 normal, 2 urgent, 3 critical."""
        assert [int(p) for p in Priority] == [0, 1, 2, 3]


class TestParts:
    def test_large_body_is_split_into_atomic_frames(self) -> None:
        """Every frame of a large message fits in PIPE_BUF, so FIFO writes stay atomic."""
        body = "0123456789abcdef" * 65536
        frames = encode_message("a", "b", body.encode(), msg_id="big")
        assert len(frames) > 256
        assert all(len(f) <= PIPE_BUF for f in frames)
        assert b"|PART:1/" in frames[0]
        assert messages_of(frames)[0].body == body

    def test_large_text_round_trips_exactly(self) -> None:
        """A 1 MiB UTF-8 body with markers inside comes back byte for byte."""
        body = ("héllo " + END_MARKER.decode() + "\n[FROM:x|TO:y]\n") * 40000
        frames = encode_message("a", "b", body.encode(), msg_id="big")
        (msg,) = messages_of(frames)
        assert msg.body == body

    def test_interleaved_parts_of_two_messages_reassemble(self) -> None:
        """Parts from concurrent writers may interleave; each message is rebuilt by ID."""
        a = encode_message("s1", "r", ("a" * 10000).encode(), msg_id="m1")
        b = encode_message("s2", "r", ("b" * 10000).encode(), msg_id="m1")
        mixed = [f for pair in zip(a, b, strict=True) for f in pair]
        got = messages_of(mixed)
        assert sorted(m.body[0] + m.sender for m in got) == ["as1", "bs2"]

    def test_duplicate_part_is_ignored(self) -> None:
        """A part seen twice (resent after a reader restart) is not counted twice."""
        frames = encode_message("a", "b", ("z" * 9000).encode(), msg_id="m")
        (msg,) = messages_of([frames[0], frames[0], *frames[1:]])
        assert msg.body == "z" * 9000

    def test_mismatched_part_drops_message(self) -> None:
        """A part whose header disagrees with its siblings drops the message."""
        frames = encode_message("a", "b", ("z" * 9000).encode(), msg_id="m", priority=1)
        other = encode_message("a", "b", ("z" * 9000).encode(), msg_id="m", priority=2)
        asm = Reassembler()
        (f1,) = decode_all(frames[0], max_frame=PIPE_BUF)
        (f2,) = decode_all(other[1], max_frame=PIPE_BUF)
        assert asm.add(f1, 0.0) is None
        with pytest.raises(DecodeError, match="does not match"):
            asm.add(f2, 0.0)
        assert asm.pending == 0

    def test_expire_drops_stale_partial(self) -> None:
        """Parts of a message whose sender died are dropped after the timeout, with a report."""
        frames = encode_message("a", "b", ("z" * 9000).encode(), msg_id="m")
        asm = Reassembler()
        (f1,) = decode_all(frames[0], max_frame=PIPE_BUF)
        asm.add(f1, now=10.0)
        assert asm.expire(now=15.0, max_age_s=30.0) == []
        (err,) = asm.expire(now=50.0, max_age_s=30.0)
        assert "1 of 3 parts" in str(err)
        assert asm.pending == 0

    def test_too_many_pending_drops_oldest(self) -> None:
        """The number of unfinished messages is bounded."""
        asm = Reassembler(max_pending=2)
        for i in range(2):
            (f,) = decode_all(
                encode_message("a", "b", b"z" * 9000, msg_id=f"m{i}")[0], max_frame=PIPE_BUF
            )
            asm.add(f, float(i))
        (f,) = decode_all(encode_message("a", "b", b"z" * 9000, msg_id="m9")[0], max_frame=PIPE_BUF)
        with pytest.raises(DecodeError, match="dropped message m0"):
            asm.add(f, 5.0)
        assert asm.pending == 2

    def test_body_over_limit_is_rejected(self) -> None:
        """A reassembled body over max_body_bytes is dropped as soon as it passes the cap."""
        frames = encode_message("a", "b", b"z" * 20000, msg_id="m")
        asm = Reassembler(max_body_bytes=10000)
        f1, f2, f3, *_ = decode_all(b"".join(frames), max_frame=PIPE_BUF)
        asm.add(f1, 0.0)
        asm.add(f2, 0.0)
        with pytest.raises(DecodeError, match="over 10000 bytes"):
            asm.add(f3, 0.0)
        assert asm.pending == 0

    def test_announced_parts_beyond_body_cap_rejected(self) -> None:
        """A first part announcing more parts than the cap allows is refused at once."""
        asm = Reassembler(max_body_bytes=10)
        frame = Frame("a", "b", 1, "t", "m", b"x", 0, "", 1, 11)
        with pytest.raises(DecodeError, match="announces 11 parts"):
            asm.add(frame, 0.0)

    def test_single_frame_over_body_cap_rejected(self) -> None:
        """A one-frame message over the body cap is refused."""
        asm = Reassembler(max_body_bytes=4)
        with pytest.raises(DecodeError, match="limit is 4"):
            asm.add(Frame("a", "b", 1, "t", "m", b"12345"), 0.0)

    def test_non_utf8_body_rejected(self) -> None:
        """Bodies are UTF-8 text; anything else is a DecodeError naming the sender."""
        asm = Reassembler()
        with pytest.raises(DecodeError, match="not UTF-8"):
            asm.add(Frame("a", "b", 1, "t", "m", b"\xff\xfe"), 0.0)


class TestDecoder:
    def test_need_data_until_frame_complete(self) -> None:
        """A frame fed byte by byte appears only when whole."""
        data = one()
        dec = FrameDecoder()
        for i, byte in enumerate(data):
            assert dec.next_frame() is NEED_DATA or i == 0
            dec.feed(bytes([byte]))
        frame = dec.next_frame()
        assert isinstance(frame, Frame)
        assert frame.body == b"hello"
        assert dec.buffered == 0
        assert repr(NEED_DATA) == "NEED_DATA"
        assert NeedData() is NEED_DATA

    def test_garbage_before_frame_is_skipped_and_reported(self) -> None:
        """Leading garbage raises one DecodeError, then the frame decodes."""
        dec = FrameDecoder()
        dec.feed(b"xx garbage\n" + one())
        with pytest.raises(DecodeError) as info:
            dec.next_frame()
        assert info.value.skipped == 11
        assert info.value.offset == 0
        frame = dec.next_frame()
        assert isinstance(frame, Frame)

    def test_garbage_only_is_discarded(self) -> None:
        """Bytes with no header start are dropped, except a tail that may begin one."""
        dec = FrameDecoder()
        dec.feed(b"noise noise [FR")
        with pytest.raises(DecodeError):
            dec.next_frame()
        assert dec.buffered == 3
        dec.feed(one()[3:])
        assert isinstance(dec.next_frame(), Frame)

    def test_partial_frame_at_eof_is_error(self) -> None:
        """feed(b'') means end of stream; a partial frame then is a DecodeError."""
        for cut in (20, len(one()) - 5):
            dec = FrameDecoder()
            dec.feed(one()[:cut])
            dec.feed(b"")
            with pytest.raises(DecodeError, match="stream ended"):
                dec.next_frame()
            assert dec.next_frame() is NEED_DATA

    def test_garbage_at_eof_is_error(self) -> None:
        """Trailing garbage at end of stream is reported, then the stream is empty."""
        dec = FrameDecoder()
        dec.feed(b"[F")
        dec.feed(b"")
        with pytest.raises(DecodeError):
            dec.next_frame()
        assert dec.next_frame() is NEED_DATA

    def test_missing_end_marker_resyncs_to_next_frame(self) -> None:
        """A frame whose marker is wrong is dropped; the following frame still arrives."""
        bad = one("12345").replace(b"===END_MESSAGE===", b"===END_MESSAGX===")
        frames = []
        dec = FrameDecoder()
        dec.feed(bad + one("next"))
        errors = 0
        while True:
            try:
                f = dec.next_frame()
            except DecodeError:
                errors += 1
                continue
            if isinstance(f, NeedData):
                break
            frames.append(f)
        assert errors >= 1
        assert [f.body for f in frames] == [b"next"]

    def test_lying_length_does_not_swallow_following_frame(self) -> None:
        """A header claiming more bytes than follow cannot eat the next valid frame."""
        liar = b"[FROM:evil|TO:gemini|PRIORITY:1|TYPE:t|ID:x|LEN:300|TS:0]\nshort"
        dec = FrameDecoder(max_frame_body_bytes=PIPE_BUF)
        dec.feed(liar + one("victim") + b"x" * 400)
        got = []
        for _ in range(20):
            try:
                f = dec.next_frame()
            except DecodeError:
                continue
            if isinstance(f, NeedData):
                break
            got.append(f.body)
        assert b"victim" in got

    @pytest.mark.parametrize(
        ("header", "reason"),
        [
            (b"[FROM:a|TO:b|PRIORITY:1|TYPE:t|ID:x|LEN:99999999|TS:0]\n", "over the limit"),
            (b"[FROM:a|TO:b|PRIORITY:9|TYPE:t|ID:x|LEN:0|TS:0]\n", "PRIORITY 9"),
            (b"[FROM:a|TO:b|PRIORITY:1|TYPE:t|ID:x|TS:0]\n", "no LEN"),
            (b"[FROM:a|TO:b|TO:c|PRIORITY:1|TYPE:t|ID:x|LEN:0]\n", "twice"),
            (b"[FROM:a/../b|TO:b|PRIORITY:1|TYPE:t|ID:x|LEN:0]\n", "FROM"),
            (b"[FROM:a|TO:..|PRIORITY:1|TYPE:t|ID:x|LEN:0]\n", "TO"),
            (b"[FROM:a..b|TO:b|PRIORITY:1|TYPE:t|ID:x|LEN:0|TS:0]\n", "FROM"),
            (b"[FROM:a|TO:b|PRIORITY:1|TYPE:t|ID:x|LEN:0|TS:0|PART:3/2]\n", "PART"),
            (b"[FROM:a|TO:b|PRIORITY:1|TYPE:t|ID:x|LEN:0|PART:0/2]\n", "PART"),
            (b"[FROM:a|TO:b|PRIORITY:1|TYPE:t|ID:x|LEN:0|PART:2]\n", "PART"),
            (b"[FROM:a|TO:b|PRIORITY:1|TYPE:9t|ID:x|LEN:0]\n", "TYPE"),
            (b"[FROM:a|TO:b|PRIORITY:1|TYPE:t|ID:]x|LEN:0]\n", "ID"),
            (b"[FROM:a|TO:b|PRIORITY:1|TYPE:t|ID:x|LEN:0|RE:-x]\n", "RE"),
            (b"[FROM:a|TO:b|PRIORITY:1|TYPE:t|ID:x|LEN:-1]\n", "LEN"),
            (b"[FROM:a|TO:b|PRIORITY:1|TYPE:t|ID:x|LEN:0|TS:9999999999999999999999]\n", "TS"),
            (b"[FROM:a|TO:b|PRIORITY:1|TYPE:t|ID:x|LEN:0|bogus]\n", "KEY:VALUE"),
            ("[FROM:a|TO:b|PRIORITY:1|TYPE:t|ID:x|LEN:0|X:é]\n".encode(), "ASCII"),
        ],
    )
    def test_bad_headers_are_rejected_with_reason(self, header: bytes, reason: str) -> None:
        """Each malformed header gives a DecodeError that says what is wrong."""
        dec = FrameDecoder(max_frame_body_bytes=PIPE_BUF)
        dec.feed(header + b"\n===END_MESSAGE===\n" + one("after"))
        with pytest.raises(DecodeError, match=reason):
            dec.next_frame()
        bodies = []
        for _ in range(10):
            try:
                f = dec.next_frame()
            except DecodeError:
                continue
            if isinstance(f, NeedData):
                break
            bodies.append(f.body)
        assert bodies == [b"after"]

    def test_unknown_fields_are_ignored(self) -> None:
        """Forward compatibility: extra KEY:VALUE fields are accepted and ignored."""
        data = b"[FROM:a|TO:b|PRIORITY:1|TYPE:t|ID:x|LEN:2|TS:5|HOP:3]\nhi\n===END_MESSAGE===\n"
        (frame,) = decode_all(data)
        assert (frame.sender, frame.body, frame.sent_ns) == ("a", b"hi", 5)

    def test_fields_in_another_order_are_accepted(self) -> None:
        """The general parser does not depend on field order."""
        data = b"[FROM:a|ID:x|TO:b|TYPE:t|PRIORITY:2|LEN:2]\nhi\n===END_MESSAGE===\n"
        (frame,) = decode_all(data)
        assert (frame.priority, frame.sent_ns, frame.part) == (2, 0, 1)

    def test_header_too_long_is_rejected(self) -> None:
        """A header line without ']\\n' within the cap is dropped."""
        dec = FrameDecoder(max_header_bytes=64)
        dec.feed(b"[FROM:" + b"a" * 100 + one())
        with pytest.raises(DecodeError, match="longer than 64"):
            dec.next_frame()
        frames = []
        for _ in range(5):
            try:
                f = dec.next_frame()
            except DecodeError:
                continue
            if isinstance(f, NeedData):
                break
            frames.append(f)
        assert len(frames) == 1

    def test_many_frames_in_one_feed(self) -> None:
        """A read that returns many frames yields them all, in order."""
        data = b"".join(one(str(i), msg_id=f"m{i}") for i in range(100))
        assert [f.body for f in decode_all(data)] == [str(i).encode() for i in range(100)]

    def test_buffer_is_compacted(self) -> None:
        """Consumed bytes do not accumulate in the decoder."""
        dec = FrameDecoder()
        frame = one()
        for _ in range(1000):
            dec.feed(frame + frame[:10])
            assert isinstance(dec.next_frame(), Frame)
            dec.feed(frame[10:])
            assert isinstance(dec.next_frame(), Frame)
        assert dec.buffered == 0


class TestNames:
    @pytest.mark.parametrize(
        "name", ["claude_code", "gemini", "codex", "a", "A-1.b_c", "x" * 64, "cli-123"]
    )
    def test_valid_names(self, name: str) -> None:
        """Ordinary agent names are accepted."""
        assert validate_name(name) == name
        assert is_valid_name(name)

    @pytest.mark.parametrize(
        "name",
        [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a|b",
            "a]b",
            "a\nb",
            "-a",
            ".hidden",
            "a..b",
            "x" * 65,
            "é",
        ],
    )
    def test_invalid_names(self, name: str) -> None:
        """Names that could escape the pipes directory or break the header are refused."""
        assert not is_valid_name(name)
        with pytest.raises(ValueError, match="not valid"):
            validate_name(name)

    def test_types_and_ids(self) -> None:
        """Types start with a letter; ids are name-like."""
        assert validate_type("question") == "question"
        with pytest.raises(ValueError, match="not valid"):
            validate_type("1abc")
        assert is_valid_id("abc-1")
        assert not is_valid_id("a b")


# -- property tests --

utf8_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12000)
names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,20}", fullmatch=True)
types = st.from_regex(r"[A-Za-z][A-Za-z0-9_.\-]{0,10}", fullmatch=True)
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,20}", fullmatch=True)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    return Message(
        draw(names),
        draw(st.one_of(st.just(""), names)),
        draw(st.integers(0, 3)),
        draw(types),
        draw(ids),
        draw(utf8_text),
        draw(st.integers(0, 2**62)),
        draw(st.one_of(st.just(""), ids)),
    )


def encode_msg(m: Message) -> list[bytes]:
    return encode_message(
        m.sender,
        m.to,
        m.body.encode(),
        msg_id=m.id,
        priority=m.priority,
        msg_type=m.msg_type,
        sent_ns=m.sent_ns,
        reply_to=m.reply_to,
    )


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), min_size=1, max_size=4))
def test_property_round_trip(msgs: list[Message]) -> None:
    """decode(encode(m)) == m for generated messages, small and split into parts."""
    unique = [
        Message(
            m.sender, m.to, m.priority, m.msg_type, f"{m.id}-{i}", m.body, m.sent_ns, m.reply_to
        )
        for i, m in enumerate(msgs)
    ]
    frames = [f for m in unique for f in encode_msg(m)]
    assert messages_of(frames) == unique


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(utf8_text, min_size=1, max_size=3), st.integers(1, 5000))
def test_property_chunking_does_not_matter(texts: list[str], chunk: int) -> None:
    """The same bytes fed in arbitrary chunk sizes give the same frames."""
    data = b"".join(
        f for i, t in enumerate(texts) for f in encode_message("a", "b", t.encode(), msg_id=f"m{i}")
    )
    assert decode_all(data, chunk=chunk, max_frame=PIPE_BUF) == decode_all(data, max_frame=PIPE_BUF)


@settings(max_examples=300)
@given(st.binary(max_size=3000))
def test_property_arbitrary_bytes_give_frames_or_decode_error(data: bytes) -> None:
    """Arbitrary bytes give frames or DecodeError, never another exception, never a hang."""
    dec = FrameDecoder(max_frame_body_bytes=PIPE_BUF)
    asm = Reassembler()
    dec.feed(data)
    dec.feed(b"")
    for _ in range(len(data) + 10):
        try:
            frame = dec.next_frame()
        except DecodeError:
            continue
        if isinstance(frame, NeedData):
            break
        with contextlib.suppress(DecodeError):
            asm.add(frame, 0.0)
    else:
        pytest.fail("decoder did not converge")


@settings(max_examples=150)
@given(st.binary(max_size=600), utf8_text)
def test_property_valid_frame_after_garbage_arrives(garbage: bytes, text: str) -> None:
    """Whatever garbage precedes it, a valid frame after it is decoded intact."""
    frames = encode_message("good", "b", text.encode(), msg_id="ok")
    dec = FrameDecoder(max_frame_body_bytes=PIPE_BUF)
    dec.feed(garbage + b"\n" + b"".join(frames) + b"".join(frames))
    asm = Reassembler()
    got = []
    for _ in range(len(garbage) + 400):
        try:
            frame = dec.next_frame()
        except DecodeError:
            continue
        if isinstance(frame, NeedData):
            break
        try:
            msg = asm.add(frame, 0.0)
        except DecodeError:
            continue
        if msg is not None and msg.sender == "good":
            got.append(msg.body)
    assert text in got


@settings(max_examples=100)
@given(utf8_text, st.integers(0, 100), st.binary(min_size=1, max_size=3))
def test_property_mutated_frame_never_crashes(text: str, where: int, junk: bytes) -> None:
    """A valid frame with bytes overwritten anywhere gives frames or DecodeError only."""
    data = bytearray(b"".join(encode_message("a", "b", text.encode(), msg_id="m")))
    pos = where * len(data) // 101
    data[pos : pos + len(junk)] = junk
    dec = FrameDecoder(max_frame_body_bytes=PIPE_BUF)
    dec.feed(bytes(data))
    dec.feed(b"")
    asm = Reassembler()
    for _ in range(len(data) + 10):
        try:
            frame = dec.next_frame()
            if isinstance(frame, NeedData):
                break
            asm.add(frame, 0.0)
        except DecodeError:
            continue


class TestGeneralParser:
    """Headers not in encode()'s canonical order take the general parser: same rules."""

    HEAD = b"[FROM:a|ID:x|TO:b|TYPE:t|PRIORITY:1|LEN:5]\n"

    def test_reordered_frames_back_to_back(self) -> None:
        """Two non-canonical frames in one feed both decode."""
        frame = self.HEAD + b"hello" + b"\n===END_MESSAGE===\n"
        assert [f.body for f in decode_all(frame * 2)] == [b"hello", b"hello"]

    def test_reordered_part_header(self) -> None:
        """PART is read by the general parser too."""
        data = b"[FROM:a|PART:2/3|ID:x|TO:b|TYPE:t|PRIORITY:1|LEN:2]\nhi\n===END_MESSAGE===\n"
        (frame,) = decode_all(data)
        assert (frame.part, frame.parts, frame.body) == (2, 3, b"hi")

    def test_reordered_frame_body_incomplete(self) -> None:
        """NEED_DATA while the body is short; DecodeError if the stream ends there."""
        dec = FrameDecoder()
        dec.feed(self.HEAD + b"hel")
        assert dec.next_frame() is NEED_DATA
        dec.feed(b"")
        with pytest.raises(DecodeError, match="stream ended inside a frame body"):
            dec.next_frame()

    def test_reordered_frame_bad_marker(self) -> None:
        """A wrong marker after a non-canonical header is a DecodeError."""
        dec = FrameDecoder()
        dec.feed(self.HEAD + b"hello\n===END_MESSAGX===\n")
        with pytest.raises(DecodeError, match="no ===END_MESSAGE==="):
            dec.next_frame()

    def test_header_cut_by_end_of_stream(self) -> None:
        """A header start with no header end before EOF is a DecodeError."""
        dec = FrameDecoder()
        dec.feed(b"[FROM:a|TO:b|PRI")
        assert dec.next_frame() is NEED_DATA
        dec.feed(b"")
        with pytest.raises(DecodeError, match="stream ended inside a frame header"):
            dec.next_frame()

    def test_unchecked_large_message_splits_like_checked(self) -> None:
        """check=False on a multi-part body gives the same frames as check=True."""
        body = b"q" * 10_000
        assert encode_message("a", "b", body, msg_id="m", check=False) == encode_message(
            "a", "b", body, msg_id="m"
        )

    def test_too_many_parts_is_an_encode_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A body needing more parts than MAX_PARTS is refused before anything is written."""
        from pipemesh import wire

        monkeypatch.setattr(wire, "MAX_PARTS", 2)
        with pytest.raises(EncodeError, match="needs 3 parts, limit is 2"):
            encode_message("a", "b", b"z" * 10_000, msg_id="m")


def test_frames_split_at_every_offset() -> None:
    """Two frames (one in parts) fed as two pieces split at every offset decode the same."""
    data = b"".join(
        encode_message("a", "b", "héllo ===END_MESSAGE=== x".encode() * 3, msg_id="m1", ack=True)
        + encode_message("a", "b", b"y" * 5000, msg_id="m2", reply_to="m1")
    )
    whole = messages_of([data])
    assert [m.id for m in whole] == ["m1", "m2"]
    assert whole[0].ack
    assert not whole[1].ack
    for cut in range(len(data) + 1):
        dec = FrameDecoder(max_frame_body_bytes=PIPE_BUF)
        asm = Reassembler()
        got = []
        for piece in (data[:cut], data[cut:]):
            dec.feed(piece)
            while not isinstance(frame := dec.next_frame(), NeedData):
                msg = asm.add(frame, 0.0)
                if msg is not None:
                    got.append(msg)
        assert got == whole, cut


def frames_with_boundaries(writes: list[bytes]) -> tuple[list[Frame], list[DecodeError]]:
    """Feed each atomic write followed by mark_boundary(), as the FIFO router does."""
    dec = FrameDecoder(max_frame_body_bytes=PIPE_BUF)
    out: list[Frame] = []
    errors: list[DecodeError] = []
    for data in writes:
        dec.feed(data)
        dec.mark_boundary()
        for _ in range(len(data) + 10):
            try:
                frame = dec.next_frame()
            except DecodeError as exc:
                errors.append(exc)
                continue
            if isinstance(frame, NeedData):
                break
            out.append(frame)
    return out, errors


class TestBoundary:
    """mark_boundary(): a frame cut short at the end of what is readable is garbage (issue 9)."""

    def test_lying_len_does_not_stall_later_frames(self) -> None:
        """A frame whose LEN exceeds its body is skipped; the next write decodes at once."""
        liar = one("short").replace(b"|LEN:5|", b"|LEN:4000|")
        later = one("next", msg_id="msg_002")
        frames, errors = frames_with_boundaries([liar, later])
        assert [f.body for f in frames] == [b"next"]
        assert len(errors) == 1
        assert "LEN:4000" in str(errors[0])
        assert "garbage" in str(errors[0])

    def test_lying_len_in_the_same_read_as_later_frames(self) -> None:
        """Frames read together with the liar are recovered too."""
        liar = one("short").replace(b"|LEN:5|", b"|LEN:4000|")
        later = [one(f"n{i}", msg_id=f"m{i}") for i in range(3)]
        frames, errors = frames_with_boundaries([liar + b"".join(later)])
        assert [f.body for f in frames] == [b"n0", b"n1", b"n2"]
        assert errors

    def test_without_boundary_the_decoder_still_waits(self) -> None:
        """Without the mark, an incomplete frame waits for more bytes (streams, spool files)."""
        dec = FrameDecoder()
        dec.feed(one("hello")[:-5])
        assert dec.next_frame() is NEED_DATA
        dec.mark_boundary()
        with pytest.raises(DecodeError, match="only"):
            dec.next_frame()

    def test_feed_clears_the_boundary(self) -> None:
        """A frame fed in pieces decodes when the mark is only set after its last piece."""
        data = one("hello")
        dec = FrameDecoder()
        dec.feed(data[:30])
        dec.mark_boundary()
        dec.feed(data[30:])
        frame = dec.next_frame()
        assert isinstance(frame, Frame)
        assert frame.body == b"hello"

    def test_header_cut_short_is_garbage(self) -> None:
        """An unterminated header at the boundary is skipped with a reason."""
        dec = FrameDecoder()
        dec.feed(b"[FROM:a|TO:b|PRI")
        dec.mark_boundary()
        with pytest.raises(DecodeError, match="header cut short"):
            dec.next_frame()
        assert dec.next_frame() is NEED_DATA
        assert dec.buffered == 0

    def test_partial_header_start_is_garbage(self) -> None:
        """A trailing '[FRO' is not kept for later once nothing more is readable."""
        dec = FrameDecoder()
        dec.feed(one("x") + b"[FRO")
        dec.mark_boundary()
        assert isinstance(dec.next_frame(), Frame)
        with pytest.raises(DecodeError, match="garbage"):
            dec.next_frame()
        assert dec.buffered == 0

    def test_general_parser_body_cut_short(self) -> None:
        """A non-canonical header with a short body is garbage at the boundary too."""
        dec = FrameDecoder()
        dec.feed(TestGeneralParser.HEAD + b"hel")
        dec.mark_boundary()
        with pytest.raises(DecodeError, match="LEN:5 but only 3"):
            dec.next_frame()


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.text(alphabet="abcxyz \n", max_size=300), min_size=1, max_size=5),
    st.integers(0, 4),
    st.integers(1, 4000),
    st.booleans(),
)
def test_property_a_lying_frame_never_hides_good_ones(
    texts: list[str], where: int, bogus_len: int, same_read: bool
) -> None:
    """One frame with a wrong LEN, among atomic writes, costs only itself: every good frame
    arrives, in order, whether the liar shares a read with them or not."""
    good = [one(t, msg_id=f"m{i}") for i, t in enumerate(texts)]
    liar = one("x" * 10, msg_id="liar").replace(b"|LEN:10|", f"|LEN:{bogus_len}|".encode())
    if bogus_len == 10:
        liar = liar.replace(b"x" * 10, b"x" * 9)
    at = min(where, len(good))
    writes = [*good[:at], liar, *good[at:]]
    if same_read:
        # A LEN that ends exactly on a later frame's trailer makes bytes that ARE a valid
        # frame whose body quotes the frames in between: no decoder can tell the two apart
        # (test_a_lie_landing_on_a_trailer_is_a_quoting_frame). Every other lie costs only itself.
        data = b"".join(writes)
        head = data.index(b"\n", data.index(b"ID:liar|")) + 1
        end = head + bogus_len
        assume(data[end : end + len(TRAILER)] != TRAILER)
        writes = [data]
    frames, errors = frames_with_boundaries(writes)
    assert [f.id for f in frames] == [f"m{i}" for i in range(len(texts))]
    assert errors


def test_a_lie_landing_on_a_trailer_is_a_quoting_frame() -> None:
    """The limit of the property above, stated: when a wrong LEN ends exactly on a later
    frame's trailer in the same read, the bytes are a well-formed frame whose body holds
    the frames in between (what an agent quoting frames would send), so they are taken as
    one. Writes of their own (mark_boundary between them) never merge this way."""
    good = [one("", msg_id=f"m{i}") for i in range(3)]
    liar_body = b"x" * 10 + TRAILER + good[1]
    bogus_len = len(liar_body) - len(TRAILER)  # ends on the trailer of m1
    liar = one("x" * 10, msg_id="liar").replace(b"|LEN:10|", f"|LEN:{bogus_len}|".encode())
    frames, _ = frames_with_boundaries([good[0] + liar + good[1] + good[2]])
    assert [f.id for f in frames] == ["m0", "liar", "m2"]
    frames, errors = frames_with_boundaries([good[0], liar, good[1], good[2]])
    assert [f.id for f in frames] == ["m0", "m1", "m2"]
    assert errors


class TestPendingCost:
    def test_empty_parts_count_against_pending_bytes(self) -> None:
        """Zero-length PART frames are charged, so a flood of them hits max_pending_bytes."""
        asm = Reassembler(max_pending_bytes=50 * PART_COST_BYTES)
        errors = []
        for i in range(1, 1001):
            try:
                asm.add(Frame("a", "b", 1, "t", "flood", b"", 0, "", i, 1000), 0.0)
            except DecodeError as exc:
                errors.append((i, str(exc)))
                break
        assert errors, "1000 empty parts were all held"
        assert errors[0][0] <= 51
        assert "too many unfinished" in errors[0][1]
        assert asm.pending == 0

    def test_finished_message_releases_its_charge(self) -> None:
        """Completed messages give their charge back: the limit applies to what is held."""
        asm = Reassembler(max_pending_bytes=3 * PART_COST_BYTES + 10)
        for n in range(20):
            assert asm.add(Frame("a", "b", 1, "t", f"m{n}", b"ab", 0, "", 1, 2), 0.0) is None
            msg = asm.add(Frame("a", "b", 1, "t", f"m{n}", b"cd", 0, "", 2, 2), 0.0)
            assert msg is not None
            assert msg.body == "abcd"
        assert asm.pending == 0
