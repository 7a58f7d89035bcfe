"""`recoverable serve` as a child process of a benchmark, on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
from _files import REPO_ROOT

__all__ = ["start_server"]

_START_SECS = 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(*options: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start `recoverable serve` with `options` (at warning level); return it and its URL once it answers.

    Exits the benchmark when the server stops or does not answer within 30 s.
    """
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "recoverable.cli", "serve", "--port", str(port), "--log-level", "warning", *options],
        cwd=REPO_ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + _START_SECS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"recoverable serve exited with status {process.returncode}")
        try:
            # Any answer proves the server is up; /v2/ lists nothing, so no store is looked at (or warmed).
            httpx.get(f"{url}/v2/", timeout=1)
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        return process, url
    process.kill()
    sys.exit(f"recoverable serve did not start within {_START_SECS} s")
