"""The HTTP storage client of the conformance suite: `HttpStorageClient` against a real `recoverable serve`.

`http_storage_client(tmp_path)` starts, on the first call for a `tmp_path`, a uvicorn server on a free
127.0.0.1 port serving `create_app()` over a `FileSystemStorageClient` in `tmp_path / "storage"`, and
returns a client of it. The server runs in a thread of its own with its own event loop, as a server in
another process would: a test blocking its loop cannot stall it. Later calls for the same `tmp_path`
return new clients of the same server (a "restarted" program reaching the same stores). Closing the
first client tells the server to stop gracefully and close its backend; the test does not wait for the
shutdown (uvicorn takes ~0.2 s), but the test process waits for every server when it exits.
"""

from __future__ import annotations

import asyncio
import atexit
import secrets
import threading
from typing import TYPE_CHECKING

from typing_extensions import override

from recoverable.server import create_app
from recoverable.server._uvicorn import serve_in_background
from recoverable.storages import FileSystemStorageClient, HttpStorageClient

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["http_storage_client"]

_START_TIMEOUT_SECS = 30.0


class _ServerThread:
    """`recoverable serve` over a file system backend, in a thread."""

    def __init__(self, storage_dir: Path) -> None:
        self.token = secrets.token_urlsafe(16)
        self.url = ""
        self._backend = FileSystemStorageClient(storage_dir=storage_dir)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"recoverable serve {storage_dir}", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_SECS) or self._error is not None:
            raise RuntimeError(f"the HTTP server for {storage_dir} did not start") from self._error

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # handed to the thread waiting for the start
            self._error = exc
        finally:
            self._ready.set()
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = create_app(storage_client=self._backend, token=self.token)
        async with self._backend, serve_in_background(app) as url:
            self.url = url
            self._ready.set()
            await self._stop.wait()

    def stop(self, *, wait: bool = True) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        if wait:
            self._thread.join(_START_TIMEOUT_SECS)


class _ServerOwningClient(HttpStorageClient):
    """The first client of a server: closing it stops the server."""

    def __init__(self, server: _ServerThread) -> None:
        super().__init__(base_url=server.url, token=server.token)
        self._server = server

    @override
    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            self._server.stop(wait=False)


_servers: dict[Path, _ServerThread] = {}


@atexit.register
def _stop_all() -> None:
    for server in _servers.values():
        server.stop()


def http_storage_client(tmp_path: Path) -> HttpStorageClient:
    """A client of the server of `tmp_path`, started by this call when it is not running."""
    server = _servers.get(tmp_path)
    if server is None or not server.running:
        server = _servers[tmp_path] = _ServerThread(tmp_path / "storage")
        return _ServerOwningClient(server)
    return HttpStorageClient(base_url=server.url, token=server.token)
