"""Storage client that keeps stores on a key-value store API v2 server: `recoverable serve` or the Apify platform."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from datetime import timedelta
from typing import Any

from typing_extensions import override

from recoverable._kv_api import path_segment
from recoverable.configuration import Configuration
from recoverable.errors import (
    ConfigurationError,
    InvalidStoreNameError,
    StorageBackendError,
    StoreNotFoundError,
    VersionConflictError,
)
from recoverable.storages._base import StorageClient
from recoverable.storages._http._key_value_store_client import HttpKeyValueStoreClient, parse_metadata
from recoverable.storages._http._session import ApiSession, Target
from recoverable.storages._models import KeyValueStoreMetadata
from recoverable.storages._validation import (
    store_alias,
    validate_store_id,
    validate_store_name,
    validate_store_reference,
)

__all__ = ["DEFAULT_ALIAS_STORE_NAME", "HttpStorageClient"]

DEFAULT_ALIAS_STORE_NAME = "recoverable-aliases"
"""The named store where `HttpStorageClient` keeps which unnamed store each alias stands for."""

_OK = 200
_CREATED = 201
_NOT_FOUND = 404
_LIST_PAGE = 1000
_ALIAS_ATTEMPTS = 5
_JSON = "application/json"
_PLAIN_ALIAS = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
_ALIAS_KEY_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
_PLATFORM_MAX_KEY = 256


class HttpStorageClient(StorageClient):
    """Stores on a server speaking the Apify key-value store API v2: `recoverable serve`, or the Apify platform.

    One pooled httpx client serves every store opened with this client; close it with `aclose()` or
    `async with`. Requests are retried on 429, 5xx and network failures with exponential backoff and
    jitter (honouring `Retry-After`) until `max_retries` retries were made or `max_retry_time` has passed;
    other 4xx answers fail at once with the server's error type and message. Bodies over 1 KiB are sent
    gzip-compressed. Every failure is raised as one of the library's `StorageError`s, naming the store,
    key and URL (never the token).

    A store opened by `name` is the server's named store (`POST /v2/key-value-stores?name=...`, created
    when missing). A store opened by `alias` (and the default store, the alias `"default"`) is an unnamed
    store; which one each alias stands for is kept in the named store `alias_store_name` on the server, so
    every client of the same server and token sees the same aliases. That store is hidden from
    `list_key_value_stores()`.

    Versions and conditional writes: against `recoverable serve`, versions are the backend's, sent as
    ETags, and `if_version` / `if_absent` become `If-Match` / `If-None-Match: *`, checked atomically by the
    server. The Apify platform sends no ETag: a record's version is then a hash of its content type and
    bytes (so writing the same content again keeps the version), and conditional writes and deletes are
    refused with a `StorageError` before anything is sent, because the platform would ignore the
    condition. Aliases are then resolved without that protection against two clients racing.

    Args:
        base_url: The server, e.g. `http://10.0.0.5:8321` or `https://api.apify.com` (a trailing `/v2` is
            accepted). `RECOVERABLE_HTTP_URL` when omitted.
        token: The bearer token to send. `RECOVERABLE_HTTP_TOKEN` when omitted; none when neither is set.
        timeout: Longest to wait on the network (connecting, sending, each read) in one attempt.
            `RECOVERABLE_HTTP_TIMEOUT_SECS` (default 30 s) when omitted.
        max_retries: Retries of one request after its first attempt; 0 disables retrying.
        max_retry_time: No retry starts later than this after the first attempt of a request.
        max_connections: Size of the connection pool.
        default_store_id: The id of the store to open as the default store (with no id, name or alias),
            e.g. an Actor run's default store on the platform; by default the alias `"default"`.
        alias_store_name: The named store holding the aliases; it cannot be opened by name.
        configuration: Where omitted settings come from; `Configuration.from_env()` when omitted.

    Raises:
        ConfigurationError: No base URL was given or configured, or a setting is invalid.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        token: str | None = None,
        timeout: timedelta | None = None,
        max_retries: int = 8,
        max_retry_time: timedelta = timedelta(seconds=60),
        max_connections: int = 16,
        default_store_id: str | None = None,
        alias_store_name: str = DEFAULT_ALIAS_STORE_NAME,
        configuration: Configuration | None = None,
    ) -> None:
        configuration = configuration or Configuration.from_env()
        base_url = base_url or configuration.http_url
        if not base_url:
            raise ConfigurationError(
                "HttpStorageClient needs the server's address: pass base_url= or set RECOVERABLE_HTTP_URL, "
                "e.g. 'http://127.0.0.1:8321' for `recoverable serve` or 'https://api.apify.com'"
            )
        self._session = ApiSession(
            base_url=base_url,
            token=token if token is not None else configuration.http_token,
            timeout=timeout if timeout is not None else configuration.http_timeout,
            max_retries=max_retries,
            max_retry_time=max_retry_time,
            max_connections=max_connections,
        )
        try:
            self._default_store_id = None if default_store_id is None else validate_store_id(default_store_id)
            self._alias_store_name = validate_store_name(alias_store_name, what="alias_store_name")
        except InvalidStoreNameError as exc:
            raise ConfigurationError(str(exc)) from None
        self._alias_lock = asyncio.Lock()

    @property
    def base_url(self) -> str:
        """The API root this client talks to (`.../v2`), without credentials."""
        return self._session.base_url

    def __repr__(self) -> str:
        return f"<HttpStorageClient base_url={self.base_url!r}>"

    @override
    async def aclose(self) -> None:
        await self._session.aclose()

    @override
    async def open_key_value_store_client(
        self,
        *,
        id: str | None = None,
        name: str | None = None,
        alias: str | None = None,
    ) -> HttpKeyValueStoreClient:
        validate_store_reference(id=id, name=name, alias=alias)
        if id is not None:
            return await self._open_id(id)
        if name is not None:
            if name == self._alias_store_name:
                raise InvalidStoreNameError(
                    f"the store name {name!r} is reserved: it holds the aliases of this HttpStorageClient; "
                    "pick another name",
                    store=name,
                )
            return await self._open_name(name)
        alias = store_alias(alias)
        if alias == "default" and self._default_store_id is not None:
            return await self._open_id(self._default_store_id)
        return await self._open_alias(alias)

    @override
    async def find_key_value_store(self, *, name: str) -> str | None:
        validate_store_name(name)
        try:
            store = await self._open_id(f"~{name}")
        except StoreNotFoundError:
            return None
        return store.store_id

    async def _open_id(self, store_id: str, *, alias: str | None = None) -> HttpKeyValueStoreClient:
        target = Target(store=store_id)
        action = "open"
        response = await self._session.request(
            "GET", f"key-value-stores/{path_segment(store_id)}", target=target, action=action
        )
        if response.status == _NOT_FOUND:
            raise StoreNotFoundError(f"no key-value store has the id {store_id!r} at {self.base_url}", store=store_id)
        if response.status != _OK:
            raise self._session.error(response, target=target, action=action)
        return self._client(parse_metadata(self._session, response, target=target, action=action), alias=alias)

    async def _open_name(self, name: str) -> HttpKeyValueStoreClient:
        target = Target(store=name)
        action = "open or create"
        response = await self._session.request(
            "POST",
            "key-value-stores",
            target=target,
            action=action,
            params={"name": name},
            content=b"{}",
            headers={"Content-Type": _JSON},
        )
        if response.status not in (_OK, _CREATED):
            raise self._session.error(response, target=target, action=action)
        return self._client(parse_metadata(self._session, response, target=target, action=action))

    async def _create_unnamed(self, alias: str) -> KeyValueStoreMetadata:
        target = Target(store=f"alias {alias}")
        action = "create an unnamed store for"
        response = await self._session.request(
            "POST", "key-value-stores", target=target, action=action, content=b"{}", headers={"Content-Type": _JSON}
        )
        if response.status not in (_OK, _CREATED):
            raise self._session.error(response, target=target, action=action)
        return parse_metadata(self._session, response, target=target, action=action)

    def _client(self, metadata: KeyValueStoreMetadata, *, alias: str | None = None) -> HttpKeyValueStoreClient:
        on_drop = None
        if alias is not None:

            async def on_drop(store: HttpKeyValueStoreClient) -> None:
                await self._forget_alias(alias, store.store_id)

        return HttpKeyValueStoreClient(session=self._session, metadata=metadata, on_drop=on_drop)

    async def _open_alias(self, alias: str) -> HttpKeyValueStoreClient:
        """Open the unnamed store an alias stands for, creating it (and the alias) when there is none."""
        async with self._alias_lock:
            for _ in range(_ALIAS_ATTEMPTS):
                aliases = await self._open_name(self._alias_store_name)
                record = await aliases.get_record(key=alias_record_key(alias))
                if record is not None:
                    store_id = _alias_target(record.value)
                    if store_id is not None:
                        try:
                            return await self._open_id(store_id, alias=alias)
                        except StoreNotFoundError:
                            pass  # The store was dropped: the alias gets a new one.
                created = await self._create_unnamed(alias)
                conditional = self._session.conditional_writes is not False
                try:
                    await aliases.set_record(
                        key=alias_record_key(alias),
                        value=json.dumps({"id": created.id, "alias": alias}, ensure_ascii=False).encode(),
                        content_type=_JSON,
                        if_absent=conditional and record is None,
                        if_version=record.version if conditional and record is not None else None,
                    )
                except VersionConflictError:
                    # Another client gave the alias a store at the same moment: use that one.
                    await self._client(created).drop()
                    continue
                except Exception:
                    await self._client(created).drop()
                    raise
                return self._client(created, alias=alias)
        raise StorageBackendError(
            f"could not open the store of alias {alias!r} at {self.base_url}: other clients kept changing it",
            store=alias,
        )

    async def _forget_alias(self, alias: str, store_id: str) -> None:
        """Remove an alias after its store was dropped, unless it already stands for another store."""
        async with self._alias_lock:
            aliases = await self._open_name(self._alias_store_name)
            record = await aliases.get_record(key=alias_record_key(alias))
            if record is None or _alias_target(record.value) != store_id:
                return
            conditional = self._session.conditional_writes is not False
            # A conflict means someone gave the alias a new store meanwhile; that one stays.
            with contextlib.suppress(VersionConflictError):
                await aliases.delete_record(
                    key=alias_record_key(alias), if_version=record.version if conditional else None
                )

    @override
    async def list_key_value_stores(self) -> list[KeyValueStoreMetadata]:
        target = Target()
        action = "list"
        found: list[KeyValueStoreMetadata] = []
        offset = 0
        while True:
            response = await self._session.request(
                "GET",
                "key-value-stores",
                target=target,
                action=action,
                params={"unnamed": "true", "offset": offset, "limit": _LIST_PAGE},
            )
            if response.status != _OK:
                raise self._session.error(response, target=target, action=action)
            try:
                page, total = _store_page(response.data())
            except (ValueError, TypeError, KeyError) as exc:
                raise self._session.bad_answer(
                    response, target=target, action=action, problem=f"no list of stores ({exc})"
                ) from exc
            found.extend(page)
            offset += len(page)
            if not page or (total is not None and offset >= total):
                break
        return sorted((m for m in found if m.name != self._alias_store_name), key=lambda m: m.created_at)


def _store_page(data: Any) -> tuple[list[KeyValueStoreMetadata], int | None]:
    """The stores and the total of a page of the store listing.

    Raises:
        ValueError, TypeError, KeyError: The page does not have the API's shape.
    """
    items = data["items"]
    if not isinstance(items, list):
        raise TypeError("'items' is not a list")
    total = data.get("total")
    return [KeyValueStoreMetadata.model_validate(item) for item in items], total if isinstance(total, int) else None


def alias_record_key(alias: str) -> str:
    """The key of the record naming the store of `alias` in the aliases store.

    It is a key the Apify platform takes (at most 256 of `a-zA-Z0-9!-_.'()`), whatever the alias holds: an
    alias that is also a valid store name is its own key (as before aliases could be anything), any other
    is `_` and its UTF-8 bytes with every byte but a letter, a digit, `-` or `.` written `_XX`, and one
    longer than the platform allows is `!` and its SHA-256. A plain alias never starts with `_` or `!`, and
    the record also holds the alias itself.
    """
    if _PLAIN_ALIAS.fullmatch(alias):
        return alias
    encoded = "_" + "".join(
        chr(byte) if chr(byte) in _ALIAS_KEY_SAFE else f"_{byte:02X}" for byte in alias.encode("utf-8")
    )
    if len(encoded) <= _PLATFORM_MAX_KEY:
        return encoded
    return "!" + hashlib.sha256(alias.encode("utf-8")).hexdigest()


def _alias_target(value: bytes) -> str | None:
    """The store id an alias record holds; None when the record is not one (then the alias is re-created)."""
    try:
        data = json.loads(value)
    except ValueError:
        return None
    store_id = data.get("id") if isinstance(data, dict) else None
    return store_id if isinstance(store_id, str) and store_id else None
