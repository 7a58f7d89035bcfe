"""Fixtures of the command-line tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from cli._child import ServeChild

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


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
