"""Storage client that keeps stores as folders on local disk: the default, embedded, no server."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from typing_extensions import override

from recoverable.configuration import Configuration
from recoverable.errors import ConfigurationError, InvalidStoreNameError, StorageBackendError, StoreNotFoundError
from recoverable.storages._base import StorageClient
from recoverable.storages._file_system._crawlee_format import crawlee_metadata_json, is_crawlee_metadata
from recoverable.storages._file_system._durable_writes import create_exclusive, fsync_dir
from recoverable.storages._file_system._errors import folder_backend
from recoverable.storages._file_system._key_value_store_client import FileSystemKeyValueStoreClient
from recoverable.storages._file_system._layout import (
    CRAWLEE_SIDECAR_SUFFIX,
    METADATA_FILE,
    TEMP_PREFIX,
    alias_dir_name,
    crawlee_alias_dir_name,
)
from recoverable.storages._file_system._no_follow import not_a_file, open_folder, open_regular_file, read_all, refusal
from recoverable.storages._file_system._store_dir import store_dir_for
from recoverable.storages._models import KeyValueStoreMetadata, new_store_id
from recoverable.storages._validation import store_alias, validate_store_name, validate_store_reference

if TYPE_CHECKING:
    from collections.abc import Iterator

    from recoverable.storages._file_system._store_dir import StoreDir

__all__ = ["FileSystemStorageClient"]

_SUBDIR = "key_value_stores"

DEFAULT_LOCK_TIMEOUT = timedelta(seconds=10)
"""How long a write waits for its store's writers' lock unless `lock_timeout=` says otherwise."""


class FileSystemStorageClient(StorageClient):
    """Stores as folders under `storage_dir/key_value_stores/`, readable with any text editor.

    Every write is all-or-nothing and durable when it returns (temp file, fsync, rename, fsync of the
    folder: one such write per record write). A store can be opened by name, alias or id after a
    restart. Stores of Crawlee for Python (record files with `.__metadata__.json` sidecars) are read as
    they are, and a store Crawlee made or opened (its `__metadata__.json` in Crawlee's spelling) is
    written in Crawlee's layout, so that Crawlee reads it too: see `StoreDir.write` and the README.

    Writers take an exclusive `flock` on the store's `.lock`, so conditional writes stay atomic between
    processes on one machine. POSIX only (Linux, macOS); network file systems must honour `flock`. A
    write waits for that lock at most `lock_timeout`, then raises `StoreLockedError` naming the process
    holding it (a process frozen mid-write keeps it until it is resumed or ends); a cancelled write stops
    waiting at once.

    Args:
        storage_dir: The root folder; `RECOVERABLE_STORAGE_DIR` (default `./storage`) when omitted.
        configuration: Where `storage_dir` comes from when it is not given.
        lock_timeout: Longest a write waits for the writers' lock of its store.
        crawlee_layout: Make new stores as Crawlee for Python makes them (their `__metadata__.json` in its
            spelling), so that every record written to them is in Crawlee's layout and Crawlee reads it (what
            `recoverable export` writes). Stores that exist keep their layout.

    Raises:
        ConfigurationError: `lock_timeout` is not a positive timedelta.
    """

    def __init__(
        self,
        *,
        storage_dir: str | os.PathLike[str] | None = None,
        configuration: Configuration | None = None,
        lock_timeout: timedelta = DEFAULT_LOCK_TIMEOUT,
        crawlee_layout: bool = False,
    ) -> None:
        if not isinstance(lock_timeout, timedelta) or lock_timeout <= timedelta(0):
            raise ConfigurationError(f"lock_timeout must be a positive timedelta, not {lock_timeout!r}")
        if storage_dir is None:
            storage_dir = (configuration or Configuration.from_env()).storage_dir
        self._lock_timeout = lock_timeout
        self._crawlee_layout = crawlee_layout
        self._root = Path(storage_dir)
        self._stores_path = self._root / _SUBDIR
        self._stores_text = os.fspath(self._stores_path)
        self._backend = folder_backend(self._stores_path)
        self._case_insensitive: bool | None = None
        self._id_dirs: dict[str, Path] = {}
        # Folder name -> the stat signature of its metadata file when read, and what it held (None: damaged).
        self._metadata_seen: dict[str, tuple[tuple[int, ...], KeyValueStoreMetadata | None]] = {}
        self._lock = threading.Lock()

    @property
    def storage_dir(self) -> Path:
        """The root folder of this client's stores."""
        return self._root

    @property
    def _stores_dir(self) -> Path:
        return self._stores_path

    @override
    async def open_key_value_store_client(
        self,
        *,
        id: str | None = None,
        name: str | None = None,
        alias: str | None = None,
    ) -> FileSystemKeyValueStoreClient:
        validate_store_reference(id=id, name=name, alias=alias)
        label = id or name or alias or "default"
        with self._backend.mapped("open", store=label):
            return await asyncio.to_thread(self._open, id=id, name=name, alias=alias)

    def _open(self, *, id: str | None, name: str | None, alias: str | None) -> FileSystemKeyValueStoreClient:
        self._ensure_root()
        if id is not None:
            folder, found = self._find_by_id(id)
            return self._client(folder, found)
        if name is not None:
            folder = self._stores_dir / name
        else:
            alias = store_alias(alias)
            folder = self._alias_folder(alias)
        with self._lock:
            data = self._read_metadata_json(folder) if _is_store_folder(folder) else None
            metadata = None if data is None else self._parse_metadata(folder, data)
            if metadata is None:
                metadata = self._create(folder, name, alias)
            elif alias is not None:
                recorded = data.get("alias") if data is not None else None
                if isinstance(recorded, str) and recorded != alias:
                    raise InvalidStoreNameError(
                        f"store alias {alias!r} clashes with the existing store of alias {recorded!r} in {folder}: "
                        "this file system ignores the case of file names; pick an alias that differs by more than case",
                        store=alias,
                    )
        if name is not None and metadata.name is not None and metadata.name != name:
            raise InvalidStoreNameError(
                f"store name {name!r} clashes with the existing store {metadata.name!r} in {folder}: this "
                "file system ignores the case of names; pick a name that differs by more than case",
                store=name,
            )
        self._id_dirs[metadata.id] = folder
        return self._client(folder, metadata)

    def _alias_folder(self, alias: str) -> Path:
        """The folder of the store of `alias`: this client's own, or the one Crawlee made for it.

        Crawlee for Python keeps the store of an alias in a folder named by the alias itself. That folder is
        used only when this client has no store of the alias yet, and only when it is a folder (not a link)
        holding a store Crawlee made (its `__metadata__.json` in Crawlee's spelling) that has no name: the
        store of a name is never opened by an alias.
        """
        own = self._stores_dir / alias_dir_name(alias)
        crawlee = crawlee_alias_dir_name(alias)
        if crawlee is None or _is_store_folder(own):
            return own
        folder = self._stores_dir / crawlee
        if not _is_real_folder(folder):
            return own
        try:
            data = self._read_metadata_json(folder)
        except StorageBackendError:
            return own
        if data is None or not is_crawlee_metadata(data) or data.get("name") is not None:
            return own
        return folder

    def _client(self, folder: Path, metadata: KeyValueStoreMetadata) -> FileSystemKeyValueStoreClient:
        store_dir: StoreDir = store_dir_for(
            folder, label=metadata.name or metadata.id, case_insensitive=bool(self._case_insensitive)
        )
        return FileSystemKeyValueStoreClient(
            metadata=metadata, store_dir=store_dir, lock_timeout=self._lock_timeout.total_seconds()
        )

    def _ensure_root(self) -> None:
        if self._case_insensitive is not None and self._stores_dir.is_dir():
            return
        self._stores_dir.mkdir(parents=True, exist_ok=True)
        self._case_insensitive = _is_case_insensitive(self._stores_dir)

    def _create(self, folder: Path, name: str | None, alias: str | None = None) -> KeyValueStoreMetadata:
        folder.mkdir(exist_ok=True)
        fsync_dir(folder.parent)
        now = datetime.now(UTC)
        metadata = KeyValueStoreMetadata(id=new_store_id(), name=name, created_at=now, modified_at=now, accessed_at=now)
        if self._crawlee_layout or _holds_crawlee_records(folder):
            # Asked for, or a folder of Crawlee records without metadata (copied by hand): Crawlee's layout.
            body = crawlee_metadata_json(metadata.model_dump(include={"id", "name", "created_at"}), now)
        else:
            data = metadata.model_dump(mode="json", by_alias=True)
            if alias is not None and alias != "default":
                data["alias"] = alias  # the folder name of a long alias is a hash: the alias is kept here
            body = json.dumps(data, indent=2, ensure_ascii=False).encode()
        if not create_exclusive(folder, METADATA_FILE, body):
            # Another process created the store at the same moment: its metadata is the store's.
            existing = self._read_metadata(folder)
            if existing is not None:
                return existing
        return metadata

    @classmethod
    def _read_metadata(cls, folder: Path) -> KeyValueStoreMetadata | None:
        """Read a store's metadata; a folder without it (made by hand) gets one on first open.

        Neither the folder nor the metadata file may be a link (or anything but a folder and a regular file).
        """
        data = cls._read_metadata_json(folder)
        return None if data is None else cls._parse_metadata(folder, data)

    @staticmethod
    def _read_metadata_json(folder: Path) -> dict[str, Any] | None:
        """The JSON object of a store's `__metadata__.json`, or None when there is none.

        Raises:
            StorageBackendError: The folder or the file is a link or a special file, or the file is damaged.
        """
        try:
            dir_fd = open_folder(folder, store=folder.name)
            try:
                fd, st = open_regular_file(METADATA_FILE, dir_fd, folder=folder, store=folder.name)
            finally:
                os.close(dir_fd)
        except FileNotFoundError:
            return None
        try:
            raw = read_all(fd, st.st_size)
        finally:
            os.close(fd)
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise _damaged(folder, exc) from exc
        if not isinstance(data, dict):
            raise _damaged(folder, ValueError("not a JSON object"))
        return data

    @staticmethod
    def _parse_metadata(folder: Path, data: dict[str, Any]) -> KeyValueStoreMetadata:
        data = dict(data)
        # Crawlee writes snake_case keys; both spellings are accepted.
        data.setdefault("modified_at", data.get("created_at"))
        data.setdefault("accessed_at", data.get("modified_at"))
        try:
            return KeyValueStoreMetadata.model_validate(data)
        except (ValueError, ValidationError) as exc:
            raise _damaged(folder, exc) from exc

    def _find_by_id(self, id: str) -> tuple[Path, KeyValueStoreMetadata]:
        known = self._id_dirs.get(id)
        if known is not None and _is_real_folder(known):
            # The folder may hold another store by now (dropped, then created again under the same name).
            metadata = self._metadata_of(known.name)
            if metadata is not None and metadata.id == id:
                return known, metadata
        for name, metadata in self._scan(self._folders()):
            if metadata.id == id:
                return self._stores_dir / name, metadata
        raise StoreNotFoundError(f"no key-value store has the id {id!r} in {self._stores_dir}", store=id)

    def _metadata_of(self, name: str) -> KeyValueStoreMetadata | None:
        """The metadata of the store folder `name`, read again only when its file changed since last read.

        A folder name says nothing about the store's id, so finding an id (or listing the stores) looks at
        every folder; this keeps that to one `stat` per store, rather than reading and parsing every file.
        None for a folder without metadata, or with damaged metadata.
        """
        try:
            st = os.lstat(f"{self._stores_text}/{name}/{METADATA_FILE}")
        except (FileNotFoundError, NotADirectoryError):
            self._metadata_seen.pop(name, None)
            return None
        signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        seen = self._metadata_seen.get(name)
        if seen is not None and seen[0] == signature:
            return seen[1]
        try:
            metadata = self._read_metadata(self._stores_dir / name)
        except StorageBackendError:
            metadata = None
        # Stat before read: a file replaced in between is read again next time, never trusted stale.
        self._metadata_seen[name] = (signature, metadata)
        return metadata

    def _folders(self) -> list[str]:
        """The names of the folders that may be stores, in name order (a link to a folder is none)."""
        with os.scandir(self._stores_dir) as entries:
            return sorted(
                entry.name
                for entry in entries
                if not entry.name.startswith(TEMP_PREFIX) and entry.is_dir(follow_symlinks=False)
            )

    def _scan(self, names: list[str]) -> Iterator[tuple[str, KeyValueStoreMetadata]]:
        """The store folders among `names`, with their metadata, noting where each id lives."""
        for name in names:
            metadata = self._metadata_of(name)
            if metadata is not None:
                known = self._id_dirs.get(metadata.id)
                if known is None or known.name != name:
                    self._id_dirs[metadata.id] = self._stores_dir / name
                yield name, metadata

    @override
    async def find_key_value_store(self, *, name: str) -> str | None:
        validate_store_name(name)
        if name == "default":
            return None  # the folder of the default store, which has no name
        with self._backend.mapped("look up", store=name):
            metadata = await asyncio.to_thread(self._find_name, name)
        return None if metadata is None else metadata.id

    def _find_name(self, name: str) -> KeyValueStoreMetadata | None:
        folder = self._stores_dir / name
        if not _is_real_folder(folder):
            return None
        metadata = self._metadata_of(name)
        # On a case-insensitive file system the folder may hold a store whose name differs in case.
        if metadata is None or metadata.name != name:
            return None
        self._id_dirs[metadata.id] = folder
        return metadata

    @override
    async def list_key_value_stores(self) -> list[KeyValueStoreMetadata]:
        with self._backend.mapped("list the key-value stores"):
            return await asyncio.to_thread(self._list)

    def _list(self) -> list[KeyValueStoreMetadata]:
        if not self._stores_dir.is_dir():
            return []
        names = self._folders()
        found = [metadata for _, metadata in self._scan(names)]
        for gone in self._metadata_seen.keys() - set(names):
            self._metadata_seen.pop(gone, None)
        return sorted(found, key=lambda m: m.created_at)


def _damaged(folder: Path, exc: Exception) -> StorageBackendError:
    return StorageBackendError(
        f"the metadata file {folder / METADATA_FILE} is damaged ({exc}); restore it from a backup "
        "or move it away to let the store get a new id",
        store=folder.name,
    )


def _holds_crawlee_records(folder: Path) -> bool:
    """Whether a folder holds a record sidecar of Crawlee for Python."""
    with os.scandir(folder) as entries:
        return any(entry.name.endswith(CRAWLEE_SIDECAR_SUFFIX) for entry in entries)


def _is_real_folder(path: Path) -> bool:
    """Whether `path` is a folder itself, not a link to one."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _is_store_folder(folder: Path) -> bool:
    """Whether the folder of a store exists; raise when something other than a folder is in its place."""
    try:
        mode = folder.lstat().st_mode
    except FileNotFoundError:
        return False
    what = not_a_file(mode, folder=True)
    if what is not None:
        raise refusal(folder, what, store=folder.name, folder=True)
    return True


def _is_case_insensitive(folder: Path) -> bool:
    probe = folder / f"{TEMP_PREFIX}case.{secrets.token_hex(4)}Ab"
    probe.touch()
    try:
        return (folder / probe.name.swapcase()).exists()
    finally:
        probe.unlink(missing_ok=True)
