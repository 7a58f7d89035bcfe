"""Errors: one line on stderr, exit status 1 for what failed and 2 for wrong usage; hostile input is data."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from recoverable.storages import FileSystemStorageClient

if TYPE_CHECKING:
    from pathlib import Path

    from cli._support import Cli


NO_STORE = (
    "names no store: a store is 'default', a name (1 to 63 letters, digits and hyphens) or an id (letters, digits "
    "and '-_.~'); `recoverable stores` lists them"
)
TOO_LONG = "record key of 1100 characters is too long: at most 1024 are allowed"

WRONG_USAGE = {
    "no command": ([], "recoverable: error: a command is required (see 'recoverable --help')"),
    "unknown command": (["nope"], "recoverable: error: No such command 'nope'. (see 'recoverable --help')"),
    "missing argument": (
        ["keys"],
        "recoverable keys: error: Missing argument 'STORE'. (see 'recoverable keys --help')",
    ),
    "unknown option": (
        ["keys", "s", "--bogus"],
        "recoverable keys: error: No such option '--bogus'. (see 'recoverable keys --help')",
    ),
    "unknown storage client": (
        ["--storage-client", "fil_system", "stores"],
        (
            "recoverable: error: Invalid value for '--storage-client': invalid choice 'fil_system' (choose from "
            "'file_system', 'memory', 'redis', 'sql', 'http'); did you mean 'file_system'? (see 'recoverable --help')"
        ),
    ),
    "serving http": (
        ["serve", "--storage-client", "http"],
        (
            "recoverable serve: error: Invalid value for '--storage-client': invalid choice 'http' (choose from "
            "'file_system', 'memory', 'redis', 'sql') (see 'recoverable serve --help')"
        ),
    ),
    "serving http, said before serve": (
        ["--storage-client", "http", "serve"],
        (
            "recoverable serve: error: Invalid value for '--storage-client' (or RECOVERABLE_STORAGE_CLIENT): invalid "
            "choice 'http' (choose from 'file_system', 'memory', 'redis', 'sql') (see 'recoverable serve --help')"
        ),
    ),
    "no value": (
        ["set", "default", "k"],
        (
            "recoverable set: error: give the value once: as VALUE, or with --file FILE (either may be - for "
            "stdin) (see 'recoverable set --help')"
        ),
    ),
    "not a content type": (
        ["set", "default", "k", "v", "--content-type", "json"],
        (
            "recoverable set: error: Invalid value for --content-type: content type 'json' is not of the form "
            "'type/subtype', e.g. 'application/json' (see 'recoverable set --help')"
        ),
    ),
    "no folder": (
        ["import", "no-such-folder", "s"],
        (
            "recoverable import: error: Invalid value for 'DIR': Directory 'no-such-folder' does not exist. (see "
            "'recoverable import --help')"
        ),
    ),
}


@pytest.mark.parametrize(("args", "line"), WRONG_USAGE.values(), ids=WRONG_USAGE.keys())
def test_wrong_usage_is_one_line_and_status_2(cli: Cli, args: list[str], line: str) -> None:
    ran = cli(*args)
    assert ran.code == 2
    assert ran.out == b""
    assert ran.error_line() == line


FAILURES = {
    "a path for a store": (["keys", "../x"], {}, f"recoverable keys: error: '../x' {NO_STORE}"),
    "no such store": (
        ["keys", "no-such-store"],
        {},
        (
            "recoverable keys: error: no store is named 'no-such-store' or has it as its id; `recoverable stores` "
            "lists them"
        ),
    ),
    "a store name too long": (["keys", "x" * 300], {}, f"recoverable keys: error: {'x' * 300!r} {NO_STORE}"),
    "a key too long to read": (["get", "default", "k" * 1100], {}, f"recoverable get: error: {TOO_LONG}"),
    "a key too long to write": (["set", "default", "k" * 1100, "1"], {}, f"recoverable set: error: {TOO_LONG}"),
    "a key of two lines and an escape": (
        ["get", "default", "two\nlines\x1b[2J"],
        {},
        (
            "recoverable get: error: store 'default' has no record 'two\\nlines\\x1b[2J'; `recoverable keys default` "
            "lists its keys"
        ),
    ),
    "redis without a server": (
        ["--storage-client", "redis", "stores"],
        {},
        (
            "recoverable stores: error: RedisStorageClient needs a server: pass url='redis://host:6379/0' or set "
            "RECOVERABLE_REDIS_URL"
        ),
    ),
    "a wrong variable": (
        ["stores"],
        {"RECOVERABLE_HTTP_TIMEOUT_SECS": "soon"},
        "recoverable stores: error: RECOVERABLE_HTTP_TIMEOUT_SECS='soon' is not a positive number of seconds",
    ),
}


@pytest.mark.parametrize(("args", "env", "line"), FAILURES.values(), ids=FAILURES.keys())
def test_a_failure_is_one_line_and_status_1(cli: Cli, args: list[str], env: dict[str, str], line: str) -> None:
    ran = cli(*args, env=env)
    assert ran.code == 1
    assert ran.out == b""
    assert ran.error_line() == line


def test_an_error_of_the_operating_system_is_one_line_and_status_1(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    ran = cli("export", "default", str(tmp_path / "a-file" / "key_value_stores" / "crawl"))
    assert ran.code == 1
    assert ran.error_line() == f"recoverable export: error: Not a directory: {tmp_path / 'a-file' / 'key_value_stores'}"


def _files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if not path.is_dir()]


async def test_hostile_keys_are_data_and_never_paths(cli: Cli, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    hostile = ["../x", "../../escape", "/etc/passwd", "..", ".", "a/../../b", "%2e%2e", "k" * 1024, "\x1b]0;title\x07"]
    for key in hostile:
        ran = cli("set", "default", key, "1")
        assert ran.code == 0, (key, ran.err)
    listed = cli("keys", "default", "--json")
    assert sorted(entry["key"] for entry in listed.json()) == sorted(hostile)
    for key in hostile:
        assert cli("get", "default", key).out == b"1"
    # Nothing was written outside the store's folder.
    store = storage / "key_value_stores" / "default"
    files = _files(tmp_path)
    assert len(files) > len(hostile)
    assert [path for path in files if store not in path.parents] == []
    async with FileSystemStorageClient(storage_dir=storage) as client:
        default = await client.open_key_value_store_client()
        assert sorted([info.key async for info in default.iterate_keys()]) == sorted(hostile)
    # The table shows an escape sequence as text, never as one.
    table = cli("keys", "default")
    assert "\\x1b]0;title\\x07" in table.text
    assert "\x1b" not in table.text
    assert "\x07" not in table.text
