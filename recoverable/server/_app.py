"""The ASGI application: the key-value store API v2 over any storage client."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hmac
import json
import logging
import math
import re
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import parse_qsl, unquote_to_bytes

from recoverable._kv_api import (
    ERROR_INVALID_RECORD_KEY,
    ERROR_INVALID_REQUEST,
    ERROR_INVALID_VALUE,
    ERROR_METHOD_NOT_ALLOWED,
    ERROR_NOT_FOUND,
    ERROR_PAGE_NOT_FOUND,
    ERROR_PRECONDITION_FAILED,
    ERROR_SERVER,
    ERROR_TOKEN_NOT_PROVIDED,
    ERROR_TOKEN_NOT_VALID,
    MAX_LIST_LIMIT,
    SERVER_HEADER,
    etag_for,
    parse_etag_list,
    path_segment,
)
from recoverable._version import VERSION
from recoverable.errors import (
    ConfigurationError,
    InvalidKeyError,
    InvalidStoreNameError,
    MissingDependencyError,
    StorageError,
    StoreNotFoundError,
    VersionConflictError,
)
from recoverable.server._body import BodyBudget, read_body
from recoverable.server._errors import ApiError
from recoverable.storages._validation import MAX_KEY_LENGTH, validate_key, validate_store_name

try:
    from starlette.applications import Starlette
    from starlette.convertors import Convertor, register_url_convertor
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise MissingDependencyError(
        "`recoverable serve` and recoverable.server need Starlette and uvicorn: pip install 'recoverable[server]'"
    ) from exc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from recoverable.server._body import BodyHold
    from recoverable.storages._base import KeyValueStoreClient, StorageClient
    from recoverable.storages._models import KeyValueStoreMetadata, StoredRecord

__all__ = ["DEFAULT_BODY_TIMEOUT", "DEFAULT_MAX_BODY_SIZE", "IN_FLIGHT_BODIES", "create_app"]

logger = logging.getLogger("recoverable.server")

DEFAULT_MAX_BODY_SIZE = 64 * 1024 * 1024
"""The default limit on a record's size (the platform's is 9 MiB)."""

IN_FLIGHT_BODIES = 4
"""By default the bodies in flight may hold this many times `max_body_size` at once."""

DEFAULT_BODY_TIMEOUT = 30.0
"""Seconds a request body may pause, and its grace before `MIN_BODY_RATE` applies."""

_VERSION = VERSION
_JSON = "application/json; charset=utf-8"
_DEFAULT_CONTENT_TYPE = "application/octet-stream"
_RECORD_PATH = re.compile(rb"/key-value-stores/([^/?]+)/records/([^?]+)\Z")
_T = TypeVar("_T")


class _KeyConvertor(Convertor[str]):
    """A record key in a decoded path: anything, newlines included (Starlette's `path` stops at them)."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("recoverable_key", _KeyConvertor())


def create_app(
    *,
    storage_client: StorageClient,
    token: str | None = None,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    max_key_length: int = MAX_KEY_LENGTH,
    max_bytes_in_flight: int | None = None,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
) -> Starlette:
    """Build the ASGI app serving `storage_client` over the Apify key-value store API v2.

    The app answers as the platform does (`{"data": ...}` and `{"error": {"type", "message"}}` envelopes,
    status codes, key paging), sends the record's version as its ETag, and honours `If-Match` and
    `If-None-Match` on record writes and deletes (412 `precondition-failed` when they do not hold). It
    never closes `storage_client`; on shutdown it waits for the writes it started to finish.

    Its memory is bounded: a request body is read within `max_body_size` (a gzip or deflate body is decoded
    as it arrives, in small steps, and cut as soon as it passes the limit), and all the bodies in flight
    together within `max_bytes_in_flight`; a body that does not fit gets 503 with `Retry-After` before it
    is kept. A body must keep arriving (see `body_timeout`), or the request gets 408 and its connection is
    closed. Creating a store, and looking up one seen before, never lists the backend's stores.

    Args:
        storage_client: The backend holding the stores.
        token: When given, every request must carry `Authorization: Bearer <token>` (or `?token=`);
            otherwise 401.
        max_body_size: Largest record accepted, in bytes, after decompression; larger ones get 413.
        max_key_length: Longest record key accepted, in characters; at most `MAX_KEY_LENGTH`.
        max_bytes_in_flight: Most bytes of request bodies held at once, across all requests (raw, and
            decoded for compressed ones); at least `max_body_size`. By default `IN_FLIGHT_BODIES` times
            `max_body_size`.
        body_timeout: Longest pause, in seconds, between two parts of a request body; once a body has
            taken this long, it must also average at least `MIN_BODY_RATE` bytes per second.

    Raises:
        ConfigurationError: A limit is out of range.
    """
    if isinstance(max_body_size, bool) or not isinstance(max_body_size, int) or max_body_size < 1:
        raise ConfigurationError(f"max_body_size must be a positive number of bytes, got {max_body_size!r}")
    if (
        isinstance(max_key_length, bool)
        or not isinstance(max_key_length, int)
        or not 1 <= max_key_length <= MAX_KEY_LENGTH
    ):
        raise ConfigurationError(f"max_key_length must be from 1 to {MAX_KEY_LENGTH}, got {max_key_length!r}")
    if token is not None and not token:
        raise ConfigurationError("token must not be empty: pass None to serve without authentication")
    if max_bytes_in_flight is None:
        max_bytes_in_flight = IN_FLIGHT_BODIES * max_body_size
    if (
        isinstance(max_bytes_in_flight, bool)
        or not isinstance(max_bytes_in_flight, int)
        or max_bytes_in_flight < max_body_size
    ):
        raise ConfigurationError(
            f"max_bytes_in_flight must be a number of bytes of at least max_body_size ({max_body_size}), so that "
            f"a body of the largest size can be accepted; got {max_bytes_in_flight!r}"
        )
    if isinstance(body_timeout, bool) or not isinstance(body_timeout, int | float) or not 0 < body_timeout < math.inf:
        raise ConfigurationError(f"body_timeout must be a positive number of seconds, got {body_timeout!r}")
    api = _Api(
        storage_client=storage_client,
        token=token,
        max_body_size=max_body_size,
        max_key_length=max_key_length,
        budget=BodyBudget(max_bytes_in_flight),
        body_timeout=float(body_timeout),
    )
    store_path = "/v2/key-value-stores/{store}"
    routes = [
        Route("/v2/key-value-stores", api.endpoint(api.stores), methods=["GET", "POST"]),
        Route(store_path, api.endpoint(api.store), methods=["GET", "DELETE"]),
        Route(f"{store_path}/keys", api.endpoint(api.keys), methods=["GET"]),
        Route(
            f"{store_path}/records/{{key:recoverable_key}}",
            api.endpoint(api.record),
            methods=["GET", "HEAD", "PUT", "POST", "DELETE"],
        ),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(_ServerHeader)],
        exception_handlers={HTTPException: _http_exception},
        lifespan=api.lifespan,
    )


class _ServerHeader:
    """Adds `X-Recoverable-Server` to every answer, which tells our client that conditional writes work."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (SERVER_HEADER.lower().encode(), _VERSION.encode())]
            await send(message)

        await self._app(scope, receive, send_with_header)


async def _http_exception(request: Request, exc: Exception) -> Response:
    del request
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    if status == 405:  # noqa: PLR2004 - HTTP status
        return _error(ApiError(405, ERROR_METHOD_NOT_ALLOWED, "this method is not allowed here", headers))
    if status == 404:  # noqa: PLR2004 - HTTP status
        return _error(ApiError(404, ERROR_PAGE_NOT_FOUND, "no such API endpoint; the API lives under /v2/"))
    return _error(ApiError(status, ERROR_INVALID_REQUEST, str(getattr(exc, "detail", exc))))


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status_code=status, headers={"content-type": _JSON, **(headers or {})})


def _error(error: ApiError) -> Response:
    return _json({"error": {"type": error.type, "message": error.message}}, error.status, error.headers)


def _store_json(metadata: KeyValueStoreMetadata) -> dict[str, Any]:
    return metadata.model_dump(mode="json", by_alias=True)


def _query(request: Request) -> dict[str, str]:
    try:
        raw = request.scope.get("query_string", b"").decode("latin-1")
        return dict(parse_qsl(raw, keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        raise ApiError(400, ERROR_INVALID_REQUEST, "the query string is not valid UTF-8") from None


def _int_param(params: dict[str, str], name: str, *, default: int, low: int, high: int | None = None) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, ERROR_INVALID_VALUE, f"parameter {name}={raw!r} is not a whole number") from None
    if value < low:
        raise ApiError(400, ERROR_INVALID_VALUE, f"parameter {name}={value} must be at least {low}")
    return value if high is None else min(value, high)


def _bool_param(params: dict[str, str], name: str) -> bool:
    return params.get(name, "").strip().lower() in ("1", "true", "yes")


def _storage_error(exc: StorageError, request: Request) -> ApiError:
    """The answer to an error of the storage backend."""
    if isinstance(exc, StoreNotFoundError):
        return ApiError(404, ERROR_NOT_FOUND, str(exc))
    if isinstance(exc, InvalidKeyError):
        return ApiError(400, ERROR_INVALID_RECORD_KEY, str(exc))
    if isinstance(exc, InvalidStoreNameError):
        return ApiError(400, ERROR_INVALID_VALUE, str(exc))
    logger.error("%s %s failed in the storage backend", request.method, request.url.path, exc_info=exc)
    return ApiError(500, ERROR_SERVER, f"the storage backend failed: {exc}")


class _Api:
    """The handlers, the caches of open stores, and the writes in flight."""

    def __init__(
        self,
        *,
        storage_client: StorageClient,
        token: str | None,
        max_body_size: int,
        max_key_length: int,
        budget: BodyBudget,
        body_timeout: float,
    ) -> None:
        self._backend = storage_client
        self._token = token.encode() if token is not None else None
        self._max_body_size = max_body_size
        self._max_key_length = max_key_length
        self._budget = budget
        self._body_timeout = body_timeout
        # The stores and names seen so far: each store is looked up in the backend once.
        self._stores: dict[str, KeyValueStoreClient] = {}
        self._names: dict[str, str] = {}
        self._open_lock = asyncio.Lock()
        self._writes: set[asyncio.Task[Any]] = set()
        self._list_stores = _Fresh(self._backend.list_key_value_stores)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        del app
        yield
        if self._writes:
            logger.info("waiting for %d write(s) in flight to finish", len(self._writes))
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    # --- plumbing ---------------------------------------------------------------------------------

    def endpoint(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler with authentication and the mapping of errors onto error answers."""

        async def endpoint(request: Request) -> Response:
            try:
                self._authenticate(request)
                return await handler(request)
            except ApiError as exc:
                return _error(exc)
            except VersionConflictError as exc:
                return self._precondition_failed(str(exc), exc.actual)
            except ClientDisconnect:
                return _error(ApiError(400, ERROR_INVALID_REQUEST, "the client went away"))
            except StorageError as exc:
                return _error(_storage_error(exc, request))
            except Exception:
                logger.exception("%s %s failed", request.method, request.url.path)
                return _error(ApiError(500, ERROR_SERVER, "internal server error; the server log has the details"))

        return endpoint

    def _authenticate(self, request: Request) -> None:
        if self._token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            given = credentials.strip()
        else:
            given = _query(request).get("token", "")
        if not given:
            raise ApiError(
                401,
                ERROR_TOKEN_NOT_PROVIDED,
                "authentication required: send the header 'Authorization: Bearer <token>'",
            )
        if not hmac.compare_digest(given.encode(), self._token):
            raise ApiError(401, ERROR_TOKEN_NOT_VALID, "the token is not valid for this server")

    @staticmethod
    def _precondition_failed(message: str, actual: str | None) -> Response:
        headers = {"etag": etag_for(actual)} if actual is not None else {}
        return _error(ApiError(412, ERROR_PRECONDITION_FAILED, message, headers))

    async def _in_flight(self, coro: Coroutine[Any, Any, _T], hold: BodyHold | None = None) -> _T:
        """Run a write so that it completes even when the request is cancelled, and shutdown waits for it.

        `hold`, the budget share of the body being written, is kept until the write is done.
        """
        task = asyncio.ensure_future(coro)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        if hold is not None:
            hold.keep_until_done(task)
        return await asyncio.shield(task)

    def _key(self, request: Request) -> str:
        """The record key, percent-decoded from the raw path (so that `%2F` stays part of the key)."""
        raw_path: bytes | None = request.scope.get("raw_path")
        match = _RECORD_PATH.search(raw_path) if raw_path else None
        if match is not None:
            try:
                key = unquote_to_bytes(match.group(2)).decode("utf-8", errors="strict")
            except UnicodeDecodeError:
                raise ApiError(400, ERROR_INVALID_RECORD_KEY, "the record key is not valid UTF-8") from None
        else:
            key = str(request.path_params["key"])
        if len(key) > self._max_key_length:
            raise ApiError(
                400,
                ERROR_INVALID_RECORD_KEY,
                f"record key of {len(key)} characters is too long: at most {self._max_key_length} are allowed",
            )
        validate_key(key)
        return key

    async def _find_name(self, name: str) -> str | None:
        """The id of the store named `name`, without creating it."""
        known = self._names.get(name)
        if known is not None:
            return known
        # A name not seen yet may be a store made behind the server's back: the backend looks it up by
        # name, at a cost that does not grow with the number of stores.
        found = await self._backend.find_key_value_store(name=name)
        if found is not None:
            self._names[name] = found
        return found

    def _learn_names(self, stores: list[KeyValueStoreMetadata]) -> None:
        for metadata in stores:
            if metadata.name is not None:
                self._names[metadata.name] = metadata.id

    async def _store(self, ref: str) -> tuple[str, KeyValueStoreClient]:
        """Open the store a URL names: an id, `~name` or `username~name` (this server has one user).

        Returns:
            The store's id and its client.
        """
        if "~" not in ref:
            return ref, await self._store_by_id(ref)
        name = ref.split("~", 1)[1]
        store_id = await self._find_name(name) if name else None
        if store_id is not None and store_id not in self._stores:
            try:
                await self._store_by_id(store_id)
            except ApiError:
                # Dropped behind the server's back: look the name up again.
                self._forget(store_id)
                store_id = await self._find_name(name)
        if store_id is None:
            raise ApiError(404, ERROR_NOT_FOUND, f"key-value store named {name!r} was not found")
        return store_id, await self._store_by_id(store_id)

    async def _store_by_id(self, store_id: str) -> KeyValueStoreClient:
        store = self._stores.get(store_id)
        if store is None:
            try:
                store = await self._backend.open_key_value_store_client(id=store_id)
            except StoreNotFoundError:
                raise ApiError(404, ERROR_NOT_FOUND, f"key-value store {store_id!r} was not found") from None
            self._stores[store_id] = store
        return store

    def _forget(self, store_id: str) -> None:
        self._stores.pop(store_id, None)
        for name, known in list(self._names.items()):
            if known == store_id:
                del self._names[name]

    async def _call(self, store_id: str, operation: Callable[[], Awaitable[_T]]) -> _T:
        """Run an operation on a cached store; a store dropped behind the server's back is forgotten."""
        try:
            return await operation()
        except StoreNotFoundError:
            self._forget(store_id)
            raise ApiError(404, ERROR_NOT_FOUND, f"key-value store {store_id!r} was not found") from None

    # --- stores -----------------------------------------------------------------------------------

    async def stores(self, request: Request) -> Response:
        params = _query(request)
        if request.method == "POST":
            return await self._create_store(params.get("name") or None)
        offset = _int_param(params, "offset", default=0, low=0)
        limit = _int_param(params, "limit", default=MAX_LIST_LIMIT, low=1, high=MAX_LIST_LIMIT)
        desc = _bool_param(params, "desc")
        all_stores = list(await self._list_stores())
        self._learn_names(all_stores)
        if not _bool_param(params, "unnamed"):
            all_stores = [m for m in all_stores if m.name is not None]
        if desc:
            all_stores.reverse()
        page = all_stores[offset : offset + limit]
        data = {
            "total": len(all_stores),
            "offset": offset,
            "limit": limit,
            "count": len(page),
            "desc": desc,
            "items": [_store_json(m) for m in page],
        }
        return _json({"data": data})

    async def _create_store(self, name: str | None) -> Response:
        async with self._open_lock:
            if name is None:
                alias = f"unnamed-{secrets.token_hex(8)}"
                store = await self._backend.open_key_value_store_client(alias=alias)
                metadata = await store.get_metadata()
                self._stores[metadata.id] = store
                return _json({"data": _store_json(metadata)}, 201, {"location": f"/v2/key-value-stores/{metadata.id}"})
            validate_store_name(name)
            known = self._names.get(name)
            if known is not None:
                try:
                    store = await self._store_by_id(known)
                    return _json({"data": _store_json(await store.get_metadata())})
                except (ApiError, StoreNotFoundError):
                    self._forget(known)
            # Opening by name finds the store or creates it, without listing the others. It is new when it
            # was created after this moment (every backend stamps a new store with this machine's clock).
            before = datetime.now(UTC)
            store = await self._backend.open_key_value_store_client(name=name)
            metadata = await store.get_metadata()
            self._stores[metadata.id] = store
            self._names[name] = metadata.id
            created = metadata.created_at
            if (created if created.tzinfo else created.replace(tzinfo=UTC)) < before:
                return _json({"data": _store_json(metadata)})
            return _json({"data": _store_json(metadata)}, 201, {"location": f"/v2/key-value-stores/{metadata.id}"})

    async def store(self, request: Request) -> Response:
        store_id, store = await self._store(str(request.path_params["store"]))
        metadata = await self._call(store_id, store.get_metadata)
        if request.method == "DELETE":
            await self._in_flight(store.drop())
            self._forget(store_id)
            return Response(status_code=204)
        return _json({"data": _store_json(metadata)})

    async def keys(self, request: Request) -> Response:
        store_id, store = await self._store(str(request.path_params["store"]))
        params = _query(request)
        limit = _int_param(params, "limit", default=MAX_LIST_LIMIT, low=1, high=MAX_LIST_LIMIT)
        start = params.get("exclusiveStartKey") or None
        prefix = params.get("prefix") or None

        async def page() -> list[tuple[str, int]]:
            return [
                (info.key, info.size)
                async for info in store.iterate_keys(exclusive_start_key=start, limit=limit + 1, prefix=prefix)
            ]

        items = await self._call(store_id, page)
        truncated = len(items) > limit
        items = items[:limit]
        # apify-client requires recordPublicUrl; ours needs the token like any other request.
        records_url = f"{str(request.base_url).rstrip('/')}/v2/key-value-stores/{path_segment(store_id)}/records/"
        data = {
            "items": [
                {"key": key, "size": size, "recordPublicUrl": records_url + path_segment(key)} for key, size in items
            ],
            "count": len(items),
            "limit": limit,
            "exclusiveStartKey": start,
            "isTruncated": truncated,
            "nextExclusiveStartKey": items[-1][0] if truncated else None,
        }
        return _json({"data": data})

    # --- records ----------------------------------------------------------------------------------

    async def record(self, request: Request) -> Response:
        ref = str(request.path_params["store"])
        key = self._key(request)
        method = request.method
        if method in ("PUT", "POST"):
            with self._budget.hold() as hold:
                # The body is read before the store is opened, so that a refused body costs no backend work.
                body = await read_body(request, limit=self._max_body_size, hold=hold, body_timeout=self._body_timeout)
                store_id, store = await self._store(ref)
                content_type = request.headers.get("content-type") or _DEFAULT_CONTENT_TYPE
                version = await self._call(
                    store_id, lambda: self._in_flight(self._put(store, key, body, content_type, request), hold)
                )
            return _json({}, 201, {"etag": etag_for(version)})
        store_id, store = await self._store(ref)
        if method == "DELETE":
            deleted = await self._call(store_id, lambda: self._in_flight(self._delete(store, key, request)))
            if not deleted:
                raise ApiError(404, ERROR_NOT_FOUND, f"record {key!r} was not found")
            return Response(status_code=204)
        record = await self._call(store_id, lambda: store.get_record(key=key))
        if record is None:
            if method == "HEAD":
                return Response(status_code=404)
            raise ApiError(404, ERROR_NOT_FOUND, f"record {key!r} was not found")
        headers = {"content-type": record.content_type, "etag": etag_for(record.version)}
        if method == "HEAD":
            return Response(status_code=200, headers={**headers, "content-length": str(record.size)})
        return Response(record.value, status_code=200, headers=headers)

    async def _put(
        self, store: KeyValueStoreClient, key: str, value: bytes, content_type: str, request: Request
    ) -> str:
        if_match = _conditions(request, "if-match")
        if_none_match = _conditions(request, "if-none-match")
        if if_match is _ABSENT and if_none_match is _ABSENT:
            return await store.set_record(key=key, value=value, content_type=content_type)
        if isinstance(if_match, list) and len(if_match) == 1 and if_none_match is _ABSENT:
            return await store.set_record(key=key, value=value, content_type=content_type, if_version=if_match[0])
        if if_match is _ABSENT and if_none_match is None:
            return await store.set_record(key=key, value=value, content_type=content_type, if_absent=True)
        current = await store.get_record(key=key)
        self._check(key, current, if_match, if_none_match)
        if current is None:
            return await store.set_record(key=key, value=value, content_type=content_type, if_absent=True)
        return await store.set_record(key=key, value=value, content_type=content_type, if_version=current.version)

    async def _delete(self, store: KeyValueStoreClient, key: str, request: Request) -> bool:
        if_match = _conditions(request, "if-match")
        if if_match is _ABSENT:
            return await store.delete_record(key=key)
        if isinstance(if_match, list) and len(if_match) == 1:
            return await store.delete_record(key=key, if_version=if_match[0])
        current = await store.get_record(key=key)
        self._check(key, current, if_match, _ABSENT)
        if current is None:
            return False
        return await store.delete_record(key=key, if_version=current.version)

    @staticmethod
    def _check(key: str, current: StoredRecord | None, if_match: _Condition, if_none_match: _Condition) -> None:
        """Evaluate If-Match and If-None-Match against the current record (RFC 9110, strong comparison)."""
        version = current.version if current is not None else None
        if if_match is not _ABSENT and (version is None or (isinstance(if_match, list) and version not in if_match)):
            raise VersionConflictError(
                f"record {key!r} has version {version}, which If-Match does not list", key=key, actual=version
            )
        if (
            if_none_match is not _ABSENT
            and version is not None
            and (if_none_match is None or (isinstance(if_none_match, list) and version in if_none_match))
        ):
            raise VersionConflictError(
                f"record {key!r} exists with version {version}, which If-None-Match excludes", key=key, actual=version
            )


class _Absent(enum.Enum):
    ABSENT = enum.auto()


_ABSENT = _Absent.ABSENT
"""The conditional header was not sent."""

_Condition = _Absent | list[str] | None
"""A parsed If-Match / If-None-Match: absent, `*` (None), or the versions it lists."""


def _conditions(request: Request, header: str) -> _Condition:
    """`_ABSENT` when the header is absent, None for `*`, else the list of versions it names."""
    value = request.headers.get(header)
    if value is None:
        return _ABSENT
    try:
        return parse_etag_list(value)
    except ValueError as exc:
        raise ApiError(400, ERROR_INVALID_REQUEST, f"the {header} header is not valid: {exc}") from None


class _Fresh(Generic[_T]):
    """Calls an async function so that every caller gets the result of a call that began after it asked.

    Callers that ask before the next call begins share it, so a flood of callers costs at most one call
    running and one waiting, and no caller gets an answer older than its question.
    """

    def __init__(self, function: Callable[[], Awaitable[_T]]) -> None:
        self._function = function
        self._running: asyncio.Task[_T] | None = None
        self._next: asyncio.Task[_T] | None = None

    async def __call__(self) -> _T:
        if self._next is None:
            self._next = asyncio.ensure_future(self._run_after(self._running))
        return await asyncio.shield(self._next)

    async def _run_after(self, previous: asyncio.Task[_T] | None) -> _T:
        if previous is not None:
            await asyncio.wait([previous])
        me: Any = asyncio.current_task()
        self._running, self._next = me, None
        try:
            return await self._function()
        finally:
            if self._running is me:
                self._running = None
