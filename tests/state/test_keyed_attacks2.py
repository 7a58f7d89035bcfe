"""More attacks on `KeyedRecoverableState`: compaction, change tracking across splits, failed saves, loads.

Each test states the promise it checks (docs/keyed-state.md) and fails while the library breaks it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from state.keyed_support import Domain, make_keyed, manifest_of, shrink

if TYPE_CHECKING:
    import pytest

    from recoverable.storages import KeyValueStore


async def test_a_compaction_never_saves_a_value_halfway_through_its_edit(
    kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The promise: "a value is saved as it was when it was assigned, or when its edit() block ended."

    A compaction serialises a part from the values in memory, as they are at that instant, including a value
    whose `edit()` block is still running across an await: a crash then loads the value torn halfway through
    its edit (here `pages` changed, `errors` not yet), a value no edit ever left.
    """
    shrink(monkeypatch, max_log=1)  # every save after the first compacts; the one part is the oldest
    domains = make_keyed(kvs, lease_ttl=None, persistence_enabled="explicit_only")
    await domains.initialize()
    domains["a"] = Domain(pages=0, errors=0)
    await domains.persist_state()
    domains["b"] = Domain()  # something to save, so the next save runs (and compacts)
    edited = asyncio.Event()
    release = asyncio.Event()

    async def edit() -> None:
        async with domains.edit("a") as value:
            value.pages = 1
            edited.set()
            await release.wait()  # the edit goes on across an await
            value.errors = 1

    task = asyncio.create_task(edit())
    await edited.wait()
    await domains.persist_state()
    assert len((await manifest_of(kvs)).log) == 1  # it compacted: the part record is of this save
    # The process dies here, the edit unfinished (no teardown): a new process loads what was saved.
    task.cancel()
    again = make_keyed(kvs, lease_ttl=None, persistence_enabled="explicit_only")
    await again.initialize()
    assert again["a"] == Domain(pages=0, errors=0)  # as assigned: the edit never ended before the save
    release.set()
