"""What the file system benchmarks share: where their files go, and the bare durable write they compare with."""

from __future__ import annotations

import os
import secrets
import shutil
from contextlib import suppress
from pathlib import Path

__all__ = ["REPO_ROOT", "bench_root", "durable_write", "filesystem_type", "fsync_dir", "remove_bench_root"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def filesystem_type(path: Path) -> str:
    """The type of the file system holding `path` (from /proc/mounts; 'unknown' elsewhere)."""
    best, fs_type = "", "unknown"
    resolved = str(path.resolve())
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                parts = line.split()
                mount_point = parts[1].replace("\\040", " ")
                inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) > len(best):
                    best, fs_type = mount_point, parts[2]
    except OSError:
        pass
    return fs_type


def bench_root(given: Path | None) -> Path:
    """The parent of the temporary folder: `--dir`, or `.bench-tmp/` in the repository."""
    root = given if given is not None else REPO_ROOT / ".bench-tmp"
    root.mkdir(parents=True, exist_ok=True)
    return root


def remove_bench_root(root: Path, work: Path, *, given: bool) -> None:
    """Remove the temporary folder, and `.bench-tmp/` itself when this script made it and it is empty."""
    shutil.rmtree(work, ignore_errors=True)
    if not given:
        with suppress(OSError):  # another run still uses it
            root.rmdir()


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(folder: Path, name: str, data: bytes) -> None:
    """Temp file, write, fsync, rename, fsync of the folder: the least an all-or-nothing durable write does."""
    temp = folder / f".tmp.{secrets.token_hex(8)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, folder / name)
    fsync_dir(folder)
