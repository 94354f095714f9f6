"""The names of the mesh's log files and where their rotated parts are.

Kept apart from :mod:`pipemesh.observe` (which re-exports all of it) so that readers of
the logs, such as ``pipemesh history``, find the files without importing the log writer
and its ``msgspec`` records. Standard library only; no I/O beyond listing a directory.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Final

__all__ = ["COMM_LOG", "ERRORS_LOG", "LATENCY_LOG", "log_files"]

COMM_LOG: Final = "mesh_communication.log"
LATENCY_LOG: Final = "mesh_latency.log"
ERRORS_LOG: Final = "mesh_errors.log"


def log_files(path: Path) -> list[Path]:
    """``path`` and its rotated files that exist, oldest first (``x.log.N`` ... ``x.log``)."""
    rotated: list[tuple[int, Path]] = []
    prefix = path.name + "."
    with contextlib.suppress(FileNotFoundError):
        for entry in path.parent.iterdir():
            suffix = entry.name[len(prefix) :] if entry.name.startswith(prefix) else ""
            if suffix.isdigit():
                rotated.append((int(suffix), entry))
    out = [p for _, p in sorted(rotated, reverse=True)]
    if path.exists():
        out.append(path)
    return out
