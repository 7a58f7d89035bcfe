"""`recoverable history`, `diff` and `rollback` over the saves a RecoverableState keeps, on every storage."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from pydantic import BaseModel

from recoverable import EventManager, KeyedRecoverableState, KeyValueStore, RecoverableState
from recoverable._history import history_prefix, saved_versions
from recoverable.cli import main

if TYPE_CHECKING:
    import subprocess

    from cli._support import Backend, Cli
    from recoverable.storages import StorageClient


class Crawl(BaseModel):
    pages: int = 0
    seen: list[str] = []


def _state(kvs: KeyValueStore) -> RecoverableState[Crawl]:
    return RecoverableState(
        default_state=Crawl(),
        persist_state_key="CRAWL",
        key_value_store=kvs,
        event_manager=EventManager(persist_state_interval=timedelta(hours=1)),
    )


async def _save_four_times(client: StorageClient, name: str) -> None:
    """Saves 1 to 4 of the state CRAWL: save n has n pages; the history keeps the last three."""
    async with _state(await KeyValueStore.open(name=name, storage_client=client)) as state:
        for page in range(4):
            state.current_value.pages += 1
            state.current_value.seen.append(f"https://example.com/{page}")
            await state.persist_state()


async def test_history_diff_and_rollback_of_a_state(cli: Cli, backend: Backend) -> None:
    name, args, env = backend.store(), backend.args, backend.env
    async with backend.new_client() as client:
        await _save_four_times(client, name)
        kept = await saved_versions(await client.open_key_value_store_client(name=name), "CRAWL")

    listed = cli("history", name, "CRAWL", "--json", *args, env=env)
    assert listed.code == 0, listed.err
    assert [(v["version"], v["current"], v["trigger"]) for v in listed.json()] == [
        (4, True, "manual"),
        (3, False, "manual"),
        (2, False, "manual"),
    ]
    assert [(v["key"], v["size"], v["checksum"]) for v in listed.json()] == [
        (version.key, version.size, version.checksum) for version in kept
    ]
    table = cli("history", name, "CRAWL", *args, env=env)
    assert table.code == 0, table.err
    assert "current" in table.text
    assert "3 versions" in table.text

    changed = cli("diff", name, "CRAWL", *args, env=env)
    assert changed.code == 0, changed.err
    assert changed.text.splitlines()[:2] == ["--- version 3", "+++ version 4 (current)"]
    assert '-  "pages": 3,' in changed.text
    assert '+  "pages": 4,' in changed.text
    assert '+    "https://example.com/3"' in changed.text
    described = cli("diff", name, "CRAWL", "2", "--json", *args, env=env).json()
    assert (described["from"]["version"], described["to"]["version"], described["identical"]) == (2, 4, False)
    assert described["changes"] == [
        {"path": "/pages", "change": "changed", "from": 2, "to": 4},
        {"path": "/seen/2", "change": "added", "to": "https://example.com/2"},
        {"path": "/seen/3", "change": "added", "to": "https://example.com/3"},
    ]

    unconfirmed = cli("rollback", name, "CRAWL", "2", *args, env=env)
    assert unconfirmed.code == 1
    assert "pass --yes" in unconfirmed.error_line()
    rolled = cli("rollback", name, "CRAWL", "2", "--yes", *args, env=env)
    assert rolled.code == 0, rolled.err
    assert (
        rolled.text
        == f"rolled back state 'CRAWL' of store {name!r} to version 2: written as save 5 (trigger rollback)\n"
    )
    async with (
        backend.new_client() as client,
        _state(await KeyValueStore.open(name=name, storage_client=client)) as state,
    ):
        assert state.current_value.pages == 2
    after = cli("history", name, "CRAWL", "--json", *args, env=env).json()
    assert (after[0]["version"], after[0]["current"], after[0]["trigger"]) == (5, True, "rollback")
    same = cli("diff", name, "CRAWL", "2", "5", *args, env=env)
    assert same.text == "version 2 and version 5 (current) of state 'CRAWL' are identical\n"

    missing = cli("rollback", name, "CRAWL", "1", "--yes", *args, env=env)
    assert missing.code == 1
    assert missing.error_line().startswith("recoverable rollback: error: state 'CRAWL' has no saved version 1: ")
    nothing = cli("history", name, "NOTHING", *args, env=env)
    assert nothing.code == 1
    assert (
        nothing.error_line()
        == f"recoverable history: error: store {name!r} has no record 'NOTHING' and no saved version of it"
    )


async def test_a_damaged_copy_is_never_rolled_back_to(cli: Cli, backend: Backend) -> None:
    name, args, env = backend.store(), backend.args, backend.env
    async with backend.new_client() as client:
        await _save_four_times(client, name)
        store = await client.open_key_value_store_client(name=name)
        [copy] = [info.key async for info in store.iterate_keys(prefix=history_prefix("CRAWL") + "3.")]
        await store.set_record(key=copy, value=b'{"pages": 300, "seen": []}', content_type="application/json")
        before = await store.get_record(key="CRAWL")

    refused = cli("rollback", name, "CRAWL", "3", "--yes", *args, env=env)
    assert refused.code == 1
    assert "does not match the checksum saved with it" in refused.error_line()
    async with backend.new_client() as client:
        assert await (await client.open_key_value_store_client(name=name)).get_record(key="CRAWL") == before


@pytest.mark.parametrize("backend", ["file_system", "postgres"], indirect=True)
async def test_rollback_refuses_a_live_owner_and_a_keyed_state(
    cli: Cli, backend: Backend, owner: subprocess.Popen[str]
) -> None:
    name, args, env = backend.store(), backend.args, backend.env
    refused = cli("rollback", name, "STATE", "1", "--yes", *args, env=env)
    assert refused.code == 1
    assert f"is owned by process {owner.pid} on host" in refused.error_line()

    async with backend.new_client() as client:
        kvs = await KeyValueStore.open(name=name, storage_client=client)
        keyed: KeyedRecoverableState[int] = KeyedRecoverableState(
            value_type=int, persist_state_key="COUNTS", key_value_store=kvs
        )
        async with keyed:
            for count in range(3):
                keyed["pages"] = count
                await keyed.persist_state()
    versions = cli("history", name, "COUNTS", "--json", *args, env=env).json()
    assert len(versions) > 1
    keyed_refused = cli("rollback", name, "COUNTS", str(versions[1]["version"]), "--yes", *args, env=env)
    assert keyed_refused.code == 1
    assert "is the manifest of a KeyedRecoverableState or RecoverableSet" in keyed_refused.error_line()


@pytest.mark.parametrize("command", ["history", "diff", "rollback"])
def test_the_history_commands_the_documentation_names_exist(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0, capsys.readouterr().err
