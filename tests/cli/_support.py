"""The storage clients the command-line tests run the installed `recoverable` command against, and its runner.

Each backend gives the storage options that point the command at it, and a library client on the same
storage, with which a test puts its seed data in and checks what the command left. The memory client lives
in one process, so the command (a process of its own) cannot share it: it is not among them. Redis and
PostgreSQL are shared by the session, so each test names its stores after a tag of its own, and drops them.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import services
from conformance._http_server import _ServerThread

from recoverable.storages import FileSystemStorageClient, HttpStorageClient, StorageClient

if TYPE_CHECKING:
    from collections.abc import Callable

BACKENDS = ["file_system", "sqlite", "postgres", "redis", "http"]


def recoverable_command() -> str:
    """The `recoverable` console script installed beside the interpreter running the tests."""
    installed = Path(sysconfig.get_path("scripts")) / "recoverable"
    found = str(installed) if installed.exists() else shutil.which("recoverable")
    assert found is not None, "the recoverable command is not installed: pip install -e ."
    return found


@dataclass
class Ran:
    """What a run of the command did."""

    args: list[str]
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode()

    def json(self) -> Any:
        import json  # noqa: PLC0415

        return json.loads(self.out)

    def error_line(self) -> str:
        """The one line of a failed run on stderr; fails the test when there are more, or a traceback."""
        lines = self.err.splitlines()
        assert len(lines) == 1, f"{self.args}: expected one line on stderr, got:\n{self.err}"
        assert "Traceback" not in self.err
        return lines[0]


@dataclass
class Cli:
    """Runs `recoverable ...` as a child process, with the test's environment, in its folder."""

    env: dict[str, str]
    cwd: Path
    command: list[str] = field(default_factory=lambda: [recoverable_command()])

    def __call__(self, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None, timeout: float = 120) -> Ran:
        result = subprocess.run(
            [*self.command, *args],
            input=stdin,
            capture_output=True,
            env={**self.env, **(env or {})},
            cwd=self.cwd,
            timeout=timeout,
            check=False,
        )
        return Ran(list(args), result.returncode, result.stdout, result.stderr.decode(errors="replace"))

    def python_m(self) -> Cli:
        """The same runner, running `python -m recoverable` instead of the console script."""
        return Cli(self.env, self.cwd, [sys.executable, "-m", "recoverable"])


@dataclass
class Backend:
    """A storage the command can be pointed at.

    Attributes:
        kind: Its name in the test ids.
        args: The storage options that point the command at it.
        env: Variables the command needs besides (the HTTP token, kept off the command line).
        new_client: A new library client on the same storage.
        tag: The start of the names of this test's stores.
        spec: How a child process builds a client of it (see _owner.py).
    """

    kind: str
    args: list[str]
    env: dict[str, str]
    new_client: Callable[[], StorageClient]
    tag: str
    spec: dict[str, str]
    cleanup: Callable[[], None] = lambda: None

    def store(self, what: str = "crawl") -> str:
        """A store name of this test."""
        return f"{self.tag}-{what}"

    async def drop_stores(self) -> None:
        """Drop the stores of this test (Redis and PostgreSQL outlive it)."""
        async with self.new_client() as client:
            for metadata in await client.list_key_value_stores():
                if metadata.name is not None and metadata.name.startswith(self.tag):
                    await (await client.open_key_value_store_client(id=metadata.id)).drop()


def make_backend(kind: str, tmp_path: Path) -> Backend:
    """The backend `kind` of `BACKENDS`, with its storage under `tmp_path` (or on the session's servers)."""
    tag = f"t{secrets.token_hex(4)}"
    tmp_path.mkdir(parents=True, exist_ok=True)
    if kind == "file_system":
        folder = tmp_path / "storage"
        return Backend(
            kind,
            ["--storage-dir", str(folder)],
            {},
            lambda: FileSystemStorageClient(storage_dir=folder),
            tag,
            {"kind": "file_system", "storage_dir": str(folder)},
        )
    if kind in ("sqlite", "postgres"):
        from recoverable.storages import SqlStorageClient  # noqa: PLC0415 - an optional extra

        url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}" if kind == "sqlite" else services.postgres_url()
        return Backend(
            kind,
            ["--storage-client", "sql", "--sql-url", url],
            {},
            lambda: SqlStorageClient(url),
            tag,
            {"kind": "sql", "url": url},
        )
    if kind == "redis":
        from recoverable.storages import RedisStorageClient  # noqa: PLC0415 - an optional extra

        url = services.redis_url()
        return Backend(
            kind,
            ["--storage-client", "redis", "--redis-url", url],
            {},
            lambda: RedisStorageClient(url),
            tag,
            {"kind": "redis", "url": url},
        )
    assert kind == "http", kind
    server = _ServerThread(tmp_path / "served")
    return Backend(
        kind,
        ["--storage-client", "http", "--http-url", server.url],
        {"RECOVERABLE_HTTP_TOKEN": server.token},
        lambda: HttpStorageClient(base_url=server.url, token=server.token),
        tag,
        {"kind": "http", "url": server.url, "token": server.token},
        cleanup=server.stop,
    )
