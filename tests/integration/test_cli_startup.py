"""What the CLI imports at start-up: quick commands must not load the heavy modules.

Issue 13 wants 'pipemesh history' to answer in under 100 ms; most of a CLI run is Python
start-up and imports, so these tests pin what gets imported (not how long it takes, which
depends on the machine): a fresh interpreter runs the command, then reports which of the
heavy modules are in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipemesh import AgentBase, MeshClient
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

# Third-party libraries and mesh modules that only some commands need. Each costs
# milliseconds to tens of milliseconds to import (python -X importtime).
HEAVY = (
    "rich",  # tables and colour, only on a terminal
    "msgspec",  # the binary codec and the log writer's records
    "psutil",  # process liveness in the registry
    "filelock",  # the registry lock
    "mcp",  # the MCP SDK ('pipemesh mcp')
    "textual",  # the dashboard ('pipemesh monitor')
    "matplotlib",  # 'stats --plot'
    "pipemesh.runtime",
    "pipemesh.transport",
    "pipemesh.registry",
    "pipemesh.wire",
    "pipemesh.codec",
    "pipemesh.observe",
    "pipemesh.monitor",
    "pipemesh.integrations",
    "pipemesh.bench",
    "pipemesh.demo",
)

# Runs the CLI in-process with stdout piped (as in a script), then writes the heavy modules
# it finds in sys.modules to the file named by argv[1].
_PROBE = """
import json, sys
out, heavy, argv = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
from pipemesh.cli import main
rc = main(argv) if argv else None
loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))
with open(out, "w") as f:
    json.dump({"rc": rc, "loaded": loaded, "modules": sorted(sys.modules)}, f)
"""


def _probe(tmp_path: Path, *argv: str) -> tuple[dict[str, object], str]:
    """Run ``pipemesh argv`` (or only import the CLI) in a fresh interpreter."""
    report = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(report), json.dumps(HEAVY), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data: dict[str, object] = json.loads(report.read_text())
    return data, proc.stdout


def test_import_cli_loads_no_heavy_module(tmp_path: Path) -> None:
    """'import pipemesh.cli' loads the group only: no command module, no heavy library."""
    data, _ = _probe(tmp_path)
    assert data["loaded"] == []
    modules = data["modules"]
    assert isinstance(modules, list)
    assert "pipemesh.history" not in modules
    assert [m for m in modules if m.startswith("pipemesh.cli.")] == ["pipemesh.cli._common"]


def test_help_lists_every_command_without_importing_them(tmp_path: Path) -> None:
    """'pipemesh --help' lists all commands from their summaries, importing none of them."""
    data, out = _probe(tmp_path, "--help")
    assert data["rc"] == 0
    assert data["loaded"] == []
    for name in ("agents", "history", "monitor", "mcp", "run", "send", "tail", "setup"):
        assert f"\n  {name} " in out
    modules = data["modules"]
    assert isinstance(modules, list)
    assert "pipemesh.history" not in modules
    assert "pipemesh.cli.messaging" not in modules


def test_history_query_loads_no_heavy_module(tmp_path: Path, mesh_home: Path) -> None:
    """'pipemesh history TEXT' finds real traffic without the runtime, msgspec or rich."""
    with AgentBase("bob", "test"), MeshClient("alice") as alice:
        alice.send("bob", "the startup needle")
    comm_log = mesh_home / "logs" / "mesh_communication.log"
    wait_for(lambda: comm_log.exists() and "startup needle" in comm_log.read_text())
    data, out = _probe(tmp_path, "history", "needle", "--home", str(mesh_home))
    assert data["rc"] == 0
    assert "alice -> bob" in out
    assert "the startup needle" in out
    assert data["loaded"] == []
    modules = data["modules"]
    assert isinstance(modules, list)
    assert [m for m in modules if m.startswith("pipemesh.cli.")] == ["pipemesh.cli._common"]
