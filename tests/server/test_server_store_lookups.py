"""Creating and looking up stores costs the same however many stores there are: nothing lists them all."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
import pytest
from typing_extensions import override

from recoverable.storages import FileSystemStorageClient, KeyValueStoreMetadata

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path


class _Counting(FileSystemStorageClient):
    """The real file system client, counting the listings asked of it and the metadata files it reads."""

    def __init__(self, storage_dir: Path) -> None:
        super().__init__(storage_dir=storage_dir)
        self.listings = 0
        self.reads: list[str] = []

    @override
    async def list_key_value_stores(self) -> list[KeyValueStoreMetadata]:
        self.listings += 1
        return await super().list_key_value_stores()

    def _read_metadata_counted(self, folder: Path) -> KeyValueStoreMetadata | None:
        self.reads.append(folder.name)
        return FileSystemStorageClient._read_metadata(folder)

    def counted(self) -> tuple[int, list[str]]:
        """The listings and reads since the last call."""
        result = self.listings, self.reads
        self.listings, self.reads = 0, []
        return result


@pytest.fixture
def counting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> _Counting:
    backend = _Counting(tmp_path / "storage")
    monkeypatch.setattr(backend, "_read_metadata", backend._read_metadata_counted)
    return backend


async def test_creating_and_finding_stores_does_not_read_every_store(
    counting: _Counting, tmp_path: Path, serve: Callable[..., AbstractAsyncContextManager[str]]
) -> None:
    behind = FileSystemStorageClient(storage_dir=tmp_path / "storage")  # another process, in effect
    for i in range(50):
        await behind.open_key_value_store_client(name=f"old-{i}")
    async with serve(storage_client=counting) as url, httpx.AsyncClient(base_url=url) as api:
        stores = "/v2/key-value-stores"
        counting.counted()

        created = await api.post(stores, params={"name": "new"})
        assert created.status_code == 201
        new_id = created.json()["data"]["id"]
        found = await api.post(stores, params={"name": "old-7"})  # made before the server saw it
        assert found.status_code == 200
        again = await api.post(stores, params={"name": "new"})
        assert (again.status_code, again.json()["data"]["id"]) == (200, new_id)
        assert (await api.get(f"{stores}/~new")).status_code == 200
        assert (await api.get(f"{stores}/{new_id}")).status_code == 200
        assert (await api.put(f"{stores}/~old-7/records/k", content=b"v")).status_code == 201
        listings, reads = counting.counted()
        assert listings == 0
        assert set(reads) <= {"new", "old-7"}, reads

        # A name never seen is looked up by name: its own folder only, no listing.
        assert (await api.get(f"{stores}/~old-8")).status_code == 200
        assert counting.counted() == (0, ["old-8"])
        assert (await api.get(f"{stores}/~missing")).status_code == 404
        assert counting.counted() == (0, [])
        # An id never seen costs one look at every folder, each metadata file read once, and never again.
        late = await (await behind.open_key_value_store_client(name="late")).get_metadata()
        assert (await api.get(f"{stores}/{late.id}")).status_code == 200
        assert (await api.get(f"{stores}/~late")).status_code == 200
        assert (await api.get(f"{stores}/0123456789abcdefg")).status_code == 404
        listings, reads = counting.counted()
        assert listings == 0
        assert "late" in reads
        assert len(reads) == len(set(reads))
        assert (await api.get(f"{stores}/0123456789abcdefh")).status_code == 404
        assert counting.counted() == (0, [])

        # Dropped and made again behind the server's back: the new store is found by its name and its id.
        old = await behind.open_key_value_store_client(name="old-9")
        old_id = (await old.get_metadata()).id
        await old.drop()
        remade = await (await behind.open_key_value_store_client(name="old-9")).get_metadata()
        assert remade.id != old_id
        assert (await api.get(f"{stores}/{old_id}")).status_code == 404
        by_id = await api.get(f"{stores}/{remade.id}")
        assert (by_id.status_code, by_id.json()["data"]["name"]) == (200, "old-9")
        assert (await api.get(f"{stores}/~old-9")).json()["data"]["id"] == remade.id


async def test_lookups_of_unknown_names_list_nothing(
    counting: _Counting, serve: Callable[..., AbstractAsyncContextManager[str]]
) -> None:
    async with serve(storage_client=counting) as url, httpx.AsyncClient(base_url=url) as api:
        counting.counted()
        answers = await asyncio.gather(*(api.get(f"/v2/key-value-stores/~nobody-{i}") for i in range(40)))
        assert {answer.status_code for answer in answers} == {404}
        assert counting.counted() == (0, [])
