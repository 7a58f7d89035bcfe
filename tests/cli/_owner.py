"""A program that owns a RecoverableState until it is killed, for the tests of `--force` and `recoverable lease`.

Usage: _owner.py SPEC_JSON STORE KEY

SPEC_JSON names the storage client as tests/cli/_support.py gives it (`Backend.spec`). The program takes the
state's lease (for five minutes, renewed), saves the state once, prints `READY` and waits to be killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from recoverable import EventManager, KeyValueStore, RecoverableState
from recoverable.storages import FileSystemStorageClient, HttpStorageClient, StorageClient


class Progress(BaseModel):
    done: int = 0


def build_client(spec: dict[str, Any]) -> StorageClient:
    kind = spec["kind"]
    if kind == "file_system":
        return FileSystemStorageClient(storage_dir=spec["storage_dir"])
    if kind == "sql":
        from recoverable.storages import SqlStorageClient  # noqa: PLC0415

        return SqlStorageClient(spec["url"])
    if kind == "redis":
        from recoverable.storages import RedisStorageClient  # noqa: PLC0415

        return RedisStorageClient(spec["url"])
    assert kind == "http", kind
    return HttpStorageClient(base_url=spec["url"], token=spec["token"])


async def main(spec: dict[str, Any], store: str, key: str) -> None:
    async with build_client(spec) as client:
        kvs = await KeyValueStore.open(name=store, storage_client=client)
        state = RecoverableState(
            default_state=Progress(),
            persist_state_key=key,
            key_value_store=kvs,
            event_manager=EventManager(persist_state_interval=timedelta(hours=1)),
            lease_ttl=timedelta(minutes=5),
        )
        await state.initialize()
        state.current_value.done = 1
        await state.persist_state()
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]))
