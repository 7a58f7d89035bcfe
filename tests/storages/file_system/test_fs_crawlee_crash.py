"""A process writing into a store Crawlee made is killed with SIGKILL at random moments; Crawlee and we read it.

The child keeps writing in Crawlee's layout: a large record of one content type, a record whose content type
changes at every write, a key created and deleted again, and a `RecoverableState`. After each kill:

- this library reads the old or the new value of every record, never a mix;
- the real Crawlee reads every record whole too, with the two windows that its format cannot close (see
  `StoreDir._write_crawlee`): the record whose content type was changing may show its new bytes under the
  old type, and a key whose first write or delete was cut short may be listed without a value;
- after this library wrote once more, Crawlee reads every record as this library does.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import textwrap
from typing import TYPE_CHECKING, Any

import pytest
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storage_clients import FileSystemStorageClient as CrawleeFileSystemStorageClient

from recoverable._history import history_prefix
from recoverable.storages import KeyValueStore

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from crawlee.storage_clients._file_system import FileSystemKeyValueStoreClient as CrawleeStore

    from recoverable.storages import StorageClient

pytestmark = pytest.mark.slow

ROUNDS = 12

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pydantic import BaseModel
    from recoverable import RecoverableState
    from recoverable.events import EventManager
    from recoverable.storages import FileSystemStorageClient, KeyValueStore

    class Progress(BaseModel):
        i: int = 0
        pad: str = ""

    async def main():
        kvs = await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=sys.argv[1]))
        state = RecoverableState(
            default_state=Progress(), persist_state_key="STATE", key_value_store=kvs, event_manager=EventManager(),
            lease_ttl=None,
        )
        await state.initialize()
        i = int(sys.argv[2])
        print("writing", flush=True)
        while True:
            i += 1
            await kvs.set_value("big", {"i": i, "pad": "x" * (i % 7 * 50_000)})
            await kvs.set_value("flip", {"i": i} if i % 2 else f"text {i}")
            await kvs.set_value(f"new-{i}", [i])
            await kvs.delete_value(f"new-{i}")
            state.current_value.i = i
            state.current_value.pad = "y" * (i % 5 * 20_000)
            await state.persist_state()

    asyncio.run(main())
    """
)


async def _crawlee(storage_dir: Path) -> CrawleeStore:
    configuration = CrawleeConfiguration(storage_dir=str(storage_dir), purge_on_start=False)
    return await CrawleeFileSystemStorageClient().create_kvs_client(configuration=configuration)


COPIES = history_prefix("STATE")
"""What the keys of the copies of the state's saves start with."""


def _whole_big(value: Any) -> bool:
    return isinstance(value, dict) and value.get("pad") == "x" * (value["i"] % 7 * 50_000)


def _whole_state(value: Any) -> bool:
    return isinstance(value, dict) and value.get("pad") == "y" * (value["i"] % 5 * 20_000)


def _whole_flip(value: Any) -> bool:
    if isinstance(value, dict):
        return value["i"] % 2 == 1
    return isinstance(value, str) and value.startswith("text ") and int(value[5:]) % 2 == 0


async def _crawlee_reads(storage_dir: Path, *, settled: bool) -> dict[str, Any]:
    """What Crawlee reads; with `settled`, every listed key must have a whole value."""
    store = await _crawlee(storage_dir)
    seen: dict[str, Any] = {}
    for info in [info async for info in store.iterate_keys()]:
        record = await store.get_value(key=info.key)
        if record is None:
            # A key whose first write or delete was cut short (a sidecar without its file): a `new-` key, or a
            # copy the state's history was making of a save, each a key of its own; or the record whose content
            # type was changing, read as its old type (text read as JSON fails in Crawlee).
            assert not settled, f"Crawlee lists {info.key!r} but cannot read it"
            assert info.key.startswith(("new-", COPIES)) or info.key == "flip", info.key
            continue
        seen[info.key] = record.value
    assert _whole_big(seen["big"]), str(seen["big"])[:80]
    assert _whole_state(seen["STATE"]), str(seen["STATE"])[:80]
    if "flip" in seen and not _whole_flip(seen["flip"]):
        # New JSON bytes under the old text type: the new value, typed as the old one.
        assert not settled
        assert isinstance(seen["flip"], str)
        assert _whole_flip(json.loads(seen["flip"]))
    for key, value in seen.items():
        if key.startswith("new-"):  # killed between its write and its delete
            assert value == [int(key[4:])]
        if key.startswith(COPIES):  # a copy the history keeps of a save: that save, whole
            assert _whole_state(value), key
    return seen


async def test_sigkill_while_writing_into_a_crawlee_store(
    storage_dir: Path, python: str, child_env: dict[str, str], restart: Callable[[], StorageClient]
) -> None:
    crawlee = await _crawlee(storage_dir)
    await crawlee.set_value(key="made-by", value="crawlee")
    rng = random.Random(8)
    counter = 0
    for round_ in range(ROUNDS):
        child = await asyncio.create_subprocess_exec(
            python, "-c", WRITER, str(storage_dir), str(counter), env=child_env, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert child.stdout is not None
            assert await child.stdout.readline() == b"writing\n"
            await asyncio.sleep(0.05 + rng.random() * 0.3)
        finally:
            child.send_signal(signal.SIGKILL)
            await child.communicate()
        assert child.returncode == -signal.SIGKILL, round_

        await _crawlee_reads(storage_dir, settled=False)
        ours = await KeyValueStore.open(storage_client=restart())
        big = await ours.get_value("big")
        assert _whole_big(big), round_
        assert _whole_flip(await ours.get_value("flip")), round_
        assert _whole_state(await ours.get_value("STATE")), round_
        assert await ours.get_value("made-by") == "crawlee"
        leftovers = [info.key for info in await ours.list_keys() if info.key.startswith("new-")]
        assert len(leftovers) <= 1, leftovers
        for key in leftovers:  # killed between its write and its delete
            assert await ours.get_value(key) == [int(key[4:])]
            assert await ours.delete_value(key)

        # One write of this library completes what the kill cut short; Crawlee then reads it all whole.
        await ours.set_value("after-round", round_)
        seen = await _crawlee_reads(storage_dir, settled=True)
        assert seen["after-round"] == round_
        assert seen["made-by"] == "crawlee"
        assert seen["big"] == big
        assert not [
            path.name for path in (storage_dir / "key_value_stores" / "default").iterdir() if path.name.startswith(".~")
        ]
        counter = big["i"] + 10
