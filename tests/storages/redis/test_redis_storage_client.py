"""What the Redis storage client adds to the conformance suite: its key layout, atomicity, errors, settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest
import services
from conformance.races import increment_concurrently
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from recoverable.configuration import Configuration
from recoverable.errors import ConfigurationError, StorageBackendError, StoreNotFoundError, VersionConflictError
from recoverable.storages import KeyValueStore, RedisStorageClient, default_storage_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

JSON = "application/json"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _text_values(config: Mapping[Any, Any]) -> dict[str, str]:
    """CONFIG GET's answer as text (redis-py gives str or bytes, by version)."""
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in config.items()
    }


async def _keys(raw: Redis, prefix: str) -> set[bytes]:
    return {key async for key in raw.scan_iter(match=b"{" + prefix.encode() + b"*", count=1000)}


# --- the key layout -------------------------------------------------------------------------------------


async def test_key_layout(redis_client: RedisStorageClient, raw_redis: Redis, key_prefix: str) -> None:
    named = await redis_client.open_key_value_store_client(name="crawl")
    default = await redis_client.open_key_value_store_client()
    await named.set_record(key="a/b", value=b'{"x": 1}', content_type=JSON)
    named_id, default_id = named.store_id, default.store_id

    assert await _keys(raw_redis, key_prefix) == {
        f"{{{key_prefix}}}:stores".encode(),
        f"{{{key_prefix}}}:names".encode(),
        f"{{{key_prefix}}}:aliases".encode(),
        f"{{{key_prefix}:{named_id}}}:meta".encode(),
        f"{{{key_prefix}:{named_id}}}:keys".encode(),
        f"{{{key_prefix}:{named_id}}}:r:a/b".encode(),
        f"{{{key_prefix}:{default_id}}}:meta".encode(),
    }
    assert await raw_redis.hgetall(f"{{{key_prefix}:{named_id}}}:r:a/b") == {
        b"v": b'{"x": 1}',
        b"ct": JSON.encode(),
        b"ver": b"1",
    }
    assert await raw_redis.zrange(f"{{{key_prefix}:{named_id}}}:keys", 0, -1, withscores=True) == [(b"a/b", 0.0)]
    assert await raw_redis.hget(f"{{{key_prefix}}}:names", "crawl") == named_id.encode()
    assert await raw_redis.hget(f"{{{key_prefix}}}:aliases", "default") == default_id.encode()


@pytest.mark.parametrize("key", ["plain", "}", "{", "{other}", "x}:meta", "}{", ":r:", "🔑" * 1024, "a\r\nDEL *"])
async def test_every_key_of_a_store_is_in_the_slot_of_its_hash_tag(
    redis_client: RedisStorageClient, raw_redis: Redis, key_prefix: str, key: str
) -> None:
    store = await redis_client.open_key_value_store_client(name="slots")
    await store.set_record(key=key, value=b"v", content_type=JSON)

    store_keys = await _keys(raw_redis, f"{key_prefix}:{store.store_id}")
    assert len(store_keys) == 3
    assert {key_slot(k) for k in store_keys} == {key_slot(f"{key_prefix}:{store.store_id}".encode())}
    assert f"{{{key_prefix}:{store.store_id}}}:r:".encode() + key.encode() in store_keys
    record = await store.get_record(key=key)
    assert record is not None
    assert record.value == b"v"
    assert (await store.get_metadata()).name == "slots"


async def test_versions_are_counters_of_the_store(redis_client: RedisStorageClient) -> None:
    store = await redis_client.open_key_value_store_client(name="counted")
    versions = [await store.set_record(key=f"k{i % 3}", value=b"1", content_type=JSON) for i in range(6)]
    await store.purge()

    assert versions == ["1", "2", "3", "4", "5", "6"]
    assert await store.set_record(key="k0", value=b"1", content_type=JSON) == "7"


async def test_purge_and_drop_delete_every_key_in_batches(
    redis_client: RedisStorageClient, raw_redis: Redis, key_prefix: str
) -> None:
    store = await redis_client.open_key_value_store_client(name="many")
    other = await redis_client.open_key_value_store_client(name="other")
    await other.set_record(key="kept", value=b"1", content_type=JSON)
    for start in range(0, 2500, 250):  # more than two batches
        await asyncio.gather(
            *(store.set_record(key=f"k{i:05}", value=b"x", content_type=JSON) for i in range(start, start + 250))
        )

    await store.purge()

    store_tag = f"{key_prefix}:{store.store_id}"
    assert await _keys(raw_redis, store_tag) == {f"{{{store_tag}}}:meta".encode()}
    await store.set_record(key="again", value=b"y", content_type=JSON)
    await store.drop()
    assert await _keys(raw_redis, store_tag) == set()
    assert [m.name for m in await redis_client.list_key_value_stores()] == ["other"]
    assert (await other.get_record(key="kept")) is not None


async def test_a_store_dropped_by_another_client_is_gone_for_this_one(
    redis_client: RedisStorageClient, redis_url: str, key_prefix: str
) -> None:
    store = await redis_client.open_key_value_store_client(name="shared")
    await store.set_record(key="k", value=b"1", content_type=JSON)
    async with RedisStorageClient(redis_url, key_prefix=key_prefix) as other:
        await (await other.open_key_value_store_client(name="shared")).drop()

    with pytest.raises(StoreNotFoundError):
        await store.get_record(key="k")
    with pytest.raises(StoreNotFoundError):
        await store.set_record(key="k", value=b"2", content_type=JSON)
    fresh = await redis_client.open_key_value_store_client(name="shared")
    assert fresh.store_id != store.store_id


async def test_a_drop_that_a_crash_stopped_is_finished_by_the_next_client(
    redis_url: str, raw_redis: Redis, key_prefix: str
) -> None:
    # A real process drops a store of 2,500 records and is SIGKILLed after the first batch of deletes.
    code = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from recoverable.storages import RedisStorageClient
        from recoverable.storages._redis import _scripts

        first_batch = _scripts.PURGE_BATCH

        class DieAfterOneBatch(_scripts.Script):
            async def __call__(self, client, keys, args):
                deleted = await first_batch(client, keys, args)
                os.kill(os.getpid(), signal.SIGKILL)
                return deleted

        _scripts.PURGE_BATCH = DieAfterOneBatch(first_batch.source)

        async def main():
            async with RedisStorageClient({redis_url!r}, key_prefix={key_prefix!r}) as client:
                store = await client.open_key_value_store_client(name="doomed")
                kept = await client.open_key_value_store_client(name="kept")
                await kept.set_record(key="k", value=b"1", content_type="application/json")
                for start in range(0, 2500, 250):
                    await asyncio.gather(*(
                        store.set_record(key=f"k{{i:05}}", value=b"x", content_type="application/json")
                        for i in range(start, start + 250)
                    ))
                print(store.store_id, flush=True)
                await store.drop()

        asyncio.run(main())
        """
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await child.communicate()
    assert child.returncode == -9, stderr.decode()
    store_tag = f"{key_prefix}:{stdout.decode().strip()}"
    left = await _keys(raw_redis, store_tag)
    assert 1000 <= len(left) < 2500  # the crash came half-way through the records
    registry_dropped = f"{{{key_prefix}}}:dropped".encode()
    assert await raw_redis.smembers(registry_dropped) == {stdout.strip()}

    async with RedisStorageClient(redis_url, key_prefix=key_prefix) as next_client:
        listed = await next_client.list_key_value_stores()

        assert [m.name for m in listed] == ["kept"]
        assert await _keys(raw_redis, store_tag) == set()
        assert not await raw_redis.exists(registry_dropped)
        kept = await next_client.open_key_value_store_client(name="kept")
        assert (await kept.get_record(key="k")) is not None


async def test_stores_being_dropped_are_finished_once_per_client(
    redis_client: RedisStorageClient, raw_redis: Redis, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = await redis_client.open_key_value_store_client(name="half-dropped")
    await store.set_record(key="k", value=b"1", content_type=JSON)
    dropped = f"{{{key_prefix}}}:dropped".encode()
    # What a drop stopped right after its first step leaves: the store out of the registry, its id in :dropped.
    await raw_redis.hdel(f"{{{key_prefix}}}:stores".encode(), store.store_id)
    await raw_redis.hdel(f"{{{key_prefix}}}:names".encode(), "half-dropped")
    await raw_redis.sadd(dropped, store.store_id)

    await redis_client.list_key_value_stores()  # this client had finished its drops before: none now
    assert await raw_redis.smembers(dropped) == {store.store_id.encode()}

    with caplog.at_level(logging.INFO, logger="recoverable"):
        async with RedisStorageClient(services.redis_url(), key_prefix=key_prefix) as fresh:
            await fresh.open_key_value_store_client(name="another")

    assert await _keys(raw_redis, f"{key_prefix}:{store.store_id}") == set()
    assert not await raw_redis.exists(dropped)
    assert any(store.store_id in r.getMessage() and "finishing the drop" in r.getMessage() for r in caplog.records)


async def test_key_prefixes_keep_clients_apart(redis_url: str, key_prefix: str) -> None:
    async with (
        RedisStorageClient(redis_url, key_prefix=key_prefix + "-a") as first,
        RedisStorageClient(redis_url, key_prefix=key_prefix + "-b") as second,
    ):
        await (await first.open_key_value_store_client(name="same")).set_record(key="k", value=b"a", content_type=JSON)

        store = await second.open_key_value_store_client(name="same")

        assert await store.get_record(key="k") is None
        assert [m.name for m in await second.list_key_value_stores()] == ["same"]
        assert len(await first.list_key_value_stores()) == 1


# --- atomicity under concurrent writers -----------------------------------------------------------------


async def test_losing_conditional_writes_use_no_version_number(redis_url: str, key_prefix: str) -> None:
    # The race itself runs on every backend in tests/conformance/test_races.py; on Redis, the store's
    # counter also moves only for the writes that won.
    writers, increments = 8, 25
    clients = [RedisStorageClient(redis_url, key_prefix=key_prefix) for _ in range(writers)]
    try:
        stores = [await client.open_key_value_store_client(name="counter") for client in clients]
        record, conflicts = await increment_concurrently(stores, increments)
    finally:
        for client in clients:
            await client.aclose()

    assert int(record.value) == writers * increments
    assert record.version == str(1 + writers * increments)
    assert conflicts > 0  # the writers did race


async def test_concurrent_opens_of_a_new_name_make_one_store(redis_url: str, key_prefix: str) -> None:
    clients = [RedisStorageClient(redis_url, key_prefix=key_prefix) for _ in range(10)]
    try:
        stores = await asyncio.gather(*(c.open_key_value_store_client(name="fresh") for c in clients))
        listed = await clients[0].list_key_value_stores()
    finally:
        for client in clients:
            await client.aclose()

    assert len({store.store_id for store in stores}) == 1
    assert [m.name for m in listed] == ["fresh"]


# --- Redis Cluster --------------------------------------------------------------------------------------


async def test_the_same_code_runs_on_redis_cluster(key_prefix: str) -> None:
    nodes = services.redis_cluster_nodes()
    cluster = RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes])
    try:
        async with RedisStorageClient(client=cluster, key_prefix=key_prefix) as client:
            stores = [await client.open_key_value_store_client(name=f"store-{i}") for i in range(8)]
            slots = set()
            for i, store in enumerate(stores):
                first = await store.set_record(key="k/1", value=b"1", content_type=JSON, if_absent=True)
                await store.set_record(key="k/2", value=str(i).encode(), content_type=JSON, if_version=None)
                with pytest.raises(VersionConflictError):
                    await store.set_record(key="k/1", value=b"x", content_type=JSON, if_absent=True)
                await store.set_record(key="k/1", value=b"2", content_type=JSON, if_version=first)
                assert [info.key async for info in store.iterate_keys(prefix="k/")] == ["k/1", "k/2"]
                assert await store.delete_record(key="k/2") is True
                slots.add(key_slot(f"{key_prefix}:{store.store_id}".encode()))
            assert len({m.id for m in await client.list_key_value_stores()}) == 8
            reopened = await client.open_key_value_store_client(id=stores[3].store_id)
            record = await reopened.get_record(key="k/1")
            assert record is not None
            assert record.value == b"2"
            for store in stores:
                await store.purge()
                await store.drop()
            assert await client.list_key_value_stores() == []
            assert "cluster 127.0.0.1:" in client.server
    finally:
        await cluster.aclose()
    assert len(slots) > 1


# --- errors ---------------------------------------------------------------------------------------------


async def test_a_server_that_is_down_raises_storage_backend_error_without_the_password() -> None:
    port = _free_port()
    async with RedisStorageClient(f"redis://worker:s3cret-pass@127.0.0.1:{port}/2", key_prefix="down") as client:
        with pytest.raises(StorageBackendError) as info:
            await client.open_key_value_store_client(name="crawl")

    message = str(info.value)
    assert f"127.0.0.1:{port}/2" in message
    assert "'crawl'" in message
    assert "s3cret-pass" not in message
    assert "worker" not in client.server
    assert info.value.store == "crawl"
    assert isinstance(info.value.__cause__, RedisConnectionError)


@contextlib.asynccontextmanager
async def _own_redis_server(tmp_path: Path, *args: str) -> AsyncIterator[tuple[int, asyncio.subprocess.Process]]:
    """A redis-server of this test alone, for what the shared one must not go through."""
    services.redis_url()  # skips or fails, as for every Redis test, when redis-server is missing
    port = _free_port()
    server = await asyncio.create_subprocess_exec(
        *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path), *args),
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            if services._redis_ping("127.0.0.1", port) or server.returncode is not None:
                break
            await asyncio.sleep(0.05)
        yield port, server
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()


async def test_a_server_that_goes_away_raises_storage_backend_error_naming_the_key(tmp_path: Path) -> None:
    async with (
        _own_redis_server(tmp_path) as (port, server),
        RedisStorageClient(f"redis://127.0.0.1:{port}/0") as client,
    ):
        store = await client.open_key_value_store_client(name="doomed")
        await store.set_record(key="k", value=b"1", content_type=JSON)
        server.kill()
        await server.wait()

        with pytest.raises(StorageBackendError) as info:
            await store.set_record(key="state/42", value=b"2", content_type=JSON)

    assert info.value.key == "state/42"
    assert "'state/42'" in str(info.value)
    assert "'doomed'" in str(info.value)
    assert f"127.0.0.1:{port}/0" in str(info.value)


async def test_a_refused_password_is_not_shown(tmp_path: Path) -> None:
    async with _own_redis_server(tmp_path, "--requirepass", "R1ght-Secret") as (port, _):
        async with RedisStorageClient(f"redis://:Wr0ng-Secret@127.0.0.1:{port}/0") as client:
            with pytest.raises(StorageBackendError) as info:
                await client.open_key_value_store_client()
        async with RedisStorageClient(f"redis://:R1ght-Secret@127.0.0.1:{port}/0") as client:
            await (await client.open_key_value_store_client()).set_record(key="k", value=b"1", content_type=JSON)

    assert "Wr0ng-Secret" not in str(info.value)
    assert "Wr0ng-Secret" not in client.server
    assert "R1ght-Secret" not in client.server
    assert f"127.0.0.1:{port}/0" in str(info.value)


# --- settings -------------------------------------------------------------------------------------------


async def test_the_url_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, key_prefix: str
) -> None:
    monkeypatch.setenv("RECOVERABLE_REDIS_URL", redis_url)
    async with RedisStorageClient(key_prefix=key_prefix) as client:
        store = await client.open_key_value_store_client()
        await store.set_record(key="k", value=b"1", content_type=JSON)
    assert client.server == redis_url


async def test_default_storage_client_builds_a_redis_client(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("RECOVERABLE_STORAGE_CLIENT", "redis")
    monkeypatch.setenv("RECOVERABLE_REDIS_URL", redis_url)
    configuration = Configuration.from_env()

    client = default_storage_client(configuration)

    assert isinstance(client, RedisStorageClient)
    assert configuration.redis_url == redis_url
    await client.aclose()


def test_a_url_is_required() -> None:
    with pytest.raises(ConfigurationError, match="RECOVERABLE_REDIS_URL"):
        RedisStorageClient()


def test_a_url_that_is_not_redis_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisStorageClient("http://user:hunter2@example.com/")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("prefix", ["", "a{b", "a}b", "x" * 201])
def test_key_prefixes_without_braces(prefix: str) -> None:
    with pytest.raises(ConfigurationError):
        RedisStorageClient("redis://127.0.0.1:6379/0", key_prefix=prefix)


async def test_a_given_client_is_used_and_left_open(redis_url: str, key_prefix: str) -> None:
    raw = Redis.from_url(redis_url)
    async with RedisStorageClient(client=raw, key_prefix=key_prefix) as client:
        kvs = await KeyValueStore.open(name="given", storage_client=client)
        await kvs.set_value("k", {"a": 1})
    assert await raw.ping()
    await raw.aclose()


async def test_a_client_that_decodes_responses_is_refused(redis_url: str) -> None:
    raw = Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisStorageClient(client=raw)
    with pytest.raises(ConfigurationError, match="not both"):
        RedisStorageClient(redis_url, client=Redis.from_url(redis_url))
    await raw.aclose()


async def test_a_warning_when_writes_are_not_fsynced_before_the_reply(
    raw_redis: Redis, redis_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = _text_values(await raw_redis.config_get("appendfsync"))["appendfsync"]
    await raw_redis.config_set("appendfsync", "everysec")
    try:
        with caplog.at_level(logging.WARNING, logger="recoverable.storages.redis"):
            async with RedisStorageClient(redis_url, key_prefix=key_prefix) as client:
                await client.open_key_value_store_client()
                await client.open_key_value_store_client(name="again")
    finally:
        await raw_redis.config_set("appendfsync", before)

    warnings = [r for r in caplog.records if r.name == "recoverable.storages.redis"]
    assert len(warnings) == 1
    assert "appendfsync=everysec" in warnings[0].getMessage()


async def test_no_warning_when_writes_are_fsynced(
    raw_redis: Redis, redis_client: RedisStorageClient, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _text_values(await raw_redis.config_get("append*"))
    if (settings.get("appendonly"), settings.get("appendfsync")) != ("yes", "always"):
        pytest.skip("the Redis server of RECOVERABLE_TEST_REDIS_URL does not fsync every write")
    with caplog.at_level(logging.WARNING, logger="recoverable.storages.redis"):
        await redis_client.open_key_value_store_client()
    assert [r for r in caplog.records if r.name == "recoverable.storages.redis"] == []


def test_without_the_redis_package_the_error_says_what_to_install(child_env: dict[str, str], python: str) -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["redis"] = None
        import recoverable
        from recoverable.errors import MissingDependencyError
        try:
            from recoverable import RedisStorageClient
        except MissingDependencyError as exc:
            print(exc)
        else:
            print("imported")
        """
    )
    result = subprocess.run([python, "-c", code], env=child_env, capture_output=True, text=True, check=True)
    assert "pip install 'recoverable[redis]'" in result.stdout
    assert sys.modules.get("redis") is not None
