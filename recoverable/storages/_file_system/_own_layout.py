"""This library's layout in a store folder: a record written as `<key>.<extension>`, or linked there as a copy.

A record is written all or nothing and durably (`durable_write`); a copy is a hard link to the file of the
record it copies, with a tag of its own in its version (`_copies`). Either way the key's file of another
content type goes once the new file is in place, and a Crawlee record found where the new file goes (copied
in by hand) is moved to this layout first. See `recoverable.storages._file_system._layout` for the names.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from recoverable.storages._file_system._copies import LINKS_UNSUPPORTED, link_temp, remove_tag, tagged, write_tag
from recoverable.storages._file_system._crawlee_layout import both_names_taken, holds_crawlee_record
from recoverable.storages._file_system._durable_writes import durable_write, rename_temp
from recoverable.storages._file_system._layout import encode_key, extension_for
from recoverable.storages._file_system._store_folder import RecordFile, remove_record_files, version_of

if TYPE_CHECKING:
    from recoverable.storages._file_system._crawlee_layout import CrawleeLayout
    from recoverable.storages._file_system._store_folder import StoreFolder

__all__ = ["OwnLayout"]


class OwnLayout:
    """The records of one store folder kept in this library's layout: their names, writes and copies.

    Every method runs under the store's writers' lock, in the folder it holds open (`folder`), and keeps the
    index it is given (`records`, key to file) up to date.
    """

    def __init__(self, files: StoreFolder, crawlee: CrawleeLayout) -> None:
        self._files = files
        self._crawlee = crawlee

    def name(self, key: str, content_type: str, folder: int, *, crawlee: bool) -> tuple[str, bool]:
        """The file of `key` in this library's layout, and whether it is the hashed form.

        In a Crawlee store a Crawlee record is never moved away: a key whose file name a Crawlee record holds
        takes the hashed form instead (which no Crawlee record holds but by a collision of SHA-256).
        """
        extension = extension_for(content_type)
        case_insensitive = self._files.case_insensitive
        stem, hashed = encode_key(key, case_insensitive=case_insensitive, extension=extension)
        name = f"{stem}.{extension}"
        if crawlee and holds_crawlee_record(name, folder):
            stem, hashed = encode_key(key, case_insensitive=case_insensitive, extension=extension, hashed=True)
            name = f"{stem}.{extension}"
            if holds_crawlee_record(name, folder):
                raise both_names_taken(self._files, key)
        return name, hashed

    def _make_room(
        self, key: str, content_type: str, records: dict[str, RecordFile], folder: int, *, crawlee: bool
    ) -> str:
        """The file of `key`, freed of another key's Crawlee record, its long key kept when it is the hashed form."""
        name, hashed = self.name(key, content_type, folder, crawlee=crawlee)
        if not crawlee and holds_crawlee_record(name, folder):
            self._crawlee.move_to_own_layout(name, records, but=key, folder=folder)
        if hashed:
            self._files.remember_long_key(key, folder, flat=crawlee)
        return name

    def write(
        self,
        key: str,
        value: bytes,
        content_type: str,
        records: dict[str, RecordFile],
        folder: int,
        *,
        crawlee: bool,
        after_mtime_ns: int | None,
    ) -> os.stat_result:
        """Write the record of `key` (`<key>.<extension>`); remove its older file. Returns the new file's stat."""
        old = records.get(key)
        name = self._make_room(key, content_type, records, folder, crawlee=crawlee)
        stat = durable_write(folder, name, value, after_mtime_ns=after_mtime_ns)
        if old is not None and old.name != name:
            remove_record_files(old, folder)
            os.fsync(folder)
        elif old is not None and old.seen is not None and old.seen[2] is not None:
            # The replaced file was a copy: its tag goes too. Should the removal be lost, the tag names a file
            # version no record has, which the next writer removes.
            remove_tag(name, old.seen[0], folder)
        records[key] = RecordFile(name, content_type, stat.st_size, stat.st_mtime_ns)
        return stat

    def link(
        self, key: str, source: RecordFile, stat: os.stat_result, records: dict[str, RecordFile], folder: int
    ) -> str | None:
        """Make the record of `key` a hard link to the file of `source` (whose stat is `stat`), with its own tag.

        In order: the tag (durably), the link under a temporary name, renamed over the key's file, the key's
        file of another content type removed, the folder fsync'd. The source's bytes are durable already (its
        write fsync'd them). Returns the copy's version; None when no hard link can be made here, or the
        source's name no longer holds that file: then the record of `key` is as it was.
        """
        old = records.get(key)
        name = self._make_room(key, source.content_type, records, folder, crawlee=False)
        version = version_of(stat)
        tag = write_tag(name, version, folder)
        try:
            temp = link_temp(folder, source.name, stat)
        except OSError as exc:
            remove_tag(name, version, folder)
            if exc.errno not in LINKS_UNSUPPORTED:
                raise
            return None
        except BaseException:
            remove_tag(name, version, folder)
            raise
        if temp is None:
            remove_tag(name, version, folder)
            return None
        rename_temp(folder, temp, name)
        if old is not None and old.name != name:
            remove_record_files(old, folder)
        elif old is not None and old.seen is not None and old.seen[2] is not None and old.seen[0] != version:
            remove_tag(name, old.seen[0], folder)
        os.fsync(folder)
        records[key] = RecordFile(name, source.content_type, stat.st_size, stat.st_mtime_ns)
        return tagged(version, tag)
