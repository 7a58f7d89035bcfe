"""`recoverable lease` and `reset`, and how every writing command treats a state record: --yes, --force.

A state record is a record with a lease record `<key>.lease` beside it. The commands ask before they change
one, refuse to when nobody can be asked (stdin is not a terminal) and --yes is missing, and refuse to while
a live owner holds its lease unless --force: here the owner is a real child process holding a RecoverableState.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from recoverable._history import history_prefix
from recoverable._lease_record import LeaseRecord

if TYPE_CHECKING:
    from pathlib import Path

    from cli._support import Backend, Cli

JSON = "application/json"


def _lease(*, pid: int, host: str, expires_in: timedelta) -> bytes:
    now = datetime.now(UTC)
    record = LeaseRecord(owner="a1b2c3", pid=pid, host=host, token=4, acquired_at=now, expires_at=now + expires_in)
    return record.model_dump_json(by_alias=True).encode()


def _ended_pid() -> int:
    """The pid of a process of this host that has ended."""
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(ended.stdout)


async def _seed(backend: Backend, name: str, records: dict[str, bytes]) -> None:
    async with backend.new_client() as client:
        store = await client.open_key_value_store_client(name=name)
        for key, value in records.items():
            await store.set_record(key=key, value=value, content_type=JSON)


async def _keys(backend: Backend, name: str) -> dict[str, bytes]:
    async with backend.new_client() as client:
        store = await client.open_key_value_store_client(name=name)
        found = {}
        async for info in store.iterate_keys():
            record = await store.get_record(key=info.key)
            assert record is not None
            found[info.key] = record.value
        return found


async def test_a_live_owner_is_named_and_only_force_changes_its_state(
    cli: Cli, backend: Backend, owner: subprocess.Popen[str]
) -> None:
    name, args, env = backend.store(), backend.args, backend.env
    lease = cli("lease", name, "STATE", "--json", *args, env=env)
    assert lease.code == 0, lease.err
    seen = lease.json()
    assert (seen["status"], seen["pid"], seen["host"]) == ("live", owner.pid, socket.gethostname())
    assert seen["key"] == "STATE"
    assert seen["lease_key"] == "STATE.lease"
    assert datetime.fromisoformat(seen["expires_at"]) > datetime.now(UTC)
    table = cli("lease", name, "STATE", *args, env=env)
    assert "live" in table.text
    assert f"{owner.pid} on host" in table.text

    for command in ("delete", "reset", "set"):
        extra = ["--file", "-"] if command == "set" else []
        refused = cli(command, name, "STATE", *extra, "--yes", *args, stdin=b"{}", env=env)
        assert refused.code == 1, command
        line = refused.error_line()
        assert line.startswith(f"recoverable {command}: error: state 'STATE' of store {name!r} is owned by process ")
        assert f"is owned by process {owner.pid} on host" in line
        assert "pass --force" in line
    assert (await _keys(backend, name))["STATE"] == b'{"done":1}'

    forced = cli("set", name, "STATE", '{"done": 9}', "--yes", "--force", *args, env=env)
    assert forced.code == 0, forced.err
    assert (await _keys(backend, name))["STATE"] == b'{"done": 9}'


async def test_force_resets_the_state_of_a_live_owner_and_its_death_is_seen(
    cli: Cli, backend: Backend, owner: subprocess.Popen[str]
) -> None:
    name, args, env = backend.store(), backend.args, backend.env
    without_yes = cli("reset", name, "STATE", "--force", *args, env=env)
    assert without_yes.code == 1
    assert "pass --yes" in without_yes.error_line()
    forced = cli("reset", name, "STATE", "--force", "--yes", *args, env=env)
    assert forced.code == 0, forced.err
    assert "deleted the state record 'STATE'" in forced.text
    left = set(await _keys(backend, name))  # the lease stays beside it, and the copies the history keeps
    assert "STATE.lease" in left
    assert "STATE" not in left
    assert all(key == "STATE.lease" or key.startswith(history_prefix("STATE")) for key in left), left

    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=30)
    gone = cli("lease", name, "STATE", "--json", *args, env=env)
    assert gone.json()["status"] == "owner gone"
    assert cli("delete", name, "STATE.lease", "--yes", *args, env=env).code == 0
    assert cli("lease", name, "STATE", "--json", *args, env=env).json()["status"] == "free"


async def test_a_state_record_changes_only_with_yes_when_nobody_can_be_asked(
    cli: Cli, backend: Backend, tmp_path: Path
) -> None:
    name, args, env = backend.store(), backend.args, backend.env
    expired = _lease(pid=os.getpid(), host=socket.gethostname(), expires_in=-timedelta(seconds=5))
    seed = {"STATE": b'{"done": 1}', "STATE.lease": expired, "plain": b"1"}
    await _seed(backend, name, seed)
    assert cli("lease", name, "STATE", "--json", *args, env=env).json()["status"] == "expired"

    # A record without a lease beside it is no state: it changes without --yes.
    assert cli("set", name, "plain", "2", *args, env=env).code == 0
    seed["plain"] = b"2"
    # An export of the store, to import over it.
    folder = tmp_path / "export" / "key_value_stores" / name
    assert cli("export", name, str(folder), *args, env=env).code == 0

    for command in (
        ["set", name, "STATE", "{}"],
        ["delete", name, "STATE"],
        ["delete", name, "STATE.lease"],
        ["reset", name, "plain"],  # reset takes any record for a state's
        ["import", str(folder), name, "--overwrite"],
    ):
        refused = cli(*command, *args, env=env)
        assert refused.code == 1, command
        line = refused.error_line()
        assert line.startswith(f"recoverable {command[0]}: error: this would ")
        assert "pass --yes to do it without being asked (stdin is not a terminal" in line
    assert await _keys(backend, name) == seed

    assert cli("set", name, "STATE", '{"done": 2}', "--yes", *args, env=env).code == 0
    assert (await _keys(backend, name))["STATE"] == b'{"done": 2}'
    imported = cli("import", str(folder), name, "--overwrite", "--yes", *args, env=env)
    assert imported.code == 0, imported.err
    assert await _keys(backend, name) == seed


@pytest.mark.parametrize("backend", ["file_system"], indirect=True)
async def test_reset_deletes_the_state_record_alone_and_lease_reads_every_status(cli: Cli, backend: Backend) -> None:
    name, args = backend.store(), backend.args
    ended = _ended_pid()
    host = socket.gethostname()
    hour = timedelta(hours=1)
    await _seed(
        backend,
        name,
        {
            "STATE": b'{"done": 5}',
            "STATE.lease": _lease(pid=ended, host=host, expires_in=hour),
            "STATE.~history.4": b'{"done": 4}',
            "ELSEWHERE.lease": _lease(pid=1, host="another-host", expires_in=hour),
            "DAMAGED.lease": b'{"owner": ""}',
        },
    )
    statuses = {
        key: cli("lease", name, key, "--json", *args).json()["status"]
        for key in ("STATE", "ELSEWHERE", "DAMAGED", "NOBODY")
    }
    assert statuses == {"STATE": "owner gone", "ELSEWHERE": "live", "DAMAGED": "damaged", "NOBODY": "free"}
    damaged = cli("lease", name, "DAMAGED", "--json", *args).json()
    assert "owner" in damaged["problem"]

    # A process of another host is live as long as its lease has not expired: it is named, --force overrides.
    refused = cli("set", name, "ELSEWHERE", "1", "--yes", *args)
    assert "is owned by process 1 on host 'another-host'" in refused.error_line()
    assert cli("set", name, "ELSEWHERE", "1", "--yes", "--force", *args).code == 0

    assert cli("reset", name, "STATE", "--yes", *args).code == 0
    assert set(await _keys(backend, name)) == {
        "STATE.lease",
        "STATE.~history.4",
        "ELSEWHERE",
        "ELSEWHERE.lease",
        "DAMAGED.lease",
    }
    again = cli("reset", name, "STATE", "--yes", *args)
    assert again.code == 1
    assert again.error_line() == f"recoverable reset: error: store {name!r} has no record 'STATE': nothing to reset"
