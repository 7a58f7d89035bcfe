"""How the facade turns values into bytes and a content type, and back."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel, Field

from recoverable.errors import DeserializationError, SerializationError, StorageError

if TYPE_CHECKING:
    from recoverable.storages import KeyValueStore

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"


class Point(BaseModel):
    x: int
    y: float
    label: str = "p"


class Shape(BaseModel):
    points: list[Point]
    created: datetime


class Aliased(BaseModel):
    requests_finished: int = Field(alias="requestsFinished")
    ratio: float


@dataclasses.dataclass
class Pair:
    left: int
    right: list[str]


async def _stored(kvs: KeyValueStore, key: str) -> tuple[bytes, str]:
    record = await kvs.client.get_record(key=key)
    assert record is not None
    return record.value, record.content_type


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [1, 2.5, "x", None, True, False], "c": {"d": {}}},
        [1, "two", [3], {"four": 4}],
        [],
        {},
        0,
        -17,
        2**70,
        0.1,
        -1.5e300,
        True,
        False,
        None,
        {"unicode": "ključ 鍵 🔑", "escapes": '"\\\n\t\u0000'},
    ],
    ids=repr,
)
async def test_json_values_round_trip(kvs: KeyValueStore, value: Any) -> None:
    await kvs.set_value("k", value)

    read = await kvs.get_value("k")
    assert read == value
    assert type(read) is type(value)
    data, content_type = await _stored(kvs, "k")
    assert content_type == JSON
    assert json.loads(data) == value


@pytest.mark.parametrize("value", [math.inf, -math.inf])
async def test_infinities_round_trip(kvs: KeyValueStore, value: float) -> None:
    await kvs.set_value("k", {"v": value, "list": [value]})

    assert await kvs.get_value("k") == {"v": value, "list": [value]}
    data, _ = await _stored(kvs, "k")
    assert b"Infinity" in data
    assert b"null" not in data


async def test_nan_round_trips(kvs: KeyValueStore) -> None:
    await kvs.set_value("k", {"v": math.nan})
    await kvs.set_value("bare", math.nan)

    read = await kvs.get_value("k")
    assert isinstance(read["v"], float)
    assert math.isnan(read["v"])
    assert math.isnan(await kvs.get_value("bare"))
    data, _ = await _stored(kvs, "k")
    assert b"NaN" in data
    assert b"null" not in data


@pytest.mark.parametrize("value", ["", "plain text", '{"looks": "like json"}', "null", "ključ 🔑\n\x00"])
async def test_str_is_stored_as_text(kvs: KeyValueStore, value: str) -> None:
    await kvs.set_value("k", value)

    assert await kvs.get_value("k") == value
    assert await _stored(kvs, "k") == (value.encode("utf-8"), TEXT)


@pytest.mark.parametrize("value", [b"", b"\x00\xff\x80binary", bytearray(b"array"), memoryview(b"view")])
async def test_bytes_are_stored_as_binary(kvs: KeyValueStore, value: bytes | bytearray | memoryview) -> None:
    await kvs.set_value("k", value)

    read = await kvs.get_value("k")
    assert type(read) is bytes
    assert read == bytes(value)
    assert await _stored(kvs, "k") == (bytes(value), BINARY)


async def test_pydantic_model_is_stored_as_a_dict(kvs: KeyValueStore) -> None:
    shape = Shape(
        points=[Point(x=1, y=2.5), Point(x=3, y=math.inf, label="far")], created=datetime(2024, 5, 6, tzinfo=UTC)
    )

    await kvs.set_value("shape", shape)

    read = await kvs.get_value("shape")
    assert read == {
        "points": [{"x": 1, "y": 2.5, "label": "p"}, {"x": 3, "y": math.inf, "label": "far"}],
        "created": "2024-05-06T00:00:00Z",
    }
    assert Shape.model_validate(read) == shape
    assert (await _stored(kvs, "shape"))[1] == JSON


async def test_models_keep_nan_and_infinities_wherever_they_are(kvs: KeyValueStore) -> None:
    await kvs.set_value("top", Point(x=1, y=math.nan))
    await kvs.set_value("nested", {"in": [Point(x=2, y=-math.inf)]})

    top = await kvs.get_value("top")
    assert math.isnan(top["y"])
    assert await kvs.get_value("nested") == {"in": [{"x": 2, "y": -math.inf, "label": "p"}]}
    assert b"null" not in (await _stored(kvs, "nested"))[0]


async def test_models_are_stored_with_their_aliases(kvs: KeyValueStore) -> None:
    await kvs.set_value("k", Aliased(requestsFinished=3, ratio=math.inf))

    read = await kvs.get_value("k")
    assert read == {"requestsFinished": 3, "ratio": math.inf}
    assert Aliased.model_validate(read) == Aliased(requestsFinished=3, ratio=math.inf)


async def test_dataclass_is_stored_as_a_dict(kvs: KeyValueStore) -> None:
    await kvs.set_value("pair", Pair(left=1, right=["a", "b"]))

    assert await kvs.get_value("pair") == {"left": 1, "right": ["a", "b"]}
    assert (await _stored(kvs, "pair"))[1] == JSON


async def test_tuples_and_sets_become_lists(kvs: KeyValueStore) -> None:
    await kvs.set_value("k", {"tuple": (1, 2), "set": {3}})
    assert await kvs.get_value("k") == {"tuple": [1, 2], "set": [3]}


# --- explicit content types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "content_type", "stored", "read"),
    [
        (b"\x89PNG", "image/png", b"\x89PNG", b"\x89PNG"),
        (b'{"a": 1}', JSON, b'{"a": 1}', {"a": 1}),
        (b"<p>", "text/html; charset=utf-8", b"<p>", "<p>"),
        ("<p>é</p>", "text/html", "<p>é</p>".encode(), "<p>é</p>"),
        ("é", "text/plain; charset=latin-1", "é".encode("latin-1"), "é"),
        ("text", BINARY, b"text", b"text"),
        ('{"a": [1]}', JSON, b'{"a": [1]}', {"a": [1]}),
        ("[1,2]", "application/vnd.api+json", b"[1,2]", [1, 2]),
        ({"a": 1}, "application/vnd.api+json", None, {"a": 1}),
        ([1], "application/ld+json; charset=utf-8", None, [1]),
    ],
    ids=lambda v: repr(v)[:24],
)
async def test_explicit_content_type_wins(
    kvs: KeyValueStore, value: Any, content_type: str, stored: bytes | None, read: Any
) -> None:
    await kvs.set_value("k", value, content_type)

    data, kept = await _stored(kvs, "k")
    assert kept == content_type
    if stored is not None:
        assert data == stored
    assert await kvs.get_value("k") == read
    record = await kvs.get_record("k")
    assert record is not None
    assert record.content_type == content_type


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("Application/JSON", JSON),
        ("text/plain;charset=UTF-8", TEXT),
        ('TEXT/Plain ;  Charset="UTF-8"', TEXT),
        ("text/csv; header=Present", "text/csv; header=Present"),
    ],
)
async def test_content_types_are_normalized(kvs: KeyValueStore, given: str, normalized: str) -> None:
    value: object = "a,b" if normalized.startswith("text/") else [1]

    await kvs.set_value("k", value, given)

    assert (await _stored(kvs, "k"))[1] == normalized
    assert await kvs.get_value("k") == value


# --- values that cannot be stored ---------------------------------------------------------------------


def _circular() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


UNSTORABLE: list[tuple[Any, str | None]] = [
    (object(), None),
    ({"a": object()}, None),
    ([1, {"deep": [object()]}], None),
    ({1, object()}, None),
    (lambda: 1, None),
    (_circular(), None),
    ({"a": 1}, "text/plain"),
    (42, "image/png"),
    (None, BINARY),
    ("not json", JSON),
    ("{'single': 'quotes'}", JSON),
    ("", JSON),
    ("é", "text/plain; charset=ascii"),
    ("x", "text/plain; charset=no-such-charset"),
]


@pytest.mark.parametrize(("value", "content_type"), UNSTORABLE, ids=lambda v: repr(v)[:24])
async def test_unstorable_values_raise_and_write_nothing(
    kvs: KeyValueStore, value: Any, content_type: str | None
) -> None:
    version = await kvs.set_value("k", {"previous": True})

    with pytest.raises(SerializationError) as info:
        await kvs.set_value("k", value, content_type)

    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, StorageError)
    assert info.value.key == "k"
    assert info.value.store == "facade"
    assert "'k'" in str(info.value)
    record = await kvs.get_record("k")
    assert record is not None
    assert (record.value, record.version) == ({"previous": True}, version)


async def test_unstorable_value_for_a_new_key_leaves_no_record(kvs: KeyValueStore) -> None:
    with pytest.raises(SerializationError):
        await kvs.set_value("new", {"a": object()})

    assert not await kvs.record_exists("new")
    assert await kvs.list_keys() == []


@pytest.mark.parametrize(
    "content_type",
    ["", "json", "application", "application/", "/json", "text /plain", "text/plain; charset", "a/b; =x", "a b/c"],
)
async def test_invalid_content_types_raise_and_write_nothing(kvs: KeyValueStore, content_type: str) -> None:
    with pytest.raises(SerializationError) as info:
        await kvs.set_value("k", b"data", content_type)

    assert repr(content_type) in str(info.value)
    assert await kvs.list_keys() == []


# --- reading back bytes that are not what they claim --------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"{not json", JSON),
        (b"", JSON),
        (b"\xff\xfe", "text/plain; charset=utf-8"),
        (b"x", "text/plain; charset=no-such-charset"),
    ],
)
async def test_undecodable_records_raise(kvs: KeyValueStore, data: bytes, content_type: str) -> None:
    await kvs.client.set_record(key="bad", value=data, content_type=content_type)

    with pytest.raises(DeserializationError) as info:
        await kvs.get_value("bad")

    assert info.value.key == "bad"
    assert "'bad'" in str(info.value)
    assert (await _stored(kvs, "bad")) == (data, content_type)


async def test_unknown_content_types_read_as_bytes(kvs: KeyValueStore) -> None:
    await kvs.client.set_record(key="k", value=b"\x00raw", content_type="application/x-custom")
    assert await kvs.get_value("k") == b"\x00raw"


async def test_crawlee_none_reads_as_none(kvs: KeyValueStore) -> None:
    await kvs.client.set_record(key="k", value=b"", content_type="application/x-none")
    assert await kvs.get_value("k", default_value="default") is None
