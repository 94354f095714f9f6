"""The registry's ``frames`` field: what each agent's pipe reads (negotiation)."""

from __future__ import annotations

import json

import pytest

from pipemesh.registry import AgentRecord

OLD = {  # a record as agents before the binary frame wrote it: no "frames"
    "status": "active",
    "pid": 1,
    "registered_at": "2026-11-30T12:00:00.000000Z",
    "public_pipe": "/tmp/x.public",
    "private_pipe": "",
    "role": "",
}


def test_a_record_without_frames_reads_text_only() -> None:
    """Old records load, and mean text only, so their agents get text frames."""
    assert AgentRecord.from_json("old", OLD).frames == ("text",)


def test_frames_round_trip_through_json() -> None:
    """The field is written as a JSON list and read back as the same kinds."""
    rec = AgentRecord.from_json("new", {**OLD, "frames": ["text", "binary"]})
    assert rec.frames == ("text", "binary")
    data = json.loads(json.dumps(rec.to_json()))
    assert data["frames"] == ["text", "binary"]
    assert AgentRecord.from_json("new", data) == rec


@pytest.mark.parametrize("bad", ["binary", [], ["text"] * 9, [1], ["a b"], ["x" * 17], ["é"], None])
def test_a_malformed_frames_field_is_refused(bad: object) -> None:
    """Anything but a short list of kind names is a malformed entry, with its reason."""
    with pytest.raises(ValueError, match="frames is not a list"):
        AgentRecord.from_json("new", {**OLD, "frames": bad})
