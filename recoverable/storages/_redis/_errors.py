"""Redis errors turned into `StorageBackendError`, with the server named and no password shown."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from recoverable.errors import StorageBackendError

__all__ = ["ServerInfo", "backend_error"]

_MAX_CAUSE_CHARS = 500
_MAX_KEY_CHARS = 80


class ServerInfo:
    """How messages name a server, and the secrets they must never show."""

    def __init__(self, description: str, secrets: list[str]) -> None:
        self.description = description
        self._secrets = [s for s in secrets if s]

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
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def backend_error(
    server: ServerInfo, action: str, exc: BaseException, *, store: str | None = None, key: str | None = None
) -> StorageBackendError:
    """Wrap a failure of Redis: what was being done, to which store and key, on which server, and why."""
    what = ""
    if key is not None:
        shown = key if len(key) <= _MAX_KEY_CHARS else key[:_MAX_KEY_CHARS] + "..."
        what += f" record {shown!r} of"
    if store is not None:
        what += f" key-value store {store!r}"
    cause = server.scrub(str(exc) or type(exc).__name__)[:_MAX_CAUSE_CHARS]
    return StorageBackendError(
        f"could not {action}{what} on Redis at {server.description}: {type(exc).__name__}: {cause} "
        "(check that the server is running, reachable and accepts the client's credentials)",
        store=store,
        key=key,
    )
