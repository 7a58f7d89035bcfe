"""The aliases of `HttpStorageClient` are kept under keys the Apify platform takes, whatever an alias holds."""

from __future__ import annotations

import re

import pytest

from recoverable.storages._http._storage_client import alias_record_key

PLATFORM_KEY = re.compile(r"[a-zA-Z0-9!\-_.'()]{1,256}")
ALIASES = [
    "default",
    "run-1",
    "x" * 63,
    "x" * 64,
    "-a",
    "a_b",
    "a b",
    "..x",
    "%2e%2e",
    "a:b",
    "日本",
    "_41",
    "!x",
    "é" * 300,
]


@pytest.mark.parametrize("alias", ALIASES, ids=lambda a: repr(a[:20]))
def test_every_alias_has_a_key_the_platform_takes(alias: str) -> None:
    assert PLATFORM_KEY.fullmatch(alias_record_key(alias))


def test_alias_keys_are_one_per_alias_and_plain_aliases_keep_theirs() -> None:
    keys = [alias_record_key(alias) for alias in ALIASES]

    assert len(set(keys)) == len(ALIASES)
    assert keys[:3] == ["default", "run-1", "x" * 63]
    assert alias_record_key("_41") != alias_record_key("A")
