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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
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
    LONG_KEY_PREFIX,
    METADATA_FILE,
    NEW_PREFIX,
    PENDING_PREFIX,
    TEMP_PREFIX,
    crawlee_record_name,
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
    from collections.abc import Callable, Iterator, Mapping
    from typing import Literal

__all__ = [
    "LockWait",
    "LockWaitCancelledError",
    "StoreDir",
    "crawlee_metadata_json",
    "create_exclusive",
    "durable_write",
    "fsync_dir",
    "is_crawlee_metadata",
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
    temp, stat = _write_temp(folder, data, after_mtime_ns=after_mtime_ns)
    _rename_temp(folder, temp, name)
    os.fsync(folder)
    return stat


def _write_temp(folder: int, data: bytes | memoryview, *, after_mtime_ns: int | None) -> tuple[str, os.stat_result]:
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
        _unlink(temp, folder)
        raise
    return temp, stat


def _rename_temp(folder: int, temp: str, name: str) -> None:
    """Rename a temporary file over `name` (the caller fsyncs the folder); remove it when that fails."""
    try:
        os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        _unlink(temp, folder)
        raise


def is_crawlee_metadata(data: Mapping[str, object]) -> bool:
    """Whether a store's `__metadata__.json` is in Crawlee's spelling: Crawlee for Python made the store or opened it.

    Crawlee writes `created_at` (and rewrites the file, in its spelling, whenever it opens or changes the
    store); this library writes `createdAt`.
    """
    return "created_at" in data and "createdAt" not in data


def crawlee_metadata_json(data: Mapping[str, object], now: datetime) -> bytes:
    """The `__metadata__.json` of a Crawlee store as Crawlee writes it: `data`, accessed and modified `now`."""
    fields: dict[str, object] = {"id": data.get("id"), "name": data.get("name")}
    fields.update(data)
    fields["accessed_at"] = now
    fields["modified_at"] = now
    fields.setdefault("created_at", now)
    ordered = {k: fields[k] for k in ("id", "name", "accessed_at", "created_at", "modified_at")} | fields
    return json.dumps(ordered, ensure_ascii=False, indent=2, default=str).encode()


def _crawlee_sidecar_json(key: str, content_type: str, size: int) -> bytes:
    """The sidecar of a Crawlee record, as Crawlee writes it."""
    return json.dumps({"key": key, "content_type": content_type, "size": size}, ensure_ascii=False, indent=2).encode()


def _pending_name(record: str) -> str:
    """The file that announces a change of content type of the Crawlee record in file `record`."""
    return PENDING_PREFIX + key_hash(record)


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
        # Crawlee sidecars whose record file is gone (a delete or a first write cut short), seen by the last scan.
        self._orphan_sidecars: list[str] = []
        # Whether the last scan saw `.~pending.` files, and whether a writer of this process looked for them yet.
        self._pending_seen = False
        self._tidied = False
        # The signature of `__metadata__.json` when last read, and what it held if in Crawlee's spelling.
        self._metadata_seen: tuple[tuple[int, int, int], dict[str, Any] | None] | None = None

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
                    if (
                        name in claimed
                        or name == METADATA_FILE
                        or name.endswith(CRAWLEE_SIDECAR_SUFFIX)
                        or name.startswith(".~")
                    ):
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
        """Add the records Crawlee's layout holds (a file and its sidecar) to `index`; return their file names.

        A change of content type under way (a `.~pending.` file naming the record file as it now is) gives the
        record its new key and type before its sidecar is rewritten. Sidecars without a record file are noted
        in `_orphan_sidecars`, for a writer to remove.
        """
        claimed: set[str] = set()
        pending = self._scan_pending(names, dir_fd)
        orphans: list[str] = []
        records = {name[: -len(CRAWLEE_SIDECAR_SUFFIX)] for name in names if name.endswith(CRAWLEE_SIDECAR_SUFFIX)}
        for record_name in sorted(records | pending.keys()):
            name = f"{record_name}{CRAWLEE_SIDECAR_SUFFIX}"
            if name == METADATA_FILE:
                continue
            record = names.get(record_name)
            if record is None:
                if name in names and record_name not in pending:
                    orphans.append(name)
                continue
            parsed: tuple[str, str] | str | None = pending.get(record_name)
            if parsed is None:
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
        self._orphan_sidecars = orphans
        return claimed

    def _scan_pending(self, names: dict[str, os.DirEntry[str]], dir_fd: int) -> dict[str, tuple[str, str]]:
        """The changes of content type under way: record file -> (key, new content type).

        One counts only while the record file is the very file it announces (same version): before that file
        was renamed into place the record is still the old one, and a stale announcement never matches again.
        """
        found: dict[str, tuple[str, str]] = {}
        for name in names:
            if not name.startswith(PENDING_PREFIX):
                continue
            self._pending_seen = True
            pending = _read_pending(name, dir_fd)
            if pending is None:
                continue
            record, version, key, content_type = pending
            try:
                st = os.stat(record, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                continue
            if not_a_file(st.st_mode) is None and version_of(st) == version:
                found[record] = (key, content_type)
        return found

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
            if stat.st_size > max_size or _stale(entry, stat):
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
            if _stale(entry, stat) and attempt < 2:  # noqa: PLR2004
                # A Crawlee record file rewritten since the index saw it: its sidecar may name another type.
                os.close(fd)
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
        """Write the record of `key` durably and return its version.

        In a store Crawlee for Python made (`is_crawlee_metadata`), the record is written in Crawlee's layout
        (`_write_crawlee`) when Crawlee can name its file, and the store's `__metadata__.json` is updated as
        Crawlee does; elsewhere, and for a key Crawlee cannot name, in this library's layout.
        """
        with self.write_lock(wait) as folder:
            index = self._fresh_index()
            crawlee = self._crawlee_metadata(folder)
            self._tidy(folder)
            old = index.get(key)
            old_stat = self._check(key, old, if_version, if_absent=if_absent, folder=folder)
            after = old_stat.st_mtime_ns if old_stat is not None else None
            record = self._crawlee_name(key, index) if crawlee is not None else None
            if record is not None:
                stat = self._write_crawlee(
                    key,
                    record,
                    value=value,
                    content_type=content_type,
                    index=index,
                    folder=folder,
                    after_mtime_ns=after,
                )
            else:
                stat = self._write_own(
                    key, value, content_type, index, folder, crawlee=crawlee is not None, after_mtime_ns=after
                )
            self._bump_generation()
            if crawlee is not None:
                self._touch_crawlee_metadata(crawlee, folder)
        return version_of(stat)

    def _write_own(
        self,
        key: str,
        value: bytes,
        content_type: str,
        index: dict[str, _Entry],
        folder: int,
        *,
        crawlee: bool,
        after_mtime_ns: int | None,
    ) -> os.stat_result:
        """Write the record of `key` in this library's layout (`<key>.<extension>`); remove its older file."""
        old = index.get(key)
        name, hashed = self._own_name(key, content_type, folder, crawlee=crawlee)
        if not crawlee and self._crawlee_holds(name, folder):
            self._move_crawlee_record(name, index, but=key, folder=folder)
        if hashed:
            self._remember_long_key(key, folder, flat=crawlee)
        stat = durable_write(folder, name, value, after_mtime_ns=after_mtime_ns)
        if old is not None and old.name != name:
            self._remove_files(old, folder)
            os.fsync(folder)
        index[key] = _Entry(name, content_type, stat.st_size, stat.st_mtime_ns)
        return stat

    def _own_name(self, key: str, content_type: str, folder: int, *, crawlee: bool) -> tuple[str, bool]:
        """The file of `key` in this library's layout, and whether it is the hashed form.

        In a Crawlee store a Crawlee record is never moved away: a key whose file name a Crawlee record holds
        takes the hashed form instead (which no Crawlee record holds but by a collision of SHA-256).
        """
        extension = extension_for(content_type)
        stem, hashed = encode_key(key, case_insensitive=self.case_insensitive, extension=extension)
        name = f"{stem}.{extension}"
        if crawlee and self._crawlee_holds(name, folder):
            stem, hashed = encode_key(key, case_insensitive=self.case_insensitive, extension=extension, hashed=True)
            name = f"{stem}.{extension}"
            if self._crawlee_holds(name, folder):
                raise StorageBackendError(
                    f"record {key!r} of key-value store {self.label!r}: both its file names in {self.path} hold "
                    "records of Crawlee for Python; rename or move one of them",
                    store=self.label,
                    key=key,
                )
        return name, hashed

    def _crawlee_name(self, key: str, index: dict[str, _Entry]) -> str | None:
        """The file of `key` in Crawlee's layout, or None when Crawlee cannot keep the key (`crawlee_record_name`).

        On a file system that ignores case, a key whose Crawlee file would be another key's file but for case
        is kept in this library's layout too (which encodes upper-case letters).
        """
        name = crawlee_record_name(key)
        if name is not None and self.case_insensitive:
            folded = name.casefold()
            if any(other != key and entry.name.casefold() == folded for other, entry in index.items()):
                return None
        return name

    def _write_crawlee(
        self,
        key: str,
        record: str,
        *,
        value: bytes,
        content_type: str,
        index: dict[str, _Entry],
        folder: int,
        after_mtime_ns: int | None,
    ) -> os.stat_result:
        """Write the record of `key` as Crawlee does: the file `record` and its sidecar `<record>.__metadata__.json`.

        Each file is replaced all or nothing and durably, in an order that a crash at any instant leaves a
        record this library reads as the old one or the new one:

        - a new record (or one moved from this library's layout): the sidecar first, then the record file (a
          sidecar without its file is no record, for Crawlee either; the next writer removes it), then the
          older file of the key;
        - the same content type: the record file, then the sidecar when the size changed (in between, Crawlee
          too reads the new bytes; only the size its listing shows is the old one);
        - another content type: a `.~pending.` file announcing the new type for the record file about to be
          renamed into place, the rename, the sidecar, and the announcement removed. A crash in between
          leaves an announcement that this library follows (and the next writer completes), while Crawlee
          reads the new bytes with the old content type until then.
        """
        old = index.get(key)
        sidecar = f"{record}{CRAWLEE_SIDECAR_SUFFIX}"
        for name in (record, sidecar):
            what = what_is(name, folder)
            if what is not None:
                raise refusal(self.path / name, what, store=self.label, key=key)
        self._free_crawlee_name(record, index, but=key, folder=folder)
        sidecar_json = _crawlee_sidecar_json(key, content_type, len(value))
        paired = old is not None and old.name == record and old.crawlee_sidecar is not None
        if paired and old is not None and old.content_type == content_type:
            stat = durable_write(folder, record, value, after_mtime_ns=after_mtime_ns)
            if old.size != len(value):
                durable_write(folder, sidecar, sidecar_json)
        elif paired:
            stat = self._change_crawlee_type(key, record, value, content_type, folder, after_mtime_ns=after_mtime_ns)
        else:
            self._clear_crawlee_file(key, record, index, folder)
            durable_write(folder, sidecar, sidecar_json)
            stat = durable_write(folder, record, value, after_mtime_ns=after_mtime_ns)
            if old is not None and old.name != record:
                self._remove_files(old, folder)
                os.fsync(folder)
        index[key] = _Entry(record, content_type, stat.st_size, stat.st_mtime_ns, sidecar)
        return stat

    @staticmethod
    def _change_crawlee_type(
        key: str, record: str, value: bytes, content_type: str, folder: int, *, after_mtime_ns: int | None
    ) -> os.stat_result:
        """Replace a Crawlee record by one of another content type: announced, renamed, sidecar, announcement gone."""
        temp, stat = _write_temp(folder, value, after_mtime_ns=after_mtime_ns)
        pending = _pending_name(record)
        try:
            announcement = {
                "record": record,
                "version": version_of(stat),
                "key": key,
                "content_type": content_type,
                "size": len(value),
            }
            durable_write(folder, pending, json.dumps(announcement, ensure_ascii=False).encode())
        except BaseException:
            _unlink(temp, folder)
            raise
        _rename_temp(folder, temp, record)
        os.fsync(folder)
        durable_write(folder, f"{record}{CRAWLEE_SIDECAR_SUFFIX}", _crawlee_sidecar_json(key, content_type, len(value)))
        _unlink(pending, folder)
        return stat

    def _clear_crawlee_file(self, key: str, record: str, index: dict[str, _Entry], folder: int) -> None:
        """Remove a file without a sidecar (Crawlee's write cut short) from where a new Crawlee record goes."""
        try:
            os.stat(record, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return
        other = next((k for k, e in index.items() if e.name == record and k != key), None)
        if other is not None:
            # Only a sidecar edited by hand names another key than the one its file name spells.
            raise StorageBackendError(
                f"record {key!r} of key-value store {self.label!r}: its file {self.path / record} holds the "
                f"record {other!r}, as the sidecar beside it says; move that record away first",
                store=self.label,
                key=key,
            )
        # Gone before the sidecar makes it a record, so that it is never read as one.
        _unlink(record, folder)
        os.fsync(folder)

    def _free_crawlee_name(self, record: str, index: dict[str, _Entry], *, but: str, folder: int) -> None:
        """Move the record of another key that this library's layout keeps in file `record` out of its way.

        It goes to its own Crawlee file (Crawlee names are one per key: that one is never wanted by another
        key), or to the hashed form of its name when Crawlee cannot keep it.
        """
        try:
            os.stat(record, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return
        moved = next((k for k, e in index.items() if e.name == record and e.crawlee_sidecar is None), None)
        if moved is None or moved == but:
            return
        entry = index[moved]
        if entry.refused is not None:
            raise self._refusal(moved, entry)
        data = self._read_file(record, moved)
        target = self._crawlee_name(moved, index)
        if target is not None:
            self._write_crawlee(
                moved,
                target,
                value=data,
                content_type=entry.content_type,
                index=index,
                folder=folder,
                after_mtime_ns=entry.mtime_ns,
            )
            return
        extension = extension_for(entry.content_type)
        stem, _ = encode_key(moved, case_insensitive=self.case_insensitive, extension=extension, hashed=True)
        name = f"{stem}.{extension}"
        if self._crawlee_holds(name, folder):
            raise StorageBackendError(
                f"record {moved!r} of key-value store {self.label!r}: both its file names in {self.path} hold "
                "records of Crawlee for Python; rename or move one of them",
                store=self.label,
                key=moved,
            )
        self._remember_long_key(moved, folder, flat=True)
        stat = durable_write(folder, name, data, after_mtime_ns=entry.mtime_ns)
        self._remove_files(entry, folder)
        os.fsync(folder)
        index[moved] = _Entry(name, entry.content_type, stat.st_size, stat.st_mtime_ns)

    def _crawlee_metadata(self, folder: int) -> dict[str, Any] | None:
        """The store's `__metadata__.json` when it is in Crawlee's spelling (the store is Crawlee's), else None.

        Read again only when the file changed since it was last read (its inode, time or size): one `stat`
        per write in the usual case.

        Raises:
            StorageBackendError: The file is a link or a special file.
        """
        try:
            st = os.stat(METADATA_FILE, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return None
        what = not_a_file(st.st_mode)
        if what is not None:
            raise refusal(self.path / METADATA_FILE, what, store=self.label)
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._metadata_seen is not None and self._metadata_seen[0] == signature:
            return self._metadata_seen[1]
        found = read_if_regular(METADATA_FILE, folder)
        if isinstance(found, str):
            raise refusal(self.path / METADATA_FILE, found, store=self.label)
        data: Any = None
        if found is not None:
            try:
                data = json.loads(found)
            except ValueError:
                data = None
        crawlee = data if isinstance(data, dict) and is_crawlee_metadata(data) else None
        # Stat before read: a file replaced in between is read again next time, never trusted stale.
        self._metadata_seen = (signature, crawlee)
        return crawlee

    def _touch_crawlee_metadata(self, data: dict[str, Any], folder: int) -> None:
        """Record the change in the Crawlee store's `__metadata__.json`, as Crawlee does, all or nothing."""
        body = crawlee_metadata_json(data, datetime.now(UTC))
        st = durable_write(folder, METADATA_FILE, body)
        self._metadata_seen = ((st.st_ino, st.st_mtime_ns, st.st_size), json.loads(body))
        self._scanned_mtime_ns = self._folder_mtime_ns()

    def _tidy(self, folder: int) -> None:
        """Finish or undo the changes of content type a crash cut short, and remove sidecars without a record.

        Only a holder of the writers' lock may: no write of this library is under way meanwhile.
        """
        changed = self._finish_pending(folder) if self._pending_seen or not self._tidied else False
        for sidecar in self._orphan_sidecars:
            try:
                os.stat(sidecar[: -len(CRAWLEE_SIDECAR_SUFFIX)], dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                if what_is(sidecar, folder) is None:
                    _unlink(sidecar, folder)
                    changed = True
        self._orphan_sidecars = []
        self._pending_seen = False
        self._tidied = True
        if changed:
            os.fsync(folder)

    @staticmethod
    def _finish_pending(folder: int) -> bool:
        """Complete each announced change of content type whose record file is in place, drop the others.

        Returns whether a file was changed.
        """
        changed = False
        for name in os.listdir(folder):
            if not name.startswith(PENDING_PREFIX):
                continue
            pending = _read_pending(name, folder)
            if pending is not None:
                record, version, key, content_type = pending
                try:
                    st = os.stat(record, dir_fd=folder, follow_symlinks=False)
                except FileNotFoundError:
                    st = None
                sidecar = f"{record}{CRAWLEE_SIDECAR_SUFFIX}"
                if (
                    st is not None
                    and not_a_file(st.st_mode) is None
                    and version_of(st) == version
                    and what_is(sidecar, folder) is None
                ):
                    durable_write(folder, sidecar, _crawlee_sidecar_json(key, content_type, st.st_size))
            _unlink(name, folder)
            changed = True
        return changed

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

    def _remember_long_key(self, key: str, folder: int, *, flat: bool = False) -> None:
        """Keep the full text of a key whose file name is its hashed form: in `.keys/<hash>`, or `flat`.

        A Crawlee store keeps it in the file `.~key.<hash>` of its own folder instead: Crawlee purges a store by
        removing each of its files, and fails on a folder.
        """
        hashed = key_hash(key)
        if flat:
            name = LONG_KEY_PREFIX + hashed
            what = what_is(name, folder)
            if what is not None:
                raise refusal(self.path / name, what, store=self.label, key=key)
            try:
                os.stat(name, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                durable_write(folder, name, key.encode("utf-8"))
            return
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
        """Delete the record of `key`; return whether there was one.

        A Crawlee record loses its file first, then its sidecar, as Crawlee deletes: a crash in between leaves a
        sidecar without a record, which nobody reads as a record and the next writer removes.
        """
        with self.write_lock(wait) as folder:
            index = self._fresh_index()
            crawlee = self._crawlee_metadata(folder)
            self._tidy(folder)
            entry = index.get(key)
            self._check(key, entry, if_version, if_absent=False, folder=folder)
            if entry is None:
                return False
            self._remove_files(entry, folder)
            os.fsync(folder)
            del index[key]
            self._bump_generation()
            if crawlee is not None:
                self._touch_crawlee_metadata(crawlee, folder)
        return True

    def purge(self, wait: LockWait) -> None:
        """Delete every record, keeping the store's metadata."""
        with self.write_lock(wait) as folder:
            crawlee = self._crawlee_metadata(folder)
            self._tidy(folder)
            for entry in self._fresh_index().values():
                self._remove_files(entry, folder)
            for name in os.listdir(folder):
                if name.startswith((LONG_KEY_PREFIX, PENDING_PREFIX)):
                    _unlink(name, folder)
            shutil.rmtree(KEYS_DIR, ignore_errors=True, dir_fd=folder)  # a link in its place is not followed
            os.fsync(folder)
            self._bump_generation()
            self._scan()
            if crawlee is not None:
                self._touch_crawlee_metadata(crawlee, folder)

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


def _stale(entry: _Entry, stat: os.stat_result) -> bool:
    """Whether the file of a Crawlee record changed since the index saw it.

    A record of this library's layout keeps its content type in its file name; a Crawlee record keeps it in
    its sidecar, which a rewrite of another type (by Crawlee, or another process) changes after the file.
    """
    return entry.crawlee_sidecar is not None and (stat.st_mtime_ns, stat.st_size) != (entry.mtime_ns, entry.size)


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


def _read_pending(name: str, dir_fd: int) -> tuple[str, str, str, str] | None:
    """The record file, its version, key and content type a `.~pending.` file announces; None if unusable."""
    found = read_if_regular(name, dir_fd)
    if not isinstance(found, bytes):
        return None
    try:
        data = json.loads(found)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    fields = (data.get("record"), data.get("version"), data.get("key"), data.get("content_type"))
    if not all(isinstance(f, str) and f for f in fields):
        return None
    record, version, key, content_type = (str(f) for f in fields)
    if record != os.path.basename(record) or record in {".", ".."} or name != _pending_name(record):
        return None
    return record, version, key, content_type
