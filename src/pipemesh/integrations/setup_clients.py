"""``pipemesh setup claude|gemini|codex --name NAME [--write]``: the config blocks for each CLI.

Without ``--write`` it prints the blocks to copy. With ``--write`` it merges them
into the project's files under ``--dir`` (default: the current directory), never
silently: it shows a unified diff, keeps a backup ``<file>.bak-<time>`` of any file
it changes, leaves files that already hold the entries alone, and refuses to
touch a file it cannot parse.

Files (project scope):

- Claude Code: ``.mcp.json`` (``mcpServers``) and ``.claude/settings.json`` (``hooks``).
- Gemini CLI: ``.gemini/settings.json`` (``mcpServers`` and ``hooks``; hook timeouts in ms).
- Codex: ``.codex/config.toml`` (``[mcp_servers.pipemesh]``) and ``.codex/hooks.json``.
"""

from __future__ import annotations

import difflib
import json
import shutil
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import click

from pipemesh import _platform
from pipemesh.errors import UsageError
from pipemesh.wire import is_valid_name

__all__ = ["FileChange", "plan", "setup_command"]

SERVER: Final = "pipemesh"
HOOK_TIMEOUT_S: Final = 30


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


def _exe() -> list[str]:
    found = shutil.which("pipemesh")
    return [found] if found else [sys.executable, "-m", "pipemesh"]


def _base(home: str | None) -> list[str]:
    return [*_exe(), *(["--home", home] if home else [])]


def _hook_cmd(home: str | None, kind: str, cli: str, name: str, wait_s: float) -> str:
    argv = [*_base(home), "hook", kind, "--cli", cli, "--name", name]
    if kind == "stop" and wait_s > 0:
        argv += ["--wait", f"{wait_s:g}"]
    return _platform.join_command(argv)  # POSIX: shlex.join; Windows: see there


def _hooks(cli: str, name: str, home: str | None, wait_s: float) -> dict[str, list[Any]]:
    stop_event = "AfterAgent" if cli == "gemini" else "Stop"
    context_events = (
        ("BeforeAgent", "AfterTool") if cli == "gemini" else ("UserPromptSubmit", "PostToolUse")
    )
    # Gemini CLI counts hook timeouts in milliseconds, Claude Code and Codex in seconds.
    scale = 1000 if cli == "gemini" else 1
    stop_timeout = int((wait_s + HOOK_TIMEOUT_S) * scale)

    def entry(kind: str, timeout: int) -> dict[str, Any]:
        return {
            "hooks": [
                {
                    "type": "command",
                    "command": _hook_cmd(home, kind, cli, name, wait_s),
                    "timeout": timeout,
                }
            ]
        }

    hooks = {stop_event: [entry("stop", stop_timeout)]}
    for event in context_events:
        hooks[event] = [entry("context", HOOK_TIMEOUT_S * scale)]
    return hooks


def _server(name: str, home: str | None) -> dict[str, Any]:
    base = _base(home)
    return {"command": base[0], "args": [*base[1:], "mcp", "--name", name]}


def _load_json(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        old = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return "", {}
    try:
        data = json.loads(old) if old.strip() else {}
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); fix it or merge by hand") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a JSON object; merge by hand")
    return old, data


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


def _json_change(path: Path, edit: Any) -> FileChange:
    old, data = _load_json(path)
    edit(data)
    return FileChange(path, old, json.dumps(data, indent=2) + "\n")


def plan(cli: str, name: str, directory: Path, home: str | None, wait_s: float) -> list[FileChange]:
    """The file changes that set up ``cli`` for agent ``name`` in project ``directory``.

    Raises:
        UsageError: an existing file cannot be parsed or has an unexpected shape.
    """
    server = _server(name, home)
    hooks = _hooks(cli, name, home, wait_s)

    def add_server(data: dict[str, Any]) -> None:
        servers = data.setdefault("mcpServers", {})
        if not isinstance(servers, dict):
            raise UsageError("'mcpServers' is not an object; merge by hand")
        servers.setdefault(SERVER, server)

    if cli == "claude":
        settings = directory / ".claude" / "settings.json"
        return [
            _json_change(directory / ".mcp.json", add_server),
            _json_change(settings, lambda d: _merge_hooks(d, hooks, settings)),
        ]
    if cli == "gemini":
        settings = directory / ".gemini" / "settings.json"

        def edit(data: dict[str, Any]) -> None:
            add_server(data)
            _merge_hooks(data, hooks, settings)

        return [_json_change(settings, edit)]
    config = directory / ".codex" / "config.toml"
    try:
        old = config.read_text(encoding="utf-8")
    except FileNotFoundError:
        old = ""
    try:
        parsed = tomllib.loads(old)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{config} is not valid TOML ({exc}); fix it or merge by hand") from None
    new = old
    if SERVER not in parsed.get("mcp_servers", {}):
        block = (
            f"[mcp_servers.{SERVER}]\n"
            f"command = {json.dumps(server['command'])}\n"
            f"args = {json.dumps(server['args'])}\n"
        )
        new = old + ("\n" if old and not old.endswith("\n\n") else "") + block
    hooks_json = directory / ".codex" / "hooks.json"
    return [
        FileChange(config, old, new),
        _json_change(hooks_json, lambda d: _merge_hooks(d, hooks, hooks_json)),
    ]


def _write(change: FileChange) -> str:
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


@click.command("setup")
@click.argument(
    "cli_name", metavar="claude|gemini|codex", type=click.Choice(["claude", "gemini", "codex"])
)
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
@click.pass_context
def setup_command(
    ctx: click.Context, cli_name: str, name: str, directory: Path, wait_s: float, write: bool
) -> None:
    """Print (or --write) the MCP server and hook settings for Claude Code, Gemini CLI or Codex."""
    if not is_valid_name(name):
        raise click.UsageError(f"agent name {name!r} is not valid")
    home = getattr(ctx.obj, "home_arg", None)
    if not write:
        # Plan against an empty directory so only our blocks show, not the user's files.
        with tempfile.TemporaryDirectory() as empty:
            for change in plan(cli_name, name, Path(empty), home, wait_s):
                click.echo(f"# {change.path.relative_to(empty)}")
                click.echo(change.new.rstrip("\n"))
                click.echo()
        click.echo("# run again with --write to merge these into the files (a backup is kept)")
        return
    changes = plan(cli_name, name, directory.absolute(), home, wait_s)
    for change in changes:
        if not change.changed:
            click.echo(f"{change.path}: already set up, left as is")
            continue
        click.echo(change.diff().rstrip("\n"))
        click.echo(_write(change))
    if cli_name == "codex":
        click.echo("note: Codex asks you to review and trust new hooks (/hooks) before they run")
