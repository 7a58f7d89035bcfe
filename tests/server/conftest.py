"""A real uvicorn on a free loopback port serving `create_app()` over a file system backend in `tmp_path`."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from recoverable.server import create_app
from recoverable.server._uvicorn import serve_in_background
from recoverable.storages import FileSystemStorageClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    from recoverable.storages import StorageClient

TOKEN = secrets.token_urlsafe(16)


@pytest.fixture
def token() -> str:
    """The token the `api` fixture's server requires."""
    return TOKEN


@pytest.fixture
def backend(tmp_path: Path) -> FileSystemStorageClient:
    return FileSystemStorageClient(storage_dir=tmp_path / "storage")


@pytest.fixture
def serve(backend: FileSystemStorageClient) -> Callable[..., AbstractAsyncContextManager[str]]:
    """Serve `create_app(**options)` (the file system backend unless another is given); yields the URL."""

    def start(*, storage_client: StorageClient | None = None, **options: Any) -> AbstractAsyncContextManager[str]:
        return serve_in_background(create_app(storage_client=storage_client or backend, **options))

    return start


@pytest.fixture
async def api(serve: Callable[..., AbstractAsyncContextManager[str]]) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client of a server requiring `TOKEN`, sending it."""
    async with (
        serve(token=TOKEN) as url,
        httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client,
    ):
        yield client
