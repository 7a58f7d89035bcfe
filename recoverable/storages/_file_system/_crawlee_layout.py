"""Crawlee's layout in a store folder: finding its records, and writing them as Crawlee for Python does.

In a store Crawlee made (its `__metadata__.json` in Crawlee's spelling, `is_crawlee_metadata`) a record is
written as Crawlee writes it, a file and its sidecar, and the store's metadata is touched as Crawlee does,
so that Crawlee reads the store too. Every file is replaced all or nothing and durably, in an order that a
crash at any instant leaves each record readable as the old one or the new one (see `CrawleeLayout.write`).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from recoverable.errors import StorageBackendError
from recoverable.storages._file_system._crawlee_format import (
    crawlee_metadata_json,
    crawlee_sidecar_json,
    is_crawlee_metadata,
    pending_json,
    pending_name,
    read_crawlee_sidecar,
    read_pending,
)
from recoverable.storages._file_system._durable_writes import (
    durable_write,
    remove_if_present,
    rename_temp,
    write_temp,
)
from recoverable.storages._file_system._layout import (
    CRAWLEE_SIDECAR_SUFFIX,
    METADATA_FILE,
    PENDING_PREFIX,
    crawlee_record_name,
    encode_key,
    extension_for,
)
from recoverable.storages._file_system._no_follow import not_a_file, read_if_regular, what_is
from recoverable.storages._file_system._store_folder import RecordFile, remove_record_files, version_of

if TYPE_CHECKING:
    from recoverable.storages._file_system._store_folder import StoreFolder

__all__ = ["CrawleeLayout", "holds_crawlee_record"]


def holds_crawlee_record(name: str, folder: int) -> bool:
    """Tell whether file `name` of the open folder is a Crawlee record (it has a sidecar)."""
    # A sidecar that is a link still marks a Crawlee record (a refused one). The sidecar of a name near
    # the length limit is too long a name: no such sidecar can exist.
    try:
        os.stat(f"{name}{CRAWLEE_SIDECAR_SUFFIX}", dir_fd=folder, follow_symlinks=False)
    except OSError:
        return False
    return True


class CrawleeLayout:
    """The records of one store folder kept in Crawlee's layout, and what a crash left of their writes.

    A scan (`scan_records`) notes sidecars left without a record file and changes of content type under way;
    the next holder of the writers' lock tidies them (`tidy`).
    """

    def __init__(self, files: StoreFolder) -> None:
        self._files = files
        # Crawlee sidecars whose record file is gone (a delete or a first write cut short), seen by the last scan.
        self._orphan_sidecars: list[str] = []
        # Whether the last scan saw `.~pending.` files, and whether a writer of this process looked for them yet.
        self._pending_seen = False
        self._tidied = False
        # The signature of `__metadata__.json` when last read, and what it held if in Crawlee's spelling.
        self._metadata_seen: tuple[tuple[int, int, int], dict[str, Any] | None] | None = None

    # --- finding records ------------------------------------------------------------------------------

    def scan_records(self, names: dict[str, os.DirEntry[str]], dir_fd: int) -> list[tuple[str, RecordFile]]:
        """The records Crawlee's layout holds (a file and its sidecar) in a listing of the folder, by key.

        A change of content type under way (a `.~pending.` file naming the record file as it now is) gives the
        record its new key and type before its sidecar is rewritten. Sidecars without a record file are noted,
        for a writer to remove.
        """
        found: list[tuple[str, RecordFile]] = []
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
                parsed = read_crawlee_sidecar(name, dir_fd)
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
            size = 0 if refused else st.st_size
            found.append((key, RecordFile(record_name, content_type, size, st.st_mtime_ns, name, refused)))
        self._orphan_sidecars = orphans
        return found

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
            pending = read_pending(name, dir_fd)
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

    # --- the store's metadata, and tidying up ---------------------------------------------------------

    def store_metadata(self, folder: int) -> dict[str, Any] | None:
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
            raise self._files.refusal(METADATA_FILE, what)
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._metadata_seen is not None and self._metadata_seen[0] == signature:
            return self._metadata_seen[1]
        found = read_if_regular(METADATA_FILE, folder)
        if isinstance(found, str):
            raise self._files.refusal(METADATA_FILE, found)
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

    def touch_store_metadata(self, data: dict[str, Any], folder: int) -> None:
        """Record the change in the Crawlee store's `__metadata__.json`, as Crawlee does, all or nothing."""
        body = crawlee_metadata_json(data, datetime.now(UTC))
        st = durable_write(folder, METADATA_FILE, body)
        self._metadata_seen = ((st.st_ino, st.st_mtime_ns, st.st_size), json.loads(body))

    def tidy(self, folder: int) -> None:
        """Finish or undo the changes of content type a crash cut short, and remove sidecars without a record.

        Only a holder of the writers' lock may: no write of this library is under way meanwhile.
        """
        changed = self._finish_pending(folder) if self._pending_seen or not self._tidied else False
        for sidecar in self._orphan_sidecars:
            try:
                os.stat(sidecar[: -len(CRAWLEE_SIDECAR_SUFFIX)], dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                if what_is(sidecar, folder) is None:
                    remove_if_present(sidecar, folder)
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
            pending = read_pending(name, folder)
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
                    durable_write(folder, sidecar, crawlee_sidecar_json(key, content_type, st.st_size))
            remove_if_present(name, folder)
            changed = True
        return changed

    # --- writing records --------------------------------------------------------------------------------

    def record_name(self, key: str, index: dict[str, RecordFile]) -> str | None:
        """The file of `key` in Crawlee's layout, or None when Crawlee cannot keep the key (`crawlee_record_name`).

        On a file system that ignores case, a key whose Crawlee file would be another key's file but for case
        is kept in this library's layout too (which encodes upper-case letters).
        """
        name = crawlee_record_name(key)
        if name is not None and self._files.case_insensitive:
            folded = name.casefold()
            if any(other != key and entry.name.casefold() == folded for other, entry in index.items()):
                return None
        return name

    def write(
        self,
        key: str,
        record: str,
        *,
        value: bytes,
        content_type: str,
        index: dict[str, RecordFile],
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
                raise self._files.refusal(name, what, key=key)
        self._free_name(record, index, but=key, folder=folder)
        sidecar_json = crawlee_sidecar_json(key, content_type, len(value))
        paired = old is not None and old.name == record and old.crawlee_sidecar is not None
        if paired and old is not None and old.content_type == content_type:
            stat = durable_write(folder, record, value, after_mtime_ns=after_mtime_ns)
            if old.size != len(value):
                durable_write(folder, sidecar, sidecar_json)
        elif paired:
            stat = self._change_type(key, record, value, content_type, folder, after_mtime_ns=after_mtime_ns)
        else:
            self._clear_file(key, record, index, folder)
            durable_write(folder, sidecar, sidecar_json)
            stat = durable_write(folder, record, value, after_mtime_ns=after_mtime_ns)
            if old is not None and old.name != record:
                remove_record_files(old, folder)
                os.fsync(folder)
        index[key] = RecordFile(record, content_type, stat.st_size, stat.st_mtime_ns, sidecar)
        return stat

    @staticmethod
    def _change_type(
        key: str, record: str, value: bytes, content_type: str, folder: int, *, after_mtime_ns: int | None
    ) -> os.stat_result:
        """Replace a Crawlee record by one of another content type: announced, renamed, sidecar, announcement gone."""
        temp, stat = write_temp(folder, value, after_mtime_ns=after_mtime_ns)
        pending = pending_name(record)
        try:
            announcement = pending_json(
                record=record, version=version_of(stat), key=key, content_type=content_type, size=len(value)
            )
            durable_write(folder, pending, announcement)
        except BaseException:
            remove_if_present(temp, folder)
            raise
        rename_temp(folder, temp, record)
        os.fsync(folder)
        durable_write(folder, f"{record}{CRAWLEE_SIDECAR_SUFFIX}", crawlee_sidecar_json(key, content_type, len(value)))
        remove_if_present(pending, folder)
        return stat

    def _clear_file(self, key: str, record: str, index: dict[str, RecordFile], folder: int) -> None:
        """Remove a file without a sidecar (Crawlee's write cut short) from where a new Crawlee record goes."""
        try:
            os.stat(record, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return
        other = next((k for k, e in index.items() if e.name == record and k != key), None)
        if other is not None:
            # Only a sidecar edited by hand names another key than the one its file name spells.
            raise StorageBackendError(
                f"record {key!r} of key-value store {self._files.label!r}: its file {self._files.path / record} "
                f"holds the record {other!r}, as the sidecar beside it says; move that record away first",
                store=self._files.label,
                key=key,
            )
        # Gone before the sidecar makes it a record, so that it is never read as one.
        remove_if_present(record, folder)
        os.fsync(folder)

    def _free_name(self, record: str, index: dict[str, RecordFile], *, but: str, folder: int) -> None:
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
            raise self._files.refusal_of(moved, entry)
        data = self._files.read_file(record, moved)
        target = self.record_name(moved, index)
        if target is not None:
            self.write(
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
        stem, _ = encode_key(moved, case_insensitive=self._files.case_insensitive, extension=extension, hashed=True)
        name = f"{stem}.{extension}"
        if holds_crawlee_record(name, folder):
            raise both_names_taken(self._files, moved)
        self._files.remember_long_key(moved, folder, flat=True)
        stat = durable_write(folder, name, data, after_mtime_ns=entry.mtime_ns)
        remove_record_files(entry, folder)
        os.fsync(folder)
        index[moved] = RecordFile(name, entry.content_type, stat.st_size, stat.st_mtime_ns)

    def move_to_own_layout(self, name: str, index: dict[str, RecordFile], *, but: str, folder: int) -> None:
        """Move the Crawlee record of another key held in file `name` to this library's layout, to free the name.

        Crawlee names a record file by the bare key (`page.html`), this layout adds an extension (`page`
        as HTML is `page.html` too). The record is copied durably before its pair is removed, so a crash
        leaves it readable under its key, and the key being written absent until its own write.
        """
        moved = next((k for k, e in index.items() if e.name == name and e.crawlee_sidecar is not None), None)
        if moved is None or moved == but:
            return
        entry = index[moved]
        if entry.refused is not None:
            raise self._files.refusal_of(moved, entry)
        extension = extension_for(entry.content_type)
        stem, hashed = encode_key(moved, case_insensitive=self._files.case_insensitive, extension=extension)
        if holds_crawlee_record(f"{stem}.{extension}", folder):
            self.move_to_own_layout(f"{stem}.{extension}", index, but=moved, folder=folder)
        if hashed:
            self._files.remember_long_key(moved, folder)
        stat = durable_write(folder, f"{stem}.{extension}", self._files.read_file(name, moved))
        remove_record_files(entry, folder)
        os.fsync(folder)
        index[moved] = RecordFile(f"{stem}.{extension}", entry.content_type, stat.st_size, stat.st_mtime_ns)


def both_names_taken(files: StoreFolder, key: str) -> StorageBackendError:
    """The error for a key whose plain and hashed file names both hold records of Crawlee."""
    return StorageBackendError(
        f"record {key!r} of key-value store {files.label!r}: both its file names in {files.path} hold "
        "records of Crawlee for Python; rename or move one of them",
        store=files.label,
        key=key,
    )
