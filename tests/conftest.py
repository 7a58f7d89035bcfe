"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's RECOVERABLE_* settings or writes ./storage."""
    for var in list(os.environ):
        if var.startswith(("RECOVERABLE_", "CRAWLEE_", "APIFY_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("RECOVERABLE_STORAGE_DIR", str(tmp_path / "default-storage"))


@pytest.fixture
def child_env() -> dict[str, str]:
    """Environment for child processes: the repository importable, no inherited RECOVERABLE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECOVERABLE_", "CRAWLEE_", "APIFY_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def python() -> str:
    """The interpreter running the tests, for child processes."""
    return sys.executable
