"""The MCP server driven by the official MCP Python client over stdio."""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult, TextContent

from pipemesh.runtime.agent import MeshClient

pytestmark = pytest.mark.integration

TOKEN_BUDGET = 2000


async def _connect(stack: AsyncExitStack, home: Path, name: str, *extra: str) -> ClientSession:
    """Start `pipemesh mcp --name NAME` as a child; the client context reaps it on exit."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "pipemesh", "--home", str(home), "mcp", "--name", name, *extra],
        env=dict(os.environ),
    )
    read, write = await stack.enter_async_context(stdio_client(params))
    session = await stack.enter_async_context(ClientSession(read, write))
    with anyio.fail_after(30):
        await session.initialize()
    return session


def _text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


async def _call(session: ClientSession, tool: str, **args: object) -> CallToolResult:
    with anyio.fail_after(40):
        result = await session.call_tool(tool, dict(args))
    assert isinstance(result, CallToolResult)
    return result


def test_mcp_two_servers_exchange_and_waiting_read_wakes(mesh_home: Path) -> None:
    """A waiting inbox read returns as soon as the other server sends; the reply round-trips."""

    async def main() -> None:
        async with AsyncExitStack() as stack:
            alice = await _connect(stack, mesh_home, "alice")
            bob = await _connect(stack, mesh_home, "bob")
            got: dict[str, object] = {}

            async def bob_waits() -> None:
                start = time.monotonic()
                got["result"] = await _call(bob, "inbox", wait_s=20)
                got["elapsed"] = time.monotonic() - start

            async with anyio.create_task_group() as tg:
                tg.start_soon(bob_waits)
                await anyio.sleep(0.5)  # let the read start waiting (it must not matter)
                sent = await _call(
                    alice, "send", to="bob", text="how is the build?", type="question"
                )
                assert not sent.is_error, _text(sent)
            msg_id = _text(sent).split()[1]
            result = got["result"]
            assert isinstance(result, CallToolResult)
            body = _text(result)
            assert not result.is_error
            assert f"[{msg_id}] from alice, question" in body
            assert "how is the build?" in body
            # Returned on arrival, well before its 20 s limit (behaviour, not speed).
            assert float(got["elapsed"]) < 10  # type: ignore[arg-type]

            replied = await _call(bob, "reply", id=msg_id, text="green")
            assert not replied.is_error, _text(replied)
            answer = _text(await _call(alice, "inbox", wait_s=20))
            assert f"re {msg_id}" in answer
            assert "green" in answer
            assert _text(await _call(alice, "inbox")) == "no messages"

            listing = _text(await _call(alice, "agents"))
            assert "alice (mcp) - you" in listing
            assert "bob (mcp)" in listing
            assert "bob: delivered" in _text(await _call(alice, "broadcast", text="hi all"))

    anyio.run(main)


def test_mcp_errors_are_tool_errors(mesh_home: Path) -> None:
    """Unknown agent, unknown id and a too-large body are tool errors; the server lives on."""

    async def main() -> None:
        async with AsyncExitStack() as stack:
            carol = await _connect(stack, mesh_home, "carol", "--max-body-bytes", "1000")
            unknown = await _call(carol, "send", to="nobody", text="hello")
            assert unknown.is_error
            assert "no agent named nobody is registered" in _text(unknown)
            bad_id = await _call(carol, "reply", id="nope-1", text="x")
            assert bad_id.is_error
            assert "no received message has id 'nope-1'" in _text(bad_id)
            too_big = await _call(carol, "send", to="carol", text="x" * 1001)
            assert too_big.is_error
            assert "body is 1001 bytes, limit is 1000" in _text(too_big)
            assert "carol (mcp)" in _text(await _call(carol, "agents"))

    anyio.run(main)


def test_mcp_tool_listing_under_token_budget(mesh_home: Path) -> None:
    """At most 6 tools, and the tools/list JSON is under 2,000 tokens (chars/4)."""

    async def main() -> None:
        async with AsyncExitStack() as stack:
            dave = await _connect(stack, mesh_home, "dave")
            with anyio.fail_after(30):
                listed = await dave.list_tools()
        tools = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in listed.tools]
        text = json.dumps(tools)
        assert len(tools) <= 6
        assert {t["name"] for t in tools} == {"send", "broadcast", "inbox", "reply", "agents"}
        assert len(text) / 4 < TOKEN_BUDGET
        assert len(text) / 3 < TOKEN_BUDGET  # even at a pessimistic 3 chars per token

    anyio.run(main)


def test_mcp_inbox_survives_server_restart(mesh_home: Path) -> None:
    """A message received but not read is still in the inbox after the server restarts."""

    async def first() -> None:
        async with AsyncExitStack() as stack:
            erin = await _connect(stack, mesh_home, "erin")
            assert "erin" in _text(await _call(erin, "agents"))
            with MeshClient("tester", mesh_home) as client:
                client.send_message("erin", "kept across restarts", msg_type="directive")

    async def second() -> None:
        async with AsyncExitStack() as stack:
            erin = await _connect(stack, mesh_home, "erin")
            text = _text(await _call(erin, "inbox"))
            assert "from tester, directive" in text
            assert "kept across restarts" in text

    anyio.run(first)
    anyio.run(second)
