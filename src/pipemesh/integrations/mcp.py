"""``pipemesh mcp``: a stdio MCP server that makes a CLI session an agent on the mesh.

The server joins the mesh as NAME for as long as the CLI session (Claude Code,
Gemini CLI, Codex) keeps it running. What arrives goes to a persisted inbox
(:mod:`pipemesh.integrations._inbox`, ``<home>/mcp/<name>/inbox.jsonl``), so messages survive a
restart of the server and the hooks (:mod:`pipemesh.integrations.hooks`) can hand them to the
model at turn boundaries.

Five tools, kept small on purpose (the whole listing is about 320 tokens, see
``docs/agents.md``): ``send``, ``broadcast``, ``inbox`` (optionally waiting up to N
seconds; it wakes the moment a message arrives, with no poll interval), ``reply``
and ``agents``. Mesh errors come back as tool errors with the error's sentence;
the server never crashes on them.

A message whose append to the inbox file fails (disk full, lock held by a stuck
process) is kept in memory, logged, and written by a retry thread as soon as the
file takes it. The server leaves the mesh when its stdin closes or when the
process that started it exits (:mod:`pipemesh.integrations._procwatch`).

Built on the official ``mcp`` SDK (2.x: ``mcp.server.mcpserver.MCPServer``).
This module must not print to stdout: stdout carries the MCP protocol. The SDK
is imported only when the server starts, so ``pipemesh`` starts fast and works
without the ``mcp`` extra.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeVar

import click

from pipemesh import _platform
from pipemesh.errors import MeshError
from pipemesh.home import MeshHome
from pipemesh.integrations._inbox import InboxFile, format_messages
from pipemesh.integrations._procwatch import ParentWatch
from pipemesh.runtime.agent import AgentBase
from pipemesh.wire import Message, is_valid_name

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

__all__ = ["MAX_MCP_BODY_BYTES", "MAX_WAIT_S", "McpAgent", "build_server", "mcp_command"]

MAX_WAIT_S: Final = 600.0
# A model reads and writes text: 1 MiB is plenty, and keeps tool results sane.
MAX_MCP_BODY_BYTES: Final = 1024 * 1024
T = TypeVar("T")

INSTRUCTIONS: Final = (
    "You are agent {name} on a pipemesh message mesh with other AI agents on this machine. "
    "Use inbox(wait_s=...) to read messages (it returns as soon as one arrives), "
    "reply(id, text) to answer one, send/broadcast to start a conversation, agents() to see "
    "who is online."
)


class McpAgent(AgentBase):
    """An agent whose incoming messages go to a persisted inbox file.

    Args:
        agent_name: the name on the mesh.
        role: free text shown in the registry.
        home: mesh home directory.
        heartbeat_s: seconds between heartbeats on the private pipe.
        send_timeout_s: how long a send waits on a full pipe.
        max_body_bytes: largest message body sent or received.
    """

    def __init__(
        self,
        agent_name: str,
        role: str = "mcp",
        home: str | os.PathLike[str] | None = None,
        *,
        heartbeat_s: float = 5.0,
        send_timeout_s: float = 10.0,
        max_body_bytes: int = MAX_MCP_BODY_BYTES,
    ) -> None:
        self._arrived = threading.Condition()
        self._arrivals = 0
        # Messages whose append to the inbox file failed (lock held elsewhere, disk
        # full): kept here, in order, and written by the retry thread. Never dropped.
        self._unsaved: collections.deque[Message] = collections.deque()
        self._retry_cond = threading.Condition()
        self._retry_thread: threading.Thread | None = None
        self._closing = False
        # The inbox exists before the router starts, so no message finds it missing.
        self.inbox_file = InboxFile.open(MeshHome.open(home).root, agent_name)
        super().__init__(
            agent_name,
            role,
            home,
            heartbeat_s=heartbeat_s,
            send_timeout_s=send_timeout_s,
            max_body_bytes=max_body_bytes,
        )

    @property
    def unsaved_count(self) -> int:
        """Messages received but not yet written to the inbox file (a write failed)."""
        with self._retry_cond:
            return len(self._unsaved)

    def on_message_received(self, msg: Message) -> None:
        """Router thread: persist the message and wake every waiting reader.

        When the inbox file cannot be written the message is kept in memory (behind
        any earlier unsaved ones, so order holds), the failure is logged (and said
        on stderr, which the CLI keeps, since a full disk also stops the log), and
        a retry thread writes it as soon as the file takes it again.
        """
        with self._retry_cond:
            if self._unsaved:  # earlier messages wait: keep the order, don't block the router
                self._unsaved.append(msg)
                self._retry_cond.notify_all()
                return
        try:
            self.inbox_file.append(msg)
        except (OSError, MeshError) as exc:
            self._keep_unsaved(msg, exc)
            return
        self._wake_readers()

    def _wake_readers(self) -> None:
        with self._arrived:
            self._arrivals += 1
            self._arrived.notify_all()

    def _keep_unsaved(self, msg: Message, exc: Exception) -> None:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        text = (
            f"cannot write message {msg.id} from {msg.sender} to {self.inbox_file.path} "
            f"({why}); kept in memory and retried until it is written"
        )
        self.events.error("inbox_append_failed", text, id=msg.id)
        with contextlib.suppress(OSError, ValueError):
            print(f"pipemesh mcp: {text}", file=sys.stderr, flush=True)
        with self._retry_cond:
            self._unsaved.append(msg)
            if self._retry_thread is None:
                self._retry_thread = threading.Thread(
                    target=self._retry_unsaved,
                    name=f"pipemesh-inbox-{self.agent_name}",
                    daemon=True,
                )
                self._retry_thread.start()
            self._retry_cond.notify_all()

    def _retry_unsaved(self) -> None:
        """Retry thread: write unsaved messages, backing off from 0.1 s to 5 s between tries."""
        delay = 0.1
        while True:
            with self._retry_cond:
                if not self._unsaved:
                    self._retry_thread = None
                    return
                batch = list(self._unsaved)
            try:
                self.inbox_file.append(*batch)
            except (OSError, MeshError):
                with self._retry_cond:
                    if self._closing:
                        self._retry_thread = None
                        return
                    self._retry_cond.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            with self._retry_cond:
                for _ in batch:
                    self._unsaved.popleft()
            self.events.error(
                "inbox_append_recovered",
                f"wrote {len(batch)} kept message(s) to {self.inbox_file.path}",
            )
            self._wake_readers()
            delay = 0.1

    def read_inbox(self, wait_s: float = 0.0, max_count: int = 20) -> list[Message]:
        """Take unread messages, waiting up to ``wait_s`` for the first one.

        Wakes on the router's condition variable, not on a timer.
        """
        deadline = time.monotonic() + max(0.0, min(wait_s, MAX_WAIT_S))
        while True:
            with self._arrived:
                seen = self._arrivals
            msgs = self.inbox_file.take(max_count)
            if msgs:
                return msgs
            with self._arrived:
                while self._arrivals == seen and self.is_running:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return []
                    self._arrived.wait(remaining)
                if not self.is_running:
                    return []

    def find(self, msg_id: str) -> Message | None:
        """A received message by ID (unread or recently read)."""
        return self.inbox_file.find(msg_id)

    def close(self, timeout_s: float = 5.0) -> None:
        """Leave the mesh, try once more to save kept messages, wake every ``inbox`` call."""
        super().close(timeout_s)
        with self._retry_cond:
            self._closing = True
            self._retry_cond.notify_all()
            thread = self._retry_thread
        if thread is not None:
            thread.join(timeout_s + self.inbox_file.lock_timeout_s)
        with self._retry_cond:
            left = list(self._unsaved)
        if left:
            error: object = "the retry thread is still stuck in a write"
            if thread is None or not thread.is_alive():
                try:
                    self.inbox_file.append(*left)
                    with self._retry_cond:
                        self._unsaved.clear()
                    error = None
                except (OSError, MeshError) as exc:
                    error = exc
            if error is not None:
                text = (
                    f"{len(left)} received message(s) could not be written to "
                    f"{self.inbox_file.path} before exit and are lost: "
                    f"{', '.join(m.id for m in left)} ({error})"
                )
                with contextlib.suppress(OSError, ValueError):
                    print(f"pipemesh mcp: {text}", file=sys.stderr, flush=True)
        with self._arrived:
            self._arrived.notify_all()


def _clean(fn: Callable[[], T]) -> T:
    from mcp.server.mcpserver.exceptions import ToolError  # noqa: PLC0415

    try:
        return fn()
    except MeshError as exc:
        raise ToolError(str(exc)) from exc
    except ValueError as exc:
        raise ToolError(str(exc)) from exc


async def _run(fn: Callable[[], T]) -> T:
    import anyio.to_thread  # noqa: PLC0415

    # Sends may block on a full pipe and inbox waits block by design: off the event loop.
    return await anyio.to_thread.run_sync(lambda: _clean(fn), abandon_on_cancel=True)


def build_server(agent: McpAgent) -> MCPServer:
    """The MCP server exposing ``agent``'s five tools."""
    from mcp.server.mcpserver import MCPServer  # noqa: PLC0415 - optional extra, loaded late

    server: MCPServer = MCPServer(
        name="pipemesh",
        instructions=INSTRUCTIONS.format(name=agent.agent_name),
        log_level="WARNING",
    )

    async def send(to: str, text: str, type: str = "directive") -> str:
        def go() -> str:
            if not is_valid_name(to):
                raise ValueError(f"{to!r} is not an agent name; see agents()")
            msg_id = agent.send_message(to, text, 1, type)
            return f"sent {msg_id} to {to}"

        return await _run(go)

    async def broadcast(text: str) -> str:
        def go() -> str:
            agent.refresh_peers()
            result = agent.broadcast_message(text)
            if not result.outcomes:
                return f"{result.id}: no other agent is online"
            lines = [f"{result.id}:"]
            for name, outcome in sorted(result.outcomes.items()):
                err = result.errors.get(name)
                lines.append(f"  {name}: {outcome}" + (f" ({err})" if err else ""))
            return "\n".join(lines)

        return await _run(go)

    async def inbox(wait_s: float = 0) -> str:
        def go() -> str:
            msgs = agent.read_inbox(wait_s)
            if not msgs:
                return f"no messages (waited {wait_s:g}s)" if wait_s > 0 else "no messages"
            return format_messages(msgs)

        return await _run(go)

    async def reply(id: str, text: str) -> str:
        def go() -> str:
            msg = agent.find(id)
            if msg is None:
                raise ValueError(
                    f"no received message has id {id!r}; use the [id] shown by inbox(), "
                    "or send(to, text) instead"
                )
            sent = agent.reply(msg, text)
            return f"replied {sent} to {msg.sender}"

        return await _run(go)

    async def agents() -> str:
        def go() -> str:
            peers = agent.refresh_peers()
            rows = [
                f"{r.name} ({r.role}){' - you' if r.name == agent.agent_name else ''}"
                for r in sorted(peers.values(), key=lambda r: r.name)
                if r.is_active
            ]
            return "\n".join(rows) if rows else "no agents online"

        return await _run(go)

    tools: list[tuple[Callable[..., object], str]] = [
        (send, "Send text to agent `to`. type: directive, question, status, ..."),
        (broadcast, "Send text to every other agent online."),
        (
            inbox,
            "Take your unread messages. wait_s > 0 waits up to that many seconds and "
            "returns as soon as one arrives.",
        ),
        (reply, "Answer the received message with this id."),
        (agents, "List agents online."),
    ]
    for fn, description in tools:
        server.add_tool(fn, description=description, structured_output=False)
    return server


def tool_listing_json(server: MCPServer) -> str:
    """The ``tools/list`` result as the client receives it (for measuring its size)."""
    import anyio  # noqa: PLC0415

    async def listing() -> str:
        tools = await server.list_tools()
        return json.dumps(
            [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
        )

    return anyio.run(listing)


def _exit_on_sigterm() -> None:
    _platform.exit_on_stop_signals()  # SIGTERM, and SIGBREAK on Windows


@click.command("mcp")
@click.option("--name", required=True, help="Agent name on the mesh.")
@click.option("--role", default="mcp", show_default=True, help="Role shown in the registry.")
@click.option(
    "--max-body-bytes",
    type=click.IntRange(1),
    default=MAX_MCP_BODY_BYTES,
    show_default=True,
    help="Largest message body sent or received.",
)
@click.pass_context
def mcp_command(ctx: click.Context, name: str, role: str, max_body_bytes: int) -> None:
    """Run a stdio MCP server that joins the mesh as NAME (for Claude Code, Gemini, Codex)."""
    if not is_valid_name(name):
        raise click.UsageError(f"agent name {name!r} is not valid")
    home = getattr(ctx.obj, "home_arg", None)
    try:
        import mcp.server.mcpserver  # noqa: F401, PLC0415
    except ImportError:
        raise click.ClickException(
            "the MCP SDK is not installed; run: pip install 'pipemesh[mcp]'"
        ) from None
    _exit_on_sigterm()
    watch = _leave_when_client_gone()  # before joining: a client gone meanwhile is seen
    agent: McpAgent | None = None
    try:
        agent = McpAgent(name, role, home, max_body_bytes=max_body_bytes)
        build_server(agent).run("stdio")
    except SystemExit as exc:
        # SIGTERM, or the client is gone. The SDK's stdin reader thread may be blocked in
        # a read that never ends (stdin still open elsewhere) and the interpreter would
        # wait for it at exit: leave the mesh, then end the process here.
        if agent is not None:
            agent.close()
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os._exit(exc.code if isinstance(exc.code, int) else 1)
    finally:
        if agent is not None:
            agent.close()
        if watch is not None:
            watch.close()


def _leave_when_client_gone() -> ParentWatch | None:
    """Stop the server (SIGTERM to itself) the moment the process that started it exits.

    Its stdin closing ends the server too (the SDK's stdio loop returns at EOF); this
    covers a client that dies while something else still holds the pipe's write end.
    The watcher thread blocks in ``select`` on the watch descriptors: no polling.
    """
    watch = ParentWatch()
    if watch.gone():
        watch.close()
        os.kill(os.getpid(), signal.SIGTERM)
        return None
    if not watch.fds:
        watch.close()
        return None
    fds = list(watch.fds)

    def wait_for_exit() -> None:
        with contextlib.suppress(OSError, ValueError):
            select.select(fds, [], [])
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait_for_exit, name="pipemesh-mcp-parent", daemon=True).start()
    return watch
