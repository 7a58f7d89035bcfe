"""The tables of the SQL storage client, and how keys are stored in them.

With the table prefix `P` (`recoverable_` unless given):

```
P kv_stores     id (primary key), name (unique, NULL for unnamed stores), alias (unique, NULL for named
                stores; the default store is the alias "default"; an alias of more than 63 characters is
                kept as `/` and its hash, `alias_column`), created_at, modified_at, accessed_at,
                version_counter (the source of the store's record versions)
P kv_records    store_id, key_hash (primary key with store_id: SHA-256 of the key's UTF-8 bytes), key_head
                (the first 255 characters of the key), key, value (BLOB / BYTEA), content_type, version, size
P kv_records_order   index on (store_id, key_head): keys are listed ordered by (key_head, key)
```

A key is a bound parameter everywhere, never part of the SQL text. It is not the primary key itself
because PostgreSQL cannot index a value over 2704 bytes and a key of 1024 characters takes up to 4096;
its hash identifies it and its head orders it. Ordering by `(key_head, key)` is ordering by `key`, in
code point order: PostgreSQL compares both columns with `COLLATE "C"` (UTF-8 bytes), SQLite with its
BINARY collation (UTF-8 bytes too).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from recoverable.errors import ConfigurationError
from recoverable.storages._sql._dependency import sqlalchemy

__all__ = [
    "DEFAULT_TABLE_PREFIX",
    "KEY_HEAD_CHARS",
    "Tables",
    "alias_column",
    "key_hash",
    "key_head",
    "listing_bound",
    "successor",
    "validate_table_prefix",
]

DEFAULT_TABLE_PREFIX = "recoverable_"
KEY_HEAD_CHARS = 255
_PREFIX_RE = re.compile(r"[a-z_][a-z0-9_]{0,39}")
_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def validate_table_prefix(prefix: object) -> str:
    """Check a table prefix: up to 40 lower-case letters, digits and underscores, not starting with a digit.

    Raises:
        ConfigurationError: The prefix breaks a rule.
    """
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise ConfigurationError(
            f"table_prefix {prefix!r} is invalid: use up to 40 lower-case letters, digits and underscores, "
            "not starting with a digit, e.g. 'recoverable_'"
        )
    return prefix


def _key_text(length: int | None = None) -> sqlalchemy.types.TypeEngine[str]:
    base: sqlalchemy.types.TypeEngine[str] = sqlalchemy.String(length) if length else sqlalchemy.Text()
    collated: sqlalchemy.types.TypeEngine[str] = (
        sqlalchemy.String(length, collation="C") if length else sqlalchemy.Text(collation="C")
    )
    return base.with_variant(collated, "postgresql")


@dataclass(frozen=True, slots=True)
class Tables:
    """The tables of one table prefix."""

    metadata: sqlalchemy.MetaData
    stores: sqlalchemy.Table
    records: sqlalchemy.Table

    @classmethod
    def for_prefix(cls, prefix: str) -> Tables:
        """The tables named with `prefix`."""
        metadata = sqlalchemy.MetaData()
        timestamp = sqlalchemy.DateTime(timezone=True)
        stores = sqlalchemy.Table(
            f"{prefix}kv_stores",
            metadata,
            sqlalchemy.Column("id", sqlalchemy.String(32), primary_key=True),
            sqlalchemy.Column("name", sqlalchemy.String(63), nullable=True, unique=True),
            sqlalchemy.Column("alias", sqlalchemy.String(63), nullable=True, unique=True),
            sqlalchemy.Column("created_at", timestamp, nullable=False),
            sqlalchemy.Column("modified_at", timestamp, nullable=False),
            sqlalchemy.Column("accessed_at", timestamp, nullable=False),
            sqlalchemy.Column("version_counter", sqlalchemy.BigInteger, nullable=False),
        )
        records = sqlalchemy.Table(
            f"{prefix}kv_records",
            metadata,
            sqlalchemy.Column("store_id", sqlalchemy.String(32), primary_key=True),
            sqlalchemy.Column("key_hash", sqlalchemy.LargeBinary(32), primary_key=True),
            sqlalchemy.Column("key_head", _key_text(KEY_HEAD_CHARS), nullable=False),
            sqlalchemy.Column("key", _key_text(), nullable=False),
            sqlalchemy.Column("value", sqlalchemy.LargeBinary, nullable=False),
            sqlalchemy.Column("content_type", sqlalchemy.Text, nullable=False),
            sqlalchemy.Column("version", sqlalchemy.String(32), nullable=False),
            sqlalchemy.Column("size", sqlalchemy.BigInteger, nullable=False),
            sqlalchemy.Index(f"{prefix}kv_records_order", "store_id", "key_head"),
        )
        return cls(metadata=metadata, stores=stores, records=records)


ALIAS_COLUMN_CHARS = 63


def alias_column(alias: str) -> str:
    """What the `alias` column holds for a store alias: the alias itself, or `/` and its hash when it is long.

    The column holds 63 characters (tables made before aliases could be longer). An alias never contains `/`,
    so the hashed form of a long alias can never be the text of another one.
    """
    if len(alias) <= ALIAS_COLUMN_CHARS:
        return alias
    return "/" + hashlib.sha256(alias.encode("utf-8")).hexdigest()[: ALIAS_COLUMN_CHARS - 1]


def key_hash(key: str) -> bytes:
    """The 32 bytes that identify `key` in its store."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def key_head(key: str) -> str:
    """The part of `key` the ordering index holds."""
    return key[:KEY_HEAD_CHARS]


def successor(text: str) -> str | None:
    """The least string greater than every string starting with `text`; None when there is none.

    Surrogates are skipped: no stored key holds one.
    """
    chars = list(text)
    while chars:
        code = ord(chars[-1])
        if code < _MAX_CODE_POINT:
            code += 1
            if code in _SURROGATES:
                code = _SURROGATES.stop
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def listing_bound(text: str) -> tuple[str, bool]:
    """`text` as a bound the database accepts, and whether it became inclusive.

    Keys hold neither NUL characters nor lone surrogates, and databases take neither in a parameter. For
    stored keys, "greater than `a` + NUL + ..." is "greater than `a`", and "greater than `a` + a surrogate
    + ..." is "at least `a` + U+E000".
    """
    for i, char in enumerate(text):
        if char == "\x00":
            return text[:i], False
        if ord(char) in _SURROGATES:
            return text[:i] + chr(_SURROGATES.stop), True
    return text, False
