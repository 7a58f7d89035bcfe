"""Storage client that keeps stores in Redis: shared by processes and machines, atomic on the server."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from typing_extensions import override

import recoverable.storages._redis._scripts as scripts
from recoverable.configuration import Configuration
from recoverable.errors import ConfigurationError, RecoverableError, StoreNotFoundError
from recoverable.storages._base import StorageClient
from recoverable.storages._models import KeyValueStoreMetadata, new_store_id
from recoverable.storages._redis._dependency import redis_asyncio, redis_exceptions
from recoverable.storages._redis._errors import ServerInfo
from recoverable.storages._redis._key_value_store_client import RedisKeyValueStoreClient, from_micros, now_micros
from recoverable.storages._redis._layout import DEFAULT_KEY_PREFIX, RegistryKeys, StoreKeys, validate_key_prefix
from recoverable.storages._validation import store_alias, validate_store_name, validate_store_reference

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["RedisStorageClient"]

logger = logging.getLogger("recoverable.storages.redis")

_OPEN_ATTEMPTS = 5


class RedisStorageClient(StorageClient):
    """Stores in a Redis server (or Redis Cluster), shared by every process that uses the same key prefix.

    Every write is one Lua script, so it is all-or-nothing and conditional writes (`if_version`,
    `if_absent`) are atomic on the server, whoever else writes. Versions come from a counter per store.
    The key layout (one hash tag per store, so it runs on Redis Cluster unchanged) is documented in
    `recoverable.storages._redis._layout`.

    Durability: a write returns when Redis acknowledged it. It is on disk at that moment only when the
    server runs with `appendonly yes` and `appendfsync always`; with the default `appendfsync everysec`
    the last second of writes can be lost if the server machine crashes, and without `appendonly`, every
    write since the last snapshot. The client checks the setting once (CONFIG GET, where allowed) and logs
    a warning on the `recoverable.storages.redis` logger when writes are not fsync'd before the reply.

    Args:
        url: The server, e.g. `redis://localhost:6379/0`, `rediss://user:password@host:6380/0` or
            `unix:///run/redis.sock`; `RECOVERABLE_REDIS_URL` when omitted.
        client: A `redis.asyncio.Redis` or `redis.asyncio.RedisCluster` to use instead of a URL; it must
            not decode responses. The caller keeps it and closes it; `aclose()` leaves it open.
        key_prefix: The first part of every key (no braces); clients with different prefixes never see
            each other's stores.
        max_connections: The most connections the client opens to the server (from a URL); concurrent
            operations beyond it wait for a free one.
        configuration: Where the URL comes from when neither `url` nor `client` is given.

    Raises:
        ConfigurationError: No URL was given or configured, the URL is not a Redis URL, or both `url` and
            `client` were given.
        MissingDependencyError: The `redis` package is not installed (raised on import).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis_asyncio.Redis | redis_asyncio.RedisCluster | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        max_connections: int = 50,
        configuration: Configuration | None = None,
    ) -> None:
        self._prefix = validate_key_prefix(key_prefix)
        self._registry = RegistryKeys.for_prefix(self._prefix)
        if client is not None:
            if url is not None:
                raise ConfigurationError("pass either url or client to RedisStorageClient, not both")
            if _decodes_responses(client):
                raise ConfigurationError(
                    "the Redis client given to RedisStorageClient decodes responses; values are bytes, so create "
                    "it with decode_responses=False"
                )
            self._redis = client
            self._owns_client = False
            self._server = ServerInfo.from_client(client)
        else:
            if url is None:
                url = (configuration or Configuration.from_env()).redis_url
            if not url:
                raise ConfigurationError(
                    "RedisStorageClient needs a server: pass url='redis://host:6379/0' or set RECOVERABLE_REDIS_URL"
                )
            self._server = ServerInfo.from_url(url)
            try:
                # A blocking pool: many concurrent writers wait for a connection instead of failing.
                pool = redis_asyncio.BlockingConnectionPool.from_url(
                    url, max_connections=max_connections, decode_responses=False
                )
                self._redis = redis_asyncio.Redis.from_pool(pool)
            except ValueError as exc:
                raise ConfigurationError(
                    f"{self._server.scrub(url)!r} is not a Redis URL: {self._server.scrub(str(exc))} "
                    "(use redis://, rediss:// or unix://)"
                ) from None
            self._owns_client = True
        self._durability_checked = False
        self._drops_finished = False

    @property
    def key_prefix(self) -> str:
        """The first part of every key this client writes."""
        return self._prefix

    @property
    def server(self) -> str:
        """The server, as messages name it (never with a password)."""
        return self._server.description

    @property
    def redis(self) -> redis_asyncio.Redis | redis_asyncio.RedisCluster:
        """The `redis.asyncio` client underneath."""
        return self._redis

    @override
    async def open_key_value_store_client(
        self,
        *,
        id: str | None = None,
        name: str | None = None,
        alias: str | None = None,
    ) -> RedisKeyValueStoreClient:
        validate_store_reference(id=id, name=name, alias=alias)
        alias = None if id is not None or name is not None else store_alias(alias)
        label = id or name or alias or "default"
        with self._server.backend.mapped("open", store=label):
            await self._check_durability()
            await self._finish_stopped_drops()
            for _ in range(_OPEN_ATTEMPTS):
                entry = await self._find(id=id, name=name, alias=alias)
                if entry is None:
                    if id is not None:
                        raise StoreNotFoundError(
                            f"no key-value store has the id {id!r} on Redis at {self._server.description} "
                            f"(key prefix {self._prefix!r})",
                            store=id,
                        )
                    entry = await self._create(name=name, alias=alias)
                store = self._client_for(entry)
                # Recording the access also tells whether the store still exists: a drop may have won.
                meta = StoreKeys.for_store(self._prefix, store.store_id).meta
                touched = await scripts.TOUCH(self._redis, [meta], [now_micros()])
                if touched == scripts.DONE:
                    return store
                if id is not None:
                    break
        raise StoreNotFoundError(
            f"key-value store {label!r} was dropped while it was being opened on Redis at {self._server.description}",
            store=label,
        )

    @override
    async def find_key_value_store(self, *, name: str) -> str | None:
        validate_store_name(name)
        with self._server.backend.mapped("look up", store=name):
            entry = await self._find(id=None, name=name, alias=None)
        return None if entry is None else str(entry["id"])

    async def _find(self, *, id: str | None, name: str | None, alias: str | None) -> dict[str, Any] | None:
        store_id = id
        if store_id is None:
            index, label = (self._registry.names, name) if name is not None else (self._registry.aliases, alias)
            found = await self._redis.hget(index, label or "default")
            if found is None:
                return None
            store_id = _text(found)
        raw = await self._redis.hget(self._registry.stores, store_id)
        if raw is None:
            return None
        entry: dict[str, Any] = json.loads(raw)
        return entry

    async def _create(self, *, name: str | None, alias: str | None) -> dict[str, Any]:
        store_id = new_store_id()
        now = now_micros()
        entry = {"id": store_id, "name": name, "alias": alias, "created_at": now}
        meta = StoreKeys.for_store(self._prefix, store_id).meta
        # The store exists before its name points to it, so no one finds a name without a store.
        await self._redis.hset(
            meta,
            mapping={
                "id": store_id,
                "name": name or "",
                "alias": alias or "",
                "created_at": now,
                "modified_at": now,
                "accessed_at": now,
                "counter": 0,
            },
        )
        index, label = (self._registry.names, name) if name is not None else (self._registry.aliases, alias)
        winner = (
            await scripts.REGISTER(
                self._redis, [index, self._registry.stores], [label or "default", store_id, json.dumps(entry)]
            )
        ).decode()
        if winner == store_id:
            return entry
        # Another process created the store under this label first: use theirs.
        await self._redis.delete(meta)
        raw = await self._redis.hget(self._registry.stores, winner)
        if raw is None:
            return await self._create(name=name, alias=alias)
        found: dict[str, Any] = json.loads(raw)
        return found

    def _client_for(self, entry: dict[str, Any]) -> RedisKeyValueStoreClient:
        store_id = str(entry["id"])
        return RedisKeyValueStoreClient(
            client=self._redis,
            server=self._server,
            registry=self._registry,
            keys=StoreKeys.for_store(self._prefix, store_id),
            store_id=store_id,
            name=entry.get("name"),
            alias=entry.get("alias"),
            created_at=from_micros(entry["created_at"]),
        )

    @override
    async def list_key_value_stores(self) -> list[KeyValueStoreMetadata]:
        await self._finish_stopped_drops()
        with self._server.backend.mapped("list the key-value stores"):
            entries = await self._redis.hgetall(self._registry.stores)
            stores = [json.loads(raw) for raw in entries.values()]
            pipe = self._redis.pipeline(transaction=False)
            for entry in stores:
                pipe.hmget(StoreKeys.for_store(self._prefix, entry["id"]).meta, ["modified_at", "accessed_at"])
            times = await pipe.execute() if stores else []
        listed: list[KeyValueStoreMetadata] = []
        for entry, (modified_raw, accessed_raw) in zip(stores, times, strict=True):
            if modified_raw is None:
                continue  # being dropped
            created: datetime = from_micros(entry["created_at"])
            modified = max(from_micros(modified_raw), created)
            listed.append(
                KeyValueStoreMetadata(
                    id=entry["id"],
                    name=entry.get("name"),
                    created_at=created,
                    modified_at=modified,
                    accessed_at=max(from_micros(accessed_raw or modified_raw), modified),
                )
            )
        return sorted(listed, key=lambda m: (m.created_at, m.id))

    async def _finish_stopped_drops(self) -> None:
        """Once per client: delete what is left of stores whose drop a crash stopped half-way."""
        if self._drops_finished:
            return
        self._drops_finished = True
        try:
            dropped = await self._redis.smembers(self._registry.dropped)
            for raw in dropped:
                store_id = _text(raw)
                logger.info("finishing the drop of store %s on Redis at %s", store_id, self._server.description)
                await self._client_for({"id": store_id, "name": None, "alias": None, "created_at": 0}).finish_drop()
        except (RecoverableError, redis_exceptions.RedisError, OSError) as exc:
            # Leftovers take space but no store shows them; the next open or listing tries again.
            self._drops_finished = False
            logger.warning(
                "could not finish the drops of key-value stores stopped half-way on Redis at %s: %s",
                self._server.description,
                exc,
            )

    async def _check_durability(self) -> None:
        if self._durability_checked:
            return
        self._durability_checked = True
        try:
            config = await self._redis.config_get("append*")
        except redis_exceptions.RedisError:
            logger.debug("could not read the persistence settings of Redis at %s", self._server.description)
            return
        settings = {_text(k): _text(v) for k, v in config.items()}
        if settings.get("appendonly") != "yes" or settings.get("appendfsync") != "always":
            logger.warning(
                "Redis at %s runs with appendonly=%s, appendfsync=%s: a write it acknowledged can be lost if the "
                "server crashes; set `appendonly yes` and `appendfsync always` for writes that are durable when "
                "they return",
                self._server.description,
                settings.get("appendonly", "?"),
                settings.get("appendfsync", "?"),
            )

    @override
    async def aclose(self) -> None:
        if self._owns_client:
            await self._redis.aclose()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decodes_responses(client: object) -> bool:
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if isinstance(kwargs, dict):
        return bool(kwargs.get("decode_responses"))
    encoder = getattr(client, "encoder", None)
    return bool(getattr(encoder, "decode_responses", False))
