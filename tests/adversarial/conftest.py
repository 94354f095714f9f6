"""Adversarial-suite fixtures: small real filesystems (tmpfs) that fill up or go read-only."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _mount(args: list[str]) -> bool:
    out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    return out.returncode == 0


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mount a tmpfs of the given size (bytes) under ``tmp_path``; unmounted at teardown.

    Skips where mounting is not allowed (not root, or no CAP_SYS_ADMIN).
    """
    mounted: list[Path] = []

    def make(size_bytes: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir(mode=0o700)
        if not _mount(
            ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", str(point)]
        ):
            pytest.skip("cannot mount a tmpfs here")
        mounted.append(point)
        return point

    try:
        yield make
    finally:
        for point in reversed(mounted):
            subprocess.run(
                ["umount", "-l", str(point)], capture_output=True, timeout=30, check=False
            )


def remount_ro(point: Path) -> None:
    """Make a tiny_fs mount read-only."""
    out = subprocess.run(
        ["mount", "-o", "remount,ro", str(point)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if out.returncode != 0:
        pytest.skip(f"cannot remount read-only: {out.stderr.strip()}")


def fill(path: Path) -> Path:
    """Write a file at ``path`` until the filesystem is full; return it."""
    chunk = b"x" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(1_000_000):  # bounded: a tiny fs fills long before
            try:
                if os.write(fd, chunk) < len(chunk):
                    break
            except OSError:
                break
    finally:
        os.close(fd)
    return path
