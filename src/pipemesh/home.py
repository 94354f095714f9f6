"""The mesh home: the one directory that holds a mesh.

Layout::

    <home>/agent_registry.json        who is on the mesh (see registry.py)
    <home>/agent_registry.json.lock   flock target for registry writers
    <home>/pipes/<name>.public        each agent's inbox FIFO
    <home>/pipes/<name>.private       each agent's heartbeat/status FIFO
    <home>/logs/mesh_*.log            JSON Lines logs (see observe.py)
    <home>/spool/<name>/*.msg         messages queued for durable agents (see spool.py)
    <home>/bodies/<name>/<from>.<id>  large bodies sent out of band (see runtime/bodies.py)
    <home>/names/<name>.lock          flock each live agent holds on its name (see registry.py)

The home is found from, in order: an explicit argument (``--home``),
``$PIPEMESH_HOME``, ``$XDG_RUNTIME_DIR/pipemesh`` (when that directory is yours
and private, as the XDG spec requires), or ``<tmp>/pipemesh-<uid>``;
on Windows ``%LOCALAPPDATA%\\pipemesh`` (its pipes are named pipes, not files).

Why the checks: any process that can write in the home can impersonate every
agent and read every log, and any user who can *replace the path* to it can
do the same later, while agents run. So :meth:`MeshHome.open`:

* walks the path from ``/`` one component at a time with ``O_NOFOLLOW |
  O_DIRECTORY`` (the parent is resolved first; the home itself must not be a
  symlink), and checks each directory on its open descriptor: owned by root
  or by you, and not writable by group or others unless sticky (like
  ``/tmp``, where only an entry's owner may rename it). Then no other user
  can swap any part of the path for as long as the home exists, so reaching
  files by path afterwards is safe, even where ``fs.protected_symlinks`` is 0;
* creates missing directories (parents included) 0700 whatever the umask;
* refuses a home that is not yours or is writable by group or others, with
  the ``chmod 700`` fix (like ssh with its keys).

On Windows there are no uids, mode bits or ``O_NOFOLLOW``: the home is created
with ``mkdir`` and keeps the ACL its parent passes on (``%LOCALAPPDATA%`` admits
only the user, SYSTEM and Administrators); see docs/windows.md.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pipemesh import _platform
from pipemesh.errors import UsageError

__all__ = ["ENV_HOME", "MeshHome", "default_home"]

ENV_HOME: Final = "PIPEMESH_HOME"
# POSIX only (MeshHome.open takes another path on Windows, which lacks these flags).
_DIR_FLAGS: Final = (
    os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | _platform.O_CLOEXEC
)


def _private_dir_ok(path: Path) -> bool:
    """True if ``path`` is a real directory of ours that no one else can write."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == _platform.current_uid()
        and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def default_home() -> Path:
    """The home used when none is given: $PIPEMESH_HOME, $XDG_RUNTIME_DIR/pipemesh, or tmp."""
    explicit = os.environ.get(ENV_HOME)
    if explicit:
        return Path(explicit).expanduser()
    local = _platform.user_data_dir()  # Windows: %LOCALAPPDATA%, private to the user
    if local is not None:
        return local / "pipemesh"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_absolute() and _private_dir_ok(Path(runtime)):
        return Path(runtime) / "pipemesh"
    import tempfile  # noqa: PLC0415 - the last resort; not imported by every CLI start

    return Path(tempfile.gettempdir()) / f"pipemesh-{_platform.current_uid()}"


def _open_windows(root: Path, subdirs: tuple[Path, ...]) -> None:
    """Windows: create the home and its subdirectories; access is their inherited ACL."""
    for path in (root, *subdirs):
        try:
            path.mkdir(parents=True, exist_ok=True)
            is_dir = path.is_dir()
        except OSError as exc:
            raise UsageError(
                f"cannot create the mesh directory {path}: {exc.strerror}; choose another --home"
            ) from exc
        if not is_dir:
            raise UsageError(f"{path} is not a directory; choose another --home")


def _open_dir(name: str, dir_fd: int | None, shown: Path, *, create: bool) -> int:
    """Open (creating 0700 if missing) one path component without following a symlink."""
    for _ in range(2):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):  # created meanwhile: open it
                os.mkdir(name, 0o700, dir_fd=dir_fd)  # 0700 & ~umask is never wider
        except OSError as exc:
            if os.path.islink(shown):
                raise UsageError(
                    f"{shown} is a symbolic link; pipemesh does not follow one to its mesh "
                    "home (another user could re-point it): give the real directory with --home"
                ) from exc
            if os.path.exists(shown) and not os.path.isdir(shown):
                raise UsageError(f"{shown} is not a directory; choose another --home") from exc
            raise
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _check_ancestor(fd: int, path: Path) -> None:
    """Refuse a directory above the home that another user could change entries in."""
    st = os.fstat(fd)
    if st.st_uid not in (0, os.getuid()):
        raise UsageError(
            f"{path} belongs to uid {st.st_uid}, who could replace the mesh home inside it; "
            "use a mesh home under a directory of your own (--home or $PIPEMESH_HOME)"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise UsageError(
            f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}), so "
            "another user could replace the mesh home inside it; use a home under a directory "
            "only you can write, or run 'chmod go-w " + str(path) + "'"
        )


def _check_home(fd: int, path: Path) -> None:
    """Refuse a home (or subdirectory) that is not ours or that others can write."""
    st = os.fstat(fd)
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


@contextlib.contextmanager
def _walk(root: Path) -> Iterator[int]:
    """Open ``root`` component by component (creating it 0700); yield its checked fd."""
    fd = os.open("/", _DIR_FLAGS)
    shown = Path("/")
    try:
        _check_ancestor(fd, shown)
        parts = root.parts[1:]
        for i, part in enumerate(parts):
            shown = shown / part
            next_fd = _open_dir(part, fd, shown, create=True)
            os.close(fd)
            fd = next_fd
            if i < len(parts) - 1:
                _check_ancestor(fd, shown)
        _check_home(fd, root)
        yield fd
    except OSError as exc:
        raise UsageError(
            f"cannot create the mesh directory {shown}: {exc.strerror}; choose another --home"
        ) from exc
    finally:
        os.close(fd)


def _resolve(home: str | os.PathLike[str] | None) -> Path:
    if home is not None and not os.fspath(home):
        raise UsageError("the mesh home is an empty string; give a directory with --home")
    root = Path(home).expanduser() if home is not None else default_home()
    root = root.absolute()
    if root.name in ("", ".", ".."):
        return Path(os.path.realpath(root))
    # The parent may hold symlinks of its owner's choosing (macOS /tmp, a user's own
    # links); the home itself must not be one.
    return Path(os.path.realpath(root.parent)) / root.name


@dataclass(frozen=True, slots=True)
class MeshHome:
    """Paths of one mesh; :meth:`open` creates and checks them."""

    root: Path

    @classmethod
    def open(cls, home: str | os.PathLike[str] | None = None) -> MeshHome:
        """Resolve, create (0700) and check the mesh home and its subdirectories.

        Raises:
            UsageError: the directory cannot be created, is a symlink, belongs
                to another user, or is writable by group or others; or a
                directory above it could be changed by another user.
        """
        made = cls(_resolve(home))
        subdirs = (made.pipes_dir, made.logs_dir, made.spool_dir, made.names_dir, made.bodies_dir)
        if _platform.IS_WINDOWS:
            _open_windows(made.root, subdirs)
            return made
        with _walk(made.root) as root_fd:
            for sub in subdirs:
                try:
                    fd = _open_dir(sub.name, root_fd, sub, create=True)
                except OSError as exc:
                    raise UsageError(
                        f"cannot create the mesh directory {sub}: {exc.strerror}; "
                        "choose another --home"
                    ) from exc
                try:
                    _check_home(fd, sub)
                finally:
                    os.close(fd)
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
    def names_dir(self) -> Path:
        """Directory of the per-name locks each live agent holds (see registry.py)."""
        return self.root / "names"

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

    @property
    def bodies_dir(self) -> Path:
        """Directory of large bodies handed over out of band (runtime/bodies.py)."""
        return self.root / "bodies"

    def public_pipe(self, name: str) -> Path:
        """Path of ``name``'s inbox FIFO."""
        return self.pipes_dir / f"{name}.public"

    def private_pipe(self, name: str) -> Path:
        """Path of ``name``'s heartbeat/status FIFO."""
        return self.pipes_dir / f"{name}.private"
