"""Small-record operations per second through `HttpStorageClient`, over each httpx transport, next to `apify-client`.

Every client talks to the same `recoverable serve` child process on loopback in the same run, writing and
reading a 200-byte record under keys of the same store:

- set: `set_record` (ours: `KeyValueStoreClient.set_record`; apify-client: `KeyValueStoreClientAsync.set_record`);
- get: `get_record` (ours: `KeyValueStoreClient.get_record`; apify-client: `get_record_as_bytes`, which does
  not parse the value either);

each sequentially (one request at a time, which is latency) and with 16 in flight (throughput). Ours runs
once per httpx transport it can send through (`TRANSPORTS` of `recoverable.storages._http._transports`:
`http11`, the default for `http://`, and `httpcore`, httpx's own, the default for `https://`), and once
over the transport of `httpx-aiohttp` when that package is installed (`pip install httpx-aiohttp`). Each
figure is the median of several rounds, the clients alternated; the spread is (slowest - fastest round) /
median. The target is ours (over the default transport) / apify-client >= 1.0. The script prints figures
and never fails on them.

    python benchmarks/bench_http.py [--ops 1000] [--repeat 5] [--storage-client memory|file_system]

`memory` (the default) makes the server's backend nearly free, so the figures are the clients' and the
HTTP stack's; `file_system` adds a durable write (fsync) to every set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from _server import start_server
from apify_client import ApifyClientAsync

from recoverable.storages import HttpStorageClient
from recoverable.storages._http._transports import SCHEME_TRANSPORTS, TRANSPORTS, TransportFactory

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from apify_client._resource_clients.key_value_store import KeyValueStoreClientAsync

    from recoverable.storages import KeyValueStoreClient

REPO_ROOT = Path(__file__).resolve().parent.parent
VALUE = bytes(range(200))
CONTENT_TYPE = "application/octet-stream"
CONCURRENCY = 16
TARGET = 1.0
APIFY = "apify-client"


async def _rate(ops: int, concurrency: int, op: Callable[[int], Awaitable[object]]) -> float:
    """Operations per second of `op(i)` for i in range(ops), `concurrency` at a time."""
    started = time.perf_counter()
    if concurrency == 1:
        for i in range(ops):
            await op(i)
    else:
        queue = iter(range(ops))

        async def worker() -> None:
            for i in queue:
                await op(i)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ops / (time.perf_counter() - started)


def _ours(store: KeyValueStoreClient) -> dict[str, Callable[[int], Awaitable[object]]]:
    async def set_(i: int) -> object:
        return await store.set_record(key=f"k{i % 100}", value=VALUE, content_type=CONTENT_TYPE)

    async def get(i: int) -> object:
        record = await store.get_record(key=f"k{i % 100}")
        assert record is not None  # noqa: S101 - the benchmark would measure nothing otherwise
        return record

    return {"set": set_, "get": get}


def _apify(store: KeyValueStoreClientAsync) -> dict[str, Callable[[int], Awaitable[object]]]:
    async def set_(i: int) -> object:
        await store.set_record(f"a{i % 100}", VALUE, content_type=CONTENT_TYPE)
        return None

    async def get(i: int) -> object:
        record = await store.get_record_as_bytes(f"a{i % 100}")
        assert record is not None  # noqa: S101 - the benchmark would measure nothing otherwise
        return record

    return {"set": set_, "get": get}


def _aiohttp_transport() -> TransportFactory | None:
    """The transport of `httpx-aiohttp` with our pool size, or None when the package is not installed."""
    try:
        module = importlib.import_module("httpx_aiohttp")
    except ImportError:
        return None

    def factory(max_connections: int) -> httpx.AsyncBaseTransport:
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        transport: httpx.AsyncBaseTransport = module.AiohttpTransport(limits=limits, trust_env=False)
        return transport

    return factory


@contextlib.asynccontextmanager
async def _clients(url: str, token: str) -> AsyncIterator[dict[str, dict[str, Callable[[int], Awaitable[object]]]]]:
    """The operations of every client measured, by label: ours once per transport, then apify-client."""
    transports = dict(TRANSPORTS)
    aiohttp = _aiohttp_transport()
    if aiohttp is None:
        print("httpx-aiohttp is not installed (pip install httpx-aiohttp): its transport is left out\n")
    else:
        transports["aiohttp"] = aiohttp
    clients: dict[str, dict[str, Callable[[int], Awaitable[object]]]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for name, factory in transports.items():
            ours = await stack.enter_async_context(HttpStorageClient(base_url=url, token=token))
            await ours._session.use_transport(factory)  # noqa: SLF001 - the transport is what is compared
            clients[f"recoverable {name}"] = _ours(await ours.open_key_value_store_client(name="bench"))
        apify = ApifyClientAsync(token, api_url=url)
        clients[APIFY] = _apify(apify.key_value_store((await apify.key_value_stores().get_or_create(name="bench")).id))
        yield clients


async def _run(url: str, token: str, ops: int, repeat: int) -> None:
    default = f"recoverable {SCHEME_TRANSPORTS['http']}"
    async with _clients(url, token) as clients:
        # Warm up connections and code paths; the set creates the records the gets read.
        for ops_of in clients.values():
            for name in ("set", "get"):
                await _rate(200, 1, ops_of[name])

        print(f"{'operation':<22}{'client':<24}{'ops/s':>8}{'ms/op':>8}{'spread':>8}{'vs ' + APIFY:>18}")
        for concurrency in (1, CONCURRENCY):
            for name in ("set", "get"):
                figures: dict[str, list[float]] = {label: [] for label in clients}
                for _ in range(repeat):
                    for label, ops_of in clients.items():
                        figures[label].append(await _rate(ops, concurrency, ops_of[name]))
                apify_rate = statistics.median(figures[APIFY])
                operation = f"{name}, {concurrency} in flight"
                for label, rates in figures.items():
                    rate = statistics.median(rates)
                    spread = (max(rates) - min(rates)) / rate
                    ratio = "" if label == APIFY else f"{rate / apify_rate:.2f}x"
                    mark = ""
                    if label == default:
                        mark = "  ok" if rate / apify_rate >= TARGET else "  BELOW TARGET"
                    print(f"{operation:<22}{label:<24}{rate:>8,.0f}{1000 / rate:>8.2f}{spread:>8.0%}{ratio:>18}{mark}")
                    operation = ""
        print(
            f"\nmedian of {repeat} rounds of {ops} ops; ms/op = 1000 / ops/s (at 16 in flight, per op, not per "
            f"request's latency); target for {default} (the default for http://): >= {TARGET}x {APIFY}"
        )


def main() -> None:
    """Start the server, run the rounds, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ops", type=int, default=1000, help="operations per round (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per figure (default: %(default)s)")
    parser.add_argument("--storage-client", choices=["memory", "file_system"], default="memory")
    args = parser.parse_args()
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="bench-http-") as storage_dir:
        process, url = start_server(
            # `--token=...`: a token may start with "-", which argparse would take for an option.
            "--storage-client",
            args.storage_client,
            "--storage-dir",
            storage_dir,
            f"--token={token}",
        )
        try:
            print(
                f"recoverable serve ({args.storage_client} backend) on {url}; 200-byte records; "
                f"Python {sys.version.split()[0]}, httpx {httpx.__version__}\n"
            )
            asyncio.run(_run(url, token, args.ops, args.repeat))
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
