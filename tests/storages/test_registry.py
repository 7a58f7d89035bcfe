"""The one registry of storage backends, and every list built from it."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

import pytest

import recoverable
from recoverable import storages
from recoverable.configuration import Configuration, StorageClientName
from recoverable.storages import MemoryStorageClient, default_storage_client
from recoverable.storages._registry import BACKENDS, backend_named, optional_clients


def test_the_settings_name_every_backend_and_no_other() -> None:
    assert get_args(StorageClientName) == tuple(backend.name for backend in BACKENDS)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_every_backend_s_client_is_exported_everywhere(backend: object) -> None:
    from recoverable.storages._registry import StorageBackend  # noqa: PLC0415

    assert isinstance(backend, StorageBackend)
    cls = backend.client_class()
    assert getattr(storages, backend.class_name) is cls
    assert getattr(recoverable, backend.class_name) is cls
    assert backend.class_name in storages.__all__
    assert backend.class_name in recoverable.__all__
    assert backend_named(backend.name) is backend


def test_only_backends_with_an_extra_are_imported_lazily() -> None:
    assert sorted(optional_clients()) == ["RedisStorageClient", "SqlStorageClient"]
    code = "import sys, recoverable; print(sorted(m for m in ('redis', 'sqlalchemy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", ["memory", "file_system", "http"])
async def test_the_default_client_is_built_from_the_registry(name: str, tmp_path: object) -> None:
    configuration = Configuration(storage_client=name, storage_dir=tmp_path, http_url="http://127.0.0.1:9")  # type: ignore[arg-type]
    client = default_storage_client(configuration)
    assert type(client) is backend_named(name).client_class()
    assert default_storage_client(configuration) is client  # one per configuration
    await client.aclose()


def test_memory_built_from_settings_is_a_fresh_client() -> None:
    assert isinstance(MemoryStorageClient.from_configuration(Configuration()), MemoryStorageClient)


def test_recoverable_serve_offers_every_backend_it_can_serve() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "recoverable.cli", "serve", "--storage-client", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    offered = ", ".join(repr(b.name) for b in BACKENDS if b.served)
    assert f"choose from {offered}" in run.stderr, run.stderr
    assert "'http'" not in run.stderr.split("choose from", 1)[1]
