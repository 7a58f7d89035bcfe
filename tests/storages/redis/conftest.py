"""Fixtures of the Redis storage client tests: a real Redis server on loopback (see `tests/services.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import services
from redis.asyncio import Redis

from recoverable.storages import RedisStorageClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
def redis_url() -> str:
    """The URL of the session's Redis server."""
    return services.redis_url()


@pytest.fixture
def key_prefix(tmp_path: Path) -> str:
    """A key prefix of this test's own, so that tests never see each other's stores."""
    return services.redis_key_prefix(tmp_path)


@pytest.fixture
async def redis_client(redis_url: str, key_prefix: str) -> AsyncIterator[RedisStorageClient]:
    """A Redis storage client on the session's server, under the test's key prefix."""
    async with RedisStorageClient(redis_url, key_prefix=key_prefix) as client:
        yield client


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[Redis]:
    """A bare `redis.asyncio` client on the same server, to look at the keys."""
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
