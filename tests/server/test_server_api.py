"""The wire format of `recoverable serve`: the platform's envelopes, status codes, paging, ETags and limits."""

from __future__ import annotations

import gzip
import zlib
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest

from recoverable.errors import ConfigurationError
from recoverable.server import create_app
from recoverable.storages import MAX_KEY_LENGTH, MemoryStorageClient
from server.support import new_store, record_url

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager

    from recoverable.storages import FileSystemStorageClient

JSON = "application/json"


def _error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return response.status_code, body["error"]["type"]


# --- stores -------------------------------------------------------------------------------------------


async def test_get_or_create_by_name(api: httpx.AsyncClient) -> None:
    created = await api.post("/v2/key-value-stores", params={"name": "crawl"}, json={})
    again = await api.post("/v2/key-value-stores", params={"name": "crawl"}, json={})

    assert created.status_code == 201
    assert again.status_code == 200
    store = created.json()["data"]
    assert again.json()["data"]["id"] == store["id"]
    assert created.headers["location"] == f"/v2/key-value-stores/{store['id']}"
    assert created.headers["content-type"] == "application/json; charset=utf-8"
    assert store["name"] == "crawl"
    assert {"id", "name", "userId", "createdAt", "modifiedAt", "accessedAt"} <= set(store)
    assert store["createdAt"].endswith("Z")


async def test_post_without_name_creates_a_new_unnamed_store_each_time(api: httpx.AsyncClient) -> None:
    first = await api.post("/v2/key-value-stores")
    second = await api.post("/v2/key-value-stores")

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["data"]["name"] is None
    assert first.json()["data"]["id"] != second.json()["data"]["id"]


@pytest.mark.parametrize("name", ["-bad", "bad-", "sp ace", "a" * 64, "é"])
async def test_invalid_store_name_is_400(api: httpx.AsyncClient, name: str) -> None:
    response = await api.post("/v2/key-value-stores", params={"name": name})
    assert _error(response) == (400, "invalid-value")


async def test_store_by_id_name_and_username_name(api: httpx.AsyncClient) -> None:
    store_id = await new_store(api, "addressed")

    for ref in (store_id, "~addressed", "someone~addressed", "%7Eaddressed"):
        response = await api.get(f"/v2/key-value-stores/{ref}")
        assert response.status_code == 200, ref
        assert response.json()["data"]["id"] == store_id


async def test_missing_store_is_404_and_never_created(api: httpx.AsyncClient) -> None:
    for ref in ("nosuchstoreid0000", "~missing", "user~missing"):
        assert _error(await api.get(f"/v2/key-value-stores/{ref}")) == (404, "record-not-found")
        assert _error(await api.get(f"/v2/key-value-stores/{ref}/keys")) == (404, "record-not-found")
        assert _error(await api.put(f"/v2/key-value-stores/{ref}/records/k", content=b"1")) == (
            404,
            "record-not-found",
        )
    listed = await api.get("/v2/key-value-stores", params={"unnamed": "true"})
    assert listed.json()["data"]["items"] == []


async def test_list_stores_paging_desc_and_unnamed(api: httpx.AsyncClient) -> None:
    ids = [await new_store(api, f"s{i}") for i in range(5)]
    unnamed = (await api.post("/v2/key-value-stores")).json()["data"]["id"]

    named_only = (await api.get("/v2/key-value-stores")).json()["data"]
    everything = (await api.get("/v2/key-value-stores", params={"unnamed": "1"})).json()["data"]
    page = (await api.get("/v2/key-value-stores", params={"offset": 1, "limit": 2, "desc": "true"})).json()["data"]

    assert [s["id"] for s in named_only["items"]] == ids
    assert named_only["total"] == 5
    assert [s["id"] for s in everything["items"]] == [*ids, unnamed]
    assert {k: v for k, v in page.items() if k != "items"} == {
        "total": 5,
        "offset": 1,
        "limit": 2,
        "count": 2,
        "desc": True,
    }
    assert [s["id"] for s in page["items"]] == [ids[3], ids[2]]
    assert _error(await api.get("/v2/key-value-stores", params={"limit": "x"})) == (400, "invalid-value")
    assert _error(await api.get("/v2/key-value-stores", params={"offset": "-1"})) == (400, "invalid-value")


async def test_delete_store(api: httpx.AsyncClient) -> None:
    store_id = await new_store(api, "gone")
    await api.put(record_url(store_id, "k"), content=b"1")

    assert (await api.delete(f"/v2/key-value-stores/{store_id}")).status_code == 204

    assert _error(await api.get(f"/v2/key-value-stores/{store_id}")) == (404, "record-not-found")
    assert _error(await api.get("/v2/key-value-stores/~gone")) == (404, "record-not-found")
    assert _error(await api.delete(f"/v2/key-value-stores/{store_id}")) == (404, "record-not-found")
    fresh = await api.post("/v2/key-value-stores", params={"name": "gone"})
    assert fresh.status_code == 201
    assert fresh.json()["data"]["id"] != store_id


async def test_a_store_dropped_behind_the_servers_back(
    api: httpx.AsyncClient, backend: FileSystemStorageClient
) -> None:
    store_id = await new_store(api, "behind")
    await api.put(record_url(store_id, "k"), content=b"1")
    await (await backend.open_key_value_store_client(id=store_id)).drop()

    assert _error(await api.get(record_url(store_id, "k"))) == (404, "record-not-found")
    assert _error(await api.get("/v2/key-value-stores/~behind")) == (404, "record-not-found")
    assert (await api.post("/v2/key-value-stores", params={"name": "behind"})).status_code == 201


# --- records ------------------------------------------------------------------------------------------


async def test_put_get_head_delete_record(api: httpx.AsyncClient) -> None:
    store_id = await new_store(api)

    put = await api.put(record_url(store_id, "k"), content=b'{"a": 1}', headers={"Content-Type": JSON})
    get = await api.get(record_url(store_id, "k"), params={"attachment": "true"})
    head = await api.head(record_url(store_id, "k"))

    assert put.status_code == 201
    assert put.json() == {}
    etag = put.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert (get.status_code, get.content, get.headers["content-type"], get.headers["etag"]) == (
        200,
        b'{"a": 1}',
        JSON,
        etag,
    )
    assert (head.status_code, head.content, head.headers["content-length"], head.headers["etag"]) == (
        200,
        b"",
        "8",
        etag,
    )
    assert (await api.delete(record_url(store_id, "k"))).status_code == 204
    assert _error(await api.get(record_url(store_id, "k"))) == (404, "record-not-found")
    assert (await api.head(record_url(store_id, "k"))).status_code == 404
    assert _error(await api.delete(record_url(store_id, "k"))) == (404, "record-not-found")


async def test_post_writes_a_record_too(api: httpx.AsyncClient) -> None:
    store_id = await new_store(api)
    assert (
        await api.post(record_url(store_id, "k"), content=b"x", headers={"Content-Type": "text/plain"})
    ).status_code == 201
    assert (await api.get(record_url(store_id, "k"))).content == b"x"


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=UTF-8", "Application/JSON", "x/y; a=b"])
async def test_content_type_comes_back_exactly(api: httpx.AsyncClient, content_type: str) -> None:
    store_id = await new_store(api)
    await api.put(record_url(store_id, "k"), content=b"v", headers={"Content-Type": content_type})

    assert (await api.get(record_url(store_id, "k"))).headers["content-type"] == content_type


async def test_missing_content_type_is_octet_stream(api: httpx.AsyncClient) -> None:
    store_id = await new_store(api)
    response = await api.put(record_url(store_id, "k"), content=b"v")
    assert "content-type" not in response.request.headers
    assert response.status_code == 201
    assert (await api.get(record_url(store_id, "k"))).headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize("key", ["a/b", "%2F", "100%", "..", ".", "ключ 🔑", "\t\n", "a?b#c", "+ +"])
async def test_keys_are_percent_decoded_from_the_raw_path(
    api: httpx.AsyncClient, backend: FileSystemStorageClient, key: str
) -> None:
    store_id = await new_store(api)
    encoded = quote(key, safe="").replace(".", "%2E")

    response = await api.put(f"/v2/key-value-stores/{store_id}/records/{encoded}", content=b"v")

    assert response.status_code == 201
    store = await backend.open_key_value_store_client(id=store_id)
    assert [info.key async for info in store.iterate_keys()] == [key]
    keys = (await api.get(f"/v2/key-value-stores/{store_id}/keys")).json()["data"]["items"]
    assert [(item["key"], item["size"]) for item in keys] == [(key, 1)]
    assert keys[0]["recordPublicUrl"] == f"{api.base_url}/v2/key-value-stores/{store_id}/records/{encoded}"


@pytest.mark.parametrize(
    ("raw_key", "what"),
    [("%FF", "UTF-8"), ("%ED%A0%80", "UTF-8"), ("a%00b", "NUL"), ("k" * (MAX_KEY_LENGTH + 1), "too long")],
)
async def test_invalid_keys_are_400(api: httpx.AsyncClient, raw_key: str, what: str) -> None:
    store_id = await new_store(api)
    for method in ("GET", "PUT", "DELETE"):
        response = await api.request(method, f"/v2/key-value-stores/{store_id}/records/{raw_key}", content=b"v")
        assert _error(response) == (400, "invalid-record-key"), method
        assert what in response.json()["error"]["message"]


async def test_key_length_limit_is_configurable(serve: Callable[..., AbstractAsyncContextManager[str]]) -> None:
    async with serve(max_key_length=256) as url, httpx.AsyncClient(base_url=url) as api:
        store_id = await new_store(api)
        assert (await api.put(record_url(store_id, "k" * 256), content=b"v")).status_code == 201
        response = await api.put(record_url(store_id, "k" * 257), content=b"v")
        assert _error(response) == (400, "invalid-record-key")
        assert "at most 256" in response.json()["error"]["message"]


# --- bodies -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
async def test_compressed_bodies_are_stored_decoded(
    api: httpx.AsyncClient, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    store_id = await new_store(api)
    value = b"0123456789" * 1000
    response = await api.put(
        record_url(store_id, "k"), content=compress(value), headers={"Content-Encoding": encoding, "Content-Type": JSON}
    )
    assert response.status_code == 201
    assert (await api.get(record_url(store_id, "k"))).content == value


async def test_multi_member_gzip(api: httpx.AsyncClient) -> None:
    store_id = await new_store(api)
    body = gzip.compress(b"first,") + gzip.compress(b"second")
    await api.put(record_url(store_id, "k"), content=body, headers={"Content-Encoding": "gzip"})
    assert (await api.get(record_url(store_id, "k"))).content == b"first,second"


async def test_bad_bodies(api: httpx.AsyncClient) -> None:
    store_id = await new_store(api)
    assert _error(
        await api.put(record_url(store_id, "k"), content=b"not gzip", headers={"Content-Encoding": "gzip"})
    ) == (
        400,
        "invalid-request",
    )
    assert _error(
        await api.put(
            record_url(store_id, "k"), content=gzip.compress(b"x" * 100)[:20], headers={"Content-Encoding": "gzip"}
        )
    ) == (400, "invalid-request")
    assert _error(await api.put(record_url(store_id, "k"), content=b"x", headers={"Content-Encoding": "br"})) == (
        415,
        "unsupported-media-type",
    )
    assert (await api.get(f"/v2/key-value-stores/{store_id}/keys")).json()["data"]["items"] == []


async def test_body_size_limit(serve: Callable[..., AbstractAsyncContextManager[str]]) -> None:
    async with serve(max_body_size=1000) as url, httpx.AsyncClient(base_url=url) as api:
        store_id = await new_store(api)
        assert (await api.put(record_url(store_id, "ok"), content=b"x" * 1000)).status_code == 201

        declared = await api.put(record_url(store_id, "big"), content=b"x" * 1001)

        async def chunks() -> Any:
            for _ in range(20):
                yield b"x" * 100

        streamed = await api.put(record_url(store_id, "big"), content=chunks())
        bomb = await api.put(
            record_url(store_id, "big"), content=gzip.compress(b"x" * 100_000), headers={"Content-Encoding": "gzip"}
        )
        for response in (declared, streamed, bomb):
            assert _error(response) == (413, "request-too-large")
            assert "1000 bytes" in response.json()["error"]["message"]
        keys = (await api.get(f"/v2/key-value-stores/{store_id}/keys")).json()["data"]["items"]
        assert [item["key"] for item in keys] == ["ok"]


async def test_a_large_body_over_the_limit_gets_a_clean_413(
    serve: Callable[..., AbstractAsyncContextManager[str]],
) -> None:
    async with serve(max_body_size=1024 * 1024) as url, httpx.AsyncClient(base_url=url) as api:
        store_id = await new_store(api)
        response = await api.put(record_url(store_id, "big"), content=b"x" * (20 * 1024 * 1024))
        assert _error(response) == (413, "request-too-large")


# --- ETags and conditions -----------------------------------------------------------------------------


async def test_if_match(api: httpx.AsyncClient) -> None:
    store_id = await new_store(api)
    first = (await api.put(record_url(store_id, "k"), content=b"1")).headers["etag"]
    second = (await api.put(record_url(store_id, "k"), content=b"2", headers={"If-Match": first})).headers["etag"]

    stale = await api.put(record_url(store_id, "k"), content=b"3", headers={"If-Match": first})

    assert first != second
    assert _error(stale) == (412, "precondition-failed")
    assert stale.headers["etag"] == second
    assert (
        await api.put(record_url(store_id, "k"), content=b"4", headers={"If-Match": f'"x", {second}'})
    ).status_code == 201
    assert (await api.put(record_url(store_id, "k"), content=b"5", headers={"If-Match": "*"})).status_code == 201
    assert _error(await api.put(record_url(store_id, "k"), content=b"6", headers={"If-Match": f"W/{second}"}))[0] == 412
    assert (await api.get(record_url(store_id, "k"))).content == b"5"


async def test_if_match_on_a_missing_record(api: httpx.AsyncClient) -> None:
    store_id = await new_store(api)
    for value in ('"v1"', "*", '"a", "b"'):
        response = await api.put(record_url(store_id, "k"), content=b"1", headers={"If-Match": value})
        assert _error(response) == (412, "precondition-failed")
        assert "etag" not in response.headers
    assert (await api.head(record_url(store_id, "k"))).status_code == 404


async def test_if_none_match(api: httpx.AsyncClient) -> None:
    store_id = await new_store(api)
    created = await api.put(record_url(store_id, "k"), content=b"1", headers={"If-None-Match": "*"})
    again = await api.put(record_url(store_id, "k"), content=b"2", headers={"If-None-Match": "*"})
    listed = await api.put(record_url(store_id, "k"), content=b"3", headers={"If-None-Match": created.headers["etag"]})
    other = await api.put(record_url(store_id, "k"), content=b"4", headers={"If-None-Match": '"other"'})

    assert created.status_code == 201
    assert _error(again) == (412, "precondition-failed")
    assert again.headers["etag"] == created.headers["etag"]
    assert _error(listed)[0] == 412
    assert other.status_code == 201
    assert (await api.get(record_url(store_id, "k"))).content == b"4"


async def test_conditional_delete(api: httpx.AsyncClient) -> None:
    store_id = await new_store(api)
    old = (await api.put(record_url(store_id, "k"), content=b"1")).headers["etag"]
    current = (await api.put(record_url(store_id, "k"), content=b"2")).headers["etag"]

    refused = await api.delete(record_url(store_id, "k"), headers={"If-Match": old})

    assert _error(refused) == (412, "precondition-failed")
    assert refused.headers["etag"] == current
    assert (await api.delete(record_url(store_id, "k"), headers={"If-Match": f"{old}, {current}"})).status_code == 204
    assert _error(await api.delete(record_url(store_id, "k"), headers={"If-Match": "*"}))[0] == 412


async def test_malformed_conditions_are_400(api: httpx.AsyncClient) -> None:
    store_id = await new_store(api)
    for header in ({"If-Match": "no-quotes"}, {"If-None-Match": 'W/"x'}):
        assert _error(await api.put(record_url(store_id, "k"), content=b"1", headers=header)) == (
            400,
            "invalid-request",
        )


async def test_etags_carry_any_version_exactly(serve: Callable[..., AbstractAsyncContextManager[str]]) -> None:
    """Memory versions are counters; file system ones hex; both must survive the trip through an ETag."""
    async with serve(storage_client=MemoryStorageClient()) as url, httpx.AsyncClient(base_url=url) as api:
        store_id = await new_store(api)
        etag = (await api.put(record_url(store_id, "k"), content=b"1")).headers["etag"]
        assert etag == '"1"'
        assert (await api.put(record_url(store_id, "k"), content=b"2", headers={"If-Match": etag})).status_code == 201


# --- keys ---------------------------------------------------------------------------------------------


async def test_key_listing_pages(api: httpx.AsyncClient) -> None:
    store_id = await new_store(api)
    keys = ["b", "a", "é", "B", "a/b", "🔑", "ab"]
    for key in keys:
        await api.put(record_url(store_id, key), content=key.encode())
    path = f"/v2/key-value-stores/{store_id}/keys"

    first = (await api.get(path, params={"limit": 3})).json()["data"]
    second = (await api.get(path, params={"limit": 3, "exclusiveStartKey": first["nextExclusiveStartKey"]})).json()[
        "data"
    ]
    last = (await api.get(path, params={"exclusiveStartKey": second["nextExclusiveStartKey"]})).json()["data"]
    prefixed = (await api.get(path, params={"prefix": "a"})).json()["data"]

    ordered = sorted(keys, key=lambda k: k.encode())
    assert [i["key"] for i in first["items"]] == ordered[:3]
    assert [(i["key"], i["size"]) for i in first["items"]] == [(k, len(k.encode())) for k in ordered[:3]]
    assert {k: v for k, v in first.items() if k != "items"} == {
        "count": 3,
        "limit": 3,
        "exclusiveStartKey": None,
        "isTruncated": True,
        "nextExclusiveStartKey": ordered[2],
    }
    assert [i["key"] for i in second["items"]] == ordered[3:6]
    assert second["exclusiveStartKey"] == ordered[2]
    assert [i["key"] for i in last["items"]] == ordered[6:]
    assert (last["isTruncated"], last["nextExclusiveStartKey"], last["limit"]) == (False, None, 1000)
    assert [i["key"] for i in prefixed["items"]] == ["a", "a/b", "ab"]


async def test_key_listing_limits(api: httpx.AsyncClient) -> None:
    store_id = await new_store(api)
    path = f"/v2/key-value-stores/{store_id}/keys"
    assert (await api.get(path, params={"limit": 5000})).json()["data"]["limit"] == 1000
    for bad in ("0", "-3", "ten"):
        assert _error(await api.get(path, params={"limit": bad})) == (400, "invalid-value")
    assert _error(await api.get(path + "?prefix=%FF")) == (400, "invalid-request")


# --- protocol -----------------------------------------------------------------------------------------


async def test_authentication(serve: Callable[..., AbstractAsyncContextManager[str]], token: str) -> None:
    async with serve(token=token) as url, httpx.AsyncClient(base_url=url) as client:
        missing = await client.get("/v2/key-value-stores")
        wrong = await client.get("/v2/key-value-stores", headers={"Authorization": "Bearer nope"})
        basic = await client.get("/v2/key-value-stores", headers={"Authorization": f"Basic {token}"})
        query = await client.get("/v2/key-value-stores", params={"token": token})
        header = await client.get("/v2/key-value-stores", headers={"Authorization": f"bearer {token}"})

    assert _error(missing) == (401, "token-not-provided")
    assert _error(wrong) == (401, "token-not-valid")
    assert _error(basic) == (401, "token-not-provided")
    assert (query.status_code, header.status_code) == (200, 200)
    assert token not in wrong.text


async def test_unknown_paths_and_methods(api: httpx.AsyncClient) -> None:
    store_id = await new_store(api)
    assert _error(await api.get("/nothing")) == (404, "page-not-found")
    assert _error(await api.get("/v2/datasets")) == (404, "page-not-found")
    not_allowed = await api.patch(f"/v2/key-value-stores/{store_id}")
    assert _error(not_allowed) == (405, "method-not-allowed")
    assert "GET" in not_allowed.headers["allow"]


async def test_every_answer_names_the_server(api: httpx.AsyncClient) -> None:
    store_id = await new_store(api)
    for response in (
        await api.get("/nothing"),
        await api.get(f"/v2/key-value-stores/{store_id}"),
        await api.get(record_url(store_id, "missing")),
        await api.put(record_url(store_id, "k"), content=b"1"),
    ):
        assert response.headers["x-recoverable-server"]


@pytest.mark.parametrize(
    "options",
    [
        {"max_body_size": 0},
        {"max_body_size": True},
        {"max_key_length": 0},
        {"max_key_length": MAX_KEY_LENGTH + 1},
        {"token": ""},
    ],
)
def test_create_app_refuses_bad_limits(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        create_app(storage_client=MemoryStorageClient(), **options)
