"""The mesh home: the one directory that holds a mesh.

Layout::

    <home>/agent_registry.json        who is on the mesh (see registry.py)
    <home>/agent_registry.json.lock   flock target for registry writers
    <home>/pipes/<name>.public        each agent's inbox FIFO
    <home>/pipes/<name>.private       each agent's heartbeat/status FIFO
    <home>/logs/mesh_*.log            JSON Lines logs (see observe.py)
    <home>/spool/<name>/*.msg         messages queued for durable agents (see spool.py)

The home is found from, in order: an explicit argument (``--home``),
``$PIPEMESH_HOME``, ``$XDG_RUNTIME_DIR/pipemesh``, or ``<tmp>/pipemesh-<uid>``;
on Windows ``%LOCALAPPDATA%\\pipemesh`` (its pipes are named pipes, not files).
It is created 0700; an existing home owned by another user, or writable by
group or others, is refused (like ssh with its keys), because any process that
can write there can impersonate every agent.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pipemesh import _platform
from pipemesh.errors import UsageError

__all__ = ["ENV_HOME", "MeshHome", "default_home"]

ENV_HOME: Final = "PIPEMESH_HOME"


def default_home() -> Path:
    """The home used when none is given: $PIPEMESH_HOME, $XDG_RUNTIME_DIR/pipemesh, or tmp."""
    explicit = os.environ.get(ENV_HOME)
    if explicit:
        return Path(explicit).expanduser()
    local = _platform.user_data_dir()  # Windows: %LOCALAPPDATA%, private to the user
    if local is not None:
        return local / "pipemesh"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "pipemesh"
    return Path(tempfile.gettempdir()) / f"pipemesh-{_platform.current_uid()}"


def _secure_dir(path: Path) -> None:
    """Create ``path`` 0700 if missing; refuse it if another user could write there."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"cannot create the mesh directory {path}: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path} is not a directory; choose another --home")
    if _platform.IS_WINDOWS:
        # No uid or mode bits: access is the folder's ACL, inherited from its parent
        # (%LOCALAPPDATA% is readable by the user, SYSTEM and Administrators only).
        return
    if st.st_uid != os.getuid():
        raise UsageError(
            f"{path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()}); "
            "use a mesh home of your own with --home or $PIPEMESH_HOME"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError(
            f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run 'chmod 700 {path}' so no other user can write to the mesh"
        )


@dataclass(frozen=True, slots=True)
class MeshHome:
    """Paths of one mesh; :meth:`open` creates and checks them."""

    root: Path

    @classmethod
    def open(cls, home: str | os.PathLike[str] | None = None) -> MeshHome:
        """Resolve, create (0700) and check the mesh home and its subdirectories.

        Raises:
            UsageError: the directory cannot be created, belongs to another
                user, or is writable by group or others.
        """
        root = Path(home).expanduser() if home is not None else default_home()
        root = root.absolute()
        made = cls(root)
        for path in (root, made.pipes_dir, made.logs_dir, made.spool_dir):
            _secure_dir(path)
        return made

    @property
    def registry_path(self) -> Path:
        """``agent_registry.json``."""
        return self.root / "agent_registry.json"

    @property
    def lock_path(self) -> Path:
        """The registry's lock file (a separate file, so readers never block)."""
        return self.root / "agent_registry.json.lock"

    @property
    def pipes_dir(self) -> Path:
        """Directory of the agents' FIFOs."""
        return self.root / "pipes"

    @property
    def logs_dir(self) -> Path:
        """Directory of the three mesh logs."""
        return self.root / "logs"

    @property
    def spool_dir(self) -> Path:
        """Directory of the durable agents' spools."""
        return self.root / "spool"

    def public_pipe(self, name: str) -> Path:
        """Path of ``name``'s inbox FIFO."""
        return self.pipes_dir / f"{name}.public"

    def private_pipe(self, name: str) -> Path:
        """Path of ``name``'s heartbeat/status FIFO."""
        return self.pipes_dir / f"{name}.private"
