"""Writers of several clients racing on one record: conditional writes lose cleanly and nothing is lost."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conformance.races import create_concurrently, increment_concurrently
from recoverable.errors import VersionConflictError

if TYPE_CHECKING:
    from conformance.conftest import Reopen
    from recoverable.storages import KeyValueStoreClient


async def _stores(reopen_storage_client: Reopen, count: int) -> list[KeyValueStoreClient]:
    """A store named "race" on each of `count` clients of the same storage."""
    return [await (await reopen_storage_client()).open_key_value_store_client(name="race") for _ in range(count)]


async def test_conditional_increments_from_many_clients_lose_nothing(reopen_storage_client: Reopen) -> None:
    writers, increments = 6, 15
    record, conflicts = await increment_concurrently(await _stores(reopen_storage_client, writers), increments)

    assert int(record.value) == writers * increments
    assert conflicts > 0  # the writers did race


async def test_if_absent_has_exactly_one_winner(reopen_storage_client: Reopen) -> None:
    results = await create_concurrently(await _stores(reopen_storage_client, 8))

    winners = [r for r in results if isinstance(r, str)]
    assert len(winners) == 1
    assert all(isinstance(r, VersionConflictError) and r.actual == winners[0] for r in results if r not in winners)
