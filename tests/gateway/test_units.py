"""Pure parts of the gateway: subjects, names, config files, heartbeats (no NATS, no netns)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipemesh import codec, wire
from pipemesh.errors import DecodeError, UsageError
from pipemesh.gateway import subjects
from pipemesh.gateway.config import load_config
from pipemesh.gateway.remote import _READ_POLL_S, Announcement, RemoteAgent, RemoteTable
from pipemesh.home import MeshHome
from pipemesh.registry import AgentRecord
from pipemesh.runtime.agent import AgentBase

NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", fullmatch=True).filter(
    lambda n: ".." not in n
)


class TestSubjects:
    @given(NAMES, NAMES, NAMES, NAMES)
    def test_direct_round_trip(self, mesh: str, src: str, dst: str, agent: str) -> None:
        """Every valid name maps to one token and back: a subject parses to its route."""
        route = subjects.parse(mesh, subjects.direct(mesh, src, dst, agent))
        assert route == subjects.Route(subjects.DIRECT, src, dst, agent)
        route = subjects.parse(mesh, subjects.durable(mesh, src, dst, agent))
        assert route == subjects.Route(subjects.DURABLE, src, dst, agent)

    def test_kinds_and_wildcards(self) -> None:
        """Each kind's subject, and the subscriptions that match them."""
        assert subjects.direct("m", "h.1", "b", "x.y") == "pm.m.m.h~1.b.x~y"
        assert subjects.broadcast("m", "a") == "pm.m.b.a"
        assert subjects.heartbeat("m", "a") == "pm.m.hb.a"
        assert subjects.heartbeat_all("m") == "pm.m.hb.*"
        assert subjects.inbound_direct("m", "b") == "pm.m.m.*.b.*"
        assert subjects.inbound_broadcasts("m") == "pm.m.b.*"
        assert subjects.durable_filter("m", "b") == "pm.m.d.*.b.*"
        assert subjects.stream_subjects("m.x") == "pm.m~x.d.>"
        assert subjects.stream_name("m.x") == "PM_m_d_x"
        assert subjects.parse("m", "pm.m.b.a") == subjects.Route(subjects.BROADCAST, "a")
        assert subjects.parse("m", "pm.m.hb.a") == subjects.Route(subjects.HEARTBEAT, "a")

    @given(NAMES, NAMES)
    def test_stream_and_consumer_names_never_collide(self, a: str, b: str) -> None:
        """Two meshes (or two hosts' consumers) never share a JetStream name.

        Regression: ``.`` became ``_d_``, so mesh ``a.b`` and mesh ``a_d_b`` used one
        stream, and hosts ``a.b`` and ``a_d_b`` one durable consumer (``gw_`` + it):
        each host's gateway re-bound the consumer to its own filter, taking the
        other host's durable messages away from it.
        """
        if a != b:
            assert subjects.stream_name(a) != subjects.stream_name(b)
        assert subjects.stream_name("a.b") != subjects.stream_name("a_d_b")
        assert not set(subjects.stream_name(a)) & set(".*> \t/\\~")

    @pytest.mark.parametrize(
        "subject",
        [
            "pm.m",
            "xx.m.b.a",
            "pm.other.b.a",
            "pm.m.b.a.b",
            "pm.m.m.a.b",
            "pm.m.zz.a",
            "pm.m.b.-bad",
            "pm.m.m.a.b.c@d",
            "pm.m.b.a~~b",
        ],
    )
    def test_parse_rejects_foreign_subjects(self, subject: str) -> None:
        """Subjects of another mesh, kind, shape or with invalid names parse to None."""
        assert subjects.parse("m", subject) is None

    @pytest.mark.parametrize("name", ["", "a@b", "..", "-x", "a b", "a" * 65])
    def test_host_token_refuses_invalid_names(self, name: str) -> None:
        """A name that could not be an agent's (or holds '@') is no subject token."""
        with pytest.raises(ValueError, match="not a valid name"):
            subjects.host_token(name)

    def test_token_name_refuses_dots(self) -> None:
        """A token holds no '.' (that would be two tokens)."""
        assert subjects.token_name("a.b") is None
        assert subjects.token_name("a~b") == "a.b"


class TestRemoteNames:
    def test_wire_carries_name_at_host_in_both_frame_kinds(self) -> None:
        """FROM/TO may be name@host in text and binary frames; IDs still may not hold '@'."""
        for kind in (codec.TEXT, codec.BINARY):
            frames = codec.encode_message(kind, "alice@a", "bob@b", b"hi", msg_id="m1")
            dec = codec.AnyFrameDecoder()
            dec.feed(b"".join(frames))
            frame = dec.next_frame()
            assert isinstance(frame, wire.Frame)
            assert (frame.sender, frame.to) == ("alice@a", "bob@b")
        assert wire.is_valid_name("bob@b")
        for bad in ("bob@", "@b", "a@b@c", "a@..", "a@-b"):
            assert not wire.is_valid_name(bad), bad
        assert not wire.is_valid_id("m@1")
        dec = codec.AnyFrameDecoder()
        dec.feed(b"[FROM:a|TO:b|PRIORITY:1|TYPE:t|ID:m@1|LEN:0|TS:0]\n\n===END_MESSAGE===\n")
        dec.feed(b"")
        with pytest.raises(DecodeError, match="ID"):
            dec.next_frame()

    def test_registry_admits_name_at_host_only_for_gateway_entries(self) -> None:
        """A name@host entry must say which gateway owns it; a local entry must not hold '@'."""
        base = {"pid": 1, "public_pipe": "/p", "registered_at": ""}
        rec = AgentRecord.from_json("bob@b", {**base, "gateway": "b"})
        assert rec.gateway == "b"
        assert "gateway" in rec.to_json()
        with pytest.raises(ValueError, match="name@host"):
            AgentRecord.from_json("bob@b", base)
        with pytest.raises(ValueError, match="name@host"):
            AgentRecord.from_json("bob", {**base, "gateway": "b"})
        with pytest.raises(ValueError, match="name@host"):
            AgentRecord.from_json("bob@b", {**base, "gateway": "c"})
        assert "gateway" not in AgentRecord.from_json("bob", base).to_json()

    def test_remote_entries_stop_together_not_one_poll_each(self, tmp_path: Path) -> None:
        """Closing (SIGTERM) or losing NATS stops all readers at once, FIFOs gone.

        Regression: each reader was stopped and joined in turn, each join waiting out
        its reader's poll (up to 0.2 s): 100 entries took ~5 s, 10,000 (a heartbeat's
        limit) ~10 minutes, under the table's lock, past any SIGTERM grace period.
        """
        home_dir = tmp_path / "mesh"
        home_dir.mkdir(mode=0o700)
        home = MeshHome.open(home_dir)
        # Enough entries that one-at-a-time (~n * 0.05 s: 20 s) and together (about one
        # poll plus n thread joins: ~1-2 s even under load) are far apart, so the bound
        # below holds on a loaded 2-core machine and still fails the old code.
        n = 400
        for end in ("close", "unreachable"):
            table = RemoteTable(home, lambda *a: None, lambda *a: None)
            agents = [RemoteAgent(f"a{i}", active=True) for i in range(n)]
            table.update("b", agents, reachable=True)
            assert len(list(home.pipes_dir.iterdir())) == n
            started = time.monotonic()
            table.close() if end == "close" else table.set_all_unreachable()
            took = time.monotonic() - started
            assert list(home.pipes_dir.iterdir()) == [], end
            # One at a time costs ~n * 0.05 s (measured 5.5 s for 100); together ~one poll.
            assert took < n * _READ_POLL_S / 8, (end, took)
            table.close()

    def test_an_agent_cannot_join_as_name_at_host(self, tmp_path: Path) -> None:
        """AgentBase refuses a name with '@' before touching the mesh."""
        home = tmp_path / "mesh"
        home.mkdir(mode=0o700)
        with pytest.raises(ValueError, match="another host"):
            AgentBase("bob@b", home=home)
        assert not (home / "agent_registry.json").exists()


class TestConfig:
    def _write(self, tmp_path: Path, text: str, mode: int = 0o600) -> Path:
        path = tmp_path / "gw.toml"
        path.write_text(text)
        os.chmod(path, mode)
        return path

    def test_reads_credentials(self, tmp_path: Path) -> None:
        """user/password and TLS paths are read from a 0600 file; repr hides secrets."""
        path = self._write(tmp_path, '[nats]\nuser = "u"\npassword = "s3cret"\ntls_ca = "/ca"\n')
        cfg = load_config(path)
        assert (cfg.user, cfg.password, cfg.tls_ca) == ("u", "s3cret", "/ca")
        assert "s3cret" not in repr(cfg)

    @pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
    def test_refuses_a_file_others_can_read(self, tmp_path: Path, mode: int) -> None:
        """Group/other bits on the credentials file: one-line UsageError with the fix."""
        path = self._write(tmp_path, '[nats]\nuser = "u"\n', mode)
        with pytest.raises(UsageError, match=f"mode {mode:04o}.*chmod 600") as info:
            load_config(path)
        assert "\n" not in str(info.value)

    @pytest.mark.parametrize(
        ("text", "match"),
        [
            ("[nats\n", "not valid TOML"),
            ('[nats]\nusr = "u"\n', "unknown key"),
            ("[nats]\nuser = 1\n", "not a string"),
            ('nats = "x"\n', "not a table"),
            ('[nats]\ntls_cert = "/c"\n', "both tls_cert and tls_key"),
            ('[nats]\nnkey_seed_file = "/nonexistent/seed"\n', "cannot open the nkey seed"),
        ],
    )
    def test_refuses_bad_content(self, tmp_path: Path, text: str, match: str) -> None:
        """Bad TOML, unknown keys, wrong types: one-line UsageError."""
        with pytest.raises(UsageError, match=match):
            load_config(self._write(tmp_path, text))

    def test_refuses_a_file_of_another_user_and_a_huge_one(self, tmp_path: Path) -> None:
        """Another owner (where we may chown: root) and an oversized file are refused."""
        path = self._write(tmp_path, "#" * (64 * 1024 + 1))
        with pytest.raises(UsageError, match="over 65536 bytes"):
            load_config(path)
        if os.geteuid() != 0:
            pytest.skip("chown to another user needs root; the mode checks above ran")
        os.chown(path, 54321, -1)
        with pytest.raises(UsageError, match="owned by uid 54321"):
            load_config(path)

    def test_refuses_a_symlink_and_a_directory(self, tmp_path: Path) -> None:
        """The file is opened without following a link; a directory is no config."""
        real = self._write(tmp_path, '[nats]\nuser = "u"\n')
        link = tmp_path / "link.toml"
        link.symlink_to(real)
        with pytest.raises(UsageError, match="cannot open"):
            load_config(link)
        with pytest.raises(UsageError, match="not a regular file"):
            load_config(tmp_path)


class TestHeartbeat:
    def test_parses_agents(self) -> None:
        """A heartbeat lists agents with state; bad fields are refused whole."""
        from pipemesh.gateway.liveness import _parse_heartbeat

        doc = {"v": 1, "agents": {"bob": {"active": True, "durable": True, "role": "r\x1b"}}}
        (agent,) = _parse_heartbeat(json.dumps(doc).encode())
        assert (agent.name, agent.active, agent.durable, agent.role) == ("bob", True, True, "r?")
        for bad in (
            b"{",
            b"[]",
            json.dumps({"agents": {"a@b": {"active": True}}}).encode(),
            json.dumps({"agents": {"a": {"active": 1}}}).encode(),
            json.dumps({"agents": {"a": {"active": True, "max_body_bytes": True}}}).encode(),
            json.dumps({"agents": {"a": {"active": True, "role": "x" * 300}}}).encode(),
            json.dumps({"agents": {"a": []}}).encode(),
            b" " * (1024 * 1024 + 1),
        ):
            with pytest.raises(ValueError):  # noqa: PT011 - the message varies by field
                _parse_heartbeat(bad)


class TestUpdateOrder:
    def test_remote_entry_updates_apply_in_the_order_asked(self, tmp_path: Path) -> None:
        """A host's "unreachable" (silence) never lands after its later "reachable" (heartbeat).

        Regression: each update ran in the default executor's threads, in any order; a
        host heard again just as it timed out could end inactive, and stay so (the next
        heartbeats list the same agents: no update), senders getting AgentOffline for a
        live agent.
        """
        from pipemesh.gateway.bridge import Gateway

        home_dir = tmp_path / "mesh"
        home_dir.mkdir(mode=0o700)
        gw = Gateway("nats://127.0.0.1:1", host="a", home=MeshHome.open(home_dir))
        agents = [RemoteAgent("bob", active=True)]
        update = gw.remote.update
        heard = threading.Event()

        def slow_silence(
            host: str, agents: list[RemoteAgent], *, reachable: bool
        ) -> list[Announcement]:
            # The silence update is slow to start (as a thread may be): give the later
            # heartbeat's update every chance to overtake it, if anything lets it.
            if not reachable:
                heard.wait(2.0)
            told = update(host, agents, reachable=reachable)
            if reachable:
                heard.set()
            return told

        async def scenario() -> None:
            await gw._update_host_soon("b", agents, True)  # heard
            heard.clear()
            gw.remote.update = slow_silence  # type: ignore[method-assign]
            # Asked in this order: silence (its host timed out), then its next heartbeat.
            await asyncio.gather(
                gw._update_host_soon("b", agents, False), gw._update_host_soon("b", agents, True)
            )

        try:
            asyncio.run(scenario())
            status = gw.registry.read()["bob@b"].status
            assert status == "active"
        finally:
            gw.remote.close()
            gw._updates.shutdown(wait=True)
            gw._writer.shutdown(wait=True)
            gw.events.close()
