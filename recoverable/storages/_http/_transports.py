"""What an `ApiSession` sends through: the httpx transports it may use, by name, and a client without cookies."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from typing_extensions import override

from recoverable.storages._http._http11 import Http11Transport

__all__ = ["SCHEME_TRANSPORTS", "TRANSPORTS", "CookielessClient", "TransportFactory"]

TransportFactory = Callable[[int], httpx.AsyncBaseTransport]
"""Makes the httpx transport of a session from the size of its connection pool."""


def _http11(max_connections: int) -> httpx.AsyncBaseTransport:
    return Http11Transport(max_connections=max_connections)


def _httpcore(max_connections: int) -> httpx.AsyncBaseTransport:
    # What httpx.AsyncClient(limits=..., trust_env=False) builds by default.
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncHTTPTransport(limits=limits, trust_env=False)


TRANSPORTS: dict[str, TransportFactory] = {"http11": _http11, "httpcore": _httpcore}
"""Every httpx transport an `ApiSession` may send through, by name; the conformance suite runs each one."""

SCHEME_TRANSPORTS: dict[str, str] = {"http": "http11", "https": "httpcore"}
"""The transport of each URL scheme. `https://` (the Apify platform) keeps httpx's own, with TLS and all it
does; `http://` (a `recoverable serve` on the same network) gets `Http11Transport`, which costs a fraction
of httpcore's CPU per request (see `_http11` and benchmarks/bench_http.py)."""


class _NoCookies(httpx.Cookies):
    """Cookies that take none from a response and put none in a request: the API uses none."""

    @override
    def extract_cookies(self, response: httpx.Response) -> None:
        del response

    @override
    def set_cookie_header(self, request: httpx.Request) -> None:
        del request


_NO_COOKIES = _NoCookies()


class CookielessClient(httpx.AsyncClient):
    """An httpx client that neither keeps nor sends cookies.

    The API uses none. httpx looks for them in every response even with a cookie jar that keeps nothing, and
    that look (request and response turned into urllib objects, the URL parsed again) cost about a tenth of
    the client's CPU per request of a small record; here the client's cookies ignore every response.
    """

    @property
    @override
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        del cookies
