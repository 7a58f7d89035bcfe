"""`recoverable serve` as a real child process: readiness, auth, limits, refusals, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import importlib.metadata
import signal
import socket
from typing import TYPE_CHECKING

import httpx
import pytest

from cli._child import TOKEN
from recoverable.cli import main
from recoverable.errors import StorageBackendError
from recoverable.storages import FileSystemStorageClient, HttpStorageClient

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from cli._child import ServeChild

JSON = "application/json"


async def test_serve_then_stop_gracefully_during_an_upload(start: Callable[..., ServeChild], tmp_path: Path) -> None:
    storage = tmp_path / "served"
    serve = start("--storage-dir", str(storage), env={"RECOVERABLE_HTTP_TOKEN": TOKEN})
    serve.wait_ready()

    async with HttpStorageClient(base_url=serve.url, token=TOKEN) as client:
        store = await client.open_key_value_store_client(name="crawl")
        store_id = (await store.get_metadata()).id
        await store.set_record(key="state", value=b'{"pages": 3}', content_type=JSON)

    # An upload whose body is still arriving when SIGTERM comes: it must complete before the server exits.
    body = b"x" * 1_000_000
    reader, writer = await asyncio.open_connection("127.0.0.1", serve.port)
    writer.write(
        (
            f"PUT /v2/key-value-stores/{store_id}/records/late HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body[:1000]
    )
    await writer.drain()
    await asyncio.sleep(0.5)
    serve.process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert serve.process.poll() is None, "the server exited with a request in flight"
    writer.write(body[1000:])
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=30)
    writer.close()

    assert status_line.startswith(b"HTTP/1.1 201")
    assert serve.stop() == 0
    output = serve.output()
    assert "serving the key-value stores of the folder" in output
    assert "a bearer token is required" in output
    assert "stopped gracefully" in output
    async with FileSystemStorageClient(storage_dir=storage) as local:
        stored = await local.open_key_value_store_client(name="crawl")
        state = await stored.get_record(key="state")
        late = await stored.get_record(key="late")
    assert state is not None
    assert state.value == b'{"pages": 3}'
    assert late is not None
    assert late.value == body


async def test_the_token_is_required_when_given(start: Callable[..., ServeChild]) -> None:
    serve = start("--storage-client", "memory", f"--token={TOKEN}")  # = form: a token may start with "-"
    serve.wait_ready()
    async with HttpStorageClient(base_url=serve.url, token=TOKEN[::-1]) as client:
        with pytest.raises(StorageBackendError, match="401 token-not-valid"):
            await client.list_key_value_stores()
    async with httpx.AsyncClient() as anonymous:
        assert (await anonymous.get(f"{serve.url}/v2/key-value-stores")).status_code == 401
    assert serve.stop() == 0


async def test_limits_from_the_command_line(start: Callable[..., ServeChild]) -> None:
    serve = start("--storage-client", "memory", "--max-body-size", "1KiB", "--max-key-length", "256")
    serve.wait_ready(token=None)
    async with HttpStorageClient(base_url=serve.url) as client:
        store = await client.open_key_value_store_client(name="small")
        await store.set_record(key="k" * 256, value=b"x" * 1024, content_type=JSON)
        with pytest.raises(StorageBackendError, match=r"413 request-too-large.*1024 bytes"):
            await store.set_record(key="big", value=bytes(range(256)) * 5, content_type=JSON)
        with pytest.raises(ValueError, match="at most 256"):
            await store.set_record(key="k" * 257, value=b"1", content_type=JSON)
    assert serve.stop() == 0


def test_a_public_address_needs_a_token(start: Callable[..., ServeChild]) -> None:
    serve = start("--host", "0.0.0.0")  # noqa: S104 - refused before binding
    assert serve.process.wait(timeout=30) == 2
    output = serve.output()
    assert "binding 0.0.0.0" in output
    assert "RECOVERABLE_HTTP_TOKEN" in output


def test_a_port_in_use_is_a_clear_error(start: Callable[..., ServeChild]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = start("--storage-client", "memory", "--port", str(port))
        assert busy.process.wait(timeout=30) == 1
        assert f"cannot listen on 127.0.0.1:{port}" in busy.output()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--max-body-size", "lots"], "is not a size"),
        (["serve", "--storage-client", "cloud"], "invalid choice"),
        (["serve", "--graceful-timeout", "0"], "not a positive number"),
        (["serve", "--max-bytes-in-flight", "lots"], "is not a size"),
        (["serve", "--header-timeout", "0"], "not a positive number"),
        (["serve", "--body-timeout", "-1"], "not a positive number"),
        ([], "required"),
    ],
)
def test_bad_arguments(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_max_key_length_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--storage-client", "memory", "--max-key-length", "5000"]) == 2
    assert "max_key_length must be from 1 to 1024" in capsys.readouterr().err


def test_a_budget_smaller_than_one_body_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["serve", "--storage-client", "memory", "--max-body-size", "1MiB", "--max-bytes-in-flight", "1KiB"]) == 2
    )
    assert (
        "max_bytes_in_flight must be a number of bytes of at least max_body_size (1048576)" in capsys.readouterr().err
    )


def test_help_and_console_script(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        *("--host", "--port", "--storage-dir", "--storage-client", "--token", "--max-body-size"),
        *("--max-bytes-in-flight", "--header-timeout", "--body-timeout"),
    ):
        assert option in text
    scripts = importlib.metadata.entry_points(group="console_scripts", name="recoverable")
    assert [s.value for s in scripts] == ["recoverable.cli:main"]


async def test_serve_a_sql_database(start: Callable[..., ServeChild], tmp_path: Path) -> None:
    from recoverable.storages import SqlStorageClient  # noqa: PLC0415

    url = f"sqlite+aiosqlite:///{tmp_path / 'served.db'}"
    serve = start("--storage-client", "sql", "--sql-url", url, env={"RECOVERABLE_HTTP_TOKEN": TOKEN})
    serve.wait_ready()
    async with HttpStorageClient(base_url=serve.url, token=TOKEN) as client:
        store = await client.open_key_value_store_client(name="crawl")
        await store.set_record(key="state", value=b'{"pages": 7}', content_type=JSON)
    assert serve.stop() == 0
    assert "the database sqlite+aiosqlite:///" in serve.output()

    async with SqlStorageClient(url) as database:
        stored = await (await database.open_key_value_store_client(name="crawl")).get_record(key="state")
    assert stored is not None
    assert stored.value == b'{"pages": 7}'


def test_redis_without_a_url_is_a_clear_error(start: Callable[..., ServeChild]) -> None:
    serve = start("--storage-client", "redis")
    assert serve.process.wait(timeout=30) == 2
    assert "RECOVERABLE_REDIS_URL" in serve.output()
