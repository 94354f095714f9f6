"""``pipemesh hook stop|context``: push-to-wake hooks for Claude Code, Gemini CLI and Codex.

Each CLI runs a hook as a short-lived process at a turn boundary, with one JSON
object on stdin, and reads one JSON object from stdout. These commands hand the
messages waiting in the inbox of agent NAME (kept by ``pipemesh mcp --name NAME``,
see :mod:`pipemesh.integrations._inbox`) to the model, so a message reaches an idle or busy
agent without the model asking:

``stop``
    At the end of a turn (Claude Code and Codex ``Stop``, Gemini CLI
    ``AfterAgent``): when messages wait, or arrive within ``--wait`` seconds, the
    stop is blocked and the messages become the reason to go on. The wait wakes
    on a FIFO that the MCP server writes to, not on a poll tick.
``wake``
    Claude Code only, registered with ``"asyncRewake": true`` on SessionStart and
    Stop: waits in the background (on the same FIFO) and, when a message arrives,
    exits 2 with it on stderr, which starts a turn in the idle session. See
    ``docs/wake.md``.
``context``
    After a prompt or a tool call (Claude Code and Codex ``UserPromptSubmit`` /
    ``PostToolUse`` / ``SessionStart``, Gemini CLI ``BeforeAgent`` / ``AfterTool`` /
    ``SessionStart``): waiting messages are added as context. It never waits.

Messages handed over are taken from the inbox (once: the MCP ``inbox`` tool will
not show them again) and stay findable by ``reply(id, ...)``.

Why the hooks read the inbox file instead of asking the server over the mesh:
a hook cannot join the mesh as NAME (the server holds the name), a question to
the server needs the server alive and a request/reply protocol of its own, and
the file must exist anyway so messages survive a server restart. A lock makes
"take" exactly-once between the server's tool and the hooks.

Formats followed (input fields read: ``hook_event_name``, ``stop_hook_active``):

- Claude Code, https://code.claude.com/docs/en/hooks : ``Stop`` blocks with
  ``{"decision": "block", "reason": ...}``; ``UserPromptSubmit``, ``PostToolUse`` and
  ``SessionStart`` add context with ``{"hookSpecificOutput": {"hookEventName": ...,
  "additionalContext": ...}}``; exit 0 with no output lets things proceed.
- Gemini CLI, https://geminicli.com/docs/hooks/reference (google-gemini/gemini-cli
  ``docs/hooks/reference.md``): ``AfterAgent`` with ``{"decision": "deny", "reason": ...}``
  rejects the response and sends the reason to the agent as a new prompt;
  ``BeforeAgent`` / ``AfterTool`` / ``SessionStart`` take
  ``hookSpecificOutput.additionalContext``; stdout must be JSON only, so "nothing
  to say" is ``{}``.
- Codex, https://developers.openai.com/codex/hooks (schemas in openai/codex
  ``codex-rs/hooks/schema/generated/``): ``Stop`` takes ``{"decision": "block",
  "reason": ...}`` and continues the turn with the reason as the next prompt;
  ``UserPromptSubmit`` / ``PostToolUse`` / ``SessionStart`` take
  ``hookSpecificOutput.additionalContext``; "nothing to say" is ``{}``.

Only ``wake`` exits 2, on purpose; the others never do (that would block with stderr
as the reason). Failures, bad arguments included, exit 1 with one line on stderr,
which every CLI treats as a non-blocking error. A hook that waits ends, handing over
nothing, when the CLI that ran it exits (:mod:`pipemesh.integrations._procwatch`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

import click

from pipemesh.errors import MeshError
from pipemesh.home import MeshHome
from pipemesh.integrations._inbox import InboxFile, format_messages
from pipemesh.integrations._procwatch import ParentWatch
from pipemesh.registry import Registry
from pipemesh.wire import Message, is_valid_name

__all__ = [
    "CONTEXT_EVENTS",
    "STOP_EVENTS",
    "WAKE_EVENTS",
    "context_output",
    "hook_command",
    "hook_group",
    "hook_settings",
    "stop_output",
]

CLIS: Final = ("claude", "gemini", "codex")
STOP_EVENTS: Final = {
    "claude": ("Stop", "SubagentStop"),
    "codex": ("Stop", "SubagentStop"),
    "gemini": ("AfterAgent",),
}
CONTEXT_EVENTS: Final = {
    "claude": ("UserPromptSubmit", "PostToolUse", "SessionStart"),
    "codex": ("UserPromptSubmit", "PostToolUse", "SessionStart"),
    "gemini": ("BeforeAgent", "AfterTool", "SessionStart"),
}
WAKE_EVENTS: Final = ("SessionStart", "Stop")
MAX_HOOK_WAIT_S: Final = 3600.0
# Claude Code kills a hook at its "timeout"; an asyncRewake hook should outlast any idle spell.
WAKE_TIMEOUT_S: Final = 86400
HOOK_TIMEOUT_S: Final = 30


def _nothing(cli: str) -> dict[str, object] | None:
    # Claude Code: no output means "proceed"; Gemini CLI wants JSON only; Codex accepts {}.
    return None if cli == "claude" else {}


def _text(name: str, msgs: list[Message]) -> str:
    n = len(msgs)
    return (
        f"pipemesh: {n} new message{'s' if n != 1 else ''} for you ({name}). "
        "Act on them; answer one with the pipemesh reply tool (reply(id, text)).\n\n"
        + format_messages(msgs)
    )


def stop_output(cli: str, name: str, msgs: list[Message]) -> dict[str, object] | None:
    """The JSON a stop hook prints: block the stop and hand over ``msgs``, or let it stop."""
    if not msgs:
        return _nothing(cli)
    decision = "deny" if cli == "gemini" else "block"
    return {"decision": decision, "reason": _text(name, msgs)}


def context_output(
    cli: str, event: str, name: str, msgs: list[Message]
) -> dict[str, object] | None:
    """The JSON a context hook prints: ``msgs`` as additional context, or nothing."""
    if not msgs:
        return _nothing(cli)
    return {"hookSpecificOutput": {"hookEventName": event, "additionalContext": _text(name, msgs)}}


MAX_HOOK_INPUT_BYTES: Final = 1 << 20


def _read_stdin() -> bytes:
    stream = sys.stdin
    if stream is None:  # started with stdin closed: nothing to read, same as empty
        return b""
    try:
        return stream.buffer.read(MAX_HOOK_INPUT_BYTES + 1)
    except (OSError, ValueError, AttributeError):
        return b""


def _read_input(expected: tuple[str, ...]) -> dict[str, object]:
    raw = _read_stdin()
    if len(raw) > MAX_HOOK_INPUT_BYTES:
        raise click.ClickException(
            f"hook input on stdin is too large (over {MAX_HOOK_INPUT_BYTES} bytes); "
            "a hook event is a small JSON object: check what the hook's command gets"
        )
    try:
        text = raw.decode("utf-8")
        data = json.loads(text) if text.strip() else {}
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"hook input on stdin is not UTF-8 ({exc.reason})") from None
    except RecursionError:
        raise click.ClickException("hook input on stdin is not JSON (nested too deeply)") from None
    except ValueError as exc:
        raise click.ClickException(f"hook input on stdin is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise click.ClickException("hook input on stdin is not a JSON object")
    event = data.get("hook_event_name", expected[0])
    if event not in expected:
        raise click.ClickException(
            f"this hook handles {', '.join(expected)} events, got {event!r}; "
            "check the hook's event in your settings"
        )
    return data


def _seconds(high: float) -> Callable[[click.Context, click.Parameter, float], float]:
    """An option callback: a finite number of seconds in [0, high] (nan and inf refused)."""

    def check(ctx: click.Context, param: click.Parameter, value: float) -> float:
        if not math.isfinite(value) or not 0 <= value <= high:
            raise click.BadParameter(f"{value} is not a number of seconds from 0 to {high:g}")
        return value

    return check


def _inbox(ctx: click.Context, name: str) -> tuple[MeshHome, InboxFile]:
    if not is_valid_name(name):
        raise click.ClickException(f"agent name {name!r} is not valid")
    try:
        home = MeshHome.open(getattr(ctx.obj, "home_arg", None))
        return home, InboxFile.open(home.root, name)
    except (MeshError, ValueError) as exc:  # exit 1, not the 2 of a usage error: see _HookGroup
        raise click.ClickException(str(exc)) from None


def _emit(out: dict[str, object] | None) -> None:
    if out is not None:
        click.echo(json.dumps(out, ensure_ascii=False))


class _HookGroup(click.Group):
    """Bad arguments exit 1, never 2: Claude Code reads exit 2 as "block, with stderr"."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise click.ClickException(exc.format_message()) from None


@click.group("hook", cls=_HookGroup)
def hook_group() -> None:
    """Hooks for Claude Code, Gemini CLI and Codex that hand mesh messages to the model."""


_cli_option = click.option(
    "--cli",
    "cli_name",
    type=click.Choice(CLIS),
    default="claude",
    show_default=True,
    help="Which CLI runs the hook (its JSON format).",
)
_name_option = click.option("--name", required=True, help="The agent name of `pipemesh mcp`.")
_max_option = click.option(
    "--max", "max_count", type=click.IntRange(1, 1000), default=10, show_default=True
)


@hook_group.command("stop")
@_name_option
@_cli_option
@click.option(
    "--wait",
    "wait_s",
    type=float,
    callback=_seconds(MAX_HOOK_WAIT_S),
    default=0.0,
    show_default=True,
    help="Seconds to wait for a message before letting the agent stop (keep it under the "
    "hook timeout of the CLI).",
)
@_max_option
@click.pass_context
def stop_hook(ctx: click.Context, name: str, cli_name: str, wait_s: float, max_count: int) -> None:
    """End of turn: block the stop while messages for NAME wait (or arrive within --wait).

    The wait ends early, handing over nothing, when the CLI that ran the hook exits.
    """
    with ParentWatch(
        init_parent_is_gone=True
    ) as watch:  # first, before the parent can go unnoticed
        _read_input(STOP_EVENTS[cli_name])
        home, inbox = _inbox(ctx, name)
        try:
            if wait_s > 0:
                rec = Registry(home.registry_path, home.lock_path).read().get(name)
                if rec is None or not rec.is_active:
                    wait_s = 0.0  # no server holds NAME, so nothing can arrive
            out = inbox.wait_take(wait_s, max_count, watch=watch.fds)
        except MeshError as exc:
            raise click.ClickException(str(exc)) from None
    if out.reason != "watch":
        _emit(stop_output(cli_name, name, out.messages))


# CLAUDE_CODE_ENTRYPOINT of the runs that are not an interactive session (seen in Claude
# Code 2.1: `claude -p` sets sdk-cli; the Agent SDKs sdk-ts/sdk-py; `claude mcp serve` mcp).
_CLAUDE_HEADLESS: Final = ("sdk-", "mcp", "claude-code-github-action")


def _claude_is_headless() -> bool:
    return os.environ.get("CLAUDE_CODE_ENTRYPOINT", "").startswith(_CLAUDE_HEADLESS)


@hook_group.command("wake")
@_name_option
@click.option(
    "--cli",
    "cli_name",
    type=click.Choice(("claude",)),
    default="claude",
    show_default=True,
    help="Which CLI runs the hook (only Claude Code has asyncRewake hooks).",
)
@click.option(
    "--max-wait",
    "wait_s",
    type=float,
    callback=_seconds(WAKE_TIMEOUT_S),
    default=WAKE_TIMEOUT_S - 60,
    show_default=True,
    help="Longest wait, in seconds (keep it under the hook's timeout).",
)
@_max_option
@click.pass_context
def wake_hook(ctx: click.Context, name: str, cli_name: str, wait_s: float, max_count: int) -> None:
    """Claude Code asyncRewake hook: wake the idle session when a message for NAME arrives.

    It blocks on a FIFO that the MCP server writes to on every arrival (no polling).
    On arrival it writes the messages to stderr and exits 2: Claude Code shows them
    to the model and, when the session is idle, starts a turn at once. It exits 0,
    handing over nothing, when its session's process exits, when a newer wake hook
    of the same session takes over, or after --max-wait. Register it with
    ``"asyncRewake": true`` on SessionStart and on Stop, so every turn re-arms it.
    """
    with ParentWatch(
        init_parent_is_gone=True
    ) as watch:  # first, before the parent can go unnoticed
        data = _read_input(WAKE_EVENTS)
        if _claude_is_headless():
            return  # `claude -p` waits for its hooks: nothing idles there to wake; never hold it
        session = str(data.get("session_id", ""))
        tag = f"wake-{hashlib.sha256(session.encode(errors='replace')).hexdigest()[:12]}-"
        _, inbox = _inbox(ctx, name)
        if watch.gone():
            return
        try:
            out = inbox.wait_take(wait_s, max_count, watch=watch.fds, tag=tag)
        except MeshError as exc:
            raise click.ClickException(str(exc)) from None
    if out.messages:
        click.echo(_text(name, out.messages), err=True)
        raise SystemExit(2)


@hook_group.command("context")
@_name_option
@_cli_option
@_max_option
@click.pass_context
def context_hook(ctx: click.Context, name: str, cli_name: str, max_count: int) -> None:
    """After a prompt or tool call: add the messages waiting for NAME as context."""
    data = _read_input(CONTEXT_EVENTS[cli_name])
    event = str(data.get("hook_event_name", CONTEXT_EVENTS[cli_name][0]))
    _, inbox = _inbox(ctx, name)
    try:
        msgs = inbox.take(max_count)
    except MeshError as exc:
        raise click.ClickException(str(exc)) from None
    _emit(context_output(cli_name, event, name, msgs))


# -- what `pipemesh setup` writes (kept here, next to the commands they run) --


def hook_command(
    base: Sequence[str],
    kind: str,
    cli: str,
    name: str,
    wait_s: float = 0.0,
    *,
    join: Callable[[list[str]], str] = shlex.join,
) -> str:
    """The command line of one hook: ``base`` runs pipemesh (with ``--home`` if any);
    ``join`` quotes for the shell that runs hooks (``setup`` passes its Windows-aware one)."""
    argv = [*base, "hook", kind, "--cli", cli, "--name", name]
    if kind == "stop" and wait_s > 0:
        argv += ["--wait", f"{wait_s:g}"]
    return join(argv)


def hook_settings(
    cli: str,
    name: str,
    base: Sequence[str],
    wait_s: float = 0.0,
    *,
    join: Callable[[list[str]], str] = shlex.join,
) -> dict[str, list[dict[str, Any]]]:
    """The ``hooks`` object for ``cli``: event -> list of matcher groups (one hook each).

    - Claude Code: ``Stop`` hands over waiting messages (it never waits: the wake hook
      covers idle time, so ``wait_s`` is not used), ``SessionStart`` and ``Stop`` arm the
      ``asyncRewake`` wake hook (timeout one day), ``PostToolUse`` adds context during a
      turn. No ``UserPromptSubmit`` hook: the armed wake hook has already handed over
      whatever waited when a prompt comes, and that hook would run at the start of every
      woken turn too, adding a Python start (0.3-0.4 s measured) to every wake.
    - Codex: ``Stop`` waits up to ``wait_s`` for a message (the turn stays open meanwhile:
      that is how an idle Codex is woken), ``UserPromptSubmit`` / ``PostToolUse`` add context.
    - Gemini CLI: ``AfterAgent`` (waiting ``wait_s``), ``BeforeAgent`` / ``AfterTool``;
      timeouts in milliseconds.
    """
    scale = 1000 if cli == "gemini" else 1

    def group(kind: str, timeout_s: float, wait: float = 0.0, **extra: object) -> dict[str, Any]:
        hook: dict[str, Any] = {
            "type": "command",
            "command": hook_command(base, kind, cli, name, wait, join=join),
            "timeout": int(timeout_s * scale),
            **extra,
        }
        return {"hooks": [hook]}

    if cli == "claude":
        wake = group("wake", WAKE_TIMEOUT_S, asyncRewake=True)
        return {
            "Stop": [group("stop", HOOK_TIMEOUT_S), wake],
            "SessionStart": [wake],
            "PostToolUse": [group("context", HOOK_TIMEOUT_S)],
        }
    stop_event = STOP_EVENTS[cli][0]
    context_events = CONTEXT_EVENTS[cli][:2]
    hooks = {stop_event: [group("stop", wait_s + HOOK_TIMEOUT_S, wait_s)]}
    for event in context_events:
        hooks[event] = [group("context", HOOK_TIMEOUT_S)]
    return hooks
