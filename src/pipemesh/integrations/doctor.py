"""``pipemesh doctor [--cli X] [--dir DIR]``: is this project ready for each agent CLI?

For each CLI it checks, in order, what a first run trips over: the CLI is installed
(and its version), the project holds the pipemesh MCP server (and hooks, where the CLI
has them), the CLI will use it (approved or trusted), and the server joins the same mesh
home as this shell. Each failed check says the one command that fixes it. Exit code 1
when anything is missing, so scripts and CI can use it.

It only reads files and runs ``X --version``; it never writes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import click

from pipemesh.home import default_home
from pipemesh.integrations.setup_clients import CLIS, SERVER, shell_join, user_paths

__all__ = ["Check", "diagnose", "doctor_command"]

VERSION_TIMEOUT_S: Final = 20.0
_NAMES: Final = {
    "claude": "Claude Code",
    "gemini": "Gemini CLI",
    "codex": "Codex",
    "opencode": "opencode",
    "copilot": "GitHub Copilot CLI",
}
_INSTALL: Final = {
    "claude": "npm install -g @anthropic-ai/claude-code",
    "gemini": "npm install -g @google/gemini-cli",
    "codex": "npm install -g @openai/codex",
    "opencode": "npm install -g opencode-ai",
    "copilot": "npm install -g @github/copilot",
}


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report: what was checked, whether it is fine, and the detail."""

    what: str
    ok: bool
    detail: str


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}


def _our_hooks(data: dict[str, Any]) -> int:
    """How many pipemesh hook commands a hooks object holds (Claude/Gemini/Codex shape)."""
    hooks = data.get("hooks")
    if not isinstance(hooks, dict):
        return 0
    count = 0
    for groups in hooks.values():
        for group in groups if isinstance(groups, list) else []:
            entries = group.get("hooks", [group]) if isinstance(group, dict) else []
            for h in entries if isinstance(entries, list) else []:
                command = (
                    str(h.get("command") or h.get("bash") or "") if isinstance(h, dict) else ""
                )
                if "pipemesh" in command and " hook " in command:
                    count += 1
    return count


def _argv(server: dict[str, Any]) -> list[str]:
    command = server.get("command")
    args = server.get("args", [])
    if isinstance(command, list):  # opencode: one list
        return [str(a) for a in command]
    return [str(command or ""), *(str(a) for a in args if isinstance(args, list))]


def _agent_and_home(argv: list[str]) -> tuple[str, str | None]:
    name = argv[argv.index("--name") + 1] if "--name" in argv[:-1] else "?"
    home = argv[argv.index("--home") + 1] if "--home" in argv[:-1] else None
    return name, home


def _server_of(cli: str, project: Path) -> tuple[Path, dict[str, Any] | None]:
    if cli == "claude":
        path = project / ".mcp.json"
        return path, _json(path).get("mcpServers", {}).get(SERVER)
    if cli == "gemini":
        path = project / ".gemini" / "settings.json"
        return path, _json(path).get("mcpServers", {}).get(SERVER)
    if cli == "codex":
        path = project / ".codex" / "config.toml"
        return path, _toml(path).get("mcp_servers", {}).get(SERVER)
    if cli == "opencode":
        path = project / "opencode.json"
        return path, _json(path).get("mcp", {}).get(SERVER)
    for path in (project / ".mcp.json", project / ".github" / "mcp.json"):
        found = _json(path).get("mcpServers", {}).get(SERVER)
        if found:
            return path, found
    return project / ".mcp.json", None


def _hooks_of(cli: str, project: Path) -> tuple[Path, int] | None:
    files = {
        "claude": project / ".claude" / "settings.json",
        "gemini": project / ".gemini" / "settings.json",
        "codex": project / ".codex" / "hooks.json",
        "copilot": project / ".github" / "hooks" / "pipemesh.json",
    }
    path = files.get(cli)
    return None if path is None else (path, _our_hooks(_json(path)))


def _gemini_trusted(project: Path, folders: dict[str, Any]) -> bool:
    for raw, level in folders.items():
        base = Path(raw)
        if level == "TRUST_PARENT":
            base = base.parent
        if level in ("TRUST_FOLDER", "TRUST_PARENT") and project.is_relative_to(base):
            return True
    return False


def _approval(cli: str, project: Path, name: str) -> Check | None:
    users = user_paths()
    where = shell_join([str(project)])
    fix = f"run: pipemesh setup {cli} --name {name} --dir {where} --write --approve"
    if cli == "claude":
        data = _json(users.claude_settings)
        ok = SERVER in data.get("enabledMcpjsonServers", []) or (
            data.get("enableAllProjectMcpServers") is True
        )
        detail = (
            f"{users.claude_settings} approves project MCP server {SERVER!r}"
            if ok
            else f"the server stays 'Pending approval' in an interactive claude; {fix} "
            "(or accept it when claude asks)"
        )
        return Check("approved", ok, detail)
    if cli == "gemini":
        ok = _gemini_trusted(project, _json(users.gemini_trusted))
        detail = (
            f"{users.gemini_trusted} trusts {project}"
            if ok
            else f"Gemini CLI ignores .gemini/settings.json in an untrusted folder; {fix}"
        )
        return Check("trusted", ok, detail)
    if cli == "codex":
        config = _toml(users.codex_config)
        level = config.get("projects", {}).get(str(project), {}).get("trust_level")
        if level != "trusted":
            return Check(
                "trusted", False, f"Codex ignores the project's .codex/ until trusted; {fix}"
            )
        state = config.get("hooks", {}).get("state", {})
        prefix = str(project / ".codex" / "hooks.json") + ":"
        trusted = sum(1 for k, v in state.items() if k.startswith(prefix) and v.get("trusted_hash"))
        hooks = _hooks_of(cli, project)
        wanted = hooks[1] if hooks else 0
        ok = trusted >= wanted
        detail = (
            f"project trusted; {trusted} hook(s) trusted"
            if ok
            else f"project trusted, but {wanted - trusted} pipemesh hook(s) are not (they do "
            f"not run); {fix}, or press t on them in codex /hooks"
        )
        return Check("trusted", ok, detail)
    if cli == "copilot":
        folders = _json(users.copilot_config).get("trustedFolders", [])
        ok = isinstance(folders, list) and any(
            project.is_relative_to(Path(str(f))) for f in folders
        )
        detail = (
            f"{users.copilot_config} trusts {project}"
            if ok
            else f"Copilot CLI asks before it uses this folder's config; {fix}"
        )
        return Check("trusted", ok, detail)
    return None


def _installed(cli: str) -> Check:
    exe = shutil.which(cli)
    if exe is None:
        return Check("installed", False, f"{cli} is not on PATH; install it: {_INSTALL[cli]}")
    try:
        done = subprocess.run(
            [exe, "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(
            "installed", False, f"{exe} --version failed ({exc}); reinstall: {_INSTALL[cli]}"
        )
    lines = (done.stdout or done.stderr).strip().splitlines()
    version = lines[0] if lines else "version unknown"
    return Check("installed", done.returncode == 0, f"{exe} ({version})")


def diagnose(
    cli: str, project: Path, mesh_home: Path, *, installed: Callable[[str], Check] = _installed
) -> list[Check]:
    """Every check for ``cli`` in ``project``, against the mesh home this shell uses."""
    checks = [installed(cli)]
    config, server = _server_of(cli, project)
    if not isinstance(server, dict):
        checks.append(
            Check(
                "config",
                False,
                f"{config} has no {SERVER!r} MCP server; run: pipemesh setup {cli} --name NAME "
                f"--dir {shell_join([str(project)])} --write",
            )
        )
        return checks
    argv = _argv(server)
    name, home = _agent_and_home(argv)
    command = argv[0]
    runnable = bool(command) and (
        os.access(command, os.X_OK) if os.sep in command else shutil.which(command) is not None
    )
    checks.append(
        Check(
            "config",
            runnable,
            f"{config}: agent {name}"
            if runnable
            else f"{config}: the server command {command!r} cannot be run; run setup again",
        )
    )
    hooks = _hooks_of(cli, project)
    if hooks is not None:
        path, count = hooks
        checks.append(
            Check(
                "hooks",
                count > 0,
                f"{path}: {count} pipemesh hook(s)"
                if count
                else f"{path} has no pipemesh hooks; run: pipemesh setup {cli} --name {name} "
                f"--dir {shell_join([str(project)])} --write",
            )
        )
    approval = _approval(cli, project, name)
    if approval is not None:
        checks.append(approval)
    if cli == "codex" and home is None:
        env_vars = server.get("env_vars", [])
        passes = isinstance(env_vars, list) and "PIPEMESH_HOME" in env_vars
        if not passes and os.environ.get("PIPEMESH_HOME"):
            checks.append(
                Check(
                    "mesh home",
                    False,
                    "Codex does not pass PIPEMESH_HOME to MCP servers and the server has no "
                    '--home; run setup again (it adds env_vars = ["PIPEMESH_HOME"])',
                )
            )
            return checks
    used = Path(home).expanduser().absolute() if home else default_home()
    same = used == mesh_home
    detail = f"{used}" + (
        " (the same as this shell)"
        if same
        else f", but this shell uses {mesh_home}: agents would not see each other; "
        "run setup again from this shell (or pass --home)"
    )
    checks.append(Check("mesh home", same, detail))
    return checks


def _configured(project: Path) -> list[str]:
    found = [cli for cli in CLIS if isinstance(_server_of(cli, project)[1], dict)]
    # Copilot also reads Claude Code's .mcp.json: count it only when set up for itself.
    github = project / ".github"
    if "copilot" in found and not (
        (github / "hooks" / "pipemesh.json").exists()
        or SERVER in _json(github / "mcp.json").get("mcpServers", {})
    ):
        found.remove("copilot")
    return found


@click.command("doctor")
@click.option("--cli", "clis", type=click.Choice(CLIS), multiple=True, help="CLI(s) to check.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Project directory to check.",
)
@click.pass_context
def doctor_command(ctx: click.Context, clis: tuple[str, ...], directory: Path) -> None:
    """Check a project per agent CLI: installed, set up, approved/trusted, same mesh home."""
    project = directory.absolute()
    home_arg = getattr(ctx.obj, "home_arg", None)
    mesh_home = Path(home_arg).expanduser().absolute() if home_arg else default_home()
    wanted = list(clis) or _configured(project)
    if not wanted:
        click.echo(
            f"no agent CLI is set up in {project}; run: pipemesh setup "
            f"{'|'.join(CLIS)} --name NAME --write"
        )
        raise SystemExit(1)
    missing = 0
    for cli in wanted:
        click.echo(f"{cli} ({_NAMES[cli]})")
        for check in diagnose(cli, project, mesh_home):
            missing += not check.ok
            click.echo(f"  {'ok' if check.ok else 'MISSING':8} {check.what:10} {check.detail}")
    if missing:
        click.echo(f"{missing} thing(s) missing")
        raise SystemExit(1)
    click.echo("all set")
