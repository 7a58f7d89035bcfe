"""Storage client that keeps stores as folders on local disk: the default, embedded, no server."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError
from typing_extensions import override

from recoverable.configuration import Configuration
from recoverable.errors import InvalidStoreNameError, StorageBackendError, StoreNotFoundError
from recoverable.storages._base import StorageClient
from recoverable.storages._file_system._key_value_store_client import FileSystemKeyValueStoreClient
from recoverable.storages._file_system._layout import METADATA_FILE, TEMP_PREFIX, alias_dir_name
from recoverable.storages._file_system._no_follow import not_a_file, open_folder, open_regular_file, read_all, refusal
from recoverable.storages._file_system._store_dir import create_exclusive, fsync_dir, store_dir_for
from recoverable.storages._models import KeyValueStoreMetadata, new_store_id
from recoverable.storages._validation import validate_store_reference

if TYPE_CHECKING:
    from recoverable.storages._file_system._store_dir import StoreDir

__all__ = ["FileSystemStorageClient"]

_SUBDIR = "key_value_stores"


class FileSystemStorageClient(StorageClient):
    """Stores as folders under `storage_dir/key_value_stores/`, readable with any text editor.

    Every write is all-or-nothing and durable when it returns (temp file, fsync, rename, fsync of the
    folder: one such write per record write). A store can be opened by name, alias or id after a
    restart. Folders written by Crawlee for Python (record files with `.__metadata__.json` sidecars)
    are read as they are, and a record is moved to this layout the first time it is written again.

    Writers take an exclusive `flock` on the store's `.lock`, so conditional writes stay atomic between
    processes on one machine. POSIX only (Linux, macOS); network file systems must honour `flock`.

    Args:
        storage_dir: The root folder; `RECOVERABLE_STORAGE_DIR` (default `./storage`) when omitted.
        configuration: Where `storage_dir` comes from when it is not given.
    """

    def __init__(
        self, *, storage_dir: str | os.PathLike[str] | None = None, configuration: Configuration | None = None
    ) -> None:
        if storage_dir is None:
            storage_dir = (configuration or Configuration.from_env()).storage_dir
        self._root = Path(storage_dir)
        self._case_insensitive: bool | None = None
        self._id_dirs: dict[str, Path] = {}
        self._lock = threading.Lock()

    @property
    def storage_dir(self) -> Path:
        """The root folder of this client's stores."""
        return self._root

    @property
    def _stores_dir(self) -> Path:
        return self._root / _SUBDIR

    def _error(self, action: str, exc: OSError, store: str | None) -> StorageBackendError:
        return StorageBackendError(
            f"could not {action} in {self._stores_dir}: {exc.strerror or exc} "
            "(check that the folder exists and is writable)",
            store=store,
        )

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
        try:
            return await asyncio.to_thread(self._open, id=id, name=name, alias=alias)
        except OSError as exc:
            raise self._error(f"open key-value store {label!r}", exc, label) from exc

    def _open(self, *, id: str | None, name: str | None, alias: str | None) -> FileSystemKeyValueStoreClient:
        self._ensure_root()
        if id is not None:
            folder, found = self._find_by_id(id)
            return self._client(folder, found)
        if name is not None:
            if name == "default":
                raise InvalidStoreNameError(
                    "the store name 'default' is reserved for the default store: open that one without "
                    "a name, or pick another name",
                    store=name,
                )
            folder = self._stores_dir / name
        else:
            folder = self._stores_dir / alias_dir_name(alias or "default")
        with self._lock:
            metadata = self._read_metadata(folder) if _is_store_folder(folder) else None
            if metadata is None:
                metadata = self._create(folder, name)
        if name is not None and metadata.name is not None and metadata.name != name:
            raise InvalidStoreNameError(
                f"store name {name!r} clashes with the existing store {metadata.name!r} in {folder}: this "
                "file system ignores the case of names; pick a name that differs by more than case",
                store=name,
            )
        self._id_dirs[metadata.id] = folder
        return self._client(folder, metadata)

    def _client(self, folder: Path, metadata: KeyValueStoreMetadata) -> FileSystemKeyValueStoreClient:
        store_dir: StoreDir = store_dir_for(
            folder, label=metadata.name or metadata.id, case_insensitive=bool(self._case_insensitive)
        )
        return FileSystemKeyValueStoreClient(metadata=metadata, store_dir=store_dir)

    def _ensure_root(self) -> None:
        if self._case_insensitive is not None and self._stores_dir.is_dir():
            return
        self._stores_dir.mkdir(parents=True, exist_ok=True)
        self._case_insensitive = _is_case_insensitive(self._stores_dir)

    def _create(self, folder: Path, name: str | None) -> KeyValueStoreMetadata:
        folder.mkdir(exist_ok=True)
        fsync_dir(folder.parent)
        now = datetime.now(UTC)
        metadata = KeyValueStoreMetadata(id=new_store_id(), name=name, created_at=now, modified_at=now, accessed_at=now)
        body = json.dumps(metadata.model_dump(mode="json", by_alias=True), indent=2).encode()
        if not create_exclusive(folder, METADATA_FILE, body):
            # Another process created the store at the same moment: its metadata is the store's.
            existing = self._read_metadata(folder)
            if existing is not None:
                return existing
        return metadata

    @staticmethod
    def _read_metadata(folder: Path) -> KeyValueStoreMetadata | None:
        """Read a store's metadata; a folder without it (made by hand) gets one on first open.

        Neither the folder nor the metadata file may be a link (or anything but a folder and a regular file).
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
            if isinstance(data, dict):
                # Crawlee writes snake_case keys; both spellings are accepted.
                data.setdefault("modified_at", data.get("created_at"))
                data.setdefault("accessed_at", data.get("modified_at"))
            return KeyValueStoreMetadata.model_validate(data)
        except (ValueError, ValidationError) as exc:
            raise StorageBackendError(
                f"the metadata file {folder / METADATA_FILE} is damaged ({exc}); restore it from a backup "
                "or move it away to let the store get a new id",
                store=folder.name,
            ) from exc

    def _find_by_id(self, id: str) -> tuple[Path, KeyValueStoreMetadata]:
        known = self._id_dirs.get(id)
        if known is not None and _is_real_folder(known):
            # The folder may hold another store by now (dropped, then created again under the same name).
            metadata = self._read_metadata(known)
            if metadata is not None and metadata.id == id:
                return known, metadata
        for folder in sorted(self._stores_dir.iterdir()):
            if folder.name.startswith(TEMP_PREFIX) or not _is_real_folder(folder):
                continue
            try:
                metadata = self._read_metadata(folder)
            except StorageBackendError:
                continue
            if metadata is not None:
                self._id_dirs[metadata.id] = folder
                if metadata.id == id:
                    return folder, metadata
        raise StoreNotFoundError(f"no key-value store has the id {id!r} in {self._stores_dir}", store=id)

    @override
    async def list_key_value_stores(self) -> list[KeyValueStoreMetadata]:
        try:
            return await asyncio.to_thread(self._list)
        except OSError as exc:
            raise self._error("list the key-value stores", exc, None) from exc

    def _list(self) -> list[KeyValueStoreMetadata]:
        if not self._stores_dir.is_dir():
            return []
        found: list[KeyValueStoreMetadata] = []
        for folder in self._stores_dir.iterdir():
            if folder.name.startswith(TEMP_PREFIX) or not _is_real_folder(folder):
                continue
            try:
                metadata = self._read_metadata(folder)
            except StorageBackendError:
                continue
            if metadata is not None:
                self._id_dirs[metadata.id] = folder
                found.append(metadata)
        return sorted(found, key=lambda m: m.created_at)


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
