"""The security boundary: names at every entry point, 0600 files, other users locked out."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from pipemesh import AgentBase, MeshClient
from pipemesh.registry import Registry
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

BAD_NAMES = ["../escape", "a/b", "a|TO:x", "a]b", "a\nb", "..", ".hidden", "", "x" * 65]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_rejected_by_api(mesh_home: Path, name: str) -> None:
    """Names that could escape pipes/ or inject header fields are refused by the API."""
    with pytest.raises(ValueError, match="not valid"):
        MeshClient(name)
    with pytest.raises(ValueError, match="not valid"):
        AgentBase(name)
    with MeshClient("ok") as c, pytest.raises(ValueError, match="not valid"):
        c.send_message(name, "hi")
    assert not any(mesh_home.rglob("*escape*"))


def test_bad_names_rejected_by_cli(mesh_home: Path) -> None:
    """The CLI refuses bad names with a usage error (exit 2) and writes nothing."""
    for name in ("../escape", "a|TO:x"):
        out = run_cli("send", name, "hi")
        assert out.returncode == 2, out.stderr
        assert "not valid" in out.stderr
    assert not any(mesh_home.rglob("*escape*"))


def test_bad_names_in_registry_are_skipped(mesh_home: Path) -> None:
    """Registry entries with unsafe names or pipe paths read back as skipped, not used."""
    reg = Registry(mesh_home / "agent_registry.json", mesh_home / "agent_registry.json.lock")
    entry = {"pid": 1, "public_pipe": "/tmp/x", "status": "active"}
    doc = {"agents": {"../evil": entry, "a|TO:b": entry, "good": entry}, "version": 1}
    reg.path.write_text(json.dumps(doc))
    assert set(reg.read()) == {"good"}
    assert len(reg.skipped) == 2
    with MeshClient("c") as c:
        assert set(c.refresh_peers()) == {"good"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_pipes_and_files_are_private(mesh_home: Path) -> None:
    """Home and its directories are 0700; pipes, registry, lock, logs and spool files 0600."""
    AgentBase("gone", durable=True).close()
    with AgentBase("alive") as a, MeshClient("w") as w:
        w.send("gone", "queued")
        w.send("alive", "hi")
        assert a.receive(10) is not None
        paths = [
            mesh_home / "pipes" / "alive.public",
            mesh_home / "pipes" / "alive.private",
            mesh_home / "agent_registry.json",
            mesh_home / "agent_registry.json.lock",
            *sorted((mesh_home / "logs").iterdir()),
            *sorted((mesh_home / "spool" / "gone").iterdir()),
        ]
        for path in paths:
            assert mode(path) == 0o600, path
        for directory in ("", "pipes", "logs", "spool", "spool/gone"):
            assert mode(mesh_home / directory) == 0o700, directory


PROBES = {
    "pipe": ("pipes/owner.public", os.O_WRONLY | os.O_NONBLOCK),
    "registry": ("agent_registry.json", os.O_WRONLY),
    "new_file": ("agent_registry.json.new", os.O_WRONLY | os.O_CREAT),
    "lock": ("agent_registry.json.lock", os.O_WRONLY),
}


def probe_as_nobody(home: Path) -> dict[str, str]:
    """Fork; the child drops to uid/gid 65534 and tries each open; report what happened."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only raw syscalls, then _exit
        code = 0
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            results = {"uid": str(os.getuid())}
            for label, (rel, flags) in PROBES.items():
                try:
                    os.close(os.open(home / rel, flags, 0o600))
                    results[label] = "opened"
                except OSError as exc:
                    results[label] = type(exc).__name__
            os.write(write_fd, json.dumps(results).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return dict(json.loads(data))


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
def test_other_user_cannot_write_pipe_or_registry(mesh_home: Path) -> None:
    """A process switched to uid 65534 can neither open an agent's pipe nor edit the registry."""
    with AgentBase("owner"):
        result = probe_as_nobody(mesh_home)
    assert result == {
        "uid": "65534",
        "pipe": "PermissionError",
        "registry": "PermissionError",
        "new_file": "PermissionError",
        "lock": "PermissionError",
    }
