"""What creating and looking up a store costs in `recoverable serve`, with 2 stores and with 2,000.

A `recoverable serve` child process on loopback serves a file system storage folder that already holds
N named stores (made with `FileSystemStorageClient` before the server starts). One HTTP client then times,
one request at a time:

- create: `POST /v2/key-value-stores?name=<new name>` (201);
- lookup by name / by id, seen: `GET /v2/key-value-stores/~<name>` and `GET .../<id>` of the stores
  just created through the server;
- get-or-create / lookup by name / lookup by id, made elsewhere: the same requests for stores that
  another process made in the folder while the server ran, so the server's first look at each; their
  names sort after every other store's, so finding one by id looks at every folder;
- missing name, missing id: `GET ~<no such store>`, `GET /<no such id>` (404).

Each figure is the median over the samples, in milliseconds, for N = 2 and N = 2,000, and their ratio.
The target is a ratio near 1 for creating stores and for looking up stores the server has seen. A store
it has not seen may have been made by another process, which only a look at every folder can tell (the
folder names are store names, not ids): those rows show what that costs. The script prints figures and
never fails on them.

    python benchmarks/bench_server_stores.py [--stores 2000] [--samples 40] [--dir PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from _files import bench_root, filesystem_type, remove_bench_root
from _server import start_server

from recoverable.storages import FileSystemStorageClient
from recoverable.storages._models import new_store_id

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

OPERATIONS = (
    "create",
    "lookup by name, seen",
    "lookup by id, seen",
    "get-or-create, made elsewhere",
    "lookup by name, made elsewhere",
    "lookup by id, made elsewhere",
    "missing name (404)",
    "missing id (404)",
)


async def _make_stores(storage_dir: Path, names: list[str]) -> list[str]:
    """Create the named stores directly on disk; return their ids."""
    async with FileSystemStorageClient(storage_dir=storage_dir) as local:
        return [(await (await local.open_key_value_store_client(name=name)).get_metadata()).id for name in names]


async def _timed(
    samples: int,
    request: Callable[[int], Awaitable[httpx.Response]],
    status: int,
    prepare: Callable[[int], Awaitable[None]] | None = None,
) -> float:
    """Median milliseconds of `request(i)` for i in range(samples), each after an untimed `prepare(i)`."""
    times = []
    for i in range(samples):
        if prepare is not None:
            await prepare(i)
        started = time.perf_counter()
        response = await request(i)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != status:
            sys.exit(f"{response.request.method} {response.request.url} answered {response.status_code}, not {status}")
    return statistics.median(times)


async def _measure(storage_dir: Path, stores: int, samples: int) -> dict[str, float]:
    print(f"  making {stores} stores ...", flush=True)
    await _make_stores(storage_dir, [f"existing-{i}" for i in range(stores)])
    token = secrets.token_urlsafe(16)
    # `--token=...`: a token may start with "-", which argparse would take for an option.
    process, url = start_server("--storage-dir", str(storage_dir), f"--token={token}")
    figures: dict[str, float] = {}
    ids: dict[str, str] = {}

    def elsewhere(prefix: str) -> Callable[[int], Awaitable[None]]:
        async def make(i: int) -> None:
            # Made by another process, in effect: the server's lookup of it is its first.
            ids[f"{prefix}-{i}"] = (await _make_stores(storage_dir, [f"{prefix}-{i}"]))[0]

        return make

    try:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as api:
            await api.get("/v2/")  # open the connection
            stores_url = "/v2/key-value-stores"

            async def create(i: int) -> httpx.Response:
                response = await api.post(stores_url, params={"name": f"new-{i}"})
                ids[f"new-{i}"] = response.json()["data"]["id"]
                return response

            figures["create"] = await _timed(samples, create, 201)
            figures["lookup by name, seen"] = await _timed(samples, lambda i: api.get(f"{stores_url}/~new-{i}"), 200)
            figures["lookup by id, seen"] = await _timed(
                samples, lambda i: api.get(f"{stores_url}/{ids[f'new-{i}']}"), 200
            )
            figures["get-or-create, made elsewhere"] = await _timed(
                samples, lambda i: api.post(stores_url, params={"name": f"zz-goc-{i}"}), 200, elsewhere("zz-goc")
            )
            figures["lookup by name, made elsewhere"] = await _timed(
                samples, lambda i: api.get(f"{stores_url}/~zz-name-{i}"), 200, elsewhere("zz-name")
            )
            figures["lookup by id, made elsewhere"] = await _timed(
                samples, lambda i: api.get(f"{stores_url}/{ids[f'zz-id-{i}']}"), 200, elsewhere("zz-id")
            )
            figures["missing name (404)"] = await _timed(samples, lambda i: api.get(f"{stores_url}/~missing-{i}"), 404)
            missing_ids = [new_store_id() for _ in range(samples)]
            figures["missing id (404)"] = await _timed(
                samples, lambda i: api.get(f"{stores_url}/{missing_ids[i]}"), 404
            )
    finally:
        process.terminate()
        process.wait(timeout=30)
    return figures


def main() -> None:
    """Measure with 2 stores and with `--stores`, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stores", type=int, default=2000, help="stores of the large folder (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=40, help="requests per figure (default: %(default)s)")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary folder (default: .bench-tmp/)")
    args = parser.parse_args()
    root = bench_root(args.dir)
    work = root / f"bench-server-stores-{secrets.token_hex(4)}"
    print(f"stores under {work} ({filesystem_type(root)}); Python {sys.version.split()[0]}")
    results: dict[int, dict[str, float]] = {}
    try:
        for stores in (2, args.stores):
            print(f"{stores} stores:", flush=True)
            results[stores] = asyncio.run(_measure(work / f"n{stores}", stores, args.samples))
    finally:
        remove_bench_root(root, work, given=args.dir is not None)
    small, large = results[2], results[args.stores]
    print(f"\n{'operation':<32}{'2 stores, ms':>14}{f'{args.stores:,} stores, ms':>20}{'ratio':>9}")
    for operation in OPERATIONS:
        ratio = large[operation] / small[operation]
        print(f"{operation:<32}{small[operation]:>14.2f}{large[operation]:>20.2f}{ratio:>8.2f}x")
    print(
        f"\nmedian of {args.samples} requests each, one at a time; ratio = {args.stores:,} stores / 2 stores, target ~1"
    )


if __name__ == "__main__":
    main()
