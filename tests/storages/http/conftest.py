"""Fixtures of the HTTP storage client tests: a real uvicorn on a free loopback port serving `create_app()`.

`serve(...)` serves a file system backend in `tmp_path` (or another backend), optionally through an ASGI
middleware that records the requests or misbehaves on purpose.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from recoverable.server import create_app
from recoverable.server._uvicorn import serve_in_background
from recoverable.storages import FileSystemStorageClient

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    from starlette.types import ASGIApp

    from recoverable.storages import StorageClient


@pytest.fixture
def backend(tmp_path: Path) -> FileSystemStorageClient:
    return FileSystemStorageClient(storage_dir=tmp_path / "storage")


@pytest.fixture
def serve(backend: FileSystemStorageClient) -> Callable[..., AbstractAsyncContextManager[str]]:
    """`serve(wrap=..., storage_client=..., port=..., **create_app_options)`: a running server; yields its URL."""

    def start(
        *,
        wrap: Callable[[ASGIApp], ASGIApp] | None = None,
        storage_client: StorageClient | None = None,
        port: int = 0,
        uvicorn_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> AbstractAsyncContextManager[str]:
        app: ASGIApp = create_app(storage_client=storage_client or backend, **options)
        if wrap is not None:
            app = wrap(app)
        return serve_in_background(app, port=port, **(uvicorn_options or {}))

    return start
