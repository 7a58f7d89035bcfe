"""Listing keys: code-point order, exclusive_start_key, limit, prefix, their combinations, paging."""

from __future__ import annotations

import pytest

from recoverable.storages import KeyInfo, KeyValueStore, KeyValueStoreClient

JSON = "application/json"

# Chosen so that code-point order differs from locale, case-insensitive and UTF-16 orders.
KEYS = [
    "a",
    "A",
    "a/b",
    "a/c",
    "a/b/c",
    "ab",
    "abc",
    "b",
    "B",
    "b-1",
    "b_1",
    "b.1",
    "é",
    "z",
    "~",
    "\uffef",
    "🔑",
    "🔑🔑",
    "10",
    "9",
    " ",
    "%",
]


async def _keys(
    store: KeyValueStoreClient,
    *,
    exclusive_start_key: str | None = None,
    limit: int | None = None,
    prefix: str | None = None,
) -> list[str]:
    return [
        info.key
        async for info in store.iterate_keys(exclusive_start_key=exclusive_start_key, limit=limit, prefix=prefix)
    ]


@pytest.fixture
async def filled(store: KeyValueStoreClient) -> KeyValueStoreClient:
    for key in KEYS:
        await store.set_record(key=key, value=key.encode(), content_type=JSON)
    return store


def _expected(
    *, exclusive_start_key: str | None = None, limit: int | None = None, prefix: str | None = None
) -> list[str]:
    keys = sorted(KEYS)
    if exclusive_start_key is not None:
        keys = [k for k in keys if k > exclusive_start_key]
    if prefix:
        keys = [k for k in keys if k.startswith(prefix)]
    return keys if limit is None else keys[:limit]


async def test_empty_store_lists_nothing(store: KeyValueStoreClient) -> None:
    assert await _keys(store) == []
    assert await _keys(store, prefix="a", exclusive_start_key="a", limit=3) == []


async def test_keys_in_code_point_order(filled: KeyValueStoreClient) -> None:
    listed = await _keys(filled)

    assert listed == sorted(KEYS)
    assert listed == sorted(KEYS, key=lambda k: k.encode("utf-8"))
    # Spot checks that a wrong order (locale, case folding, UTF-16) would break.
    assert listed.index("B") < listed.index("a")
    assert listed.index("10") < listed.index("9")
    assert listed.index("\uffef") < listed.index("🔑")


async def test_key_infos_carry_sizes(store: KeyValueStoreClient) -> None:
    await store.set_record(key="one", value=b"x", content_type=JSON)
    await store.set_record(key="three", value="é!".encode(), content_type="text/plain; charset=utf-8")
    await store.set_record(key="zero", value=b"", content_type="application/octet-stream")

    infos = [info async for info in store.iterate_keys()]

    assert infos == [KeyInfo(key="one", size=1), KeyInfo(key="three", size=3), KeyInfo(key="zero", size=0)]


async def test_sizes_follow_overwrites(store: KeyValueStoreClient) -> None:
    await store.set_record(key="k", value=b"12345", content_type=JSON)
    await store.set_record(key="k", value=b"12", content_type=JSON)

    assert [info async for info in store.iterate_keys()] == [KeyInfo(key="k", size=2)]


@pytest.mark.parametrize("start", ["a", "a/b", "ab", "aa", "", "0", "é", "🔑", "🔑🔑", "\U0010ffff", "B", "b.1"])
async def test_exclusive_start_key(filled: KeyValueStoreClient, start: str) -> None:
    assert await _keys(filled, exclusive_start_key=start) == _expected(exclusive_start_key=start)


@pytest.mark.parametrize("limit", [1, 2, 5, len(KEYS) - 1, len(KEYS), len(KEYS) + 10])
async def test_limit(filled: KeyValueStoreClient, limit: int) -> None:
    assert await _keys(filled, limit=limit) == _expected(limit=limit)


@pytest.mark.parametrize("prefix", ["a", "a/", "a/b", "ab", "b", "B", "🔑", "x", "", "~", "abcd", "%"])
async def test_prefix(filled: KeyValueStoreClient, prefix: str) -> None:
    assert await _keys(filled, prefix=prefix) == _expected(prefix=prefix)


@pytest.mark.parametrize(
    ("start", "limit", "prefix"),
    [
        ("a", None, "a"),
        ("a/b", None, "a/"),
        ("a/b", 1, "a/"),
        ("a/c", None, "a/"),
        ("", 2, "a"),
        ("0", 3, "b"),
        ("b", None, "a"),
        ("z", 5, "a"),
        ("a", 1, "ab"),
        ("ab", 10, "a"),
        ("🔑", None, "🔑"),
        (None, 1, "b"),
        (None, 2, "a/"),
        ("B", 3, None),
    ],
)
async def test_combinations(filled: KeyValueStoreClient, start: str | None, limit: int | None, prefix: str) -> None:
    expected = _expected(exclusive_start_key=start, limit=limit, prefix=prefix)
    assert await _keys(filled, exclusive_start_key=start, limit=limit, prefix=prefix) == expected


async def test_listing_reflects_deletes_and_new_keys(filled: KeyValueStoreClient) -> None:
    await filled.delete_record(key="ab")
    await filled.set_record(key="aa", value=b"1", content_type=JSON)

    expected = sorted([*(k for k in KEYS if k != "ab"), "aa"])
    assert await _keys(filled) == expected
    assert await _keys(filled, prefix="a", exclusive_start_key="a/c") == [
        k for k in expected if k > "a/c" and k[0] == "a"
    ]


async def test_paging_through_2500_keys(store: KeyValueStoreClient) -> None:
    keys = [f"item/{i:05}" for i in range(2500)]
    # Written out of order, with some noise around the prefix.
    for key in [*keys[1::2], *keys[::2], "item", "item0", "iteM/1", "items/1"]:
        await store.set_record(key=key, value=b"1", content_type=JSON)

    pages: list[list[str]] = []
    start: str | None = None
    while True:
        page = await _keys(store, exclusive_start_key=start, limit=300, prefix="item/")
        if not page:
            break
        pages.append(page)
        start = page[-1]

    assert [len(p) for p in pages] == [300] * 8 + [100]
    assert [k for page in pages for k in page] == keys
    everything = await _keys(store)
    assert len(everything) == 2504
    assert everything == sorted(everything)


async def test_writes_while_iterating_do_not_break_the_listing(filled: KeyValueStoreClient) -> None:
    seen = []
    async for info in filled.iterate_keys():
        seen.append(info.key)
        if info.key == "a":
            await filled.set_record(key="zz-added", value=b"1", content_type=JSON)
    assert set(seen) >= set(KEYS)
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen)


# --- through the facade -------------------------------------------------------------------------------


async def test_facade_listing(kvs: KeyValueStore) -> None:
    for key in KEYS:
        await kvs.set_value(key, key)

    assert [info.key for info in await kvs.list_keys()] == sorted(KEYS)
    assert [info.key async for info in kvs.iterate_keys(prefix="a/")] == _expected(prefix="a/")
    assert [i.key for i in await kvs.list_keys(exclusive_start_key="a", limit=3, prefix="a")] == _expected(
        exclusive_start_key="a", limit=3, prefix="a"
    )
    assert await kvs.list_keys(prefix="a") == [KeyInfo(key=k, size=len(k.encode())) for k in _expected(prefix="a")]


@pytest.mark.parametrize("limit", [0, -1, True, 1.5, "3"])
async def test_facade_refuses_bad_limits(kvs: KeyValueStore, limit: object) -> None:
    await kvs.set_value("k", 1)
    with pytest.raises(ValueError, match="limit must be a positive int"):
        await kvs.list_keys(limit=limit)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("start", "prefix"),
    [
        ("a\x00", None),
        ("a\x00zzz", "a"),
        (None, "a\x00"),
        ("", None),
        ("", "a"),
        (None, "\U0010ffff"),
        ("\U0010ffff", None),
        ("a\ud800", None),
        ("\udfff", None),
        (None, "a\ud800"),
    ],
)
async def test_listing_bounds_no_key_can_hold(
    store: KeyValueStoreClient, start: str | None, prefix: str | None
) -> None:
    # NUL, the empty string, the highest code point and lone surrogates are bounds no key holds: each
    # backend must still order and cut around them exactly as code points say.
    keys = ["a", "a\x01", "ab", "a\ud7ff", "a\ud7ffz", "a\ue000", "a\U0010ffff", "b", "\U0010ffff", "\U0010ffffa"]
    for key in keys:
        await store.set_record(key=key, value=b"1", content_type="application/json")
    expected = sorted(k for k in keys if (start is None or k > start) and k.startswith(prefix or ""))
    assert [info.key async for info in store.iterate_keys(exclusive_start_key=start, prefix=prefix)] == expected
    first_two = store.iterate_keys(exclusive_start_key=start, prefix=prefix, limit=2)
    assert [info.key async for info in first_two] == expected[:2]
