"""Binary frames carry every name the text frame carries, ``name@host`` up to its full length.

A gateway's remote entry is ``name@host``, each half up to 64 characters (wire.py), so its
FROM/TO can be up to 129 characters. Text frames carry it; binary frames must too, or a
local agent reading binary frames (the default) rejects every message from such an entry.
"""

from __future__ import annotations

import pytest

from pipemesh import codec, wire
from pipemesh.codec import BINARY, AnyFrameDecoder
from pipemesh.errors import DecodeError
from pipemesh.wire import Frame, Message

LONG_REMOTE = "a" * 64 + "@" + "h" * 64  # the longest valid name@host


@pytest.mark.parametrize(("sender", "to"), [(LONG_REMOTE, "bob"), ("bob", LONG_REMOTE)])
def test_binary_frame_carries_the_longest_name_at_host(sender: str, to: str) -> None:
    assert wire.is_valid_name(LONG_REMOTE)
    (data,) = codec.encode_message(BINARY, sender, to, b"hi", msg_id="m1")
    items = AnyFrameDecoder().decode_all(1 << 20, data)
    assert items == [Message(sender, to, 1, "response", "m1", "hi")]
    decoder = AnyFrameDecoder()
    decoder.feed(data)
    frame = decoder.next_frame()
    assert isinstance(frame, Frame)
    assert (frame.sender, frame.to) == (sender, to)


def test_binary_frame_still_refuses_a_name_past_name_at_host() -> None:
    too_long = "a" * 65 + "@" + "h" * 64
    payload = codec._ENCODE((too_long, "bob", 1, "t", "m1", 0, "", False, 1, 1, b"x"))
    data = codec.MAGIC + len(payload).to_bytes(4, "big") + payload
    (item,) = AnyFrameDecoder().decode_all(1 << 20, data)
    assert isinstance(item, DecodeError)
