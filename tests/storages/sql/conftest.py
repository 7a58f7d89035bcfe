"""Fixtures of the SQL storage client tests: SQLite in `tmp_path`, and a real PostgreSQL on loopback.

PostgreSQL comes from `tests/services.py`: one database for the session, one table prefix per test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import services

from recoverable.storages import SqlStorageClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
def table_prefix(tmp_path: Path) -> str:
    """A table prefix of this test's own, so that tests never see each other's stores."""
    return services.sql_table_prefix(tmp_path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file of this test."""
    return f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def postgres_url() -> str:
    """The session's PostgreSQL database."""
    return services.postgres_url()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file of the test, then the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    return services.postgres_url()


@pytest.fixture
async def sql_client(database_url: str, table_prefix: str) -> AsyncIterator[SqlStorageClient]:
    """A SQL storage client on each database, with the test's table prefix."""
    async with SqlStorageClient(database_url, table_prefix=table_prefix) as client:
        yield client
