"""`recoverable history`, `diff` and `rollback`: the saved versions a state keeps beside it (docs/history.md)."""

from __future__ import annotations

import difflib
import json
import sys
from datetime import UTC
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.table import Table
from rich.text import Text

from recoverable._history import read_version, rollback_record, saved_versions
from recoverable._keyed_manifest import FORMAT as KEYED_FORMAT
from recoverable.cli._confirm import check_states
from recoverable.cli._options import force_option, json_option, storage_options, yes_option
from recoverable.cli._output import CommandError, counted, print_json, printable, stdout_console
from recoverable.cli._stores import open_store, with_storage
from recoverable.errors import DeserializationError
from recoverable.storages._serialization import decode_value, is_json

if TYPE_CHECKING:
    from collections.abc import Iterator

    from recoverable._history import SavedVersion
    from recoverable.storages import KeyValueStoreClient, StorageClient, StoredRecord

__all__ = ["diff", "history", "rollback"]

_TIME = "%Y-%m-%d %H:%M:%S"


def _version_json(version: SavedVersion) -> dict[str, object]:
    return {
        "version": version.version,
        "current": version.current,
        "saved_at": None if version.saved_at is None else version.saved_at.isoformat(),
        "trigger": version.trigger,
        "size": version.size,
        "checksum": version.checksum,
        "key": version.key,
    }


def _label(version: SavedVersion) -> str:
    return f"version {version.version}{' (current)' if version.current else ''}"


async def _versions(store: KeyValueStoreClient, name: str, key: str) -> list[SavedVersion]:
    versions = await saved_versions(store, key)
    if not versions:
        raise CommandError(f"store {name!r} has no record {key!r} and no saved version of it")
    return versions


@click.command()
@click.argument("store")
@click.argument("key")
@storage_options()
@json_option
@click.pass_context
def history(ctx: click.Context, store: str, key: str, *, as_json: bool) -> None:
    """List the saved versions of the state KEY of STORE, newest first: the current record, then the copies kept.

    Version 0 is a current record the history has no copy of (written without a history, or by hand).
    """

    async def work(client: StorageClient) -> list[SavedVersion]:
        return await _versions(await open_store(client, store), store, key)

    versions = with_storage(ctx, work)
    if as_json:
        print_json([_version_json(version) for version in versions])
        return
    table = Table(
        "version", "saved at (UTC)", "trigger", "size", "checksum", "", box=box.SIMPLE_HEAD,
        caption=counted(len(versions), "version"),
    )  # fmt: skip
    table.columns[3].justify = "right"
    for version in versions:
        saved = (
            "unknown" if version.saved_at is None else version.saved_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        )
        table.add_row(
            str(version.version),
            saved,
            version.trigger or "unknown",
            f"{version.size:,}",
            version.checksum,
            Text("current", style="bold green") if version.current else "",
        )
    stdout_console().print(table)


def _lines(record: StoredRecord) -> tuple[list[str], Any] | None:
    """The lines a diff compares (JSON indented, text as it is) and the decoded value; None for binary."""
    try:
        value = decode_value(record.value, record.content_type, key=record.key)
    except DeserializationError:
        return None
    if isinstance(value, bytes):
        return None
    if isinstance(value, str) and not is_json(record.content_type):
        return value.splitlines(), None
    return json.dumps(value, indent=2, ensure_ascii=False).splitlines(), value


def _pointer(path: str, step: object) -> str:
    """`path` one step further, as a JSON Pointer (RFC 6901)."""
    return f"{path}/{str(step).replace('~', '~0').replace('/', '~1')}"


def _changes(old: Any, new: Any, path: str = "") -> Iterator[dict[str, Any]]:
    """What changed from `old` to `new` (decoded JSON), by JSON Pointer: added, removed or changed."""
    if isinstance(old, dict) and isinstance(new, dict):
        steps: list[Any] = [*old, *(name for name in new if name not in old)]
    elif isinstance(old, list) and isinstance(new, list):
        steps = list(range(max(len(old), len(new))))
    else:
        if old != new or type(old) is not type(new):
            yield {"path": path, "change": "changed", "from": old, "to": new}
        return
    for step in steps:
        has_old = step in old if isinstance(old, dict) else step < len(old)
        has_new = step in new if isinstance(new, dict) else step < len(new)
        where = _pointer(path, step)
        if not has_new:
            yield {"path": where, "change": "removed", "from": old[step]}
        elif not has_old:
            yield {"path": where, "change": "added", "to": new[step]}
        else:
            yield from _changes(old[step], new[step], where)


def _pick(versions: list[SavedVersion], number: int | None, default: SavedVersion | None) -> SavedVersion:
    if number is None:
        if default is None:
            raise CommandError("the state has only one saved version: there is nothing to compare it with")
        return default
    for version in versions:
        if version.version == number:
            return version
    kept = ", ".join(str(version.version) for version in versions)
    raise CommandError(f"there is no saved version {number}: the versions kept are {kept}")


@click.command()
@click.argument("store")
@click.argument("key")
@click.argument("old", metavar="[V1]", type=click.IntRange(min=0), required=False)
@click.argument("new", metavar="[V2]", type=click.IntRange(min=0), required=False)
@storage_options()
@json_option
@click.pass_context
def diff(ctx: click.Context, store: str, key: str, old: int | None, new: int | None, *, as_json: bool) -> None:
    """Show what changed in the state KEY of STORE from saved version V1 to V2, as a unified diff.

    V2 defaults to the current version, V1 to the version before V2. JSON is compared indented; binary
    versions are only said to differ or not. With --json: both versions, whether they are identical, the
    lines of the diff, and for JSON the changes by JSON Pointer. The exit status is 0 either way.
    """

    async def work(client: StorageClient) -> tuple[SavedVersion, StoredRecord, SavedVersion, StoredRecord]:
        opened = await open_store(client, store)
        versions = await _versions(opened, store, key)
        to = _pick(versions, new, versions[0])
        after = versions.index(to) + 1
        since = _pick(versions, old, versions[after] if after < len(versions) else None)
        _, since_record = await read_version(opened, key, since.version)
        _, to_record = await read_version(opened, key, to.version)
        return since, since_record, to, to_record

    since, since_record, to, to_record = with_storage(ctx, work)
    before, after = _lines(since_record), _lines(to_record)
    identical = since_record.value == to_record.value
    if before is None or after is None:
        lines = [] if identical else [f"binary versions differ ({since.size:,} and {to.size:,} bytes)"]
        changes = None
    else:
        lines = list(difflib.unified_diff(before[0], after[0], _label(since), _label(to), lineterm=""))
        both_json = is_json(since_record.content_type) and is_json(to_record.content_type)
        changes = list(_changes(before[1], after[1])) if both_json else None
    if as_json:
        print_json(
            {
                "key": key,
                "from": _version_json(since),
                "to": _version_json(to),
                "identical": identical,
                "diff": lines,
                "changes": changes,
            }
        )
        return
    if identical:
        click.echo(f"{_label(since)} and {_label(to)} of state {key!r} are identical")
        return
    if not sys.stdout.isatty():
        click.echo("\n".join(lines))
        return
    styles = {"+": "green", "-": "red", "@": "cyan"}
    console = stdout_console()
    for line in lines:
        console.print(Text(printable(line), style=styles.get(line[:1], "")))


def _is_keyed(record: StoredRecord | None) -> bool:
    """Whether `record` is the manifest of a keyed state (`KeyedRecoverableState`, `RecoverableSet`)."""
    if record is None or not is_json(record.content_type):
        return False
    try:
        value = json.loads(record.value)
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("format") == KEYED_FORMAT


@click.command()
@click.argument("store")
@click.argument("key")
@click.argument("version", type=click.IntRange(min=0))
@storage_options()
@yes_option
@force_option
@click.pass_context
def rollback(ctx: click.Context, store: str, key: str, version: int, *, yes: bool, force: bool) -> None:
    """Make saved version VERSION of the state KEY of STORE its record again, written as a new save.

    The bytes of that version (checked against its checksum) are written over the record as it was just read
    (a save landing in between makes it fail, and nothing is written), and kept in the history with the
    trigger `rollback`, so a rollback can be rolled back. Roll back a state no program holds: a live owner
    would overwrite it at its next save, or stop saving.
    """

    async def work(client: StorageClient) -> SavedVersion:
        opened = await open_store(client, store)
        _, stored = await read_version(opened, key, version)
        if _is_keyed(stored) or _is_keyed(await opened.get_record(key=key)):
            raise CommandError(
                f"{key!r} of store {store!r} is the manifest of a KeyedRecoverableState or RecoverableSet, whose "
                "rollback copies the records it names under new names: roll it back with the state's rollback() "
                "in a program"
            )
        await check_states(opened, f"store {store!r}", [key], action="roll back", yes=yes, force=force)
        return await rollback_record(opened, key, version)

    written = with_storage(ctx, work)
    click.echo(
        f"rolled back state {key!r} of store {store!r} to version {version}: written as save {written.version} "
        "(trigger rollback)"
    )
