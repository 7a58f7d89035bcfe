"""The API session of an `HttpStorageClient`: one pooled httpx client, retries, compression, errors turned into ours.

`ApiSession` sends requests of the key-value store API v2 and returns each as an `ApiResponse`, the
complete response of the API (status, headers, decoded body); it is not an httpx transport. The httpx
transport under it is `Http11Transport` (see `_http11`) for `http://` servers and httpx's own
(httpcore) for `https://` ones.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import httpx

from recoverable._backoff import backoff_delay
from recoverable._kv_api import (
    ERROR_INVALID_RECORD_KEY,
    ERROR_INVALID_VALUE,
    SERVER_HEADER,
)
from recoverable._version import VERSION
from recoverable.errors import (
    ConfigurationError,
    InvalidKeyError,
    InvalidStoreNameError,
    StorageBackendError,
    StorageError,
    StoreNotFoundError,
)
from recoverable.storages._http._transports import SCHEME_TRANSPORTS, TRANSPORTS, CookielessClient, TransportFactory

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["COMPRESS_ABOVE", "ApiResponse", "ApiSession", "Target"]

logger = logging.getLogger("recoverable.storages.http")

COMPRESS_ABOVE = 1024
"""Request bodies longer than this many bytes are sent gzip-compressed."""

_COMPRESS_OFF_LOOP_ABOVE = 256 * 1024
"""Bodies longer than this are compressed in a worker thread, so that the event loop stays responsive."""

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_HTTP_SERVER_ERROR = 500
_HTTP_BAD_REQUEST = 400
_HTTP_UNAUTHORIZED = 401
_HTTP_FORBIDDEN = 403
_HTTP_NOT_FOUND = 404
_HTTP_TOO_LARGE = 413

_BACKOFF_FIRST_SECS = 0.1
_BACKOFF_MAX_SECS = 10.0

_USER_AGENT = f"recoverable/{VERSION} (httpx)"


@dataclass(frozen=True, slots=True)
class Target:
    """What a request is about, for error messages: the store and the record key, when there are any."""

    store: str | None = None
    key: str | None = None

    def describe(self) -> str:
        parts = []
        if self.key is not None:
            parts.append(f"record {_short(self.key)!r} of")
        if self.store is not None:
            parts.append(f"key-value store {self.store!r}")
        elif parts:
            parts.append("a key-value store")
        return " ".join(parts) or "the key-value stores"


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A complete response of the API: what `ApiSession.request` returns once no retry is due.

    Attributes:
        status: The HTTP status code.
        headers: The response headers.
        content: The body, decoded from any Content-Encoding.
        url: The request URL, safe to show (no credentials).
        retried_after_send: An earlier attempt may have reached the server before it failed (a lost
            answer, a 5xx), so a non-idempotent request may have taken effect already.
    """

    status: int
    headers: httpx.Headers
    content: bytes
    url: str
    retried_after_send: bool = False
    _json: list[Any] = field(default_factory=list, repr=False)

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            ValueError: The body is not JSON.
        """
        if not self._json:
            self._json.append(json.loads(self.content))
        return self._json[0]

    def data(self) -> Any:
        """The payload of a `{"data": ...}` envelope.

        Raises:
            ValueError: The body is not such an envelope.
        """
        body = self.json()
        if not isinstance(body, dict) or "data" not in body:
            raise ValueError("the answer is not a JSON object with a 'data' field")
        return body["data"]

    def error(self) -> tuple[str | None, str | None]:
        """The type and message of an `{"error": {"type", "message"}}` envelope, when the body is one."""
        try:
            body = self.json()
        except (ValueError, UnicodeDecodeError):
            return None, None
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return None, None
        kind, message = error.get("type"), error.get("message")
        return (kind if isinstance(kind, str) else None), (message if isinstance(message, str) else None)


class ApiSession:
    """A retrying session with one key-value store API v2 server: requests go out, `ApiResponse`s come back.

    Retries 429, 500, 502, 503 and 504 answers and network failures (connection refused or reset, a
    timeout, a truncated answer) with exponential backoff and jitter, waiting at least as long as a
    `Retry-After` header asks. No attempt starts later than `max_retry_time` after the first one, and at
    most `max_retries` retries are made. Other statuses are returned to the caller at once.
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: str | None,
        timeout: timedelta,
        max_retries: int,
        max_retry_time: timedelta,
        max_connections: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if timeout <= timedelta(0):
            raise ConfigurationError(f"timeout must be a positive duration, got {timeout!r}")
        if max_retry_time < timedelta(0):
            raise ConfigurationError(f"max_retry_time must not be negative, got {max_retry_time!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be a non-negative int, got {max_retries!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigurationError(f"max_connections must be a positive int, got {max_connections!r}")
        try:
            url = httpx.URL(base_url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ConfigurationError(f"base_url {base_url!r} is not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigurationError(
                f"base_url {_redact(url)!r} must be an http:// or https:// URL with a host, "
                "e.g. 'http://127.0.0.1:8321' or 'https://api.apify.com'"
            )
        if url.userinfo:
            raise ConfigurationError(
                f"base_url {_redact(url)!r} must not hold a user name or password: pass the token with token= "
                "or RECOVERABLE_HTTP_TOKEN"
            )
        path = url.path.rstrip("/")
        path = path.removesuffix("/v2")
        self._base_url = url.copy_with(path=path + "/v2", query=None, fragment=None)
        self._display_base = _redact(self._base_url)
        self.max_retries = max_retries
        self.max_retry_time = max_retry_time.total_seconds()
        self.timeout = timeout.total_seconds()
        all_headers = {"User-Agent": _USER_AGENT, "Accept": "application/json, */*", "Accept-Encoding": "gzip, deflate"}
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        all_headers.update(headers or {})
        self._headers = all_headers
        self._base_text = str(self._base_url).rstrip("/")
        self._extensions = {"timeout": httpx.Timeout(self.timeout).as_dict()}
        self._max_connections = max_connections
        self._client = self._new_client(TRANSPORTS[SCHEME_TRANSPORTS[url.scheme]])
        self.conditional_writes: bool | None = None
        """Whether the server honours If-Match (our server says so in a header); None until an answer came."""

    def _new_client(self, transport: TransportFactory) -> httpx.AsyncClient:
        # Requests are built whole by `request()` (URL, headers, timeouts), so the client holds only the pool.
        return CookielessClient(
            transport=transport(self._max_connections),
            follow_redirects=False,
            trust_env=False,
        )

    async def use_transport(self, transport: TransportFactory) -> None:
        """Send through `transport(max_connections)` from now on, in place of the default for the URL's scheme.

        The conformance suite and the HTTP benchmark run every transport of `TRANSPORTS` this way against a
        plain `http://` server. The connections of the transport used so far are closed.
        """
        old, self._client = self._client, self._new_client(transport)
        await old.aclose()

    @property
    def base_url(self) -> str:
        """The API's root, `.../v2`, with no credentials."""
        return self._display_base

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        target: Target,
        action: str,
        params: Mapping[str, str | int] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        compress: bool = False,
    ) -> ApiResponse:
        """Send one request, retrying transient failures; return the first answer that is not transient.

        Args:
            method: The HTTP method.
            path: The path below `/v2`, already percent-encoded.
            target: The store and key, for messages.
            action: What is being done, for messages ("read", "write", ...).
            params: Query parameters.
            content: The request body.
            headers: Extra request headers.
            compress: Gzip the body when it is longer than `COMPRESS_ABOVE` bytes.

        Raises:
            StorageBackendError: The server could not be reached, or kept failing, within the retry limits.
        """
        request_headers = {**self._headers, **(headers or {})}
        if compress and content is not None and len(content) > COMPRESS_ABOVE:
            content = (
                await asyncio.to_thread(_gzip, content) if len(content) > _COMPRESS_OFF_LOOP_ABOVE else _gzip(content)
            )
            request_headers["Content-Encoding"] = "gzip"
        path = path.lstrip("/")
        display_url = f"{self._display_base}/{path}"
        # The URL is built here rather than by client.request(), which parses and merges it three times.
        url = f"{self._base_text}/{path}" + (f"?{urlencode(params, quote_via=quote)}" if params else "")
        started = time.monotonic()
        attempt = 0
        maybe_sent = False
        while True:
            attempt += 1
            try:
                request = httpx.Request(
                    method, url, headers=request_headers, content=content, extensions=self._extensions
                )
                response = await self._client.send(request)
            except httpx.TransportError as exc:
                failure = _Failure(
                    _describe_transport_error(exc, self.timeout),
                    exc,
                    maybe_sent=not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)),
                )
            except httpx.HTTPError as exc:
                raise StorageBackendError(
                    f"could not {action} {target.describe()} at {display_url}: {type(exc).__name__}: {exc}",
                    store=target.store,
                    key=target.key,
                ) from exc
            else:
                api_response = self._api_response(response, display_url, retried_after_send=maybe_sent)
                if api_response.status not in _RETRY_STATUSES:
                    return api_response
                failure = _Failure.of(api_response)
            maybe_sent = maybe_sent or failure.maybe_sent
            delay = backoff_delay(attempt, first=_BACKOFF_FIRST_SECS, maximum=_BACKOFF_MAX_SECS)
            if failure.retry_after is not None:
                delay = max(delay, failure.retry_after)
            gave_up = self._give_up(attempt, time.monotonic() - started, delay, failure)
            if gave_up is not None:
                raise StorageBackendError(
                    f"could not {action} {target.describe()} at {display_url}: {failure.text}; {gave_up}",
                    store=target.store,
                    key=target.key,
                ) from failure.cause
            logger.warning(
                "%s %s failed (%s), attempt %d of %d; retrying in %.2f s",
                method,
                display_url,
                failure.text,
                attempt,
                self.max_retries + 1,
                delay,
            )
            await asyncio.sleep(delay)

    def _api_response(self, response: httpx.Response, url: str, *, retried_after_send: bool) -> ApiResponse:
        if SERVER_HEADER in response.headers:
            self.conditional_writes = True
        elif self.conditional_writes is None:
            self.conditional_writes = False
        return ApiResponse(
            status=response.status_code,
            headers=response.headers,
            content=response.content,
            url=url,
            retried_after_send=retried_after_send,
        )

    def _give_up(self, attempt: int, elapsed: float, delay: float, failure: _Failure) -> str | None:
        """Why no further attempt is made, or None to retry."""
        if attempt > self.max_retries:
            reason = f"gave up after {attempt} attempt(s) in {elapsed:.1f} s"
        elif elapsed + delay > self.max_retry_time:
            asked = f", and the server asked to wait {failure.retry_after:.1f} s more" if failure.retry_after else ""
            reason = (
                f"gave up after {attempt} attempt(s) in {elapsed:.1f} s (the retry time limit is "
                f"{self.max_retry_time:.1f} s{asked})"
            )
        else:
            return None
        if isinstance(failure.cause, _ServerError):
            return reason + ". The server kept failing or refusing the request; try again later"
        return reason + ". Check that the server is running and reachable"

    def error(self, response: ApiResponse, *, target: Target, action: str) -> StorageError:
        """The exception for an answer that is an error, with the server's error type and message in it."""
        kind, message = response.error()
        detail = f"HTTP {response.status}" + (f" {kind}" if kind else "") + (f": {message}" if message else "")
        if not kind and not message and response.content:
            detail += f": {response.content[:200].decode('utf-8', 'replace')}"
        text = f"could not {action} {target.describe()} at {response.url}: {detail}"
        if response.status in (_HTTP_UNAUTHORIZED, _HTTP_FORBIDDEN):
            text += " (check the token: the argument or RECOVERABLE_HTTP_TOKEN)"
            return StorageBackendError(text, store=target.store, key=target.key)
        if response.status == _HTTP_NOT_FOUND and target.key is None:
            return StoreNotFoundError(text, store=target.store)
        if response.status == _HTTP_BAD_REQUEST and kind == ERROR_INVALID_RECORD_KEY:
            return InvalidKeyError(text, store=target.store, key=target.key)
        if response.status == _HTTP_BAD_REQUEST and kind == ERROR_INVALID_VALUE and target.key is None:
            return InvalidStoreNameError(text, store=target.store)
        if response.status == _HTTP_TOO_LARGE:
            text += " (the server's body size limit is lower than this value)"
        return StorageBackendError(text, store=target.store, key=target.key)

    def bad_answer(self, response: ApiResponse, *, target: Target, action: str, problem: str) -> StorageBackendError:
        """The exception for an answer that does not have the shape the API promises."""
        return StorageBackendError(
            f"could not {action} {target.describe()} at {response.url}: the server answered HTTP {response.status} "
            f"with {problem}; is {self._display_base} a key-value store API v2 server?",
            store=target.store,
            key=target.key,
        )


class _ServerError(Exception):
    """The last transient error answer of a request that was given up; the `__cause__` of the error raised."""


@dataclass(frozen=True, slots=True)
class _Failure:
    """A failed attempt that may be retried."""

    text: str
    cause: BaseException
    retry_after: float | None = None
    maybe_sent: bool = False
    """The server may have acted on the request before the failure."""

    @classmethod
    def of(cls, response: ApiResponse) -> _Failure:
        """The failure of a transient error answer (429 or 5xx)."""
        kind, message = response.error()
        text = f"HTTP {response.status}" + (f" {kind}" if kind else "") + (f": {message}" if message else "")
        return cls(
            text,
            _ServerError(text),
            retry_after=_retry_after(response.headers.get("Retry-After")),
            maybe_sent=response.status >= _HTTP_SERVER_ERROR,
        )


def _gzip(content: bytes) -> bytes:
    return gzip.compress(content, compresslevel=6, mtime=0)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait as a `Retry-After` header says (delta seconds or an HTTP date); None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        secs = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        secs = (when - datetime.now(UTC)).total_seconds()
    if math.isnan(secs):
        return None
    return max(0.0, secs)


def _describe_transport_error(exc: httpx.TransportError, timeout: float) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within the timeout of {timeout:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within the timeout of {timeout:g} s ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc or 'connection refused'})"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the answer was cut off or malformed ({exc})"
    return f"{type(exc).__name__}: {exc}"


def _redact(url: httpx.URL) -> str:
    """The URL as text without user name and password."""
    if url.userinfo:
        url = url.copy_with(userinfo=b"")
    return str(url).rstrip("/")


def _short(key: str) -> str:
    return key if len(key) <= 80 else key[:77] + "..."  # noqa: PLR2004 - message length
