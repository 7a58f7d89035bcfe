"""Blocking operations on one store folder: the record index, durable writes and the writers' lock.

Everything here runs in a worker thread; `FileSystemKeyValueStoreClient` calls it off the event loop.

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
import fcntl
import json
import os
import secrets
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from recoverable.errors import (
    StorageBackendError,
    StorageError,
    StoreLockedError,
    StoreNotFoundError,
    VersionConflictError,
)
from recoverable.storages._file_system._layout import (
    CRAWLEE_SIDECAR_SUFFIX,
    KEYS_DIR,
    LOCK_FILE,
    METADATA_FILE,
    NEW_PREFIX,
    TEMP_PREFIX,
    decode_stem,
    encode_key,
    extension_for,
    key_hash,
    split_record_name,
)
from recoverable.storages._file_system._no_follow import (
    FOLDER_FLAGS,
    LINK,
    not_a_file,
    open_folder,
    open_regular_file,
    read_all,
    read_if_regular,
    refusal,
    what_is,
)
from recoverable.storages._lock_holders import describe_holder, lock_holders
from recoverable.storages._models import KeyInfo, StoredRecord

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Literal

__all__ = [
    "LockWait",
    "LockWaitCancelledError",
    "StoreDir",
    "create_exclusive",
    "durable_write",
    "fsync_dir",
    "store_dir_for",
]

_HOLDER_OFFSET = 8
"""Where in `.lock` its holder writes its process id (the first 8 bytes hold the generation)."""
_LOCK_POLL_MIN_SECS = 0.0005
_LOCK_POLL_MAX_SECS = 0.02

_registry_lock = threading.Lock()
_registry: dict[str, StoreDir] = {}


def store_dir_for(path: Path, *, label: str, case_insensitive: bool) -> StoreDir:
    """Return the one `StoreDir` of this process for the folder `path`.

    The folders above it are resolved; the store's own folder is not (it must not be a link).
    """
    resolved = str(path.parent.resolve() / path.name)
    with _registry_lock:
        store = _registry.get(resolved)
        if store is None or store.dropped:
            store = StoreDir(Path(resolved), label=label, case_insensitive=case_insensitive)
            _registry[resolved] = store
        return store


def _after_fork_in_child() -> None:
    """Let go of the writers' locks of the parent in a forked child (a `multiprocessing` worker, say).

    A flock belongs to the open file, which the child shares: were it kept open, the lock would outlive
    the parent, and a parent that died (or was ended for freezing) holding it would block every writer
    for as long as the child lives. Closing the child's copy never unlocks the parent's.
    """
    global _registry_lock  # noqa: PLW0603 - a thread of the parent may have held it
    _registry_lock = threading.Lock()
    for store in _registry.values():
        fd, store._lock_fd = store._lock_fd, None  # noqa: SLF001 - this module's own class
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        store._lock = threading.RLock()  # noqa: SLF001 - a thread of the parent may have held them
        store._writers = threading.Lock()  # noqa: SLF001


os.register_at_fork(after_in_child=_after_fork_in_child)


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
        os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        _unlink(temp, folder)
        raise
    os.fsync(folder)
    return stat


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


def version_of(stat: os.stat_result) -> str:
    """The version of a record file: its modification time, inode and size, like an HTTP server's ETag."""
    return f"{stat.st_mtime_ns:x}-{stat.st_ino:x}-{stat.st_size:x}"


class LockWaitCancelledError(Exception):
    """The operation waiting for the writers' lock was cancelled; nothing was written."""


@dataclass(frozen=True, slots=True)
class LockWait:
    """How long an operation waits for the writers' lock, and the event that ends the wait early."""

    timeout: float
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(slots=True)
class _Entry:
    """Where a key's record lives, as the last scan or write of this process saw it."""

    name: str
    content_type: str
    size: int
    mtime_ns: int
    crawlee_sidecar: str | None = None
    refused: tuple[str, str] | None = None
    """When the record cannot be used: the path (in the store) of what is wrong, and what it is (a link...)."""


class StoreDir:
    """One store folder of this process: its index of keys to files, and the locks its writers take.

    The index is rebuilt from a scan of the folder when a key is not found where the index says and
    the folder changed since the last scan. A change is seen two ways: every writer of this library
    bumps a generation counter kept in the first 8 bytes of `.lock` (exact, whatever the clock's
    granularity), and the folder's modification time catches files added by other programs.

    A key whose file is a link, a folder or another special file stays in the index, marked refused: reading,
    writing or deleting it raises an error naming that file.
    """

    def __init__(self, path: Path, *, label: str, case_insensitive: bool) -> None:
        self.path = path
        self.label = label
        self.case_insensitive = case_insensitive
        self.dropped = False
        self._lock = threading.RLock()
        self._writers = threading.Lock()
        self._index: dict[str, _Entry] | None = None
        # Records of long keys whose `.keys/<hash>` file cannot be read safely, by hash: the key is unknown.
        self._refused_long_keys: dict[str, _Entry] = {}
        self._scanned_mtime_ns = -1
        self._seen_generation = -1
        self._lock_fd: int | None = None
        self._swept = False

    # --- errors -----------------------------------------------------------------------------------

    def backend_error(self, action: str, exc: OSError, key: str | None = None) -> StorageError:
        """Wrap an OSError with the store, the key and what to check.

        A store whose folder is gone (dropped by another process, or removed by hand) is reported as
        `StoreNotFoundError`.
        """
        if isinstance(exc, FileNotFoundError) and not self.path.is_dir():
            return StoreNotFoundError(
                f"key-value store {self.label!r} no longer exists in {self.path} (it was dropped or removed)",
                store=self.label,
                key=key,
            )
        what = f"record {key!r} of " if key is not None else ""
        hint = "free some disk space" if exc.errno == errno.ENOSPC else "check that the folder exists and is writable"
        return StorageBackendError(
            f"could not {action} {what}key-value store {self.label!r} in {self.path}: {exc.strerror or exc} ({hint})",
            store=self.label,
            key=key,
        )

    def _refusal(self, key: str | None, entry: _Entry) -> StorageBackendError:
        assert entry.refused is not None  # noqa: S101 - only called for refused entries
        relative, what = entry.refused
        return refusal(self.path / relative, what, store=self.label, key=key, folder=relative == KEYS_DIR)

    def _open_folder(self) -> int:
        return open_folder(self.path, store=self.label)

    def _open_record(self, name: str, key: str | None) -> tuple[int, os.stat_result]:
        """Open the regular file `name` of the store; raise a refusal for anything else, FileNotFoundError if none."""
        dir_fd = self._open_folder()
        try:
            return open_regular_file(name, dir_fd, folder=self.path, store=self.label, key=key)
        finally:
            os.close(dir_fd)

    def _open_lock_file(self) -> int:
        """Open `.lock`, creating it, without following a link; refuse anything but a regular file."""
        path = self.path / LOCK_FILE
        dir_fd = self._open_folder()
        try:
            fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
        except OSError as exc:
            what = LINK if exc.errno == errno.ELOOP else what_is(LOCK_FILE, dir_fd)
            if what is None:
                raise
            raise refusal(path, what, store=self.label) from exc
        finally:
            os.close(dir_fd)
        what = not_a_file(os.fstat(fd).st_mode)
        if what is not None:
            os.close(fd)
            raise refusal(path, what, store=self.label)
        return fd

    # --- locking ----------------------------------------------------------------------------------

    def _lock_file(self) -> int:
        if self._lock_fd is None:
            self._lock_fd = self._open_lock_file()
        return self._lock_fd

    def _reopen_lock_file_if_replaced(self) -> None:
        """Reopen `.lock` when the folder was dropped and made anew by another process since we opened it.

        Locking the old, deleted file would not exclude the writers of the new one.
        """
        if self._lock_fd is None:
            return
        try:
            current = os.stat(self.path / LOCK_FILE).st_ino
        except FileNotFoundError:
            current = -1
        if current != os.fstat(self._lock_fd).st_ino:
            os.close(self._lock_fd)
            self._lock_fd = None
            self._swept = False

    @contextmanager
    def write_lock(self, wait: LockWait) -> Iterator[int]:
        """Hold the lock of writers: threads of this process, then processes (flock on `.lock`).

        Waiting for it is bounded by `wait.timeout` (then `StoreLockedError` names the holder) and ends
        early when `wait.cancel` is set: a process frozen while holding the lock never blocks another one
        for ever, nor keeps it from exiting.

        Yields the store's folder, opened without following a link: writers change files relative to it
        only, so that a link swapped in for the folder while they write is never followed.
        """
        deadline = time.monotonic() + wait.timeout
        # The writers of this process take turns first (a flock is shared by all users of one descriptor);
        # the index lock is taken only once the flock is held, so that reads wait for a write, never for a
        # writer waiting for another process.
        self._wait_for(lambda: self._writers.acquire(timeout=_LOCK_POLL_MAX_SECS), deadline, wait, holder=os.getpid())
        try:
            self._reopen_lock_file_if_replaced()
            fd = self._lock_file()
            self._wait_for(lambda: _try_flock(fd), deadline, wait, holder=None)
            try:
                # Read by whoever waits too long for the lock, to name the process holding it.
                os.pwrite(fd, os.getpid().to_bytes(8, "little"), _HOLDER_OFFSET)
                folder = self._open_folder()
                try:
                    with self._lock:
                        if not self._swept:
                            self._sweep_temp_files(folder)
                        yield folder
                finally:
                    os.close(folder)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._writers.release()

    def _wait_for(self, attempt: Callable[[], bool], deadline: float, wait: LockWait, *, holder: int | None) -> None:
        """Call `attempt` until it returns True, backing off; raise at the deadline or on cancellation."""
        pause = _LOCK_POLL_MIN_SECS
        while not attempt():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._locked_error(wait, holder if holder is not None else self.lock_holder())
            if wait.cancel.wait(min(pause, remaining)):
                raise LockWaitCancelledError
            pause = min(pause * 2, _LOCK_POLL_MAX_SECS)

    def lock_holder(self) -> int | None:
        """The process holding the writers' lock of this folder, when it can be found out."""
        try:
            recorded = int.from_bytes(os.pread(self._lock_file(), 8, _HOLDER_OFFSET).ljust(8, b"\0"), "little")
        except OSError:
            return None
        holders = lock_holders([str(self.path / LOCK_FILE)], kind="FLOCK")
        if holders is None:  # no /proc/locks here: trust what the last holder wrote
            return recorded or None
        if not holders:
            return None
        return recorded if recorded in holders else min(holders)

    def _locked_error(self, wait: LockWait, holder: int | None) -> StoreLockedError:
        if holder == os.getpid():
            who, todo = "another thread of this process", "a write of this process takes that long"
        else:
            who, todo = describe_holder(holder)
        return StoreLockedError(
            f"the writers' lock {self.path / LOCK_FILE} of key-value store {self.label!r} was held by {who} for "
            f"longer than {wait.timeout:g} s; nothing was written. {todo[0].upper()}{todo[1:]}; if its writes are "
            "just slow, raise lock_timeout= of FileSystemStorageClient",
            store=self.label,
            holder_pid=holder,
        )

    def _sweep_temp_files(self, folder: int) -> None:
        """Remove temp files of writes that a crash cut short; only a holder of the writers' lock may."""
        for name in os.listdir(folder):
            if name.startswith(TEMP_PREFIX):
                _unlink(name, folder)
        keys = _open_keys_folder(folder)  # never a link: never sweep a folder outside the store
        if keys is not None:
            try:
                for name in os.listdir(keys):
                    if name.startswith(TEMP_PREFIX):
                        _unlink(name, keys)
            finally:
                os.close(keys)
        self._swept = True

    def _generation(self) -> int:
        return int.from_bytes(os.pread(self._lock_file(), 8, 0).ljust(8, b"\0"), "little")

    def _bump_generation(self) -> None:
        """Tell the other processes the folder changed.

        The caller holds the writers' lock and called `_fresh_index` under it, so `_seen_generation` is the
        counter's current value: no writer of another process can have moved it since.
        """
        generation = self._seen_generation + 1
        os.pwrite(self._lock_file(), generation.to_bytes(8, "little"), 0)
        self._seen_generation = generation
        self._scanned_mtime_ns = self._folder_mtime_ns()

    def _changed(self) -> bool:
        """Whether the folder may have changed since the last scan."""
        return self._generation() != self._seen_generation or self._folder_mtime_ns() != self._scanned_mtime_ns

    # --- the index --------------------------------------------------------------------------------

    def _folder_mtime_ns(self) -> int:
        # lstat: a store folder swapped for a link counts as a change, and the next scan refuses the link.
        return os.lstat(self.path).st_mtime_ns

    def _scan(self) -> dict[str, _Entry]:
        generation = self._generation()
        mtime_ns = self._folder_mtime_ns()
        dir_fd = self._open_folder()
        try:
            with os.scandir(dir_fd) as it:
                names = {entry.name: entry for entry in it}
            index: dict[str, _Entry] = {}
            refused_long_keys: dict[str, _Entry] = {}
            claimed = self._scan_crawlee_records(names, index, dir_fd)
            long_keys = _LongKeys(dir_fd)
            try:
                for name, dir_entry in names.items():
                    if name in claimed or name == METADATA_FILE or name.endswith(CRAWLEE_SIDECAR_SUFFIX):
                        continue
                    split = split_record_name(name)
                    if split is None:
                        continue
                    stem, content_type = split
                    try:
                        st = dir_entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed since the listing
                    what = not_a_file(st.st_mode)
                    entry = _Entry(
                        name,
                        content_type,
                        0 if what else st.st_size,
                        st.st_mtime_ns,
                        refused=(name, what) if what else None,
                    )
                    key, hashed = decode_stem(stem)
                    if hashed is not None:
                        found = long_keys.read(hashed)
                        if isinstance(found, tuple):
                            entry.refused = found
                            refused_long_keys[hashed] = entry
                            continue
                        key = found
                    if key is not None:
                        self._keep_newest(index, key, entry)
            finally:
                long_keys.close()
        finally:
            os.close(dir_fd)
        self._index = index
        self._refused_long_keys = refused_long_keys
        self._scanned_mtime_ns = mtime_ns
        self._seen_generation = generation
        return index

    def _scan_crawlee_records(
        self, names: dict[str, os.DirEntry[str]], index: dict[str, _Entry], dir_fd: int
    ) -> set[str]:
        """Add the records Crawlee wrote (a file and its sidecar) to `index`; return their file names."""
        claimed: set[str] = set()
        for name in names:
            if not name.endswith(CRAWLEE_SIDECAR_SUFFIX) or name == METADATA_FILE:
                continue
            record_name = name[: -len(CRAWLEE_SIDECAR_SUFFIX)]
            record = names.get(record_name)
            if record is None:
                continue
            parsed = _read_crawlee_sidecar(name, dir_fd)
            if parsed is None:
                continue
            try:
                st = record.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            refused: tuple[str, str] | None
            if isinstance(parsed, str):
                # A sidecar that is a link or a special file: its key is unknown, but Crawlee names a record's
                # file after its percent-encoded key, so that key is the one refused.
                key, content_type, refused = unquote(record_name), "application/octet-stream", (name, parsed)
            else:
                key, content_type = parsed
                what = not_a_file(st.st_mode)
                refused = (record_name, what) if what else None
            claimed.add(record_name)
            size = 0 if refused else st.st_size
            self._keep_newest(index, key, _Entry(record_name, content_type, size, st.st_mtime_ns, name, refused))
        return claimed

    @staticmethod
    def _keep_newest(index: dict[str, _Entry], key: str, entry: _Entry) -> None:
        # After a crash between writing a key's new file and removing its old one (a changed content
        # type, or a record brought from Crawlee), both exist: the newer one is the record. A refused file
        # of the key wins over any other: which file is the record cannot be told, so the key is refused.
        current = index.get(key)
        if current is None or (
            current.refused is None
            and (
                entry.refused is not None
                or (entry.mtime_ns, entry.crawlee_sidecar is None) > (current.mtime_ns, current.crawlee_sidecar is None)
            )
        ):
            index[key] = entry

    def _fresh_index(self) -> dict[str, _Entry]:
        """The index, rescanned when the folder changed since the last scan."""
        if self._index is None or self._changed():
            return self._scan()
        return self._index

    def _entry_in(self, index: dict[str, _Entry], key: str) -> _Entry | None:
        """The entry of `key`, also when it is a long key whose `.keys/<hash>` file was refused."""
        entry = index.get(key)
        if entry is None and self._refused_long_keys:
            entry = self._refused_long_keys.get(key_hash(key))
        return entry

    def _lookup(self, key: str) -> _Entry | None:
        index = self._index
        if index is None:
            with self._lock:
                index = self._scan()
        entry = self._entry_in(index, key)
        if entry is None and self._changed():
            with self._lock:
                entry = self._entry_in(self._scan(), key)
        return entry

    # --- reads ------------------------------------------------------------------------------------

    def read_cached(self, key: str, max_size: int) -> StoredRecord | Literal[False] | None:
        """Read a small record the index already knows, cheaply enough to do on the event loop.

        Returns False when that is not possible (index not built, key unknown while the folder changed,
        a large record, a file moved since the index saw it): then call `read` from a worker thread.

        Raises:
            StorageBackendError: The record's file is a link, a folder or another special file.
        """
        index = self._index
        if index is None:
            return False
        entry = self._entry_in(index, key)
        if entry is None:
            return False if self._changed() else None
        if entry.refused is not None:
            raise self._refusal(key, entry)
        if entry.size > max_size:
            return False
        try:
            fd, stat = self._open_record(entry.name, key)
        except FileNotFoundError:
            return False
        try:
            if stat.st_size > max_size:
                return False
            data = read_all(fd, stat.st_size)
        finally:
            os.close(fd)
        return StoredRecord(key=key, value=data, content_type=entry.content_type, version=version_of(stat))

    def read(self, key: str) -> StoredRecord | None:
        """Read the record of `key`, or None.

        Raises:
            StorageBackendError: The record's file is a link, a folder or another special file.
        """
        for attempt in range(3):
            entry = self._lookup(key)
            if entry is None:
                return None
            if entry.refused is not None:
                raise self._refusal(key, entry)
            try:
                fd, stat = self._open_record(entry.name, key)
            except FileNotFoundError:
                # Another process replaced or removed it since we looked: look again.
                if attempt < 2:  # noqa: PLR2004
                    with self._lock:
                        self._scan()
                continue
            try:
                data = read_all(fd, stat.st_size)
            finally:
                os.close(fd)
            return StoredRecord(key=key, value=data, content_type=entry.content_type, version=version_of(stat))
        return None

    def exists(self, key: str) -> bool:
        """Tell whether `key` has a record.

        Raises:
            StorageBackendError: The record's file is a link, a folder or another special file.
        """
        entry = self._lookup(key)
        if entry is None:
            return False
        if entry.refused is None:
            what = self._what_is_in_folder(entry.name)
            if what is None:
                return True
            if what:
                raise refusal(self.path / entry.name, what, store=self.label, key=key)
            with self._lock:
                entry = self._entry_in(self._scan(), key)
            if entry is None:
                return False
        if entry.refused is not None:
            raise self._refusal(key, entry)
        return True

    def _what_is_in_folder(self, name: str) -> str | None:
        """What the file `name` of the store is when not a regular file; "" when it does not exist."""
        dir_fd = self._open_folder()
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return ""
        finally:
            os.close(dir_fd)
        return not_a_file(mode)

    def _read_file(self, name: str, key: str) -> bytes:
        """Read the regular file `name` of the store whole."""
        fd, stat = self._open_record(name, key)
        try:
            return read_all(fd, stat.st_size)
        finally:
            os.close(fd)

    def keys(self) -> list[KeyInfo]:
        """All keys with their sizes, sorted. A refused record is listed, with size 0."""
        with self._lock:
            index = self._fresh_index()
            return [KeyInfo(key=k, size=index[k].size) for k in sorted(index)]

    # --- writes -----------------------------------------------------------------------------------

    def _check(
        self, key: str, entry: _Entry | None, if_version: str | None, *, if_absent: bool, folder: int
    ) -> os.stat_result | None:
        """Check the write's conditions against the current record; return the record file's stat.

        A record whose file is a link, a folder or another special file is refused: never replaced, never
        deleted.
        """
        actual: str | None = None
        stat: os.stat_result | None = None
        if entry is None and self._refused_long_keys:
            entry = self._refused_long_keys.get(key_hash(key))
        if entry is not None and entry.refused is not None:
            raise self._refusal(key, entry)
        if entry is not None:
            try:
                stat = os.stat(entry.name, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                entry = None
            else:
                what = not_a_file(stat.st_mode)
                if what is not None:
                    raise refusal(self.path / entry.name, what, store=self.label, key=key)
                sidecar = entry.crawlee_sidecar
                what = what_is(sidecar, folder) if sidecar is not None else None
                if sidecar is not None and what is not None:
                    raise refusal(self.path / sidecar, what, store=self.label, key=key)
                actual = version_of(stat)
        if if_absent and actual is not None:
            raise VersionConflictError.for_record(store=self.label, key=key, expected=None, actual=actual)
        if if_version is not None and actual != if_version:
            raise VersionConflictError.for_record(store=self.label, key=key, expected=if_version, actual=actual)
        return stat

    def write(
        self,
        key: str,
        value: bytes,
        content_type: str,
        *,
        if_version: str | None,
        if_absent: bool,
        wait: LockWait,
    ) -> str:
        """Write the record of `key` durably and return its version."""
        extension = extension_for(content_type)
        stem, hashed = encode_key(key, case_insensitive=self.case_insensitive, extension=extension)
        name = f"{stem}.{extension}"
        with self.write_lock(wait) as folder:
            index = self._fresh_index()
            old = index.get(key)
            old_stat = self._check(key, old, if_version, if_absent=if_absent, folder=folder)
            if self._crawlee_holds(name, folder):
                self._move_crawlee_record(name, index, but=key, folder=folder)
            if hashed:
                self._remember_long_key(key, folder)
            stat = durable_write(folder, name, value, after_mtime_ns=old_stat.st_mtime_ns if old_stat else None)
            if old is not None and old.name != name:
                self._remove_files(old, folder)
                os.fsync(folder)
            index[key] = _Entry(name, content_type, stat.st_size, stat.st_mtime_ns)
            self._bump_generation()
        return version_of(stat)

    @staticmethod
    def _crawlee_holds(name: str, folder: int) -> bool:
        """Tell whether file `name` is a Crawlee record (it has a sidecar)."""
        # A sidecar that is a link still marks a Crawlee record (a refused one). The sidecar of a name near
        # the length limit is too long a name: no such sidecar can exist.
        try:
            os.stat(f"{name}{CRAWLEE_SIDECAR_SUFFIX}", dir_fd=folder, follow_symlinks=False)
        except OSError:
            return False
        return True

    def _move_crawlee_record(self, name: str, index: dict[str, _Entry], *, but: str, folder: int) -> None:
        """Move the Crawlee record of another key held in file `name` to this layout, to free the name.

        Crawlee names a record file by the bare key (`page.html`), this layout adds an extension (`page`
        as HTML is `page.html` too). The record is copied durably before its pair is removed, so a crash
        leaves it readable under its key, and the key being written absent until its own write.
        """
        moved = next((k for k, e in index.items() if e.name == name and e.crawlee_sidecar is not None), None)
        if moved is None or moved == but:
            return
        entry = index[moved]
        if entry.refused is not None:
            raise self._refusal(moved, entry)
        extension = extension_for(entry.content_type)
        stem, hashed = encode_key(moved, case_insensitive=self.case_insensitive, extension=extension)
        if self._crawlee_holds(f"{stem}.{extension}", folder):
            self._move_crawlee_record(f"{stem}.{extension}", index, but=moved, folder=folder)
        if hashed:
            self._remember_long_key(moved, folder)
        stat = durable_write(folder, f"{stem}.{extension}", self._read_file(name, moved))
        self._remove_files(entry, folder)
        os.fsync(folder)
        index[moved] = _Entry(f"{stem}.{extension}", entry.content_type, stat.st_size, stat.st_mtime_ns)

    def _remember_long_key(self, key: str, folder: int) -> None:
        hashed = key_hash(key)
        what = what_is(KEYS_DIR, folder, folder=True)
        if what is not None:
            raise refusal(self.path / KEYS_DIR, what, store=self.label, key=key, folder=True)
        keys = _open_keys_folder(folder)
        if keys is None:
            with contextlib.suppress(FileExistsError):
                os.mkdir(KEYS_DIR, dir_fd=folder)
            os.fsync(folder)
            keys = _open_keys_folder(folder)
            if keys is None:  # made and removed again at once: only by hand
                raise FileNotFoundError(errno.ENOENT, "the long-keys folder vanished", str(self.path / KEYS_DIR))
        try:
            what = what_is(hashed, keys)
            if what is not None:
                raise refusal(self.path / KEYS_DIR / hashed, what, store=self.label, key=key)
            try:
                os.stat(hashed, dir_fd=keys, follow_symlinks=False)
            except FileNotFoundError:
                durable_write(keys, hashed, key.encode("utf-8"))
        finally:
            os.close(keys)

    @staticmethod
    def _remove_files(entry: _Entry, folder: int) -> None:
        _unlink(entry.name, folder)
        if entry.crawlee_sidecar is not None:
            _unlink(entry.crawlee_sidecar, folder)

    def delete(self, key: str, *, if_version: str | None, wait: LockWait) -> bool:
        """Delete the record of `key`; return whether there was one."""
        with self.write_lock(wait) as folder:
            index = self._fresh_index()
            entry = index.get(key)
            self._check(key, entry, if_version, if_absent=False, folder=folder)
            if entry is None:
                return False
            self._remove_files(entry, folder)
            os.fsync(folder)
            del index[key]
            self._bump_generation()
        return True

    def purge(self, wait: LockWait) -> None:
        """Delete every record, keeping the store's metadata."""
        with self.write_lock(wait) as folder:
            for entry in self._fresh_index().values():
                self._remove_files(entry, folder)
            shutil.rmtree(KEYS_DIR, ignore_errors=True, dir_fd=folder)  # a link in its place is not followed
            os.fsync(folder)
            self._bump_generation()
            self._scan()

    def drop(self, wait: LockWait) -> None:
        """Delete the whole store folder: first renamed away in one step, then removed."""
        with self.write_lock(wait):
            graveyard = self.path.parent / f"{TEMP_PREFIX}dropped.{secrets.token_hex(8)}"
            os.replace(self.path, graveyard)
            fsync_dir(self.path.parent)
            self.dropped = True
            self._index = {}
        with self._writers, self._lock:
            fd, self._lock_fd = self._lock_fd, None
            if fd is not None:
                os.close(fd)
        shutil.rmtree(graveyard, ignore_errors=True)


def _unlink(name: str, folder: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=folder)


def _open_keys_folder(folder: int) -> int | None:
    """Open the store's `.keys` folder without following a link; None when there is none or it is not one."""
    try:
        return os.open(KEYS_DIR, FOLDER_FLAGS, dir_fd=folder)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class _LongKeys:
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
        """The long key whose hash is `hashed`; None when unknown; `(path, what)` when its file is refused."""
        if not self._opened:
            self._open()
        if self._refused is not None:
            return self._refused
        if self._fd is None:
            return None
        found = read_if_regular(hashed, self._fd)
        if isinstance(found, str):
            return (f"{KEYS_DIR}/{hashed}", found)
        try:
            return None if found is None else found.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_crawlee_sidecar(name: str, dir_fd: int) -> tuple[str, str] | str | None:
    """The key and content type a Crawlee sidecar names; what it is when it is not a regular file; else None."""
    found = read_if_regular(name, dir_fd)
    if not isinstance(found, bytes):
        return found
    try:
        data = json.loads(found)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    key = data.get("key")
    content_type = data.get("content_type", data.get("contentType"))
    if not isinstance(key, str) or not isinstance(content_type, str):
        return None
    return key, content_type
