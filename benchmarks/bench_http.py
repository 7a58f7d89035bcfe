"""Small-record operations per second through `HttpStorageClient`, next to the official `apify-client`.

Both clients talk to the same `recoverable serve` child process on loopback in the same run, writing and
reading a 200-byte record under keys of the same store:

- set: `set_record` (ours: `KeyValueStoreClient.set_record`; apify-client: `KeyValueStoreClientAsync.set_record`);
- get: `get_record` (ours: `KeyValueStoreClient.get_record`; apify-client: `get_record_as_bytes`, which does
  not parse the value either);

each sequentially (one request at a time, which is latency) and with 16 in flight (throughput). Each figure
is the median of several rounds, the clients alternated. The target is ours/apify-client >= 1.0. The
script prints figures and never fails on them.

    python benchmarks/bench_http.py [--ops 2000] [--repeat 5] [--storage-client memory|file_system]

`memory` (the default) makes the server's backend nearly free, so the figures are the clients' and the
HTTP stack's; `file_system` adds a durable write (fsync) to every set.
"""

from __future__ import annotations

import argparse
import asyncio
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

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from apify_client._resource_clients.key_value_store import KeyValueStoreClientAsync

    from recoverable.storages import KeyValueStoreClient

REPO_ROOT = Path(__file__).resolve().parent.parent
VALUE = bytes(range(200))
CONTENT_TYPE = "application/octet-stream"
CONCURRENCY = 16
TARGET = 1.0


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


async def _run(url: str, token: str, ops: int, repeat: int) -> None:
    async with HttpStorageClient(base_url=url, token=token) as ours_client:
        ours_store = await ours_client.open_key_value_store_client(name="bench")
        apify = ApifyClientAsync(token, api_url=url)
        apify_store = apify.key_value_store((await apify.key_value_stores().get_or_create(name="bench")).id)
        clients = {"recoverable": _ours(ours_store), "apify-client": _apify(apify_store)}

        # Warm up connections and code paths; the set creates the records the gets read.
        for ops_of in clients.values():
            for name in ("set", "get"):
                await _rate(200, 1, ops_of[name])

        print(f"{'operation':<22}{'recoverable ops/s':>20}{'apify-client ops/s':>21}{'ratio':>9}")
        for concurrency in (1, CONCURRENCY):
            for name in ("set", "get"):
                figures: dict[str, list[float]] = {label: [] for label in clients}
                for _ in range(repeat):
                    for label, ops_of in clients.items():
                        figures[label].append(await _rate(ops, concurrency, ops_of[name]))
                ours_rate = statistics.median(figures["recoverable"])
                apify_rate = statistics.median(figures["apify-client"])
                ratio = ours_rate / apify_rate
                mark = "ok" if ratio >= TARGET else "BELOW TARGET"
                label = f"{name}, {concurrency} in flight"
                print(f"{label:<22}{ours_rate:>20,.0f}{apify_rate:>21,.0f}{ratio:>8.2f}x  {mark}")
        print(f"\nratio = recoverable / apify-client ops/s, median of {repeat} rounds of {ops} ops; target >= {TARGET}")


def main() -> None:
    """Start the server, run the rounds, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ops", type=int, default=2000, help="operations per round (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per figure (default: %(default)s)")
    parser.add_argument("--storage-client", choices=["memory", "file_system"], default="memory")
    args = parser.parse_args()
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="bench-http-") as storage_dir:
        process, url = start_server(
            "--storage-client", args.storage_client, "--storage-dir", storage_dir, "--token", token
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
