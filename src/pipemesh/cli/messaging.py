"""The commands that talk to agents: ``send``, ``broadcast``, ``ask`` and ``listen``.

Each joins the mesh for as long as the command runs (a :class:`~pipemesh.runtime.MeshClient`
to send, an :class:`~pipemesh.runtime.AgentBase` to receive), so this module imports the
runtime; ``pipemesh.cli`` imports it only when one of these commands runs.
"""

from __future__ import annotations

import errno
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from pipemesh._term import Screen, safe
from pipemesh.cli._common import (
    SECONDS,
    State,
    StdoutClosed,
    check_name,
    indent_body,
    message_segments,
    pass_state,
    print_json,
    reader_gone,
    terminate_on_sigterm,
    write_out,
)
from pipemesh.clock import zone_label
from pipemesh.errors import UsageError
from pipemesh.runtime.agent import DEFAULT_MSG_TYPE, AgentBase, Delivery, MeshClient
from pipemesh.wire import Message

__all__ = ["ask", "broadcast", "listen", "send"]

F = TypeVar("F", bound=Callable[..., Any])


def _send_options(f: F) -> F:
    f = click.option("--from", "sender", default="cli", show_default=True, help="FROM name.")(f)
    f = click.option(
        "--priority",
        type=click.IntRange(0, 3),
        default=1,
        show_default=True,
        help="0 low, 1 normal, 2 urgent, 3 critical.",
    )(f)
    return f


def _body(text: str) -> str:
    """TEXT, or all of stdin for '-' (closed or non-UTF-8 stdin is a usage error)."""
    if text != "-":
        return text
    stdin = sys.stdin
    if stdin is None:  # fd 0 was closed when Python started
        raise UsageError("TEXT is '-' but stdin is closed; pipe the body in, or give it as TEXT")
    try:
        data = stdin.buffer.read()
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"TEXT is '-' but stdin cannot be read ({exc}); pipe the body in, or give it as TEXT"
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"stdin is not UTF-8 text (bad byte at offset {exc.start}); bodies are UTF-8"
        ) from None


@click.command()
@click.argument("to")
@click.argument("text")
@click.option(
    "--type", "msg_type", default=DEFAULT_MSG_TYPE, show_default=True, help="Message TYPE."
)
@click.option("--timeout", "timeout_s", type=SECONDS, default=10.0, show_default=True)
@_send_options
@pass_state
def send(
    state: State,
    to: str,
    text: str,
    msg_type: str,
    timeout_s: float,
    sender: str,
    priority: int,
) -> None:
    """Send TEXT ('-' reads stdin) to agent TO; prints the message ID.

    A durable agent that is away gets the message in its spool: the status is
    then 'queued' (said on stderr, or in the JSON), not 'delivered'.
    """
    check_name(to, "recipient")
    check_name(sender, "--from name")
    body = _body(text)
    with MeshClient(sender, state.home_arg) as client:
        result = client.send(to, body, priority, msg_type, timeout_s=timeout_s)
    if state.as_json:
        print_json({"id": result.id, "to": to, "status": str(result.delivery)})
        return
    write_out(result.id)
    if result.delivery is Delivery.QUEUED:
        click.echo(
            f"queued: {to} is durable and away; it gets the message when it starts again",
            err=True,
        )


@click.command()
@click.argument("text")
@click.option("--type", "msg_type", default="broadcast", show_default=True, help="Message TYPE.")
@click.option("--timeout", "timeout_s", type=SECONDS, default=2.0, show_default=True)
@_send_options
@pass_state
def broadcast(
    state: State, text: str, msg_type: str, timeout_s: float, sender: str, priority: int
) -> None:
    """Send TEXT to every active agent; prints each recipient's outcome."""
    check_name(sender, "--from name")
    body = _body(text)
    with MeshClient(sender, state.home_arg) as client:
        client.refresh_peers()
        result = client.broadcast_message(body, priority, msg_type, timeout_s=timeout_s)
    if state.as_json:
        print_json(
            {
                "id": result.id,
                "outcomes": {k: str(v) for k, v in result.outcomes.items()},
                "errors": dict(result.errors),
            }
        )
    elif not result.outcomes:
        write_out(f"{result.id}: no active agents to broadcast to")
    else:
        write_out(result.id)
        for name, outcome in sorted(result.outcomes.items()):
            err = result.errors.get(name)
            write_out(f"  {name}: {outcome}" + (f" ({err})" if err else ""))
    if result.failed:
        raise SystemExit(1)


@click.command()
@click.argument("to")
@click.argument("text")
@click.option("--timeout", "timeout_s", type=SECONDS, default=30.0, show_default=True)
@click.option("--type", "msg_type", default="question", show_default=True, help="Message TYPE.")
@click.option("--from", "sender", default=None, help="Name to ask as (default cli-<pid>).")
@click.option("--priority", type=click.IntRange(0, 3), default=1, show_default=True)
@click.option("--raw", is_flag=True, help="Print the reply unescaped (control characters too).")
@pass_state
def ask(
    state: State,
    to: str,
    text: str,
    timeout_s: float,
    msg_type: str,
    sender: str | None,
    priority: int,
    raw: bool,
) -> None:
    """Ask agent TO and print its reply (joins the mesh briefly to get it).

    A reply of type 'error' is an error: its body goes to stderr and the exit code is 1.
    """
    check_name(to, "recipient")
    name = sender or f"cli-{os.getpid()}"
    check_name(name, "--from name")
    body = _body(text)
    terminate_on_sigterm()
    with AgentBase(name, "cli", state.home_arg, heartbeat_s=0, frames="text") as agent:
        reply = agent.ask(to, body, timeout_s, priority=priority, msg_type=msg_type)
    if reply.msg_type == "error":
        raise click.ClickException(f"{to} replied with an error: {safe(reply.body)}")
    if state.as_json:
        print_json(
            {
                "id": reply.id,
                "from": reply.sender,
                "type": reply.msg_type,
                "re": reply.reply_to,
                "body": reply.body,
            }
        )
    else:
        write_out(reply.body if raw else safe(reply.body, newlines=True))


class _Listener(AgentBase):
    def __init__(self, *args: Any, show: Callable[[Message, float], None], **kw: Any) -> None:
        self._show = show
        super().__init__(*args, **kw)

    def on_message_received(self, msg: Message) -> None:
        latency_us = (time.time_ns() - msg.sent_ns) / 1000 if msg.sent_ns else 0.0
        self._show(msg, latency_us)


@click.command()
@click.argument("name")
@click.option("--role", default="human", show_default=True)
@click.option("--count", type=click.IntRange(min=0), default=0, help="Exit after COUNT messages.")
@click.option("--timeout", "timeout_s", type=SECONDS, default=0.0, help="Exit after SECONDS.")
@click.option("--raw", is_flag=True, help="Print bodies unescaped (control characters too).")
@pass_state
def listen(state: State, name: str, role: str, count: int, timeout_s: float, raw: bool) -> None:
    """Join the mesh as NAME and print every incoming message until Ctrl-C.

    Leaves the mesh (and exits 141) as soon as stdout's reader goes away, so
    'pipemesh listen NAME | head -n 2' does not keep swallowing mail.
    """
    check_name(name, "agent name")
    terminate_on_sigterm()
    seen = 0
    stopped = threading.Event()
    broken = threading.Event()
    screen = Screen()

    def show(msg: Message, latency_us: float) -> None:
        nonlocal seen
        if stopped.is_set():
            return
        try:
            if state.as_json:
                record = {**_msg_json(msg), "latency_us": round(latency_us, 1)}
                screen.text(json.dumps(record, ensure_ascii=False))
            else:
                screen.line(
                    [
                        *message_segments(
                            ts=msg.sent_ns / 1e9,
                            sender=msg.sender,
                            to=msg.to,
                            msg_type=msg.msg_type,
                            priority=msg.priority,
                            msg_id=msg.id,
                            reply_to=msg.reply_to,
                        ),
                        (f"  ({latency_us:.0f} us)\n", "dim"),
                        (indent_body(msg.body, raw=raw), ""),
                    ]
                )
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            broken.set()
        seen += 1
        if broken.is_set() or (count and seen >= count):
            stopped.set()
            agent.close()  # leave now: nothing more is taken from the pipe

    agent = _Listener(name, role, state.home_arg, show=show, frames="text")
    with agent:
        click.echo(
            f"listening as {name} ({role}) on {state.home().root}; times in {zone_label()}; "
            "Ctrl-C to stop",
            err=True,
        )
        deadline = time.monotonic() + timeout_s if timeout_s > 0 else math.inf
        while not stopped.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                break
            if reader_gone(sys.stdout.fileno()):
                broken.set()
                break
    if broken.is_set():
        raise StdoutClosed


def _msg_json(msg: Message) -> dict[str, object]:
    return {
        "id": msg.id,
        "from": msg.sender,
        "to": msg.to,
        "type": msg.msg_type,
        "priority": msg.priority,
        "re": msg.reply_to,
        "sent_ns": msg.sent_ns,
        "body": msg.body,
    }
