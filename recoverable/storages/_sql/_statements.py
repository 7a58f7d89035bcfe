"""The statements of the SQL storage client, built once per client with bound parameters.

Building a SQLAlchemy statement costs more than running a small one, so every statement that does not
depend on the call (all but the key listing) is built here once and run with its parameters. Those of the
record operations (read, check, write, delete a record) are also compiled once to the driver's own SQL and
run by the driver itself, without SQLAlchemy (see `DriverStatement`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from recoverable.storages._sql._dependency import sqlalchemy, sqlalchemy_postgresql, sqlalchemy_sqlite

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from recoverable.storages._sql._schema import Tables

__all__ = ["DriverStatement", "DriverStatements", "SingleStatementWrites", "Statements", "insert_for"]

_RECORD_COLUMNS = ("value", "content_type", "version", "size")


def insert_for(dialect: str, table: sqlalchemy.Table) -> sqlalchemy_postgresql.Insert | sqlalchemy_sqlite.Insert:
    """An INSERT of the dialect, which knows ON CONFLICT."""
    if dialect == "postgresql":
        return sqlalchemy_postgresql.insert(table)
    return sqlalchemy_sqlite.insert(table)


def _p(name: str, type_: sqlalchemy.types.TypeEngine[Any] | None = None) -> sqlalchemy.BindParameter[Any]:
    # Parameter names differ from the column names: SQLAlchemy reserves those in INSERT and UPDATE.
    return sqlalchemy.bindparam(f"p_{name}", type_=type_)


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """A statement compiled once to the SQL text of the driver, which runs it without SQLAlchemy.

    SQLAlchemy caches compiled statements too, but running one through a `Connection` still costs an
    execution context, parameter and result processing and, around it, a pool checkout and return: about
    as long as the database takes to read or write a small record. The arguments are converted as
    SQLAlchemy would convert them (SQLite's timestamps become text), so either path reads what the other
    wrote. Rows come back as the driver gives them, as tuples by position.
    """

    sql: str
    # Per positional argument: the parameter's name and its conversion, or (None, the constant, None).
    _arguments: tuple[tuple[str | None, Any, Callable[[Any], Any] | None], ...]

    @classmethod
    def compile(cls, statement: sqlalchemy.ClauseElement, dialect: sqlalchemy.Dialect) -> DriverStatement:
        """Compile `statement` for `dialect`, whose driver takes positional arguments (asyncpg, aiosqlite)."""
        compiled = statement.compile(dialect=dialect)
        if not isinstance(compiled, sqlalchemy.sql.compiler.SQLCompiler) or compiled.positiontup is None:
            raise TypeError(f"the {dialect.driver} driver does not take positional arguments")
        arguments: list[tuple[str | None, Any, Callable[[Any], Any] | None]] = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required:
                arguments.append((name, None, convert))
            else:  # a constant of the statement, such as the 1 of `version_counter + 1`
                arguments.append((None, bind.value if convert is None else convert(bind.value), None))
        return cls(compiled.string, tuple(arguments))

    def arguments(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The driver's arguments for the named parameters `params` (names the statement lacks are ignored)."""
        return tuple(
            constant if name is None else params[name] if convert is None else convert(params[name])
            for name, constant, convert in self._arguments
        )


@dataclass(frozen=True, slots=True)
class SingleStatementWrites:
    """PostgreSQL's writes in one statement each: one round trip, atomic without BEGIN and COMMIT.

    Each takes the store's next version in a data-modifying WITH (which locks the store's row first, as the
    other writes do) and writes the record from it, returning the new version; no row comes back when the
    condition failed or the store is gone.
    """

    upsert: DriverStatement
    insert_if_absent: DriverStatement
    update_if_version: DriverStatement

    @classmethod
    def build(cls, tables: Tables, dialect: sqlalchemy.Dialect) -> SingleStatementWrites:
        """Build the statements of `tables`, compiled for `dialect` (PostgreSQL)."""
        stores, records = tables.stores, tables.records
        bumped = (
            sqlalchemy.update(stores)
            .where(stores.c.id == _p("store_id", stores.c.id.type))
            .values(version_counter=stores.c.version_counter + 1, modified_at=_p("now", stores.c.modified_at.type))
            .returning(stores.c.id.label("store_id"), stores.c.version_counter.label("counter"))
            .cte("bumped")
        )
        new_version = sqlalchemy.cast(bumped.c.counter, records.c.version.type)
        columns = ["store_id", "key_hash", "key_head", "key", "value", "content_type", "version", "size"]
        row = sqlalchemy.select(
            *(new_version if name == "version" else _p(name, records.c[name].type) for name in columns)
        ).select_from(bumped)
        insert = sqlalchemy_postgresql.insert(records).from_select(columns, row).add_cte(bumped)
        upsert = insert.on_conflict_do_update(
            index_elements=["store_id", "key_hash"], set_={name: insert.excluded[name] for name in _RECORD_COLUMNS}
        ).returning(records.c.version)
        insert_if_absent = insert.on_conflict_do_nothing(index_elements=["store_id", "key_hash"]).returning(
            records.c.version
        )
        update_if_version = (
            sqlalchemy.update(records)
            .where(
                records.c.store_id == bumped.c.store_id,
                records.c.key_hash == _p("key_hash", records.c.key_hash.type),
                records.c.version == _p("if_version", records.c.version.type),
            )
            .values(
                value=_p("value", records.c.value.type),
                content_type=_p("content_type", records.c.content_type.type),
                size=_p("size", records.c.size.type),
                version=new_version,
            )
            .add_cte(bumped)
            .returning(records.c.version)
        )
        return cls(
            upsert=DriverStatement.compile(upsert, dialect),
            insert_if_absent=DriverStatement.compile(insert_if_absent, dialect),
            update_if_version=DriverStatement.compile(update_if_version, dialect),
        )


@dataclass(frozen=True, slots=True)
class DriverStatements:
    """The statements of the writes and of the record reads, compiled for the driver.

    Those whose row count matters return a row instead: `bump` the store's new counter (no row: the store
    is gone), the record writes and deletes the version they wrote or deleted (no row: the condition
    failed, or there was no record to delete).
    """

    get_record: DriverStatement
    record_version: DriverStatement
    current_version: DriverStatement
    bump: DriverStatement
    upsert: DriverStatement
    insert_if_absent: DriverStatement
    update_if_version: DriverStatement
    copy: DriverStatement
    copy_if_version: DriverStatement
    delete: DriverStatement
    delete_if_version: DriverStatement
    delete_all: DriverStatement
    delete_store: DriverStatement
    single: SingleStatementWrites | None


@dataclass(frozen=True, slots=True)
class Statements:
    """Every fixed statement of one set of tables on one dialect.

    Parameters: `p_store_id`, `p_key_hash`, `p_key_head`, `p_key`, `p_value`, `p_content_type`,
    `p_version`, `p_size`, `p_if_version`, `p_now`.
    """

    metadata: sqlalchemy.Select[Any]
    store_exists: sqlalchemy.Select[Any]
    driver: DriverStatements

    @classmethod
    def build(cls, tables: Tables, dialect: sqlalchemy.Dialect) -> Statements:
        """Build the statements of `tables` for `dialect`."""
        stores, records = tables.stores, tables.records
        this_store = stores.c.id == _p("store_id")
        this_record = sqlalchemy.and_(records.c.store_id == _p("store_id"), records.c.key_hash == _p("key_hash"))
        joined = stores.outerjoin(
            records, sqlalchemy.and_(records.c.store_id == stores.c.id, records.c.key_hash == _p("key_hash"))
        )
        record_values = {name: _p(name) for name in _RECORD_COLUMNS}
        insert = insert_for(dialect.name, records).values(
            store_id=_p("store_id"), key_hash=_p("key_hash"), key_head=_p("key_head"), key=_p("key"), **record_values
        )

        def driver(statement: sqlalchemy.ClauseElement) -> DriverStatement:
            return DriverStatement.compile(statement, dialect)

        copy, copy_if_version = _copies(tables, dialect.name)

        return cls(
            metadata=sqlalchemy.select(stores.c.modified_at, stores.c.accessed_at).where(this_store),
            store_exists=sqlalchemy.select(stores.c.id).where(this_store),
            driver=DriverStatements(
                # One query tells both whether the store exists and what the record is.
                get_record=driver(
                    sqlalchemy.select(stores.c.id, records.c.value, records.c.content_type, records.c.version)
                    .select_from(joined)
                    .where(this_store)
                ),
                record_version=driver(
                    sqlalchemy.select(stores.c.id, records.c.version).select_from(joined).where(this_store)
                ),
                current_version=driver(sqlalchemy.select(records.c.version).where(this_record)),
                # Takes the store's next version and marks it modified; on PostgreSQL it also locks the store's
                # row until commit, which orders the writes of a store.
                bump=driver(
                    sqlalchemy.update(stores)
                    .where(this_store)
                    .values(version_counter=stores.c.version_counter + 1, modified_at=_p("now"))
                    .returning(stores.c.version_counter)
                ),
                upsert=driver(
                    insert.on_conflict_do_update(
                        index_elements=["store_id", "key_hash"],
                        set_={name: insert.excluded[name] for name in _RECORD_COLUMNS},
                    ).returning(records.c.version)
                ),
                insert_if_absent=driver(
                    insert.on_conflict_do_nothing(index_elements=["store_id", "key_hash"]).returning(records.c.version)
                ),
                update_if_version=driver(
                    sqlalchemy.update(records)
                    .where(this_record, records.c.version == _p("if_version"))
                    .values(**record_values)
                    .returning(records.c.version)
                ),
                copy=driver(copy),
                copy_if_version=driver(copy_if_version),
                delete=driver(sqlalchemy.delete(records).where(this_record).returning(records.c.version)),
                delete_if_version=driver(
                    sqlalchemy.delete(records)
                    .where(this_record, records.c.version == _p("if_version"))
                    .returning(records.c.version)
                ),
                delete_all=driver(sqlalchemy.delete(records).where(records.c.store_id == _p("store_id"))),
                delete_store=driver(sqlalchemy.delete(stores).where(this_store)),
                single=SingleStatementWrites.build(tables, dialect) if dialect.name == "postgresql" else None,
            ),
        )


def _copies(tables: Tables, dialect: str) -> tuple[sqlalchemy.ClauseElement, sqlalchemy.ClauseElement]:
    """The copy of a record to another key inside the database, unconditional and with a version check.

    One INSERT ... SELECT ... ON CONFLICT DO UPDATE: the value goes from row to row without leaving the
    database. It writes the version `p_version` (taken from the store's counter before, in the same
    transaction) and returns it; no row comes back when there is no record to copy, or the check failed.
    Parameters: the source's `p_store_id`, `p_key_hash` (and `p_if_version`), the destination's
    `p_to_key_hash`, `p_to_key_head`, `p_to_key`.
    """
    records = tables.records
    source = records.alias("source")
    columns = ["store_id", "key_hash", "key_head", "key", "value", "content_type", "version", "size"]
    given = {"key_hash": "to_key_hash", "key_head": "to_key_head", "key": "to_key", "version": "version"}
    row = sqlalchemy.select(
        *(_p(given[name], records.c[name].type) if name in given else source.c[name] for name in columns)
    ).where(
        source.c.store_id == _p("store_id", records.c.store_id.type),
        source.c.key_hash == _p("key_hash", records.c.key_hash.type),
    )
    statements = []
    for selected in (row, row.where(source.c.version == _p("if_version", records.c.version.type))):
        insert = insert_for(dialect, records).from_select(columns, selected)
        statements.append(
            insert.on_conflict_do_update(
                index_elements=["store_id", "key_hash"],
                set_={name: insert.excluded[name] for name in _RECORD_COLUMNS},
            ).returning(records.c.version)
        )
    return statements[0], statements[1]
