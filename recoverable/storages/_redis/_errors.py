"""How messages name a Redis server, without its password, and the failures of Redis (see `_backend_errors`)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from recoverable.storages._backend_errors import Backend
from recoverable.storages._redis._dependency import redis_exceptions

__all__ = ["ServerInfo"]


class ServerInfo:
    """How messages name a server, and the secrets they must never show."""

    def __init__(self, description: str, secrets: list[str]) -> None:
        self.description = description
        self.backend = Backend(
            where=f"on Redis at {description}",
            hint="check that the server is running, reachable and accepts the client's credentials",
            failures=(redis_exceptions.RedisError, OSError),
            secrets=secrets,
        )
        """The server as the one error mapping of the storage clients sees it."""

    @classmethod
    def from_url(cls, url: str) -> ServerInfo:
        """Describe the server of a `redis://`, `rediss://` or `unix://` URL without its credentials."""
        parts = urlsplit(url)
        secrets = [parts.password or ""]
        secrets += [value for name, value in parse_qsl(parts.query) if name == "password"]
        if parts.scheme == "unix":
            return cls(f"unix:{parts.path}", secrets)
        try:
            port = parts.port
        except ValueError:
            port = None
        host = parts.hostname or "localhost"
        db = parts.path.lstrip("/") or "0"
        return cls(f"{parts.scheme}://{host}:{port or 6379}/{db}", secrets)

    @classmethod
    def from_client(cls, client: object) -> ServerInfo:
        """Describe the server a given `Redis` or `RedisCluster` connects to."""
        nodes_manager = getattr(client, "nodes_manager", None)
        if nodes_manager is not None:
            kwargs = getattr(nodes_manager, "connection_kwargs", None) or {}
            nodes = ",".join(sorted(getattr(nodes_manager, "startup_nodes", None) or {})) or "?"
            return cls(f"cluster {nodes}", [str(kwargs.get("password") or "")])
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
        if not isinstance(kwargs, dict):
            return cls("the given Redis client", [])
        secrets = [str(kwargs.get("password") or "")]
        if kwargs.get("path"):
            return cls(f"unix:{kwargs['path']}", secrets)
        return cls(f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}", secrets)

    def scrub(self, text: str) -> str:
        """`text` with every secret of the server replaced by `***`."""
        return self.backend.scrub(text)
