"""One key-value store kept in SQL tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from typing_extensions import override

from recoverable.errors import StoreNotFoundError, VersionConflictError
from recoverable.storages._backend_errors import shown_key
from recoverable.storages._base import KeyValueStoreClient
from recoverable.storages._models import KeyInfo, KeyValueStoreMetadata, StoredRecord
from recoverable.storages._sql._dependency import sqlalchemy
from recoverable.storages._sql._schema import key_hash, key_head, listing_bound, successor
from recoverable.storages._validation import validate_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from recoverable.storages._backend_errors import Backend
    from recoverable.storages._sql._connections import DriverConnections, DriverTransaction
    from recoverable.storages._sql._dependency import sqlalchemy_asyncio
    from recoverable.storages._sql._schema import Tables
    from recoverable.storages._sql._statements import DriverStatement, SingleStatementWrites, Statements

__all__ = ["SqlKeyValueStoreClient", "aware"]

_PAGE_SIZE = 1000


def aware(value: datetime) -> datetime:
    """A timestamp read from the database as an aware UTC datetime (SQLite gives them back naive)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SqlKeyValueStoreClient(KeyValueStoreClient):
    """A store in two SQL tables: its row in the stores table, one row per record in the records table.

    Every write is one transaction that first updates the store's row (which takes the next version from
    the store's counter and locks the row until commit) and then writes the record with the condition in
    its WHERE or ON CONFLICT clause, so conditional writes are atomic. On PostgreSQL a record write is
    that transaction in one statement (see `_statements.SingleStatementWrites`). The tables are
    documented in `recoverable.storages._sql._schema`.

    The record reads and every write run with the driver on the storage client's own connections
    (`connections`); the metadata and the key listing through SQLAlchemy (`reader`). Messages name the
    database as `database` says it (no password); `backend` turns its failures into the library's errors;
    `embedded` is true for SQLite, which runs in the writing process.
    """

    def __init__(
        self,
        *,
        reader: sqlalchemy_asyncio.AsyncEngine,
        connections: DriverConnections,
        database: str,
        embedded: bool,
        backend: Backend,
        tables: Tables,
        statements: Statements,
        store_id: str,
        name: str | None,
        created_at: datetime,
        accessed_at: datetime,
    ) -> None:
        self._reader = reader
        self._db = connections
        self._database = database
        self._embedded = embedded
        self._backend = backend
        self._tables = tables
        self._sql = statements
        self._driver = statements.driver
        self._id = store_id
        self._name = name
        self._created_at = created_at
        self._accessed_at = accessed_at

    @property
    def store_id(self) -> str:
        """The id of the store."""
        return self._id

    def _label(self) -> str:
        return self._name or self._id

    def _gone(self) -> StoreNotFoundError:
        return StoreNotFoundError(
            f"key-value store {self._label()!r} no longer exists in {self._database} (it was dropped)",
            store=self._label(),
        )

    def _params(self, key: str) -> dict[str, Any]:
        return {"p_store_id": self._id, "p_key_hash": key_hash(key)}

    async def _read(self, statement: sqlalchemy.Select[Any], params: dict[str, Any]) -> sqlalchemy.Row[Any] | None:
        # Through SQLAlchemy, which gives timestamps back as datetimes. No transaction: on PostgreSQL one
        # round trip, without BEGIN and ROLLBACK.
        async with self._reader.connect() as conn:
            row: sqlalchemy.Row[Any] | None = (await conn.execute(statement, params)).first()
        return row

    async def _current_version(self, transaction: DriverTransaction, key: str) -> str | None:
        row = await transaction.fetch(self._driver.current_version, self._params(key))
        return None if row is None else str(row[0])

    async def _bump(self, transaction: DriverTransaction) -> str:
        """Take the store's next version and mark it modified; this locks the store's row until commit."""
        row = await transaction.fetch(self._driver.bump, {"p_store_id": self._id, "p_now": datetime.now(UTC)})
        if row is None:
            raise self._gone()
        return str(row[0])

    @property
    @override
    def writes_end_with_the_writer(self) -> bool:
        return self._embedded

    @override
    async def get_metadata(self) -> KeyValueStoreMetadata:
        with self._backend.mapped("read the metadata of", store=self._label()):
            row = await self._read(self._sql.metadata, {"p_store_id": self._id})
        if row is None:
            raise self._gone()
        modified = max(aware(row.modified_at), self._created_at)
        accessed = max(aware(row.accessed_at), self._accessed_at, modified)
        return KeyValueStoreMetadata(
            id=self._id, name=self._name, created_at=self._created_at, modified_at=modified, accessed_at=accessed
        )

    @override
    async def get_record(self, *, key: str) -> StoredRecord | None:
        validate_key(key, store=self._label())
        with self._backend.mapped("read", store=self._label(), key=key):
            row = await self._db.read(self._driver.get_record, self._params(key))
        if row is None:
            raise self._gone()
        self._accessed_at = datetime.now(UTC)
        _, value, content_type, version = row
        if version is None:
            return None
        return StoredRecord(key=key, value=bytes(value), content_type=content_type, version=version)

    @override
    async def record_exists(self, *, key: str) -> bool:
        validate_key(key, store=self._label())
        with self._backend.mapped("check", store=self._label(), key=key):
            row = await self._db.read(self._driver.record_version, self._params(key))
        if row is None:
            raise self._gone()
        _, version = row
        return version is not None

    @override
    async def set_record(
        self,
        *,
        key: str,
        value: bytes,
        content_type: str,
        if_version: str | None = None,
        if_absent: bool = False,
    ) -> str:
        validate_key(key, store=self._label())
        with self._backend.mapped("write", store=self._label(), key=key):
            return await self._set(key, bytes(value), content_type, if_version=if_version, if_absent=if_absent)

    async def _set(self, key: str, value: bytes, content_type: str, *, if_version: str | None, if_absent: bool) -> str:
        if if_absent and if_version is not None:
            # No record is both absent and of a version: nothing can be written; say which condition failed.
            row = await self._db.read(self._driver.record_version, self._params(key))
            if row is None:
                raise self._gone()
            _, actual = row
            expected = None if actual else if_version
            raise VersionConflictError.for_record(store=self._label(), key=key, expected=expected, actual=actual)
        params = self._params(key) | {
            "p_key_head": key_head(key),
            "p_key": key,
            "p_value": value,
            "p_content_type": content_type,
            "p_size": len(value),
            "p_if_version": if_version,
        }
        if self._driver.single is not None:
            return await self._set_in_one_statement(self._driver.single, key, params, if_version, if_absent=if_absent)
        async with self._db.transaction() as transaction:
            version = await self._bump(transaction)
            params["p_version"] = version
            # The condition is in the statement (WHERE version = ..., ON CONFLICT DO NOTHING), so it holds
            # at the instant of the write; the current version is read only to explain a conflict.
            if if_version is not None:
                written = await transaction.fetch(self._driver.update_if_version, params)
            elif if_absent:
                written = await transaction.fetch(self._driver.insert_if_absent, params)
            else:
                await transaction.fetch(self._driver.upsert, params)
                return version
            if written is None:
                actual = await self._current_version(transaction, key)
                raise VersionConflictError.for_record(store=self._label(), key=key, expected=if_version, actual=actual)
            return version

    async def _set_in_one_statement(
        self,
        single: SingleStatementWrites,
        key: str,
        params: dict[str, Any],
        if_version: str | None,
        *,
        if_absent: bool,
    ) -> str:
        statement: DriverStatement
        if if_version is not None:
            statement = single.update_if_version
        else:
            statement = single.insert_if_absent if if_absent else single.upsert
        row = await self._db.run_alone(statement, params | {"p_now": datetime.now(UTC)})
        if row is not None:
            return str(row[0])
        # Nothing written: the store is gone, or the condition failed; say which.
        current = await self._db.read(self._driver.record_version, self._params(key))
        if current is None:
            raise self._gone()
        _, actual = current
        expected = None if if_absent else if_version
        raise VersionConflictError.for_record(store=self._label(), key=key, expected=expected, actual=actual)

    @override
    async def copy_record(self, *, key: str, to_key: str, if_version: str | None = None) -> str | None:
        """Copy the record under `key` to `to_key` with one statement: the value never leaves the database.

        The statement runs after the store's counter is taken, in the same transaction, as the other writes
        do: on PostgreSQL its snapshot is then taken once the store's row is locked, so it reads the source as
        the last write left it.
        """
        validate_key(key, store=self._label())
        validate_key(to_key, store=self._label())
        params = self._params(key) | {
            "p_to_key_hash": key_hash(to_key),
            "p_to_key_head": key_head(to_key),
            "p_to_key": to_key,
            "p_if_version": if_version,
        }
        statement = self._driver.copy if if_version is None else self._driver.copy_if_version
        with self._backend.mapped(f"copy record {shown_key(key)!r} to", store=self._label(), key=to_key):
            try:
                async with self._db.transaction() as transaction:
                    params["p_version"] = await self._bump(transaction)
                    row = await transaction.fetch(statement, params)
                    if row is None:
                        # Rolls back the counter taken: nothing was copied.
                        actual = await self._current_version(transaction, key)
                        raise VersionConflictError.for_record(
                            store=self._label(), key=key, expected=if_version, actual=actual
                        )
            except VersionConflictError:
                if if_version is None:
                    return None  # no record under `key`
                raise
        return str(row[0])

    @override
    async def delete_record(self, *, key: str, if_version: str | None = None) -> bool:
        validate_key(key, store=self._label())
        with self._backend.mapped("delete", store=self._label(), key=key):
            async with self._db.transaction() as transaction:
                await self._bump(transaction)
                if if_version is None:
                    return await transaction.fetch(self._driver.delete, self._params(key)) is not None
                deleted = await transaction.fetch(
                    self._driver.delete_if_version, self._params(key) | {"p_if_version": if_version}
                )
                if deleted is None:
                    actual = await self._current_version(transaction, key)
                    raise VersionConflictError.for_record(
                        store=self._label(), key=key, expected=if_version, actual=actual
                    )
                return True

    @override
    async def iterate_keys(
        self,
        *,
        exclusive_start_key: str | None = None,
        limit: int | None = None,
        prefix: str | None = None,
    ) -> AsyncIterator[KeyInfo]:
        records = self._tables.records
        with self._backend.mapped("list the keys of", store=self._label()):
            exists = await self._read(self._sql.store_exists, {"p_store_id": self._id})
        if exists is None:
            raise self._gone()
        conditions = self._listing_conditions(prefix)
        if conditions is None:
            return
        start, inclusive = (None, False) if exclusive_start_key is None else listing_bound(exclusive_start_key)
        remaining = limit
        while remaining is None or remaining > 0:
            count = _PAGE_SIZE if remaining is None else min(_PAGE_SIZE, remaining)
            page_conditions = list(conditions)
            if start is not None:
                page_conditions.append(records.c.key_head >= key_head(start))
                page_conditions.append(records.c.key >= start if inclusive else records.c.key > start)
            query = (
                sqlalchemy.select(records.c.key, records.c.size)
                .where(*page_conditions)
                .order_by(records.c.key_head, records.c.key)
                .limit(count)
            )
            with self._backend.mapped("list the keys of", store=self._label()):
                async with self._reader.connect() as conn:
                    rows = (await conn.execute(query)).all()
            for row in rows:
                yield KeyInfo(key=row.key, size=row.size)
            if len(rows) < count:
                return
            if remaining is not None:
                remaining -= len(rows)
            # Page on from the last key seen, so keys written meanwhile are neither skipped nor repeated.
            start, inclusive = rows[-1].key, False

    def _listing_conditions(self, prefix: str | None) -> list[sqlalchemy.ColumnElement[bool]] | None:
        """The WHERE of a listing of keys starting with `prefix`; None when no key can start with it."""
        records = self._tables.records
        conditions: list[sqlalchemy.ColumnElement[bool]] = [records.c.store_id == self._id]
        if not prefix:
            return conditions
        safe_prefix, changed = listing_bound(prefix)
        if changed or safe_prefix != prefix:
            return None  # no key holds a NUL character or a lone surrogate
        head = key_head(prefix)
        # The bounds on key_head let the index find the range; those on key make it exact.
        conditions += [records.c.key_head >= head, records.c.key >= prefix]
        if (head_end := successor(head)) is not None:
            conditions.append(records.c.key_head < head_end)
        if (end := successor(prefix)) is not None:
            conditions.append(records.c.key < end)
        return conditions

    @override
    async def drop(self) -> None:
        with self._backend.mapped("drop", store=self._label()):
            async with self._db.transaction() as transaction:
                # The store's row first: writers lock it first too, so a drop and a write never deadlock.
                await transaction.fetch(self._driver.delete_store, {"p_store_id": self._id})
                await transaction.fetch(self._driver.delete_all, {"p_store_id": self._id})

    @override
    async def purge(self) -> None:
        with self._backend.mapped("purge", store=self._label()):
            async with self._db.transaction() as transaction:
                await self._bump(transaction)
                await transaction.fetch(self._driver.delete_all, {"p_store_id": self._id})
