"""Writers racing on one record from clients of their own; shared by the conformance suite and backend tests."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from recoverable.errors import VersionConflictError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from recoverable.storages import KeyValueStoreClient, StoredRecord

JSON = "application/json"


async def increment_concurrently(stores: Sequence[KeyValueStoreClient], increments: int) -> tuple[StoredRecord, int]:
    """Each store adds `increments` to the counter "n" with read, then conditional write, retried on conflict.

    Every writer yields between its read and its write, so the writers really race. Returns the counter's
    final record and how many writes lost.
    """
    await stores[0].set_record(key="n", value=b"0", content_type=JSON, if_absent=True)
    conflicts = 0

    async def writer(store: KeyValueStoreClient) -> None:
        nonlocal conflicts
        done = 0
        while done < increments:
            record = await store.get_record(key="n")
            assert record is not None
            await asyncio.sleep(0)
            try:
                await store.set_record(
                    key="n", value=str(int(record.value) + 1).encode(), content_type=JSON, if_version=record.version
                )
            except VersionConflictError:
                conflicts += 1
                continue
            done += 1

    await asyncio.gather(*(writer(store) for store in stores))
    record = await stores[0].get_record(key="n")
    assert record is not None
    return record, conflicts


async def create_concurrently(stores: Sequence[KeyValueStoreClient]) -> list[str | BaseException]:
    """Each store writes the record "lease" at once, on condition that it is absent; what each got."""
    return await asyncio.gather(
        *(
            store.set_record(key="lease", value=str(i).encode(), content_type=JSON, if_absent=True)
            for i, store in enumerate(stores)
        ),
        return_exceptions=True,
    )
