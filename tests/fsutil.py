"""Filesystem conditions for tests: a read-only directory and a tiny (soon full) disk.

As a normal user a read-only directory is a chmod; root ignores permissions, so there it is a
read-only tmpfs mount (and the full disk a 1 MiB tmpfs). Where neither is possible the test skips.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@contextlib.contextmanager
def read_only_dir(path: Path):
    """`path` as an existing directory nobody can write into (chmod, or a read-only tmpfs for root)."""
    if os.geteuid() != 0:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    if not _mount_tmpfs(path, "ro,size=64k"):
        pytest.skip("root without permission to mount a read-only tmpfs")
    try:
        yield path
    finally:
        _umount(path)


@contextlib.contextmanager
def tiny_disk(path: Path, size: str = "1m"):
    """A tmpfs of `size` mounted at `path` (root only): writes past it fail with ENOSPC."""
    if os.geteuid() != 0 or not _mount_tmpfs(path, f"size={size}"):
        pytest.skip("a tiny tmpfs needs root and mount permission")
    try:
        yield path
    finally:
        _umount(path)
