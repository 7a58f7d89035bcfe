"""The files of one store folder, reached without following a link: records, long keys, temporary files.

No read and no write follows a symbolic link out of a store. Files of a store are opened relative to the
store's folder, itself opened with `O_NOFOLLOW`, and with `O_NOFOLLOW` (and `O_NONBLOCK`, so that a FIFO
cannot block a read); whatever is found where a regular file must be (a link, a folder, a FIFO, a socket,
a device) is refused with a `StorageBackendError` naming it, never served, never taken for "no record" and
never replaced by a write. The folders above a store (the storage folder and `key_value_stores/`) are the
user's choice and may be links: they are resolved once, when the store is opened.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from recoverable.errors import StorageBackendError
from recoverable.storages._file_system._copies import TagNotAFile, read_tag, remove_tag, tagged
from recoverable.storages._file_system._durable_writes import durable_write, remove_if_present
from recoverable.storages._file_system._layout import KEYS_DIR, LONG_KEY_PREFIX, TEMP_PREFIX, key_hash
from recoverable.storages._file_system._no_follow import (
    FOLDER_FLAGS,
    not_a_file,
    open_folder,
    open_regular_file,
    read_all,
    read_if_regular,
    refusal,
    what_is,
)

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["LongKeys", "RecordFile", "StoreFolder", "is_stale", "remove_record_files", "version_of"]


@dataclass(slots=True)
class RecordFile:
    """Where a key's record lives, as the last scan or write of this process saw it."""

    name: str
    content_type: str
    size: int
    mtime_ns: int
    crawlee_sidecar: str | None = None
    refused: tuple[str, str] | None = None
    """When the record cannot be used: the path (in the store) of what is wrong, and what it is (a link...)."""
    seen: tuple[str, int, str | None] | None = None
    """The file as last looked at: its `version_of`, its inode's change time and its copy tag (`_copies`).

    The tag holds while the file has that version and change time: making or removing another name of the
    file (a copy, or the rewrite of the record it copies) changes the time, and the tag is looked up again.
    """


def version_of(stat: os.stat_result) -> str:
    """The version of a record file: its modification time, inode and size, like an HTTP server's ETag."""
    return f"{stat.st_mtime_ns:x}-{stat.st_ino:x}-{stat.st_size:x}"


def is_stale(record: RecordFile, stat: os.stat_result) -> bool:
    """Whether the file of a Crawlee record changed since the index saw it.

    A record of this library's layout keeps its content type in its file name; a Crawlee record keeps it in
    its sidecar, which a rewrite of another type (by Crawlee, or another process) changes after the file.
    """
    return record.crawlee_sidecar is not None and (stat.st_mtime_ns, stat.st_size) != (record.mtime_ns, record.size)


def remove_record_files(record: RecordFile, folder: int) -> None:
    """Remove the file of a record, then its Crawlee sidecar or its copy tag, if any (the caller fsyncs the folder)."""
    remove_if_present(record.name, folder)
    if record.crawlee_sidecar is not None:
        remove_if_present(record.crawlee_sidecar, folder)
    if record.seen is not None and record.seen[2] is not None:
        remove_tag(record.name, record.seen[0], folder)


class StoreFolder:
    """The folder of one store: where it is, how messages name the store, and its files opened safely.

    Args:
        path: The store's folder; the folders above it resolved, the folder itself not (it must not be a link).
        label: The store's name or id, as messages say it.
        case_insensitive: Whether the file system ignores the case of file names.
    """

    def __init__(self, path: Path, *, label: str, case_insensitive: bool) -> None:
        self.path = path
        self.label = label
        self.case_insensitive = case_insensitive

    def refusal(self, name: str, what: str, *, key: str | None = None, folder: bool = False) -> StorageBackendError:
        """The error for `what` (a link...) found at `name` of the store, where a regular file (or folder) belongs."""
        return refusal(self.path / name, what, store=self.label, key=key, folder=folder)

    def refusal_of(self, key: str | None, record: RecordFile) -> StorageBackendError:
        """The error for a record the index marked refused."""
        assert record.refused is not None  # noqa: S101 - only called for refused records
        relative, what = record.refused
        return self.refusal(relative, what, key=key, folder=relative == KEYS_DIR)

    def open(self) -> int:
        """Open the store's folder without following a link; the caller closes it."""
        return open_folder(self.path, store=self.label)

    def mtime_ns(self, folder: int | None = None) -> int:
        """The modification time of the store's folder; of the folder open as `folder` when given.

        A writer gives the folder it holds open (and works in); otherwise the path is looked at, with lstat:
        a store folder swapped for a link counts as a change, and the next scan refuses the link.
        """
        if folder is not None:
            return os.fstat(folder).st_mtime_ns
        return os.lstat(self.path).st_mtime_ns

    def open_record(self, name: str, key: str | None) -> tuple[int, os.stat_result]:
        """Open the regular file `name` of the store; raise a refusal for anything else, FileNotFoundError if none."""
        dir_fd = self.open()
        try:
            return open_regular_file(name, dir_fd, folder=self.path, store=self.label, key=key)
        finally:
            os.close(dir_fd)

    def read_file(self, name: str, key: str) -> bytes:
        """Read the regular file `name` of the store whole."""
        fd, stat = self.open_record(name, key)
        try:
            return read_all(fd, stat.st_size)
        finally:
            os.close(fd)

    def version(
        self, key: str, record: RecordFile, stat: os.stat_result, folder: int | None = None, *, final: bool = False
    ) -> str | None:
        """The version of `record`, whose file (open, or looked at) has `stat`: its file's, with its copy tag.

        The tag (`_copies`) noted in `record.seen` holds while the file is the same and no other name of it
        came or went; otherwise it is looked up again, and noted. A writer gives the store's folder it holds
        open (`folder`): nobody of this library changes a file meanwhile. A reader gives none, and gets None
        when the file lost its name before its tag was looked up (a tag goes with its file): then it reads
        again, and takes the version as it is at its `final` attempt.

        Raises:
            StorageBackendError: The file of its tag is a link, a folder or another special file.
        """
        version = version_of(stat)
        seen = record.seen
        if seen is not None and seen[0] == version and seen[1] == stat.st_ctime_ns:
            return tagged(version, seen[2])
        try:
            tag = self.copy_tag(record.name, version, folder)
        except TagNotAFile as exc:
            raise self.refusal(exc.name, exc.what, key=key) from None
        if tag is None and folder is None and not final and self.replaced(record.name, stat):
            return None
        record.seen = (version, stat.st_ctime_ns, tag)
        return tagged(version, tag)

    def copy_tag(self, name: str, version: str, folder: int | None) -> str | None:
        """The copy tag of the record file `name` at `version` (`_copies.read_tag`); `folder`: the open store folder."""
        if folder is not None:
            return read_tag(name, version, folder)
        dir_fd = self.open()
        try:
            return read_tag(name, version, dir_fd)
        finally:
            os.close(dir_fd)

    def replaced(self, name: str, stat: os.stat_result) -> bool:
        """Whether the file `name` of the store is no longer the file of `stat` (replaced or removed since)."""
        dir_fd = self.open()
        try:
            current = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return True
        finally:
            os.close(dir_fd)
        return not os.path.samestat(current, stat)

    def replaced_while_copied(self, key: str, name: str) -> StorageBackendError:
        """The error for a record file that another program replaced while the store copied it (under its lock)."""
        return StorageBackendError(
            f"record {key!r} of key-value store {self.label!r}: its file {self.path / name} was replaced by another "
            "program while it was being copied; copy it again",
            store=self.label,
            key=key,
        )

    def what_is(self, name: str) -> str | None:
        """What the file `name` of the store is when not a regular file; "" when it does not exist."""
        dir_fd = self.open()
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return ""
        finally:
            os.close(dir_fd)
        return not_a_file(mode)

    def remember_long_key(self, key: str, folder: int, *, flat: bool = False) -> None:
        """Keep the full text of a key whose file name is its hashed form: in `.keys/<hash>`, or `flat`.

        A Crawlee store keeps it in the file `.~key.<hash>` of its own folder instead: Crawlee purges a store by
        removing each of its files, and fails on a folder.
        """
        hashed = key_hash(key)
        if flat:
            name = LONG_KEY_PREFIX + hashed
            what = what_is(name, folder)
            if what is not None:
                raise self.refusal(name, what, key=key)
            try:
                os.stat(name, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                durable_write(folder, name, key.encode("utf-8"))
            return
        what = what_is(KEYS_DIR, folder, folder=True)
        if what is not None:
            raise self.refusal(KEYS_DIR, what, key=key, folder=True)
        keys = open_keys_folder(folder)
        if keys is None:
            with contextlib.suppress(FileExistsError):
                os.mkdir(KEYS_DIR, dir_fd=folder)
            os.fsync(folder)
            keys = open_keys_folder(folder)
            if keys is None:  # made and removed again at once: only by hand
                raise FileNotFoundError(errno.ENOENT, "the long-keys folder vanished", str(self.path / KEYS_DIR))
        try:
            what = what_is(hashed, keys)
            if what is not None:
                raise self.refusal(f"{KEYS_DIR}/{hashed}", what, key=key)
            try:
                os.stat(hashed, dir_fd=keys, follow_symlinks=False)
            except FileNotFoundError:
                durable_write(keys, hashed, key.encode("utf-8"))
        finally:
            os.close(keys)

    @staticmethod
    def remove_temp_files(folder: int) -> None:
        """Remove temp files of writes that a crash cut short; only a holder of the writers' lock may."""
        for name in os.listdir(folder):
            if name.startswith(TEMP_PREFIX):
                remove_if_present(name, folder)
        keys = open_keys_folder(folder)  # never a link: never sweep a folder outside the store
        if keys is not None:
            try:
                for name in os.listdir(keys):
                    if name.startswith(TEMP_PREFIX):
                        remove_if_present(name, keys)
            finally:
                os.close(keys)


def open_keys_folder(folder: int) -> int | None:
    """Open the store's `.keys` folder without following a link; None when there is none or it is not one."""
    try:
        return os.open(KEYS_DIR, FOLDER_FLAGS, dir_fd=folder)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise


class LongKeys:
    """The `.keys` folder of a store during one scan: opened once, without following a link."""

    def __init__(self, dir_fd: int) -> None:
        self._dir_fd = dir_fd
        self._fd: int | None = None
        self._refused: tuple[str, str] | None = None
        self._opened = False

    def _open(self) -> None:
        self._opened = True
        try:
            self._fd = os.open(KEYS_DIR, FOLDER_FLAGS, dir_fd=self._dir_fd)
        except FileNotFoundError:
            return
        except OSError:
            what = what_is(KEYS_DIR, self._dir_fd, folder=True)
            if what is None:
                raise
            self._refused = (KEYS_DIR, what)

    def read(self, hashed: str) -> str | tuple[str, str] | None:
        """The long key whose hash is `hashed`; None when unknown; `(path, what)` when its file is refused.

        It is in `.keys/<hash>`, or (in a Crawlee store) in `.~key.<hash>` of the store's folder.
        """
        flat = read_if_regular(LONG_KEY_PREFIX + hashed, self._dir_fd)
        if flat is not None:
            return _long_key(flat, LONG_KEY_PREFIX + hashed)
        if not self._opened:
            self._open()
        if self._refused is not None:
            return self._refused
        if self._fd is None:
            return None
        found = read_if_regular(hashed, self._fd)
        return None if found is None else _long_key(found, f"{KEYS_DIR}/{hashed}")

    def close(self) -> None:
        """Close the `.keys` folder if it was opened."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _long_key(found: bytes | str, path: str) -> str | tuple[str, str] | None:
    """The key a long-key file holds; `(path, what)` when it is not a regular file; None when not UTF-8."""
    if isinstance(found, str):
        return (path, found)
    try:
        return found.decode("utf-8")
    except UnicodeDecodeError:
        return None
