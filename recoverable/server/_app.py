"""The ASGI application: the key-value store API v2 over any storage client."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import re
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, unquote_to_bytes

from recoverable._kv_api import (
    ERROR_INVALID_RECORD_KEY,
    ERROR_INVALID_REQUEST,
    ERROR_INVALID_VALUE,
    ERROR_NOT_FOUND,
    ERROR_PRECONDITION_FAILED,
    ERROR_SERVER,
    ERROR_TOKEN_NOT_PROVIDED,
    ERROR_TOKEN_NOT_VALID,
    MAX_LIST_LIMIT,
    SERVER_HEADER,
    etag_for,
    path_segment,
)
from recoverable._version import VERSION
from recoverable.errors import (
    ConfigurationError,
    StorageError,
    VersionConflictError,
)
from recoverable.server._answers import (
    error_answer,
    http_exception_answer,
    json_answer,
    storage_error_answer,
    store_json,
)
from recoverable.server._body import BodyBudget, read_body
from recoverable.server._conditions import conditional_delete, conditional_put
from recoverable.server._errors import ApiError
from recoverable.server._open_stores import OpenStores
from recoverable.server._starlette import (
    ClientDisconnect,
    Convertor,
    HTTPException,
    Middleware,
    Request,
    Response,
    Route,
    Starlette,
    register_url_convertor,
)
from recoverable.storages._validation import MAX_KEY_LENGTH, validate_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from recoverable.server._body import BodyHold
    from recoverable.storages._base import StorageClient

__all__ = ["DEFAULT_BODY_TIMEOUT", "DEFAULT_MAX_BODY_SIZE", "IN_FLIGHT_BODIES", "create_app"]

logger = logging.getLogger("recoverable.server")

DEFAULT_MAX_BODY_SIZE = 64 * 1024 * 1024
"""The default limit on a record's size (the platform's is 9 MiB)."""

IN_FLIGHT_BODIES = 4
"""By default the bodies in flight may hold this many times `max_body_size` at once."""

DEFAULT_BODY_TIMEOUT = 30.0
"""Seconds a request body may pause, and its grace before `MIN_BODY_RATE` applies."""

_VERSION = VERSION
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
        exception_handlers={HTTPException: http_exception_answer},
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


class _Api:
    """The handlers, the stores they opened, and the writes in flight."""

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
        self._token = token.encode() if token is not None else None
        self._max_body_size = max_body_size
        self._max_key_length = max_key_length
        self._budget = budget
        self._body_timeout = body_timeout
        self._stores = OpenStores(storage_client)
        self._writes: set[asyncio.Task[Any]] = set()

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
                return error_answer(exc)
            except VersionConflictError as exc:
                return self._precondition_failed(str(exc), exc.actual)
            except ClientDisconnect:
                return error_answer(ApiError(400, ERROR_INVALID_REQUEST, "the client went away"))
            except StorageError as exc:
                return error_answer(storage_error_answer(exc, request))
            except Exception:
                logger.exception("%s %s failed", request.method, request.url.path)
                return error_answer(
                    ApiError(500, ERROR_SERVER, "internal server error; the server log has the details")
                )

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
        return error_answer(ApiError(412, ERROR_PRECONDITION_FAILED, message, headers))

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

    # --- stores -----------------------------------------------------------------------------------

    async def stores(self, request: Request) -> Response:
        params = _query(request)
        if request.method == "POST":
            return await self._create_store(params.get("name") or None)
        offset = _int_param(params, "offset", default=0, low=0)
        limit = _int_param(params, "limit", default=MAX_LIST_LIMIT, low=1, high=MAX_LIST_LIMIT)
        desc = _bool_param(params, "desc")
        all_stores = list(await self._stores.list_all())
        self._stores.learn_names(all_stores)
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
            "items": [store_json(m) for m in page],
        }
        return json_answer({"data": data})

    async def _create_store(self, name: str | None) -> Response:
        metadata, created = await self._stores.create(name)
        if not created:
            return json_answer({"data": store_json(metadata)})
        return json_answer({"data": store_json(metadata)}, 201, {"location": f"/v2/key-value-stores/{metadata.id}"})

    async def store(self, request: Request) -> Response:
        store_id, store = await self._stores.open(str(request.path_params["store"]))
        metadata = await self._stores.call(store_id, store.get_metadata)
        if request.method == "DELETE":
            await self._in_flight(store.drop())
            self._stores.forget(store_id)
            return Response(status_code=204)
        return json_answer({"data": store_json(metadata)})

    async def keys(self, request: Request) -> Response:
        store_id, store = await self._stores.open(str(request.path_params["store"]))
        params = _query(request)
        limit = _int_param(params, "limit", default=MAX_LIST_LIMIT, low=1, high=MAX_LIST_LIMIT)
        start = params.get("exclusiveStartKey") or None
        prefix = params.get("prefix") or None

        async def page() -> list[tuple[str, int]]:
            return [
                (info.key, info.size)
                async for info in store.iterate_keys(exclusive_start_key=start, limit=limit + 1, prefix=prefix)
            ]

        items = await self._stores.call(store_id, page)
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
        return json_answer({"data": data})

    # --- records ----------------------------------------------------------------------------------

    async def record(self, request: Request) -> Response:
        ref = str(request.path_params["store"])
        key = self._key(request)
        method = request.method
        if method in ("PUT", "POST"):
            with self._budget.hold() as hold:
                # The body is read before the store is opened, so that a refused body costs no backend work.
                body = await read_body(request, limit=self._max_body_size, hold=hold, body_timeout=self._body_timeout)
                store_id, store = await self._stores.open(ref)
                content_type = request.headers.get("content-type") or _DEFAULT_CONTENT_TYPE
                version = await self._stores.call(
                    store_id, lambda: self._in_flight(conditional_put(store, key, body, content_type, request), hold)
                )
            return json_answer({}, 201, {"etag": etag_for(version)})
        store_id, store = await self._stores.open(ref)
        if method == "DELETE":
            deleted = await self._stores.call(
                store_id, lambda: self._in_flight(conditional_delete(store, key, request))
            )
            if not deleted:
                raise ApiError(404, ERROR_NOT_FOUND, f"record {key!r} was not found")
            return Response(status_code=204)
        record = await self._stores.call(store_id, lambda: store.get_record(key=key))
        if record is None:
            if method == "HEAD":
                return Response(status_code=404)
            raise ApiError(404, ERROR_NOT_FOUND, f"record {key!r} was not found")
        headers = {"content-type": record.content_type, "etag": etag_for(record.version)}
        if method == "HEAD":
            return Response(status_code=200, headers={**headers, "content-length": str(record.size)})
        return Response(record.value, status_code=200, headers=headers)
