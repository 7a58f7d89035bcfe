"""A program that owns a RecoverableState and saves it in a loop, for the two-process ownership tests.

Usage: owner_child.py SPEC_JSON TTL_MS ON_OWNED

SPEC_JSON names the storage client: {"kind": "file_system", "storage_dir": ...}, {"kind": "sql", "url": ...,
"table_prefix": ...}, {"kind": "redis", "url": ..., "key_prefix": ...} or {"kind": "http", "base_url": ...,
"token": ...}. Optional keys: "pad_bytes" (the state carries that many bytes more, to make saves long),
"lock_timeout_ms" (of the file system and SQL clients), "settle_ms" (wait that long after loading before
the first save), "hold_lock" (file system: after the first save, take the
store's writers' lock and keep it, as a process frozen in the middle of a write does), "signals" (the
events come from a `LocalEventManager` handling SIGTERM and SIGINT instead of a manager that emits nothing:
"die" leaves SIGTERM its default handler, so the process ends once the state made its final save;
"carry_on" installs a handler first that prints `CAUGHT` and lets the program go on for ten more rounds,
as a program that catches the signal does, then tear the state down), "persist_ms" (the period of that
manager's PERSIST_STATE, an hour by default) and "explicit" (false: the counter is only counted, `DONE
<done>`, and saved by events alone), "keyed" (the state is a `KeyedRecoverableState` of ints: "done" and
"writer" are keys, and each save also sets "pad_entries" entries, so that saves are long and compact). It
prints one line per event, flushed:

- `OWNER <done> <writer>` once it holds the lease, with the counter it loaded and who saved it;
- `SAVING <done>` before each save, `SAVED <done>` after each save that returned;
- `DONE <done>` at each count when "explicit" is false;
- `LOCKED` once it holds the store's writers' lock (with "hold_lock");
- `REFUSED <json>` and exit 3 when another process holds the lease;
- `LOST <message>` and exit 4 when a save is refused because another process took the state over;
- with "signals": `CAUGHT` when the program's own SIGTERM handler ran, `UNSAVED <done> <message>` for each
  save refused because the state was handed over at the stop, and `TORNDOWN` and exit 0 once
  `teardown()` returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import json
import os
import signal
import sys
import threading
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from recoverable import (
    EventManager,
    KeyedRecoverableState,
    KeyValueStore,
    LocalEventManager,
    RecoverableState,
    StateOwnershipError,
)
from recoverable.storages import FileSystemStorageClient, StorageClient

KEY = "CRAWL"
STORE = "owned"


class Progress(BaseModel):
    done: int = 0
    writer: int = 0
    pad: str = ""


def build_client(spec: dict[str, Any]) -> StorageClient:
    kind = spec["kind"]
    if kind == "file_system":
        lock_timeout = timedelta(milliseconds=spec.get("lock_timeout_ms", 10_000))
        return FileSystemStorageClient(storage_dir=spec["storage_dir"], lock_timeout=lock_timeout)
    if kind == "sql":
        from recoverable.storages import SqlStorageClient  # noqa: PLC0415

        lock_timeout = timedelta(milliseconds=spec.get("lock_timeout_ms", 30_000))
        return SqlStorageClient(spec["url"], table_prefix=spec["table_prefix"], lock_timeout=lock_timeout)
    if kind == "redis":
        from recoverable.storages import RedisStorageClient  # noqa: PLC0415

        return RedisStorageClient(spec["url"], key_prefix=spec["key_prefix"])
    if kind == "http":
        from recoverable.storages import HttpStorageClient  # noqa: PLC0415

        return HttpStorageClient(base_url=spec["base_url"], token=spec["token"])
    raise SystemExit(f"unknown storage client kind {kind!r}")


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(spec: dict[str, Any], ttl_ms: int, on_owned: str) -> int:
    if spec.get("signals"):
        return await main_with_signals(spec, ttl_ms, on_owned)
    if spec.get("keyed"):
        return await main_keyed(spec, ttl_ms, on_owned)
    async with build_client(spec) as client:
        kvs = await KeyValueStore.open(name=STORE, storage_client=client)
        state = RecoverableState(
            default_state=Progress(),
            persist_state_key=KEY,
            key_value_store=kvs,
            event_manager=EventManager(persist_state_interval=timedelta(hours=1)),
            lease_ttl=timedelta(milliseconds=ttl_ms),
            on_owned="wait" if on_owned == "wait" else "fail",
        )
        loaded = await take(state)
        if loaded is None:
            return 3
        loaded.pad = "x" * spec.get("pad_bytes", 0)
        await asyncio.sleep(spec.get("settle_ms", 0) / 1000)
        while True:
            state.current_value.done += 1
            say(f"SAVING {state.current_value.done}")
            try:
                await state.persist_state()
            except StateOwnershipError as exc:
                say(f"LOST {exc}")
                return 4
            except Exception as exc:
                # A save of a stale owner resumed in the middle of it may also fail on the store (its lock is
                # busy with the new owner's saves): it did not land either. The child ends without closing
                # its client: a SQLite client whose last write failed that way can take long to close.
                say(f"LOST {type(exc).__name__}: {exc}")
                os._exit(4)
            say(f"SAVED {state.current_value.done}")
            if spec.get("hold_lock"):
                await hold_lock(kvs)
                await asyncio.Event().wait()  # frozen from here on, by the test
            await asyncio.sleep(0.1)


async def main_keyed(spec: dict[str, Any], ttl_ms: int, on_owned: str) -> int:
    """The owner of a keyed state: see "keyed" in the module docstring."""
    async with build_client(spec) as client:
        kvs = await KeyValueStore.open(name=STORE, storage_client=client)
        state = KeyedRecoverableState(
            value_type=int,
            persist_state_key=KEY,
            key_value_store=kvs,
            event_manager=EventManager(persist_state_interval=timedelta(hours=1)),
            lease_ttl=timedelta(milliseconds=ttl_ms),
            on_owned="wait" if on_owned == "wait" else "fail",
        )
        try:
            await state.initialize()
        except StateOwnershipError as exc:
            say("REFUSED " + json.dumps({"owner": exc.owner, "message": str(exc)}))
            return 3
        say(f"OWNER {state.get('done', 0)} {state.get('writer', 0)}")
        state["writer"] = os.getpid()
        pad = spec.get("pad_entries", 0)
        await asyncio.sleep(spec.get("settle_ms", 0) / 1000)
        while True:
            done = state["done"] = state.get("done", 0) + 1
            for i in range(pad):
                state[f"pad-{(done * pad + i) % (4 * pad)}"] = done
            say(f"SAVING {done}")
            try:
                await state.persist_state()
            except StateOwnershipError as exc:
                say(f"LOST {exc}")
                return 4
            except Exception as exc:
                say(f"LOST {type(exc).__name__}: {exc}")  # as in main(): it did not land either
                os._exit(4)
            say(f"SAVED {done}")
            await asyncio.sleep(0.1)


async def main_with_signals(spec: dict[str, Any], ttl_ms: int, on_owned: str) -> int:
    """The owner of a program that stops on a signal: see "signals" in the module docstring."""
    caught: list[bool] = []
    if spec["signals"] == "carry_on":

        def carry_on(signum: int, frame: object) -> None:
            del signum, frame
            caught.append(True)
            say("CAUGHT")

        signal.signal(signal.SIGTERM, carry_on)
    explicit = spec.get("explicit", True)
    async with build_client(spec) as client:
        kvs = await KeyValueStore.open(name=STORE, storage_client=client)
        events = LocalEventManager(
            persist_state_interval=timedelta(milliseconds=spec.get("persist_ms", 3_600_000)),
            system_info_interval=timedelta(hours=1),
        )
        # "default_events": the state is given no manager and uses the library's default one, which handles
        # the signals itself (its interval from RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS, set by the test).
        default_events = spec.get("default_events", False)
        async with contextlib.nullcontext() if default_events else events:
            state = RecoverableState(
                default_state=Progress(),
                persist_state_key=KEY,
                key_value_store=kvs,
                event_manager=None if default_events else events,
                lease_ttl=timedelta(milliseconds=ttl_ms),
                on_owned="wait" if on_owned == "wait" else "fail",
            )
            loaded = await take(state)
            if loaded is None:
                return 3
            rounds_after = 0
            while rounds_after < 10:
                rounds_after += bool(caught)
                state.current_value.done += 1
                done = state.current_value.done
                if not explicit:
                    say(f"DONE {done}")
                else:
                    say(f"SAVING {done}")
                    try:
                        await state.persist_state()
                    except StateOwnershipError as exc:
                        if "let go of its lease when the process began stopping" not in str(exc):
                            say(f"LOST {exc}")
                            return 4
                        say(f"UNSAVED {done} {exc}")  # handed over: the handler may not have run yet
                    else:
                        say(f"SAVED {done}")
                await asyncio.sleep(0.1)
            await state.teardown()
            say("TORNDOWN")
    return 0


async def take(state: RecoverableState[Progress]) -> Progress | None:
    """Initialize the state, saying OWNER (what was loaded, and who wrote it) or REFUSED; None when refused."""
    try:
        loaded = await state.initialize()
    except StateOwnershipError as exc:
        say("REFUSED " + json.dumps({"owner": exc.owner, "message": str(exc)}))
        return None
    say(f"OWNER {loaded.done} {loaded.writer}")
    loaded.writer = os.getpid()
    return loaded


async def hold_lock(kvs: KeyValueStore) -> None:
    """Take the lock a write of the store takes, and never let go of it.

    File system: the store's writers' lock, in a thread. SQL: a transaction that locked the store's row
    (SQLite: the database's write lock).
    """
    client: Any = kvs.client
    if hasattr(client, "_dir"):
        from recoverable.storages._file_system._writers_lock import LockWait  # noqa: PLC0415

        taken = threading.Event()

        def hold() -> None:
            with client._dir.write_lock(LockWait(timeout=10)):
                taken.set()
                threading.Event().wait()

        threading.Thread(target=hold, daemon=True).start()
        taken.wait()
    else:
        # Kept referenced: a context manager that is collected ends its transaction.
        _held.append(client._db.transaction())
        transaction = await _held[-1].__aenter__()
        await client._bump(transaction)
    say("LOCKED")


_held: list[Any] = []


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1)  # the tests ask a child that hangs where it is
    sys.exit(asyncio.run(main(json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3])))
