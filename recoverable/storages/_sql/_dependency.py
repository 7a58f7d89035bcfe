"""SQLAlchemy: imported here and nowhere else, with the command to install it when it is missing.

The database drivers (aiosqlite, asyncpg) are loaded by SQLAlchemy when an engine first connects; a
missing one is reported there, with the same install command.
"""

from __future__ import annotations

from recoverable.errors import MissingDependencyError

INSTALL_HINT = "pip install 'recoverable[sql]'"

try:
    import sqlalchemy
    from sqlalchemy import exc as sqlalchemy_exc
    from sqlalchemy.dialects import postgresql as sqlalchemy_postgresql
    from sqlalchemy.dialects import sqlite as sqlalchemy_sqlite
    from sqlalchemy.ext import asyncio as sqlalchemy_asyncio
except ImportError as exc:  # pragma: no cover - tested in a child process without the package
    raise MissingDependencyError(
        f"the SQL storage client needs the `sqlalchemy` package, which is not installed: {INSTALL_HINT}"
    ) from exc

__all__ = [
    "INSTALL_HINT",
    "sqlalchemy",
    "sqlalchemy_asyncio",
    "sqlalchemy_exc",
    "sqlalchemy_postgresql",
    "sqlalchemy_sqlite",
]
