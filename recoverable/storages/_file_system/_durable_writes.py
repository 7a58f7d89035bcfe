"""Writing a file all or nothing and durably: a temporary file, fsync, rename, fsync of its folder.

A crash at any instant leaves the old file or the new one, never a mix and never an empty file; a write that
returned survives a power cut. Every step is relative to the descriptor of the folder written in, so a link
put in the folder's place meanwhile is never followed. Temporary files that a crash left behind are removed
by the next holder of the store's writers' lock (`StoreFolder.remove_temp_files`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from typing import TYPE_CHECKING

from recoverable.storages._file_system._layout import NEW_PREFIX, TEMP_PREFIX

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["create_exclusive", "durable_write", "fsync_dir", "remove_if_present", "rename_temp", "write_temp"]


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a new, renamed or removed file) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(
    folder: int, name: str, data: bytes | memoryview, *, after_mtime_ns: int | None = None
) -> os.stat_result:
    """Write `name` in an open folder all or nothing: temp file, fsync, rename, fsync of the folder.

    Every step is relative to the folder's descriptor, so a link put in the folder's place meanwhile is
    never followed: the write lands in the folder that was opened, or fails.

    Args:
        folder: The descriptor of the folder to write in.
        name: The file name.
        data: The bytes to write.
        after_mtime_ns: The modification time of the file being replaced; the new file's is set later
            than it, so that a record's version (which includes it) never repeats, even when the file
            system reuses the inode and the clock has not moved on.

    Returns the stat of the written file (taken before the rename, which keeps it).
    """
    temp, stat = write_temp(folder, data, after_mtime_ns=after_mtime_ns)
    rename_temp(folder, temp, name)
    os.fsync(folder)
    return stat


def write_temp(folder: int, data: bytes | memoryview, *, after_mtime_ns: int | None) -> tuple[str, os.stat_result]:
    """Write `data` durably to a new temporary file of the folder; return its name and stat.

    A temporary file left by a crash is removed by the next holder of the writers' lock.
    """
    temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=folder)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if after_mtime_ns is not None:
                mtime_ns = max(time.time_ns(), after_mtime_ns + 1)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            os.fsync(fd)
            stat = os.fstat(fd)
        finally:
            os.close(fd)
    except BaseException:
        remove_if_present(temp, folder)
        raise
    return temp, stat


def rename_temp(folder: int, temp: str, name: str) -> None:
    """Rename a temporary file over `name` (the caller fsyncs the folder); remove it when that fails."""
    try:
        os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        remove_if_present(temp, folder)
        raise


def remove_if_present(name: str, folder: int) -> None:
    """Remove the file `name` of an open folder, if there is one (the caller fsyncs the folder)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=folder)


def create_exclusive(folder: Path, name: str, data: bytes) -> bool:
    """Create `folder/name` durably unless it exists; return whether this call created it."""
    # Not TEMP_PREFIX: this runs without the writers' lock, whose holders sweep TEMP_PREFIX files.
    temp = folder / f"{NEW_PREFIX}{secrets.token_hex(8)}"
    temp.write_bytes(data)
    try:
        fd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, folder / name)
        except FileExistsError:
            return False
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(folder)
    return True
