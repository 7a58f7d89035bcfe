"""Fixtures of the command-line tests."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cli._child import ServeChild
from cli._support import BACKENDS, Backend, Cli, make_backend

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator


@pytest.fixture
def start(python: str, child_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., ServeChild]]:
    """`start(*args, env=...)` runs `recoverable serve --port <free> *args`; every child is killed at the end."""
    started: list[ServeChild] = []

    def run(*args: str, env: dict[str, str] | None = None) -> ServeChild:
        started.append(ServeChild(python, {**child_env, **(env or {})}, tmp_path, *args))
        return started[-1]

    yield run
    for serve in started:
        if serve.process.poll() is None:
            serve.process.kill()
        serve.process.communicate(timeout=30)


@pytest.fixture
def cli(child_env: dict[str, str], tmp_path: Path) -> Cli:
    """`cli(*args, stdin=b"", env={})` runs the installed `recoverable` command in the test's folder."""
    return Cli(child_env, tmp_path)


async def _backend(kind: str, tmp_path: Path) -> AsyncIterator[Backend]:
    backend = make_backend(kind, tmp_path)
    try:
        yield backend
        if kind in ("postgres", "redis"):
            await backend.drop_stores()
    finally:
        backend.cleanup()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each storage the command can share with a test (the memory client lives in one process only)."""
    async for made in _backend(request.param, tmp_path):
        yield made


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[[str], Backend]]:
    """`make(kind)`: one more backend of the test (the source and the destination of a copy, say)."""
    made: list[Backend] = []

    def new(kind: str) -> Backend:
        made.append(make_backend(kind, tmp_path / f"made-{len(made)}"))
        return made[-1]

    yield new
    for backend in made:
        try:
            if backend.kind in ("postgres", "redis"):
                await backend.drop_stores()
        finally:
            backend.cleanup()


@pytest.fixture
def owner(python: str, child_env: dict[str, str], backend: Backend) -> Iterator[subprocess.Popen[str]]:
    """A child process owning the state `STATE` of the store `backend.store()` (see _owner.py), once it is READY."""
    process = subprocess.Popen(
        [python, str(Path(__file__).with_name("_owner.py")), json.dumps(backend.spec), backend.store(), "STATE"],
        env={**child_env, **backend.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if line != "READY\n":
            process.kill()
            pytest.fail(f"the owner did not start: {line!r} {process.communicate(timeout=30)}")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)
