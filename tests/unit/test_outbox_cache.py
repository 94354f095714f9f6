"""OutboxCache: least recently used outboxes are closed past the bound; forget and sweep close."""

from __future__ import annotations

import pytest

from pipemesh.errors import TransportClosed
from pipemesh.runtime.outbox import OutboxCache
from pipemesh.transport.base import Outbox
from pipemesh.transport.memory import MemoryTransport


def cache_of(names: list[str], max_open: int) -> tuple[OutboxCache, list[str]]:
    transport = MemoryTransport()
    for name in names:
        transport.bind(name)
    opened: list[str] = []

    def connect(name: str) -> Outbox:
        opened.append(name)
        return transport.connect(name)

    return OutboxCache(connect, max_open=max_open), opened


def is_closed(outbox: Outbox) -> bool:
    try:
        outbox.write_frames([b"x"], 0.1)
    except TransportClosed:
        return True
    return False


class TestOutboxCache:
    def test_least_recently_used_is_closed_past_the_bound(self) -> None:
        """The third peer evicts the one used least recently, and closes it."""
        cache, opened = cache_of(["a", "b", "c"], max_open=2)
        a = cache.get("a")
        cache.get("b")
        assert cache.get("a") is a  # a is now the most recent
        cache.get("c")
        assert cache.names() == ["a", "c"]
        assert opened == ["a", "b", "c"]
        cache.get("b")  # reopened on demand
        assert opened == ["a", "b", "c", "b"]
        assert len(cache) == 2

    def test_evicted_outbox_is_closed(self) -> None:
        """An evicted outbox holds nothing: writing to it raises TransportClosed."""
        cache, _ = cache_of(["a", "b"], max_open=1)
        a = cache.get("a")
        cache.get("b")
        assert is_closed(a)
        assert "a" not in cache

    def test_forget_and_sweep_close(self) -> None:
        """forget() closes one; sweep() closes those the predicate calls gone."""
        cache, _ = cache_of(["a", "b", "c"], max_open=8)
        outs = {n: cache.get(n) for n in ("a", "b", "c")}
        cache.forget("a")
        cache.forget("a")  # idempotent
        assert cache.sweep(lambda name: name == "b") == ["b"]
        assert cache.names() == ["c"]
        assert is_closed(outs["a"])
        assert is_closed(outs["b"])
        assert not is_closed(outs["c"])
        cache.close()
        assert len(cache) == 0
        assert is_closed(outs["c"])

    def test_bound_must_be_positive(self) -> None:
        """max_open below 1 is argument misuse."""
        with pytest.raises(ValueError, match="at least 1"):
            OutboxCache(MemoryTransport().connect, max_open=0)
