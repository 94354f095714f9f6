"""``pipemesh setup CLI --name NAME [--write] [--approve]``: the config each agent CLI needs.

Without ``--write`` it prints the blocks to copy. With ``--write`` it merges them
into the project's files under ``--dir`` (default: the current directory), never
silently: it shows a unified diff, keeps a backup ``<file>.bak-<time>`` of any file
it changes, leaves files that already hold the entries alone, and refuses to
touch a file it cannot parse. ``--approve`` also writes the approval or trust that
the CLI keeps in the user's home directory (a person's consent, so only on request);
without it the exact step is printed.

Files (project scope unless marked ~):

- Claude Code: ``.mcp.json`` (``mcpServers``) and ``.claude/settings.json`` (``hooks``);
  ~ ``~/.claude/settings.json`` ``enabledMcpjsonServers`` (a project server stays
  "Pending approval" without it).
- Gemini CLI: ``.gemini/settings.json`` (``mcpServers`` with ``trust``, ``hooks`` with
  timeouts in ms); ~ ``~/.gemini/trustedFolders.json`` (project settings count only in a
  trusted folder).
- Codex: ``.codex/config.toml`` (``[mcp_servers.pipemesh]`` with ``env_vars``,
  ``default_tools_approval_mode`` and a start-up grace) and ``.codex/hooks.json``;
  ~ ``[projects."DIR"] trust_level = "trusted"`` in ``~/.codex/config.toml`` (project
  config counts only in a trusted project). Hooks are trusted in Codex's ``/hooks`` screen.
- opencode: ``opencode.json`` (``mcp``); it has no command hooks.
- GitHub Copilot CLI: ``.mcp.json`` (``mcpServers``, shared with Claude Code) and
  ``.github/hooks/pipemesh.json``.

Commands are absolute paths (the ``pipemesh`` found on PATH, else this Python with
``-m pipemesh``), so a CLI started from another shell finds them; hook command lines
are quoted for the shell that runs them (POSIX sh, or cmd on Windows).
"""

from __future__ import annotations

import difflib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import click

from pipemesh.errors import UsageError
from pipemesh.integrations.hooks import hook_settings
from pipemesh.wire import is_valid_name

__all__ = ["CLIS", "FileChange", "Plan", "plan", "setup_command", "user_paths"]

CLIS: Final = ("claude", "gemini", "codex", "opencode", "copilot")
SERVER: Final = "pipemesh"
HOOK_TIMEOUT_S: Final = 30
# Codex may start the first turn before a slow MCP server answers `initialize`; this
# grace makes it wait (seen: tools missing from the first turn without it).
CODEX_STARTUP_GRACE_MS: Final = 10000
CODEX_STARTUP_TIMEOUT_S: Final = 30


@dataclass(frozen=True, slots=True)
class FileChange:
    """One file to create or merge into: its path, and the text it should have."""

    path: Path
    old: str
    new: str

    @property
    def changed(self) -> bool:
        """True when the file does not already hold the entries."""
        return self.old != self.new

    def diff(self) -> str:
        """The unified diff from the current text to the new one."""
        return "".join(
            difflib.unified_diff(
                self.old.splitlines(keepends=True),
                self.new.splitlines(keepends=True),
                fromfile=f"{self.path} (now)",
                tofile=f"{self.path} (new)",
            )
        )


@dataclass(slots=True)
class Plan:
    """What ``setup`` does for one CLI.

    Attributes:
        project: changes to the project's files (``--write``).
        user: approvals and trust kept in the user's home (``--approve``).
        steps: what a person still has to do in the CLI itself, one line each.
    """

    project: list[FileChange] = field(default_factory=list)
    user: list[FileChange] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class UserPaths:
    """Where each CLI keeps its per-user settings (honouring the CLIs' own variables)."""

    claude_settings: Path
    gemini_trusted: Path
    codex_config: Path
    copilot_config: Path


def user_paths(home: Path | None = None) -> UserPaths:
    """The per-user files, under ``home`` (default: the user's home directory)."""
    base = home or Path.home()
    claude_dir = os.environ.get("CLAUDE_CONFIG_DIR")
    codex_dir = os.environ.get("CODEX_HOME")
    gemini_home = os.environ.get("GEMINI_CLI_HOME")
    copilot_dir = os.environ.get("COPILOT_HOME")
    return UserPaths(
        claude_settings=(Path(claude_dir) if claude_dir else base / ".claude") / "settings.json",
        gemini_trusted=(Path(gemini_home) if gemini_home else base)
        / ".gemini"
        / "trustedFolders.json",
        codex_config=(Path(codex_dir) if codex_dir else base / ".codex") / "config.toml",
        copilot_config=(Path(copilot_dir) if copilot_dir else base / ".copilot") / "config.json",
    )


def pipemesh_argv() -> list[str]:
    """How a CLI starts this pipemesh: its absolute path, else this Python with -m."""
    found = shutil.which("pipemesh")
    if found:
        return [str(Path(found).absolute())]
    return [sys.executable, "-m", "pipemesh"]


def _base(home: str | None) -> list[str]:
    return [*pipemesh_argv(), *(["--home", home] if home else [])]


def shell_join(argv: list[str], *, windows: bool | None = None) -> str:
    """One command line for the shell that runs hooks: cmd on Windows, sh elsewhere."""
    if os.name == "nt" if windows is None else windows:
        return subprocess.list2cmdline(argv)
    return shlex.join(argv)


def _hook_argv(home: str | None, kind: str, cli: str, name: str, wait_s: float) -> list[str]:
    argv = [*_base(home), "hook", kind, "--cli", cli, "--name", name]
    if kind == "stop" and wait_s > 0:
        argv += ["--wait", f"{wait_s:g}"]
    return argv


def _hook_cmd(home: str | None, kind: str, cli: str, name: str, wait_s: float) -> str:
    return shell_join(_hook_argv(home, kind, cli, name, wait_s))


def _hooks(cli: str, name: str, home: str | None, wait_s: float) -> dict[str, list[Any]]:
    # The hook set per CLI (Claude Code's asyncRewake wake hooks included) lives with the
    # hook commands themselves.
    return hook_settings(cli, name, _base(home), wait_s, join=shell_join)


def _server(name: str, home: str | None) -> dict[str, Any]:
    base = _base(home)
    return {"command": base[0], "args": [*base[1:], "mcp", "--name", name]}


def _read(path: Path) -> str:
    """The file's text, "" when it does not exist; UsageError when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise UsageError(f"cannot read {path} ({why}); fix it or merge by hand") from None


def _load_json(path: Path) -> tuple[str, dict[str, Any]]:
    old = _read(path)
    try:
        data = json.loads(old) if old.strip() else {}
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); fix it or merge by hand") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a JSON object; merge by hand")
    return old, data


def _load_toml(path: Path) -> tuple[str, dict[str, Any]]:
    old = _read(path)
    try:
        return old, tomllib.loads(old)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML ({exc}); fix it or merge by hand") from None


def _merge_hooks(data: dict[str, Any], hooks: dict[str, list[Any]], path: Path) -> None:
    current = data.setdefault("hooks", {})
    if not isinstance(current, dict):
        raise UsageError(f"'hooks' in {path} is not an object; merge by hand")
    for event, groups in hooks.items():
        existing = current.setdefault(event, [])
        if not isinstance(existing, list):
            raise UsageError(f"hooks.{event} in {path} is not a list; merge by hand")
        commands = {
            h.get("command")
            for g in existing
            if isinstance(g, dict)
            for h in g.get("hooks", [])
            if isinstance(h, dict)
        }
        for group in groups:
            if group["hooks"][0]["command"] not in commands:
                existing.append(group)


def _json_change(path: Path, edit: Callable[[dict[str, Any]], None]) -> FileChange:
    old, data = _load_json(path)
    edit(data)
    new = json.dumps(data, indent=2) + "\n"
    if old and json.loads(old) == data:
        new = old  # same content: leave the user's formatting alone
    return FileChange(path, old, new)


def _add_server(key: str, server: dict[str, Any], path: Path) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        servers = data.setdefault(key, {})
        if not isinstance(servers, dict):
            raise UsageError(f"'{key}' in {path} is not an object; merge by hand")
        servers.setdefault(SERVER, server)

    return edit


def _toml_str(value: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes, \uXXXX included).
    return json.dumps(value)


def _codex_project(config: Path, name: str, home: str | None) -> FileChange:
    old, parsed = _load_toml(config)
    new = old
    if "mcp_optional_startup_grace_ms" not in parsed:
        # A top-level key must come before the first table.
        new = f"mcp_optional_startup_grace_ms = {CODEX_STARTUP_GRACE_MS}\n" + (
            "\n" + new if new and not new.startswith("\n") else new
        )
    if SERVER not in parsed.get("mcp_servers", {}):
        server = _server(name, home)
        block = (
            f"[mcp_servers.{SERVER}]\n"
            f"command = {_toml_str(server['command'])}\n"
            f"args = [{', '.join(_toml_str(a) for a in server['args'])}]\n"
            "# Codex passes no environment variable to MCP servers unless listed here.\n"
            'env_vars = ["PIPEMESH_HOME"]\n'
            "# `codex exec` refuses tool calls that need approval; these only message the mesh.\n"
            'default_tools_approval_mode = "approve"\n'
            f"startup_timeout_sec = {CODEX_STARTUP_TIMEOUT_S}\n"
        )
        new = new + ("\n" if new and not new.endswith("\n\n") else "") + block
    return FileChange(config, old, new)


def _codex_trust(config: Path, directory: Path) -> FileChange | str:
    old, parsed = _load_toml(config)
    project = parsed.get("projects", {}).get(str(directory))
    if isinstance(project, dict) and project.get("trust_level") == "trusted":
        return FileChange(config, old, old)
    if isinstance(project, dict):
        return (
            f"{config} has [projects.{_toml_str(str(directory))}] without trust_level = "
            '"trusted"; set it by hand (Codex ignores the project\'s .codex/ until then)'
        )
    block = f'[projects.{_toml_str(str(directory))}]\ntrust_level = "trusted"\n'
    return FileChange(config, old, old + ("\n" if old and not old.endswith("\n\n") else "") + block)


CODEX_QUERY_TIMEOUT_S: Final = 30.0
CODEX_HOOKS_STEP: Final = (
    "trust the pipemesh hooks: in codex, open /hooks and press t on each (or rerun with "
    "--approve); until then they do not run"
)


def codex_hooks(directory: Path, timeout_s: float = CODEX_QUERY_TIMEOUT_S) -> list[dict[str, Any]]:
    """The hooks Codex sees for project ``directory``, from ``codex app-server`` (hooks/list).

    Each entry has ``key``, ``command``, ``currentHash`` and ``trustStatus``. Codex keeps
    hook trust as ``[hooks.state."KEY"] trusted_hash = "HASH"`` in the user's config.toml.

    Raises:
        UsageError: codex is not on PATH, or did not answer in time (POSIX only: the
            answer is read with select).
    """
    import select  # noqa: PLC0415 - only this path needs it

    exe = shutil.which("codex")
    if exe is None:
        raise UsageError("codex is not on PATH; install it (npm install -g @openai/codex)")
    if os.name == "nt":
        raise UsageError("asking codex for its hooks is not supported on Windows yet")
    requests: list[dict[str, Any]] = [
        {
            "id": 1,
            "method": "initialize",
            "params": {"clientInfo": {"name": "pipemesh", "version": "1"}},
        },
        {"method": "initialized"},
        {"id": 2, "method": "hooks/list", "params": {"cwds": [str(directory)]}},
    ]
    proc = subprocess.Popen(
        [exe, "app-server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=directory,
    )
    stdin, stdout = proc.stdin, proc.stdout
    if stdin is None or stdout is None:  # pragma: no cover - both are PIPE above
        raise UsageError("codex app-server started without pipes")
    deadline = time.monotonic() + timeout_s
    buf = b""
    try:
        stdin.write(
            b"".join(json.dumps({"jsonrpc": "2.0", **r}).encode() + b"\n" for r in requests)
        )
        stdin.flush()
        while True:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    answer = json.loads(line)
                except ValueError:
                    continue
                if isinstance(answer, dict) and answer.get("id") == 2:
                    entries = answer.get("result", {}).get("data", [])
                    return [h for e in entries for h in e.get("hooks", [])]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UsageError(f"codex app-server did not list its hooks within {timeout_s:g}s")
            ready, _, _ = select.select([stdout], [], [], remaining)
            if ready:
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    raise UsageError("codex app-server exited without listing its hooks")
                buf += chunk
    finally:
        stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stdout.close()


def _codex_hook_trust(config: Path, directory: Path) -> FileChange:
    """Trust the pipemesh hooks of ``directory`` in Codex's user ``config``."""
    old, parsed = _load_toml(config)
    trusted = parsed.get("hooks", {}).get("state", {})
    new = old
    for hook in codex_hooks(directory):
        command = str(hook.get("command", ""))
        key, digest = str(hook.get("key", "")), str(hook.get("currentHash", ""))
        if " hook " not in f" {command} " or "pipemesh" not in command or not key or not digest:
            continue  # only our own hooks
        if trusted.get(key, {}).get("trusted_hash") == digest:
            continue
        new += ("\n" if new and not new.endswith("\n\n") else "") + (
            f"[hooks.state.{_toml_str(key)}]\ntrusted_hash = {_toml_str(digest)}\n"
        )
    return FileChange(config, old, new)


def plan(
    cli: str,
    name: str,
    directory: Path,
    home: str | None,
    wait_s: float,
    *,
    user_home: Path | None = None,
) -> Plan:
    """What sets up ``cli`` for agent ``name`` in project ``directory``.

    Args:
        cli: one of :data:`CLIS`.
        name: the agent's name on the mesh.
        directory: the project directory (absolute).
        home: the mesh home to write into the commands, or None for the default.
        wait_s: how long the stop hook waits for a message.
        user_home: the user's home directory (default ``Path.home()``).

    Raises:
        UsageError: an existing file cannot be parsed or has an unexpected shape.
    """
    server = _server(name, home)
    users = user_paths(user_home)
    result = Plan()
    if cli == "claude":
        mcp_json = directory / ".mcp.json"
        settings = directory / ".claude" / "settings.json"
        hooks = _hooks(cli, name, home, wait_s)
        result.project = [
            _json_change(mcp_json, _add_server("mcpServers", server, mcp_json)),
            _json_change(settings, lambda d: _merge_hooks(d, hooks, settings)),
        ]

        def approve(data: dict[str, Any]) -> None:
            enabled = data.setdefault("enabledMcpjsonServers", [])
            if not isinstance(enabled, list):
                raise UsageError(f"enabledMcpjsonServers in {users.claude_settings} is not a list")
            if SERVER not in enabled and data.get("enableAllProjectMcpServers") is not True:
                enabled.append(SERVER)

        result.user = [_json_change(users.claude_settings, approve)]
    elif cli == "gemini":
        settings = directory / ".gemini" / "settings.json"
        hooks = _hooks(cli, name, home, wait_s)
        # trust: the tools run without a confirmation prompt, and headless `gemini -p`
        # offers an MCP server's tools to the model only when it is trusted or allowed.
        trusted = {**server, "trust": True}

        def edit(data: dict[str, Any]) -> None:
            _add_server("mcpServers", trusted, settings)(data)
            _merge_hooks(data, hooks, settings)

        result.project = [_json_change(settings, edit)]

        def trust(data: dict[str, Any]) -> None:
            if data.get(str(directory)) != "TRUST_FOLDER":
                data[str(directory)] = "TRUST_FOLDER"

        result.user = [_json_change(users.gemini_trusted, trust)]
    elif cli == "codex":
        hooks = _hooks(cli, name, home, wait_s)
        hooks_json = directory / ".codex" / "hooks.json"
        result.project = [
            _codex_project(directory / ".codex" / "config.toml", name, home),
            _json_change(hooks_json, lambda d: _merge_hooks(d, hooks, hooks_json)),
        ]
        trust_change = _codex_trust(users.codex_config, directory)
        if isinstance(trust_change, str):
            result.steps.append(trust_change)
        else:
            result.user = [trust_change]
        result.steps.append(CODEX_HOOKS_STEP)
    elif cli == "opencode":
        config = directory / "opencode.json"
        argv = [server["command"], *server["args"]]

        def add_local(data: dict[str, Any]) -> None:
            data.setdefault("$schema", "https://opencode.ai/config.json")
            local = {"type": "local", "command": argv, "enabled": True}
            _add_server("mcp", local, config)(data)

        result.project = [_json_change(config, add_local)]
    elif cli == "copilot":
        # .github/mcp.json, not .mcp.json: Claude Code reads .mcp.json too and would start
        # Copilot's server under Copilot's agent name.
        mcp_json = directory / ".github" / "mcp.json"
        hooks_json = directory / ".github" / "hooks" / "pipemesh.json"
        local = {"type": "local", **server, "tools": ["*"]}

        def add_hooks(data: dict[str, Any]) -> None:
            data.setdefault("version", 1)
            _merge_copilot_hooks(data, _copilot_hooks(name, home, wait_s), hooks_json)

        result.project = [
            _json_change(mcp_json, _add_server("mcpServers", local, mcp_json)),
            _json_change(hooks_json, add_hooks),
        ]

        def trust(data: dict[str, Any]) -> None:
            folders = data.setdefault("trustedFolders", [])
            if not isinstance(folders, list):
                raise UsageError(f"trustedFolders in {users.copilot_config} is not a list")
            if str(directory) not in folders:
                folders.append(str(directory))

        result.user = [_json_change(users.copilot_config, trust)]
    else:
        raise UsageError(f"setup knows {', '.join(CLIS)}; got {cli!r}")
    return result


def _copilot_hooks(name: str, home: str | None, wait_s: float) -> dict[str, list[Any]]:
    # Copilot CLI's hooks (.github/hooks/*.json, version 1): one command per shell, timeouts
    # in seconds. agentStop takes {"decision": "block", "reason": ...} like Claude Code's Stop.
    def entry(kind: str, timeout: int) -> dict[str, Any]:
        argv = _hook_argv(home, kind, "claude", name, wait_s)
        return {
            "type": "command",
            "bash": shell_join(argv, windows=False),
            # PowerShell runs a quoted program path only behind the call operator.
            "powershell": "& " + shell_join(argv, windows=True),
            "timeoutSec": timeout,
        }

    # Its userPromptSubmitted/postToolUse hooks want a top-level additionalContext, which
    # `pipemesh hook context` does not print: they would take messages the model never sees.
    return {"agentStop": [entry("stop", int(wait_s + HOOK_TIMEOUT_S))]}


def _merge_copilot_hooks(data: dict[str, Any], hooks: dict[str, list[Any]], path: Path) -> None:
    current = data.setdefault("hooks", {})
    if not isinstance(current, dict):
        raise UsageError(f"'hooks' in {path} is not an object; merge by hand")
    for event, entries in hooks.items():
        existing = current.setdefault(event, [])
        if not isinstance(existing, list):
            raise UsageError(f"hooks.{event} in {path} is not a list; merge by hand")
        commands = {h.get("bash") for h in existing if isinstance(h, dict)}
        existing.extend(e for e in entries if e["bash"] not in commands)


def _write(change: FileChange) -> str:
    try:
        return _write_file(change)
    except OSError as exc:
        raise UsageError(f"cannot write {change.path} ({exc.strerror or exc})") from None


def _write_file(change: FileChange) -> str:
    path = change.path
    backup = ""
    if path.exists():
        backup_path = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(path, backup_path)
        backup = f" (backup: {backup_path})"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(change.new, encoding="utf-8")
    tmp.replace(path)
    return f"wrote {path}{backup}"


def _apply(changes: list[FileChange]) -> None:
    for change in changes:
        if not change.changed:
            click.echo(f"{change.path}: already set up, left as is")
            continue
        click.echo(change.diff().rstrip("\n"))
        click.echo(_write(change))


_APPROVAL_WHAT: Final = {
    "claude": "approve the project's MCP server (else `claude mcp list` shows it "
    "'Pending approval' until you accept it in an interactive claude)",
    "gemini": "trust this folder (Gemini CLI ignores the project's .gemini/settings.json "
    "in an untrusted folder)",
    "codex": "trust this project (Codex ignores the project's .codex/ until then)",
    "copilot": "trust this folder (Copilot CLI asks before it uses the folder's config)",
}


@click.command("setup")
@click.argument("cli_name", metavar="|".join(CLIS), type=click.Choice(CLIS))
@click.option("--name", required=True, help="Agent name for this CLI on the mesh.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Project directory whose config files to write.",
)
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(0, 3600),
    default=0.0,
    show_default=True,
    help="Seconds the stop hook waits for a message before the agent goes idle.",
)
@click.option("--write", is_flag=True, help="Merge into the files (diff shown, backup kept).")
@click.option(
    "--approve",
    is_flag=True,
    help="With --write: also write the approval/trust for this project that the CLI keeps "
    "in your home directory (~/.claude, ~/.gemini, ~/.codex, ~/.copilot).",
)
@click.pass_context
def setup_command(
    ctx: click.Context,
    cli_name: str,
    name: str,
    directory: Path,
    wait_s: float,
    write: bool,
    approve: bool,
) -> None:
    """Print (or --write) what an agent CLI needs to join the mesh: MCP server, hooks, trust."""
    if not is_valid_name(name):
        raise click.UsageError(f"agent name {name!r} is not valid")
    if approve and not write:
        raise click.UsageError("--approve goes with --write (it writes files in your home)")
    home = getattr(ctx.obj, "home_arg", None)
    if not write:
        # Plan against an empty directory so only our blocks show, not the user's files.
        with tempfile.TemporaryDirectory() as empty:
            result = plan(cli_name, name, Path(empty), home, wait_s, user_home=Path(empty))
            for change in result.project:
                click.echo(f"# {change.path.relative_to(empty)}")
                click.echo(change.new.rstrip("\n"))
                click.echo()
        click.echo("# run again with --write to merge these into the files (a backup is kept)")
        return
    project = directory.absolute()
    result = plan(cli_name, name, project, home, wait_s)
    _apply(result.project)
    pending = [c for c in result.user if c.changed]
    if approve:
        _apply(result.user)
        if cli_name == "codex":
            # Hook trust is per hook hash, which only Codex computes: ask it, now that the
            # hooks file and the project trust are written.
            try:
                _apply([_codex_hook_trust(user_paths().codex_config, project)])
                result.steps.remove(CODEX_HOOKS_STEP)
            except UsageError as exc:
                click.echo(f"note: could not trust the hooks for you ({exc})")
    elif pending:
        files = ", ".join(str(c.path) for c in pending)
        again = [
            "pipemesh",
            *(["--home", home] if home else []),
            "setup",
            cli_name,
            "--name",
            name,
            "--dir",
            str(project),
            *(["--wait", f"{wait_s:g}"] if wait_s > 0 else []),
            "--write",
            "--approve",
        ]
        click.echo(f"next: {_APPROVAL_WHAT[cli_name]}; run: {shell_join(again)}  (writes {files})")
    for step in result.steps:
        click.echo(f"next: {step}")
