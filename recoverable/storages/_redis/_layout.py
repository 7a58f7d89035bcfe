"""Where a Redis storage client keeps its stores: the key layout.

All keys of one client start with its key prefix `P` (`recoverable` unless given). The keys of one store
share the hash tag `{P:<store id>}`, so on Redis Cluster a store lives in one slot and every Lua script
of the client touches keys of one slot only; the registry of stores has the hash tag `{P}`.

```
{P}:stores             hash: store id -> JSON {"id", "name", "alias", "created_at"}: the stores that exist
{P}:names              hash: store name -> store id
{P}:aliases            hash: alias -> store id (the default store is the alias "default")
{P}:dropped            set: ids of dropped stores whose keys may not all be deleted yet
{P:<id>}:meta          hash: id, name, alias, created_at, modified_at, accessed_at (microseconds since the
                       epoch, UTC) and counter, the source of the store's record versions
{P:<id>}:keys          sorted set: every key of the store as its UTF-8 bytes, all with score 0, so that
                       ZRANGEBYLEX lists them in byte order (the same as code point order)
{P:<id>}:r:<key>       hash: v (the value's bytes), ct (the content type), ver (the version)
```

A record key is data: it is appended as its UTF-8 bytes after `:r:` (Redis keys are binary-safe), so no
key can reach another store or the store's own `:meta` and `:keys`. Store ids are 17 letters and digits,
and the prefix holds no braces, so the first `{...}` of every key is the hash tag above whatever the
record key contains.

A store is alive while its `:meta` hash exists; every script checks it first, so a dropped store fails
at once for every client that still has it open. Dropping takes the store out of the registry and adds
its id to `:dropped` (one script), deletes `:meta`, deletes the records in batches, then removes the id
from `:dropped`. When a crash stops a drop half-way, the next storage client of the prefix to open or
list stores finishes it, so no record outlives its store.
"""

from __future__ import annotations

from dataclasses import dataclass

from recoverable.errors import ConfigurationError

__all__ = ["DEFAULT_KEY_PREFIX", "RegistryKeys", "StoreKeys", "lex_range", "validate_key_prefix"]

DEFAULT_KEY_PREFIX = "recoverable"
_MAX_PREFIX_LENGTH = 200


def validate_key_prefix(prefix: object) -> str:
    """Check a key prefix: a non-empty str of at most 200 characters without braces.

    Raises:
        ConfigurationError: The prefix breaks a rule.
    """
    if not isinstance(prefix, str) or not prefix or len(prefix) > _MAX_PREFIX_LENGTH:
        raise ConfigurationError(f"key_prefix must be a str of 1 to {_MAX_PREFIX_LENGTH} characters, not {prefix!r}")
    if "{" in prefix or "}" in prefix:
        raise ConfigurationError(
            f"key_prefix {prefix!r} must not contain braces: they would change the Redis Cluster hash tag"
        )
    return prefix


@dataclass(frozen=True, slots=True)
class RegistryKeys:
    """The keys of the store registry of one key prefix."""

    stores: bytes
    names: bytes
    aliases: bytes
    dropped: bytes

    @classmethod
    def for_prefix(cls, prefix: str) -> RegistryKeys:
        """The registry keys of `prefix`."""
        tag = "{" + prefix + "}"
        return cls(
            stores=f"{tag}:stores".encode(),
            names=f"{tag}:names".encode(),
            aliases=f"{tag}:aliases".encode(),
            dropped=f"{tag}:dropped".encode(),
        )


@dataclass(frozen=True, slots=True)
class StoreKeys:
    """The keys of one store."""

    meta: bytes
    keys: bytes
    record_prefix: bytes

    @classmethod
    def for_store(cls, prefix: str, store_id: str) -> StoreKeys:
        """The keys of the store `store_id` under `prefix`."""
        tag = "{" + prefix + ":" + store_id + "}"
        return cls(meta=f"{tag}:meta".encode(), keys=f"{tag}:keys".encode(), record_prefix=f"{tag}:r:".encode())

    def record(self, key: str) -> bytes:
        """The key of the hash holding the record `key`."""
        return self.record_prefix + key.encode("utf-8")


def lex_range(exclusive_start_key: str | None, prefix: str | None) -> tuple[bytes, bytes]:
    """The ZRANGEBYLEX bounds of the keys after `exclusive_start_key` that start with `prefix`.

    UTF-8 never holds the byte 0xFF, so every key starting with `prefix` sorts below `prefix` followed by
    the byte 0xFF, and every other key above `prefix` sorts above that.
    """
    lower = b"-"
    upper = b"+"
    # A bound may hold a lone surrogate (a key never does); "surrogatepass" encodes it where it sorts.
    encoded_prefix = prefix.encode("utf-8", "surrogatepass") if prefix else b""
    if encoded_prefix:
        lower = b"[" + encoded_prefix
        upper = b"(" + encoded_prefix + b"\xff"
    if exclusive_start_key is not None:
        start = exclusive_start_key.encode("utf-8", "surrogatepass")
        if start >= encoded_prefix:
            lower = b"(" + start
    return lower, upper
