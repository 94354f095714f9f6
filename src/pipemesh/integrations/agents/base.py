"""The shared CLI runner: an agent that answers each message by running a program.

:class:`CliAgent` is an :class:`~pipemesh.runtime.agent.AgentBase` that, for each
incoming ``question`` or ``directive``, builds a prompt (the conversation so far
with that peer, then the message), runs the configured command with the prompt
on stdin, and replies under the question's ID with what the command printed.

- The router thread never waits for a CLI: it hands the message to a small
  worker pool (``max_workers``) and goes back to reading its pipe; the worker
  replies. At most ``max_pending`` messages wait for a worker; past that the
  asker gets a ``TYPE:error`` reply saying the agent is busy.
- Each run has a timeout; the command runs in its own process group, so a
  timeout kills it and everything it started.
- A failure (timeout, non-zero exit, unreadable output, CLI not installed) is
  returned to the asker as a reply of type ``error`` with one clear sentence.

The pool's threads are the one exception to "threads live in runtime/": they
only run a subprocess and send a reply, and :meth:`CliAgent.close` joins them.

Command lines are configurable per kind in ``<home>/agents.toml`` (see
:func:`load_spec`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import shutil
import subprocess
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Final

from pipemesh import _platform
from pipemesh.errors import MeshError, UsageError
from pipemesh.runtime.agent import AgentBase
from pipemesh.wire import Message

__all__ = [
    "ANSWER_TYPES",
    "INSTRUCTION",
    "OUTPUTS",
    "CliAgent",
    "CliFailed",
    "CliSpec",
    "build_prompt",
    "check_installed",
    "load_spec",
    "parse_output",
]

ANSWER_TYPES: Final = ("question", "directive")
OUTPUTS: Final = ("text", "claude-json", "gemini-json")
INSTRUCTION: Final = (
    "Answer the last message of the conversation given on stdin. "
    "Everything you write is sent back to the sender as your reply."
)
_HISTORY_MESSAGES: Final = 20
_STDERR_TAIL: Final = 400


class CliFailed(MeshError):
    """The CLI could not answer: not installed, timed out, failed, or printed garbage."""


@dataclass(frozen=True, slots=True)
class CliSpec:
    """How to run one kind of CLI.

    Attributes:
        kind: claude, gemini, codex or command.
        command: argv; the prompt goes to its stdin.
        output: how to read stdout: ``text``, ``claude-json`` or ``gemini-json``.
        install_hint: the command that installs the CLI.
        timeout_s: longest run before the CLI is killed.
        max_workers: CLI runs at the same time.
        cwd: working directory of the CLI (default: where ``pipemesh run`` started).
    """

    kind: str
    command: tuple[str, ...]
    output: str
    install_hint: str
    timeout_s: float = 300.0
    max_workers: int = 2
    cwd: str | None = None

    def missing_message(self) -> str:
        """The sentence for a CLI that is not installed."""
        return (
            f"{self.command[0]} is not installed (not found on PATH); install it with "
            f"'{self.install_hint}', or set its command in agents.toml"
        )


def load_spec(default: CliSpec, config_path: Path) -> CliSpec:
    """``default`` with the ``[<kind>]`` table of ``config_path`` applied, if the file exists.

    Example ``agents.toml``::

        [claude]
        command = ["claude", "-p", "--output-format", "json", "--model", "sonnet"]
        timeout_s = 600
        max_workers = 2

    Raises:
        UsageError: the file is not valid TOML or a value has the wrong type.
    """
    try:
        with open(config_path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return default
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read {config_path}: {exc}") from None
    table = data.get(default.kind, {})
    if not isinstance(table, dict):
        raise UsageError(f"[{default.kind}] in {config_path} must be a table")
    spec = default
    command = table.get("command")
    if command is not None:
        if not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)):
            raise UsageError(
                f"[{default.kind}] command in {config_path} must be a non-empty list of strings"
            )
        spec = replace(spec, command=tuple(command))
    output = table.get("output", spec.output)
    if output not in OUTPUTS:
        raise UsageError(
            f"[{default.kind}] output in {config_path} is {output!r}; use one of {OUTPUTS}"
        )
    spec = replace(spec, output=output)
    timeout_s = table.get("timeout_s", spec.timeout_s)
    max_workers = table.get("max_workers", spec.max_workers)
    cwd = table.get("cwd", spec.cwd)
    if not isinstance(timeout_s, int | float) or isinstance(timeout_s, bool) or timeout_s <= 0:
        raise UsageError(f"[{default.kind}] timeout_s in {config_path} must be a positive number")
    if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
        raise UsageError(f"[{default.kind}] max_workers in {config_path} must be an integer >= 1")
    if cwd is not None and not isinstance(cwd, str):
        raise UsageError(f"[{default.kind}] cwd in {config_path} must be a string")
    return replace(spec, timeout_s=float(timeout_s), max_workers=max_workers, cwd=cwd)


def build_prompt(me: str, role: str, msg: Message, history: list[Message]) -> str:
    """The text a CLI gets on stdin: who it is, the conversation with the peer, the message."""
    peer = msg.sender
    lines = [
        f"You are {me} ({role}), an AI agent on a pipemesh message mesh. The agent {peer} "
        f"sent you the message at the end. Write your answer to it; everything you write "
        f"is sent back to {peer} as your reply.",
        "",
    ]
    earlier = [m for m in history if m.id != msg.id][-_HISTORY_MESSAGES:]
    if earlier:
        lines.append(f"Earlier messages between you and {peer}, oldest first:")
        for m in earlier:
            who = f"{peer} -> you" if m.sender == peer else f"you -> {peer}"
            lines += [f"--- {who} ({m.msg_type}, id {m.id})", m.body]
        lines.append("")
    lines += [f"Message to answer ({msg.msg_type} from {peer}, id {msg.id}):", msg.body]
    return "\n".join(lines) + "\n"


def parse_output(spec: CliSpec, stdout: str) -> str:
    """The answer in a CLI's stdout.

    Raises:
        CliFailed: the output is not what ``spec.output`` expects, or reports an error.
    """
    if spec.output == "text":
        answer = stdout.strip()
        if not answer:
            raise CliFailed(f"{spec.kind} printed nothing")
        return answer
    try:
        data = json.loads(stdout)
    except ValueError:
        raise CliFailed(
            f"{spec.kind} output is not JSON (starts with {stdout[:80]!r}); "
            "is the command missing --output-format json?"
        ) from None
    if not isinstance(data, dict):
        raise CliFailed(f"{spec.kind} JSON output is not an object")
    if spec.output == "claude-json":
        result = data.get("result")
        if data.get("is_error") or not isinstance(result, str):
            raise CliFailed(f"claude reported an error: {str(result or data)[:_STDERR_TAIL]}")
        return result
    error = data.get("error")
    response = data.get("response")
    if error or not isinstance(response, str):
        raise CliFailed(f"gemini reported an error: {str(error or data)[:_STDERR_TAIL]}")
    return response


class CliAgent(AgentBase):
    """An agent that answers questions and directives by running a CLI headless.

    Args:
        agent_name: the name on the mesh.
        spec: the CLI to run and how.
        role: free text shown in the registry.
        home: mesh home directory.
        answer_types: message types that get an answer; others are only kept in history.
        max_pending: messages waiting for a worker before the agent answers "busy".
    """

    def __init__(
        self,
        agent_name: str,
        spec: CliSpec,
        role: str = "",
        home: str | os.PathLike[str] | None = None,
        *,
        answer_types: tuple[str, ...] = ANSWER_TYPES,
        max_pending: int = 32,
    ) -> None:
        self.spec = spec
        self.answer_types = frozenset(answer_types)
        self.max_pending = max_pending
        self._queued = 0
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._stopping = False
        self._pool = ThreadPoolExecutor(
            max_workers=spec.max_workers, thread_name_prefix=f"pipemesh-{spec.kind}"
        )
        super().__init__(agent_name, role or spec.kind, home)

    def on_message_received(self, msg: Message) -> None:
        """Router thread: queue the message for a worker, or answer "busy" at once."""
        if msg.msg_type not in self.answer_types:
            return
        with self._lock:
            busy = self._queued >= self.max_pending
            if not busy:
                self._queued += 1
        if busy:
            self._reply_error(
                msg, f"{self.agent_name} is busy ({self.max_pending} messages waiting); retry later"
            )
            return
        try:
            self._pool.submit(self._answer, msg)
        except RuntimeError:  # the pool is shut down: close() has started
            self._reply_error(msg, f"{self.agent_name} is shutting down")

    def _answer(self, msg: Message) -> None:
        try:
            prompt = build_prompt(self.agent_name, self.role, msg, self.history(msg.sender))
            try:
                answer = self.run_cli(prompt)
            except CliFailed as exc:
                self._reply_error(msg, str(exc))
                return
            except (
                Exception
            ) as exc:  # a bug here must still answer the asker, never leave it waiting
                self.events.error("cli_run_failed", f"{type(exc).__name__}: {exc}", id=msg.id)
                self._reply_error(msg, f"{self.spec.kind} run failed: {type(exc).__name__}: {exc}")
                return
            size = len(answer.encode("utf-8", "surrogatepass"))
            if size > self.max_body_bytes:
                self._reply_error(
                    msg,
                    f"{self.spec.kind} answered with {size} bytes, over this agent's limit of "
                    f"{self.max_body_bytes}; ask for a shorter answer",
                )
                return
            try:
                self.reply(msg, answer)
            except MeshError as exc:
                self.events.error("reply_failed", str(exc), id=msg.id, to=msg.sender)
                self._reply_error(msg, f"the answer could not be sent: {exc}")
        finally:
            with self._lock:
                self._queued -= 1

    def _reply_error(self, msg: Message, text: str) -> None:
        try:
            self.reply(msg, text, msg_type="error")
        except MeshError as exc:
            self.events.error("reply_failed", str(exc), id=msg.id, to=msg.sender)

    def run_cli(self, prompt: str) -> str:
        """Run the CLI once with ``prompt`` on stdin and return its answer.

        Raises:
            CliFailed: not installed, timed out, non-zero exit, or unreadable output.
        """
        spec = self.spec
        if self._stopping:
            raise CliFailed(f"{self.agent_name} is shutting down")
        try:
            proc = subprocess.Popen(
                list(spec.command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=spec.cwd,
                start_new_session=True,  # its own process group: a timeout kills all of it
            )
        except FileNotFoundError:
            raise CliFailed(spec.missing_message()) from None
        except OSError as exc:
            raise CliFailed(f"cannot start {spec.command[0]}: {exc.strerror}") from None
        with self._lock:
            self._running.add(proc)
        limit = 2 * self.max_body_bytes + _OUTPUT_SLACK_BYTES
        try:
            try:
                out, err = _communicate(
                    proc, prompt.encode("utf-8", "surrogatepass"), spec.timeout_s, limit
                )
            except subprocess.TimeoutExpired:
                self._kill(proc)
                raise CliFailed(
                    f"{spec.kind} did not answer within {spec.timeout_s:g}s and was stopped; "
                    "raise timeout_s in agents.toml for long tasks"
                ) from None
        finally:
            with self._lock:
                self._running.discard(proc)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        stderr = strip_ansi(err.data.decode("utf-8", "replace"))
        if proc.returncode != 0:
            tail = stderr.strip()[-_STDERR_TAIL:] or "no output on stderr"
            if proc.returncode < 0 and self._stopping:
                raise CliFailed(f"{self.agent_name} is shutting down; {spec.kind} was stopped")
            raise CliFailed(f"{spec.kind} exited with code {proc.returncode}: {tail}")
        if out.dropped:
            raise CliFailed(
                f"{spec.kind} printed {out.total} bytes, more than the {limit} kept for an "
                "answer; ask for a shorter answer"
            )
        return strip_ansi(parse_output(spec, out.data.decode("utf-8", "replace")))

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        _platform.kill_process_tree(proc.pid)
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5.0)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop running CLIs (their askers get an error reply), then leave the mesh."""
        if not self.is_running:
            return
        # First so that queued messages get a quick "shutting down" instead of a CLI run.
        self._stopping = True
        with self._lock:
            running = list(self._running)
        for proc in running:
            _platform.kill_process_tree(proc.pid)
        self._pool.shutdown(wait=True)
        super().close(timeout_s)


_OUTPUT_SLACK_BYTES: Final = 64 * 1024
_STDERR_KEEP_BYTES: Final = 64 * 1024
# CSI (colours, cursor moves), OSC (titles, links; ended by BEL or ST) and other
# two-byte escapes: terminal control, not part of an answer.
_ANSI: Final = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]"
)


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (colours, cursor moves, OSC titles)."""
    return _ANSI.sub("", text) if ("\x1b" in text or "\x9b" in text) else text


@dataclass(slots=True)
class _Captured:
    """Output of one stream: the first ``limit`` bytes (or the last, for stderr)."""

    limit: int
    keep_tail: bool = False
    data: bytearray = field(default_factory=bytearray)
    total: int = 0

    @property
    def dropped(self) -> bool:
        return self.total > len(self.data)

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.keep_tail:
            self.data += chunk
            if len(self.data) > self.limit:
                del self.data[: len(self.data) - self.limit]
        elif len(self.data) < self.limit:
            self.data += chunk[: self.limit - len(self.data)]


def _communicate(
    proc: subprocess.Popen[bytes], stdin: bytes, timeout_s: float, limit: int
) -> tuple[_Captured, _Captured]:
    """Like ``proc.communicate`` but keeps at most ``limit`` bytes of stdout and the last
    64 KiB of stderr (what is past them is read and thrown away, so the program never
    blocks on a full pipe and memory stays bounded).

    Raises:
        subprocess.TimeoutExpired: ``timeout_s`` passed first.
    """
    out, err = _Captured(limit), _Captured(_STDERR_KEEP_BYTES, keep_tail=True)
    deadline = time.monotonic() + timeout_s
    if proc.stdin is None or proc.stdout is None or proc.stderr is None:
        raise ValueError("start the process with stdin, stdout and stderr as pipes")
    if _platform.IS_WINDOWS:
        return _communicate_threaded(proc, stdin, timeout_s, out, err)
    pending = memoryview(stdin)
    with selectors.DefaultSelector() as sel:
        os.set_blocking(proc.stdin.fileno(), False)
        if pending:
            sel.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        while len(sel.get_map()) > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout_s)
            for key, _ in sel.select(remaining):
                if key.fileobj is proc.stdin:
                    try:
                        pending = pending[os.write(proc.stdin.fileno(), pending[:65536]) :]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # it stopped reading: fine, it may answer anyway
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fd, 65536)
                if chunk:
                    key.data.add(chunk)
                else:
                    sel.unregister(key.fileobj)
    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    return out, err


def _drain(fd: int, into: _Captured) -> None:
    with contextlib.suppress(OSError, ValueError):
        while chunk := os.read(fd, 65536):
            into.add(chunk)


def _feed(stream: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(OSError, ValueError):  # it stopped reading: it may answer anyway
        stream.write(data)
    with contextlib.suppress(OSError, ValueError):
        stream.close()


def _communicate_threaded(
    proc: subprocess.Popen[bytes],
    stdin: bytes,
    timeout_s: float,
    out: _Captured,
    err: _Captured,
) -> tuple[_Captured, _Captured]:
    """:func:`_communicate` with a reader thread per pipe (Windows cannot select on pipes)."""
    if proc.stdin is None or proc.stdout is None or proc.stderr is None:
        raise ValueError("start the process with stdin, stdout and stderr as pipes")
    deadline = time.monotonic() + timeout_s
    readers = [
        threading.Thread(target=_drain, args=(proc.stdout.fileno(), out), daemon=True),
        threading.Thread(target=_drain, args=(proc.stderr.fileno(), err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))
        if reader.is_alive():
            raise subprocess.TimeoutExpired(proc.args, timeout_s)
    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    return out, err


def check_installed(spec: CliSpec) -> None:
    """Raise :class:`CliFailed` with an install hint when the command is not on PATH."""
    exe = spec.command[0]
    if os.sep in exe:
        if not os.access(exe, os.X_OK):
            raise CliFailed(spec.missing_message())
    elif shutil.which(exe) is None:
        raise CliFailed(spec.missing_message())
