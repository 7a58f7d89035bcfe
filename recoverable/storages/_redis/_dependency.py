"""The `redis` package: imported here and nowhere else, with the command to install it when it is missing."""

from __future__ import annotations

from recoverable.errors import MissingDependencyError

try:
    import redis.asyncio as redis_asyncio
    from redis import exceptions as redis_exceptions
except ImportError as exc:  # pragma: no cover - tested in a child process without the package
    raise MissingDependencyError(
        "the Redis storage client needs the `redis` package, which is not installed: pip install 'recoverable[redis]'"
    ) from exc

__all__ = ["redis_asyncio", "redis_exceptions"]
