"""One store folder of this process: reading, writing, copying and deleting its records.

Everything here but `StoreDir.read_cached` runs in a worker thread; `FileSystemKeyValueStoreClient` calls it
off the event loop. A `StoreDir` puts together the parts of a store folder: its files, reached without
following a link (`StoreFolder`), the writers' lock (`WritersLock`), the index of keys to files
(`RecordIndex`), Crawlee's layout (`CrawleeLayout`), durable writes (`durable_write`) and copies made as hard
links (`_copies`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from recoverable.errors import VersionConflictError
from recoverable.storages._file_system._crawlee_layout import CrawleeLayout
from recoverable.storages._file_system._durable_writes import fsync_dir, remove_if_present
from recoverable.storages._file_system._errors import folder_backend
from recoverable.storages._file_system._layout import (
    COPY_PREFIX,
    KEYS_DIR,
    LONG_KEY_PREFIX,
    PENDING_PREFIX,
    TEMP_PREFIX,
)
from recoverable.storages._file_system._no_follow import not_a_file, open_regular_file, read_all, what_is
from recoverable.storages._file_system._own_layout import OwnLayout
from recoverable.storages._file_system._record_index import RecordIndex
from recoverable.storages._file_system._store_folder import (
    RecordFile,
    StoreFolder,
    is_stale,
    remove_record_files,
    version_of,
)
from recoverable.storages._file_system._writers_lock import WritersLock
from recoverable.storages._models import KeyInfo, StoredRecord

if TYPE_CHECKING:
    from collections.abc import Iterator

    from recoverable.storages._file_system._writers_lock import LockWait

__all__ = ["StoreDir", "store_dir_for"]

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
    """Let go of the writers' locks of the parent in a forked child (see `WritersLock.reset_after_fork`)."""
    global _registry_lock  # noqa: PLW0603 - a thread of the parent may have held it
    _registry_lock = threading.Lock()
    for store in _registry.values():
        store.reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class StoreDir:
    """One store folder of this process: its index of keys to files, and the locks its writers take.

    The index is rebuilt from a scan of the folder when a key is not found where the index says and the
    folder changed since the last scan (`RecordIndex`). Writers take the writers' lock of the folder, then
    the lock of the index, so that reads wait for a write, never for a writer waiting for another process.
    """

    def __init__(self, path: Path, *, label: str, case_insensitive: bool) -> None:
        self.files = StoreFolder(path, label=label, case_insensitive=case_insensitive)
        self.backend = folder_backend(path, of_store=True)
        """The failures of the file system in this folder, as the one error mapping sees them."""
        self.dropped = False
        self._lock = threading.RLock()
        self._writers_lock = WritersLock(path, label=label)
        self._crawlee = CrawleeLayout(self.files)
        self._own = OwnLayout(self.files, self._crawlee)
        self._index = RecordIndex(self.files, self._writers_lock, self._crawlee)
        self._swept_after = -1
        """The `WritersLock.replaced` count when temporary files were last swept; -1 before the first sweep."""

    @property
    def path(self) -> Path:
        """The store's folder."""
        return self.files.path

    @property
    def label(self) -> str:
        """The store's name or id, as messages say it."""
        return self.files.label

    @property
    def _lock_fd(self) -> int | None:
        """The descriptor of the store's `.lock` while it is open."""
        return self._writers_lock.fd

    def reset_after_fork(self) -> None:
        """Let go of the parent's writers' lock and thread locks in a forked child."""
        self._writers_lock.reset_after_fork()
        self._lock = threading.RLock()  # a thread of the parent may have held it

    # --- the writers' lock ------------------------------------------------------------------------

    @contextmanager
    def write_lock(self, wait: LockWait) -> Iterator[int]:
        """Hold the lock of writers (`WritersLock.hold`), then the lock of the index.

        Waiting for it is bounded by `wait.timeout` (then `StoreLockedError` names the holder) and ends
        early when `wait.cancel` is set: a process frozen while holding the lock never blocks another one
        for ever, nor keeps it from exiting.

        Yields the store's folder, opened without following a link: writers change files relative to it
        only, so that a link swapped in for the folder while they write is never followed.
        """
        # The index lock is taken only once the flock is held, so that reads wait for a write, never for a
        # writer waiting for another process.
        with self._writers_lock.hold(wait) as folder, self._lock:
            if self._swept_after != self._writers_lock.replaced:
                self.files.remove_temp_files(folder)
                self._swept_after = self._writers_lock.replaced
            yield folder

    # --- reads ------------------------------------------------------------------------------------

    def _lookup(self, key: str) -> RecordFile | None:
        records = self._index.records
        if records is None:
            with self._lock:
                records = self._index.scan()
        record = self._index.find(records, key)
        if record is None and self._may_be_stale(records):
            with self._lock:
                record = self._index.find(self._index.scan(), key)
        return record

    def _may_be_stale(self, records: dict[str, RecordFile]) -> bool:
        """Whether `records`, the index as this thread read it, may miss a record.

        It may when the folder changed since the last scan, and also when another thread rescanned since this
        one read `records`: `changed()` then speaks of that newer scan, not of `records`. `changed()` is asked
        first: a scan sets the index's records before the marks `changed()` compares, so once those show the
        scan, the identity check sees its records too.
        """
        return self._index.changed() or records is not self._index.records

    def read_cached(self, key: str, max_size: int) -> StoredRecord | Literal[False] | None:
        """Read a small record the index already knows, cheaply enough to do on the event loop.

        Returns False when that is not possible (index not built, key unknown while the folder changed,
        a large record, a file moved since the index saw it): then call `read` from a worker thread.

        Raises:
            StorageBackendError: The record's file is a link, a folder or another special file.
        """
        records = self._index.records
        if records is None:
            return False
        record = self._index.find(records, key)
        if record is None:
            return False if self._may_be_stale(records) else None
        if record.refused is not None:
            raise self.files.refusal_of(key, record)
        if record.size > max_size:
            return False
        try:
            fd, stat = self.files.open_record(record.name, key)
        except FileNotFoundError:
            return False
        try:
            version = (
                None if stat.st_size > max_size or is_stale(record, stat) else self.files.version(key, record, stat)
            )
            if version is None:
                return False
            data = read_all(fd, stat.st_size)
        finally:
            os.close(fd)
        return StoredRecord(key=key, value=data, content_type=record.content_type, version=version)

    def read(self, key: str) -> StoredRecord | None:
        """Read the record of `key`, or None.

        Raises:
            StorageBackendError: The record's file is a link, a folder or another special file.
        """
        for attempt in range(3):
            record = self._lookup(key)
            if record is None:
                return None
            if record.refused is not None:
                raise self.files.refusal_of(key, record)
            try:
                fd, stat = self.files.open_record(record.name, key)
            except FileNotFoundError:
                # Another process replaced or removed it since we looked: look again.
                if attempt < 2:  # noqa: PLR2004
                    with self._lock:
                        self._index.scan()
                continue
            try:
                version = self.files.version(key, record, stat, final=attempt == 2)  # noqa: PLR2004
                if version is not None and not (is_stale(record, stat) and attempt < 2):  # noqa: PLR2004
                    data = read_all(fd, stat.st_size)
                    return StoredRecord(key=key, value=data, content_type=record.content_type, version=version)
            finally:
                os.close(fd)
            # A Crawlee record file rewritten since the index saw it: its sidecar may name another type. Or a
            # file replaced before its copy tag was looked up. Look again.
            with self._lock:
                self._index.scan()
        return None

    def exists(self, key: str) -> bool:
        """Tell whether `key` has a record.

        Raises:
            StorageBackendError: The record's file is a link, a folder or another special file.
        """
        record = self._lookup(key)
        if record is None:
            return False
        if record.refused is None:
            what = self.files.what_is(record.name)
            if what is None:
                return True
            if what:
                raise self.files.refusal(record.name, what, key=key)
            with self._lock:
                record = self._index.find(self._index.scan(), key)
            if record is None:
                return False
        if record.refused is not None:
            raise self.files.refusal_of(key, record)
        return True

    def keys(self) -> list[KeyInfo]:
        """All keys with their sizes, sorted. A refused record is listed, with size 0."""
        with self._lock:
            records = self._index.fresh()
            return [KeyInfo(key=k, size=records[k].size) for k in sorted(records)]

    # --- writes -----------------------------------------------------------------------------------

    def _check(
        self, key: str, record: RecordFile | None, if_version: str | None, *, if_absent: bool, folder: int
    ) -> os.stat_result | None:
        """Check the write's conditions against the current record (`RecordIndex.find`); return its file's stat.

        A record whose file is a link, a folder or another special file is refused: never replaced, never
        deleted.
        """
        actual: str | None = None
        stat: os.stat_result | None = None
        if record is not None and record.refused is not None:
            raise self.files.refusal_of(key, record)
        if record is not None:
            try:
                stat = os.stat(record.name, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                record = None
            else:
                what = not_a_file(stat.st_mode)
                if what is not None:
                    raise self.files.refusal(record.name, what, key=key)
                sidecar = record.crawlee_sidecar
                what = what_is(sidecar, folder) if sidecar is not None else None
                if sidecar is not None and what is not None:
                    raise self.files.refusal(sidecar, what, key=key)
                actual = self.files.version(key, record, stat, folder)
        if if_absent and actual is not None:
            raise VersionConflictError.for_record(store=self.label, key=key, expected=None, actual=actual)
        if if_version is not None and actual != if_version:
            raise VersionConflictError.for_record(store=self.label, key=key, expected=if_version, actual=actual)
        return stat

    def _start_write(self, folder: int) -> tuple[dict[str, RecordFile], dict[str, Any] | None]:
        """The fresh index and the Crawlee metadata of the store (None if not Crawlee's), after tidying up."""
        records = self._index.fresh(folder)
        crawlee = self._crawlee.store_metadata(folder)
        self._crawlee.tidy(folder)
        for name in self._index.take_unused_tags():
            # A crash between a copy's tag and its link: the tag names a file version no record has.
            remove_if_present(name, folder)
        return records, crawlee

    def _end_write(self, crawlee: dict[str, Any] | None, folder: int) -> None:
        """Tell other processes the folder changed, and touch the metadata of a Crawlee store as Crawlee does."""
        self._index.bump_generation(folder)
        if crawlee is not None:
            self._crawlee.touch_store_metadata(crawlee, folder)
            self._index.note_own_change(folder)

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
        (`CrawleeLayout.write`) when Crawlee can name its file, and the store's `__metadata__.json` is updated
        as Crawlee does; elsewhere, and for a key Crawlee cannot name, in this library's layout.
        """
        with self.write_lock(wait) as folder:
            records, crawlee = self._start_write(folder)
            old_stat = self._check(key, self._index.find(records, key), if_version, if_absent=if_absent, folder=folder)
            stat = self._write_record(
                key,
                value,
                content_type,
                records=records,
                crawlee=crawlee is not None,
                folder=folder,
                old_stat=old_stat,
            )
            self._end_write(crawlee, folder)
        return version_of(stat)

    def _write_record(
        self,
        key: str,
        value: bytes,
        content_type: str,
        *,
        records: dict[str, RecordFile],
        crawlee: bool,
        folder: int,
        old_stat: os.stat_result | None,
    ) -> os.stat_result:
        """Write the record of `key` in the store's layout, once `_check` gave `old_stat`; return the file's stat."""
        after = old_stat.st_mtime_ns if old_stat is not None else None
        name = self._crawlee.record_name(key, records) if crawlee else None
        if name is not None:
            return self._crawlee.write(
                key, name, value=value, content_type=content_type, index=records, folder=folder, after_mtime_ns=after
            )
        return self._own.write(key, value, content_type, records, folder, crawlee=crawlee, after_mtime_ns=after)

    def copy(self, key: str, to_key: str, *, if_version: str | None, wait: LockWait) -> str | None:
        """Copy the record of `key` to `to_key`, replacing it; return the copy's version, None when `key` has none.

        The copy is a hard link to the source's file, with a tag of its own in its version (`_copies`): no byte
        is copied. Otherwise the bytes are read and written as `write` does, under the same lock: in a store of
        Crawlee (whose own writes need not replace a file), for a source in Crawlee's layout, when `to_key` is a
        name of that file already, and on a file system without hard links. A write of this library replaces a
        file, never changes it in place, so a write of either key leaves the other one as it was.

        Raises:
            VersionConflictError: `if_version` was given and the record of `key` has another version or none.
            StorageBackendError: The file of either record is a link, a folder or another special file.
        """
        with self.write_lock(wait) as folder:
            records, crawlee = self._start_write(folder)
            source = self._index.find(records, key)
            stat = self._check(key, source, if_version, if_absent=False, folder=folder)
            if stat is None or source is None:
                return None
            old_stat = self._check(to_key, self._index.find(records, to_key), None, if_absent=False, folder=folder)
            version = None
            if crawlee is None and source.crawlee_sidecar is None and not _same_file(old_stat, stat):
                version = self._own.link(to_key, source, stat, records, folder)
            if version is None:
                fd, opened = open_regular_file(source.name, folder, folder=self.path, store=self.label, key=key)
                try:
                    value = read_all(fd, opened.st_size) if _same_file(opened, stat) else None
                finally:
                    os.close(fd)
                if value is None:
                    raise self.files.replaced_while_copied(key, source.name)
                written = self._write_record(
                    to_key,
                    value,
                    source.content_type,
                    records=records,
                    crawlee=crawlee is not None,
                    folder=folder,
                    old_stat=old_stat,
                )
                version = version_of(written)
            self._end_write(crawlee, folder)
        return version

    def delete(self, key: str, *, if_version: str | None, wait: LockWait) -> bool:
        """Delete the record of `key`; return whether there was one.

        A Crawlee record loses its file first, then its sidecar, as Crawlee deletes: a crash in between leaves a
        sidecar without a record, which nobody reads as a record and the next writer removes.
        """
        with self.write_lock(wait) as folder:
            records, crawlee = self._start_write(folder)
            self._check(key, self._index.find(records, key), if_version, if_absent=False, folder=folder)
            record = records.get(key)
            if record is None:
                return False
            remove_record_files(record, folder)
            os.fsync(folder)
            del records[key]
            self._end_write(crawlee, folder)
        return True

    def purge(self, wait: LockWait) -> None:
        """Delete every record, keeping the store's metadata."""
        with self.write_lock(wait) as folder:
            crawlee = self._crawlee.store_metadata(folder)
            self._crawlee.tidy(folder)
            for record in self._index.fresh(folder).values():
                remove_record_files(record, folder)
            for name in os.listdir(folder):
                if name.startswith((LONG_KEY_PREFIX, PENDING_PREFIX, COPY_PREFIX)):
                    remove_if_present(name, folder)
            shutil.rmtree(KEYS_DIR, ignore_errors=True, dir_fd=folder)  # a link in its place is not followed
            os.fsync(folder)
            self._index.bump_generation(folder)
            self._index.scan()
            if crawlee is not None:
                self._crawlee.touch_store_metadata(crawlee, folder)
                self._index.note_own_change(folder)

    def drop(self, wait: LockWait) -> None:
        """Delete the whole store folder: first renamed away in one step, then removed."""
        with self.write_lock(wait):
            graveyard = self.path.parent / f"{TEMP_PREFIX}dropped.{secrets.token_hex(8)}"
            os.replace(self.path, graveyard)
            fsync_dir(self.path.parent)
            self.dropped = True
            self._index.forget()
        with self._writers_lock.threads_turn(), self._lock:
            self._writers_lock.close()
        shutil.rmtree(graveyard, ignore_errors=True)


def _same_file(one: os.stat_result | None, other: os.stat_result) -> bool:
    return one is not None and os.path.samestat(one, other)
