"""Opening the files of a store without following a link, and the error for what is not a regular file.

A store never follows a symbolic link out of its folder: its files are opened with `O_NOFOLLOW`, relative to
the store's folder (itself opened with `O_NOFOLLOW`), and `O_NONBLOCK`, so that a FIFO cannot block a read.
Anything found where the store needs a regular file (a link, a folder, a FIFO, a socket, a device) or a
folder is refused with a `StorageBackendError` that names it and says what to do.
"""

from __future__ import annotations

import errno
import os
from contextlib import suppress
from stat import S_ISBLK, S_ISCHR, S_ISDIR, S_ISFIFO, S_ISLNK, S_ISREG, S_ISSOCK
from typing import TYPE_CHECKING

from recoverable.errors import StorageBackendError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "DIRECTORY",
    "FOLDER_FLAGS",
    "LINK",
    "READ_FLAGS",
    "not_a_file",
    "open_folder",
    "open_regular_file",
    "read_all",
    "read_if_regular",
    "refusal",
    "what_is",
]

LINK = "a symbolic link"
DIRECTORY = "a directory"
_KINDS = (
    (S_ISLNK, LINK),
    (S_ISDIR, DIRECTORY),
    (S_ISREG, "a regular file"),
    (S_ISFIFO, "a FIFO (named pipe)"),
    (S_ISSOCK, "a socket"),
    (S_ISCHR, "a device"),
    (S_ISBLK, "a device"),
)
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO for reading would wait for a writer; reads of a regular file ignore the flag.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def not_a_file(mode: int, *, folder: bool = False) -> str | None:
    """Say what a file of `mode` is when it is not what the store needs (a regular file, or a folder)."""
    if S_ISDIR(mode) if folder else S_ISREG(mode):
        return None
    return next((what for is_kind, what in _KINDS if is_kind(mode)), "not a regular file")


def refusal(path: Path, what: str, *, store: str, key: str | None = None, folder: bool = False) -> StorageBackendError:
    """The error for a link, a folder or another special file found where the store needs a file (or a folder).

    Args:
        path: Where it was found.
        what: What it is, as `not_a_file` says.
        store: The store's name or id.
        key: The record whose file it is (or stands for), when there is one.
        folder: Whether the store needs a folder there (the store's own folder, `.keys`), not a file.
    """
    target = ""
    if what == LINK:
        with suppress(OSError):
            target = f" to {os.readlink(path)}"
    subject = f"record {key!r} of key-value store {store!r}" if key is not None else f"key-value store {store!r}"
    needed = "folder" if folder else "regular file"
    if folder and key is None and what == LINK:
        fix = (
            "replace the link with the store's folder itself (the storage folder and key_value_stores/ may be "
            "links, a store's own folder may not)"
        )
    else:
        fix = f"move it out of {path.parent}, or put the {needed} it stands for in its place"
    error = StorageBackendError(
        f"{subject}: {path} is {what}{target}, not a {needed}. The store never follows a link out of its "
        f"folder and reads and writes only regular files, so it neither reads nor replaces this one: {fix}",
        store=store,
        key=key,
    )
    # What the system would have said, for callers that look at the cause (replaced when there is a real one).
    code = errno.ELOOP if what == LINK else errno.ENOTDIR if folder else errno.EISDIR if what == DIRECTORY else None
    if code is not None:
        error.__cause__ = OSError(code, os.strerror(code), str(path))
    return error


def open_folder(path: Path, *, store: str) -> int:
    """Open the folder `path` (a store's folder) without following a link; raise `refusal` for anything else.

    Raises:
        StorageBackendError: `path` is a link or not a folder.
        FileNotFoundError: There is nothing at `path`.
    """
    try:
        return os.open(path, FOLDER_FLAGS)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        what = LINK if exc.errno == errno.ELOOP else what_is(path, None, folder=True)
        if what is None:
            raise
        raise refusal(path, what, store=store, folder=True) from exc


def open_regular_file(
    name: str, dir_fd: int, *, folder: Path, store: str, key: str | None = None
) -> tuple[int, os.stat_result]:
    """Open the regular file `name` of the folder open as `dir_fd`, without following a link or blocking.

    Returns the open file descriptor and its stat.

    Raises:
        StorageBackendError: `name` is a link, a folder, a FIFO or another special file.
        FileNotFoundError: There is no `name`.
    """
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        # ELOOP for a link; ENXIO for a socket; whatever else is not a regular file is named by its lstat.
        if isinstance(exc, FileNotFoundError):
            raise
        what = LINK if exc.errno == errno.ELOOP else what_is(name, dir_fd)
        if what is None:
            raise
        raise refusal(folder / name, what, store=store, key=key) from exc
    try:
        stat = os.fstat(fd)
        what = not_a_file(stat.st_mode)
    except BaseException:
        os.close(fd)
        raise
    if what is not None:
        os.close(fd)
        raise refusal(folder / name, what, store=store, key=key)
    return fd, stat


def what_is(path: str | Path, dir_fd: int | None, *, folder: bool = False) -> str | None:
    """What is at `path` if it is not what the store needs there; None when it is, or when nothing is there."""
    try:
        mode = os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return None
    return not_a_file(mode, folder=folder)


def read_if_regular(name: str, dir_fd: int) -> bytes | str | None:
    """The bytes of the regular file `name`; what it is when it is not one; None when absent or unreadable."""
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return what_is(name, dir_fd)
    try:
        st = os.fstat(fd)
        return not_a_file(st.st_mode) or read_all(fd, st.st_size)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_all(fd: int, size_hint: int) -> bytes:
    """Read an open file to its end; `size_hint` is its size as last seen."""
    chunks: list[bytes] = []
    remaining = size_hint
    # One read for the common case, a loop for files that grew or short reads.
    while True:
        chunk = os.read(fd, max(remaining, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
