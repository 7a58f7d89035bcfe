"""`recoverable stores`, `keys`, `get`, `set` and `delete`: the stores and their records, through the storage client."""

from __future__ import annotations

import base64
import json
import re
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click
from rich import box
from rich.highlighter import JSONHighlighter
from rich.table import Table
from rich.text import Text

from recoverable.cli._confirm import check_states, states_among
from recoverable.cli._options import force_option, json_option, storage_options, yes_option
from recoverable.cli._output import CommandError, counted, print_json, printable, stdout_console
from recoverable.cli._stores import open_store, with_storage
from recoverable.errors import DeserializationError
from recoverable.storages._serialization import BINARY, JSON, TEXT, decode_value, is_json, normalize_content_type

if TYPE_CHECKING:
    from recoverable.storages import KeyInfo, KeyValueStoreMetadata, StorageClient, StoredRecord

__all__ = ["content_type_of", "delete", "get", "keys", "set_", "stores"]

_NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
"""Control characters that text does not hold (tabs, line ends and form feeds it does)."""


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@click.command()
@storage_options()
@json_option
@click.pass_context
def stores(ctx: click.Context, *, as_json: bool) -> None:
    """List the stores: id, name (none for the default store and alias stores), created, last modified."""

    async def work(client: StorageClient) -> list[KeyValueStoreMetadata]:
        try:
            return await client.list_key_value_stores()
        except NotImplementedError:
            raise CommandError(f"{type(client).__name__} cannot list its stores") from None

    found = with_storage(ctx, work)
    if as_json:
        print_json([m.model_dump(mode="json", include={"id", "name", "created_at", "modified_at"}) for m in found])
        return
    table = Table("id", "name", "created", "modified", box=box.SIMPLE_HEAD, caption=counted(len(found), "store"))
    for metadata in found:
        name = Text(printable(metadata.name)) if metadata.name else Text("(no name)", style="dim")
        table.add_row(Text(printable(metadata.id)), name, _when(metadata.created_at), _when(metadata.modified_at))
    stdout_console().print(table)


@click.command()
@click.argument("store")
@click.option("--prefix", help="only the keys starting with this text")
@storage_options()
@json_option
@click.pass_context
def keys(ctx: click.Context, store: str, prefix: str | None, *, as_json: bool) -> None:
    """List the keys of STORE with the size of each record, in key order.

    STORE is `default`, a store name or a store id.
    """

    async def work(client: StorageClient) -> list[KeyInfo]:
        opened = await open_store(client, store)
        return [info async for info in opened.iterate_keys(prefix=prefix)]

    found = with_storage(ctx, work)
    if as_json:
        print_json([{"key": info.key, "size": info.size} for info in found])
        return
    table = Table("key", "size", box=box.SIMPLE_HEAD, caption=counted(len(found), "key"))
    table.columns[1].justify = "right"
    for info in found:
        table.add_row(Text(printable(info.key)), f"{info.size:,}")
    stdout_console().print(table)


def _decoded(record: StoredRecord) -> tuple[str, object]:
    """The value of a record as `get --json` gives it, and how: "json", "text" or (anything else) "base64"."""
    try:
        value = decode_value(record.value, record.content_type, key=record.key)
    except DeserializationError:
        value = record.value
    if isinstance(value, bytes):
        return "base64", base64.b64encode(value).decode("ascii")
    if isinstance(value, str) and not is_json(record.content_type):
        return "text", value
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        # JSON that strict readers refuse (NaN, Infinity, a lone surrogate): given as its text instead.
        return "text", record.value.decode("utf-8", "backslashreplace")
    return "json", value


@click.command()
@click.argument("store")
@click.argument("key")
@storage_options()
@json_option
@click.pass_context
def get(ctx: click.Context, store: str, key: str, *, as_json: bool) -> None:
    """Print the record KEY of STORE.

    On a terminal, JSON is indented and coloured and text printed; a binary record is refused (redirect or
    pipe it). Piped or redirected, the bytes are written exactly as stored. With --json, an object with the
    key, content_type, size, version, encoding ("json", "text" or "base64") and value.
    """

    async def work(client: StorageClient) -> StoredRecord:
        record = await (await open_store(client, store)).get_record(key=key)
        if record is None:
            raise CommandError(f"store {store!r} has no record {key!r}; `recoverable keys {store}` lists its keys")
        return record

    record = with_storage(ctx, work)
    if as_json:
        encoding, value = _decoded(record)
        print_json(
            {
                "key": record.key,
                "content_type": record.content_type,
                "size": record.size,
                "version": record.version,
                "encoding": encoding,
                "value": value,
            }
        )
        return
    if not sys.stdout.isatty():
        sys.stdout.buffer.write(record.value)
        sys.stdout.buffer.flush()
        return
    try:
        value = decode_value(record.value, record.content_type, key=key, store=store)
    except DeserializationError as exc:
        raise CommandError(f"{exc}; pipe or redirect it to get its bytes as stored, or pass --json") from None
    console = stdout_console()
    if isinstance(value, str) and not is_json(record.content_type):
        console.print(Text(printable(value, newlines=True)))
    elif not isinstance(value, bytes):
        # json.dumps escapes the controls below U+0020 only: DEL and the C1 controls (U+0080 to U+009F, some of
        # which terminals act on) are escaped too, as JSON escapes.
        text = _C1.sub(lambda match: f"\\u{ord(match.group()):04x}", json.dumps(value, indent=2, ensure_ascii=False))
        console.print(JSONHighlighter()(Text(text, no_wrap=True)))
    else:
        raise CommandError(
            f"record {key!r} of store {store!r} is binary ({record.content_type}, {record.size:,} bytes) and is not "
            f"printed on a terminal: redirect it to a file (`recoverable get {store} KEY > FILE`), pipe it, or "
            "pass --json for its base64"
        )


_C1 = re.compile(r"[\x7f-\x9f]")


def content_type_of(data: bytes) -> str:
    """The content type `set` gives bytes when none is given: JSON if they are JSON, text if UTF-8 text, else binary."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return BINARY
    if is_strict_json(text):
        return JSON
    return BINARY if _NOT_TEXT.search(text) else TEXT


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def is_strict_json(text: str | bytes) -> bool:
    """Whether `text` is JSON as every reader takes it: no NaN or Infinity, no lone surrogate escapes."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return False
    return True


def _value_of(value: str | None, file: str | None) -> bytes:
    if (value is None) == (file is None):
        raise click.UsageError("give the value once: as VALUE, or with --file FILE (either may be - for stdin)")
    if file is not None and file != "-":
        with open(file, "rb") as read:
            return read.read()
    if file == "-" or value == "-":
        if sys.stdin is None:
            raise CommandError("the value is - (stdin), and this command has no stdin: give VALUE or --file FILE")
        return sys.stdin.buffer.read()
    assert value is not None  # noqa: S101 - checked above
    return value.encode("utf-8", "surrogateescape")


@click.command("set")
@click.argument("store")
@click.argument("key")
@click.argument("value", required=False)
@click.option(
    "--file",
    "-f",
    "file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="read the value from this file (- for stdin)",
)
@click.option(
    "--content-type",
    help="content type to store the value with [default: application/json when the value is JSON, else "
    "text/plain; charset=utf-8 when it is UTF-8 text, else application/octet-stream]",
)
@storage_options()
@yes_option
@force_option
@click.pass_context
def set_(
    ctx: click.Context,
    /,
    *,
    store: str,
    key: str,
    value: str | None,
    file: str | None,
    content_type: str | None,
    yes: bool,
    force: bool,
) -> None:
    """Store VALUE (or the bytes of --file, or of stdin with -) under KEY in STORE, replacing any record there.

    The bytes are stored exactly as given. STORE is created when no store has that name.
    """
    data = _value_of(value, file)
    if content_type is None:
        content_type = content_type_of(data)
    else:
        try:
            content_type = normalize_content_type(content_type)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--content-type") from None
    if is_json(content_type) and not is_strict_json(data):
        raise CommandError(
            f"the value is not JSON (NaN, Infinity and lone surrogates are not either), so it cannot be stored as "
            f"{content_type}"
        )

    async def work(client: StorageClient) -> str:
        opened = await open_store(client, store, create=True)
        states = await states_among(opened, [key], None)
        await check_states(opened, f"store {store!r}", states, action="overwrite", yes=yes, force=force)
        return await opened.set_record(key=key, value=data, content_type=content_type)

    version = with_storage(ctx, work)
    click.echo(f"stored {key!r} in store {store!r}: {content_type}, {len(data):,} bytes, version {version}")


@click.command()
@click.argument("store")
@click.argument("key")
@storage_options()
@yes_option
@force_option
@click.pass_context
def delete(ctx: click.Context, store: str, key: str, *, yes: bool, force: bool) -> None:
    """Delete the record KEY of STORE."""

    async def work(client: StorageClient) -> bool:
        opened = await open_store(client, store)
        states = await states_among(opened, [key], None)
        await check_states(opened, f"store {store!r}", states, action="delete", yes=yes, force=force)
        return await opened.delete_record(key=key)

    if not with_storage(ctx, work):
        raise CommandError(f"store {store!r} has no record {key!r}: nothing was deleted")
    click.echo(f"deleted {key!r} from store {store!r}")
