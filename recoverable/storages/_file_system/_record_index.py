"""The index of one store folder: which file holds the record of each key, rebuilt from a scan when it changed.

A change of the folder is seen two ways: every writer of this library bumps the generation counter kept in
`.lock` (exact, whatever the clock's granularity), and the folder's modification time catches files added by
other programs. A key whose file is a link, a folder or another special file stays in the index, marked
refused: reading, writing or deleting it raises an error naming that file. Each record notes its file as the
scan saw it, with its copy tag when it is a copy made as a hard link (`RecordFile.seen`, `_copies`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from recoverable.storages._file_system._copies import TagNotAFile, read_tag, tag_name
from recoverable.storages._file_system._layout import (
    COPY_PREFIX,
    CRAWLEE_SIDECAR_SUFFIX,
    METADATA_FILE,
    decode_stem,
    key_hash,
    split_record_name,
)
from recoverable.storages._file_system._no_follow import not_a_file
from recoverable.storages._file_system._store_folder import LongKeys, RecordFile, version_of

if TYPE_CHECKING:
    from recoverable.storages._file_system._crawlee_layout import CrawleeLayout
    from recoverable.storages._file_system._store_folder import StoreFolder
    from recoverable.storages._file_system._writers_lock import WritersLock

__all__ = ["RecordIndex"]


class RecordIndex:
    """The keys of one store folder and the files of their records, as this process last saw them.

    It is not thread-safe by itself: `StoreDir` holds its lock around every rescan and change.

    Args:
        files: The store's folder.
        lock: The store's writers' lock, whose file holds the generation counter.
        crawlee: Finds the records kept in Crawlee's layout during a scan.
    """

    def __init__(self, files: StoreFolder, lock: WritersLock, crawlee: CrawleeLayout) -> None:
        self._files = files
        self._lock = lock
        self._crawlee = crawlee
        self.records: dict[str, RecordFile] | None = None
        """The record of each key; None until the first scan."""
        self._refused_long_keys: dict[str, RecordFile] = {}
        """Records of long keys whose `.keys/<hash>` file cannot be read safely, by hash: the key is unknown."""
        self._scanned_mtime_ns = -1
        self._seen_generation = -1
        self._unused_tags: list[str] = []
        """Copy tags (`_copies`) of no record file, seen by the last scan: left by a crash, or by another program."""

    def changed(self, folder: int | None = None) -> bool:
        """Whether the folder (open as `folder`, when a writer gives it) may have changed since the last scan."""
        return (
            self._lock.generation() != self._seen_generation or self._files.mtime_ns(folder) != self._scanned_mtime_ns
        )

    def fresh(self, folder: int | None = None) -> dict[str, RecordFile]:
        """The records, rescanned when the folder (open as `folder`, when given) changed since the last scan."""
        if self.records is None or self.changed(folder):
            return self.scan()
        return self.records

    def find(self, records: dict[str, RecordFile], key: str) -> RecordFile | None:
        """The record of `key` in `records`, also when it is a long key whose `.keys/<hash>` file was refused."""
        record = records.get(key)
        if record is None and self._refused_long_keys:
            record = self._refused_long_keys.get(key_hash(key))
        return record

    def bump_generation(self, folder: int) -> None:
        """Tell the other processes the folder, open as `folder`, changed.

        The caller holds the writers' lock and called `fresh` under it, so the last scan's generation is the
        counter's current value: no writer of another process can have moved it since.
        """
        generation = self._seen_generation + 1
        self._lock.set_generation(generation)
        self._seen_generation = generation
        self._scanned_mtime_ns = self._files.mtime_ns(folder)

    def take_unused_tags(self) -> list[str]:
        """The copy tags of no record file, for a holder of the writers' lock to remove; forgotten here.

        Only a holder of the lock, after `fresh(folder)`, may remove them: the last scan then saw the folder as
        it is, and no writer of this library is between writing a copy's tag and linking its file.
        """
        unused, self._unused_tags = self._unused_tags, []
        return unused

    def note_own_change(self, folder: int) -> None:
        """Take the folder for scanned as it is now: the caller, holding the writers' lock, changed a file in it."""
        self._scanned_mtime_ns = self._files.mtime_ns(folder)

    def forget(self) -> None:
        """Know no record any more (the folder was dropped)."""
        self.records = {}

    def scan(self) -> dict[str, RecordFile]:
        """Rebuild the index from a listing of the folder."""
        generation = self._lock.generation()
        mtime_ns = self._files.mtime_ns()
        dir_fd = self._files.open()
        try:
            with os.scandir(dir_fd) as it:
                names = {entry.name: entry for entry in it}
            records: dict[str, RecordFile] = {}
            refused_long_keys: dict[str, RecordFile] = {}
            claimed: set[str] = set()
            for crawlee_key, crawlee_record in self._crawlee.scan_records(names, dir_fd):
                claimed.add(crawlee_record.name)
                _keep_newest(records, crawlee_key, crawlee_record)
            long_keys = LongKeys(dir_fd)
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
                    record = RecordFile(
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
                            record.refused = found
                            refused_long_keys[hashed] = record
                            continue
                        key = found
                    if key is not None:
                        _keep_newest(records, key, record)
            finally:
                long_keys.close()
            unused_tags = _note_files(records, names, dir_fd)
        finally:
            os.close(dir_fd)
        self.records = records
        self._refused_long_keys = refused_long_keys
        self._unused_tags = unused_tags
        self._scanned_mtime_ns = mtime_ns
        self._seen_generation = generation
        return records


def _note_files(records: dict[str, RecordFile], names: dict[str, os.DirEntry[str]], dir_fd: int) -> list[str]:
    """Note in each record what its file is (`RecordFile.seen`), copy tag included; return the unused tags.

    The stat of each file is the one the scan took already (`os.DirEntry` keeps it); a tag file is read only
    for a record whose file has one, or whose file changed since the listing.
    """
    tags = {name for name in names if name.startswith(COPY_PREFIX)}
    for record in records.values():
        entry = names.get(record.name)
        if record.refused is not None or entry is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        version = version_of(st)
        tag = None
        # A file that took the name since the listing (a copy landing meanwhile) may have a tag the listing
        # missed: its tag is written before the file is linked, so look for it.
        replaced = entry.inode() != st.st_ino
        name = tag_name(record.name, version) if tags or replaced else None
        if name is not None and (replaced or name in tags):
            tags.discard(name)
            try:
                tag = read_tag(record.name, version, dir_fd)
            except TagNotAFile as exc:
                record.refused, record.size = (exc.name, exc.what), 0
                continue
        record.seen = (version, st.st_ctime_ns, tag)
    # A folder of that name is left alone: removing it is not the store's business, and would fail.
    return sorted(name for name in tags if not names[name].is_dir(follow_symlinks=False))


def _keep_newest(records: dict[str, RecordFile], key: str, record: RecordFile) -> None:
    # After a crash between writing a key's new file and removing its old one (a changed content
    # type, or a record brought from Crawlee), both exist: the newer one is the record. A refused file
    # of the key wins over any other: which file is the record cannot be told, so the key is refused.
    current = records.get(key)
    if current is None or (
        current.refused is None
        and (
            record.refused is not None
            or (record.mtime_ns, record.crawlee_sidecar is None) > (current.mtime_ns, current.crawlee_sidecar is None)
        )
    ):
        records[key] = record
