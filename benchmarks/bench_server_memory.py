"""The peak memory of `recoverable serve` while many large bodies are uploaded at once.

A `recoverable serve` child process (file system backend, default limits: 64 MiB per body, 256 MiB of
bodies in flight) receives `--uploads` concurrent PUTs of `--size` MiB each, over loopback, from plain
httpx (no retries). The script prints how the uploads were answered (201, or 503 when the budget of
bodies in flight is spent), the server's peak resident memory over its memory before (VmHWM on Linux, and
psutil samples every 5 ms), and the wall time. It prints figures and never fails on them.

    python benchmarks/bench_server_memory.py [--uploads 16] [--size 63] [--dir PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import secrets
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
from _files import bench_root, filesystem_type, remove_bench_root
from _server import start_server

MiB = 1024 * 1024


class _PeakRss:
    """The peak RSS of a process: psutil samples every 5 ms, and VmHWM where /proc has it."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._process = psutil.Process(pid)
        self.before = self._process.memory_info().rss
        self._peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            with contextlib.suppress(psutil.Error):
                self._peak = max(self._peak, self._process.memory_info().rss)

    def peak(self) -> int:
        self._stop.set()
        self._thread.join()
        status = Path(f"/proc/{self._pid}/status")
        if status.exists():
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self._peak = max(self._peak, int(line.split()[1]) * 1024)
        return self._peak


async def _upload(url: str, uploads: int, size: int) -> tuple[collections.Counter[int], float]:
    body = b"x" * size
    limits = httpx.Limits(max_connections=uploads, max_keepalive_connections=uploads)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as api:
        store_id = (await api.post("/v2/key-value-stores", params={"name": "memory"})).json()["data"]["id"]
        await api.put(f"/v2/key-value-stores/{store_id}/records/warm-up", content=b"x" * MiB)
        started = time.perf_counter()
        responses = await asyncio.gather(
            *(api.put(f"/v2/key-value-stores/{store_id}/records/k{i}", content=body) for i in range(uploads)),
            return_exceptions=True,
        )
        elapsed = time.perf_counter() - started
    statuses: collections.Counter[int] = collections.Counter(
        r.status_code if isinstance(r, httpx.Response) else 0 for r in responses
    )
    return statuses, elapsed


def main() -> None:
    """Start the server, upload, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--uploads", type=int, default=16, help="concurrent uploads (default: %(default)s)")
    parser.add_argument("--size", type=int, default=63, help="MiB per upload (default: %(default)s)")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary folder (default: .bench-tmp/)")
    args = parser.parse_args()
    root = bench_root(args.dir)
    work = root / f"bench-server-memory-{secrets.token_hex(4)}"
    print(f"stores under {work} ({filesystem_type(root)}); Python {sys.version.split()[0]}")
    try:
        process, url = start_server("--storage-dir", str(work))
        try:
            rss = _PeakRss(process.pid)
            statuses, elapsed = asyncio.run(_upload(url, args.uploads, args.size * MiB))
            peak = rss.peak()
        finally:
            process.terminate()
            process.wait(timeout=60)
    finally:
        remove_bench_root(root, work, given=args.dir is not None)
    answers = ", ".join(f"{count} x {status or 'no answer'}" for status, count in sorted(statuses.items()))
    print(f"{args.uploads} concurrent uploads of {args.size} MiB: {answers} in {elapsed:.1f} s")
    print(
        f"server RSS before: {rss.before / MiB:.0f} MiB; peak: {peak / MiB:.0f} MiB; "
        f"growth: {(peak - rss.before) / MiB:.0f} MiB (bodies offered at once: {args.uploads * args.size} MiB)"
    )


if __name__ == "__main__":
    main()
