"""`recoverable export`, `import` and `copy`: every record of a store to another store, a folder, or back.

Records are copied through the storage clients, one by one: the same keys, bytes and content types (their
versions are new). The folder of an export or an import is one store folder of the file-system layout
(docs/file-system-layout.md), opened by a `FileSystemStorageClient` whose `key_value_stores/` is the folder's
parent, so the folder's name is the store's name (`default` for the default store). An export makes the
store in Crawlee's layout, so that Crawlee for Python opens it too.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from recoverable.cli._confirm import check_states, states_among
from recoverable.cli._options import (
    destination_options,
    force_option,
    open_storage,
    storage_configuration,
    storage_options,
    yes_option,
)
from recoverable.cli._output import CommandError, counted, stderr_console
from recoverable.cli._stores import open_store, with_storage
from recoverable.errors import InvalidStoreNameError, VersionConflictError
from recoverable.storages import FileSystemStorageClient
from recoverable.storages._validation import DEFAULT_ALIAS, validate_store_name

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from recoverable.configuration import Configuration
    from recoverable.storages import KeyValueStoreClient, StorageClient

__all__ = ["copy", "export", "import_"]

_LISTED = 10
"""How many clashing keys an error names before it says how many more there are."""
_STORES_FOLDER = "key_value_stores"

overwrite_option = click.option(
    "--overwrite", is_flag=True, help="replace the records of the destination that have the same keys"
)


def _store_folder(text: str) -> Path:
    """The folder of DIR, checked: its name must be a store's name (or `default`)."""
    folder = Path(os.path.abspath(text))
    if folder.name != DEFAULT_ALIAS:
        try:
            validate_store_name(folder.name, what="the name of the folder")
        except InvalidStoreNameError as exc:
            raise CommandError(
                f"{exc}: the folder of a store is named after the store (`default` for the default store), for "
                "example backup/key_value_stores/my-crawl"
            ) from None
    return folder


@contextlib.asynccontextmanager
async def _folder_store(folder: Path, *, export: bool) -> AsyncIterator[KeyValueStoreClient]:
    """The store kept in `folder`, opened by a file system storage client (making it in Crawlee's layout to export)."""
    reference = {} if folder.name == DEFAULT_ALIAS else {"name": folder.name}
    with contextlib.ExitStack() as stack:
        if folder.parent.name == _STORES_FOLDER:
            root = folder.parent.parent
        else:
            # The client's root is a folder of ours whose key_value_stores/ is a link to the folder's parent.
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="recoverable-")))
            os.symlink(folder.parent, root / _STORES_FOLDER, target_is_directory=True)
        async with FileSystemStorageClient(storage_dir=root, crawlee_layout=export) as client:
            yield await client.open_key_value_store_client(**reference)


def _progress() -> Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal."""
    console = stderr_console()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )


async def _keys(store: KeyValueStoreClient) -> list[str]:
    return [info.key async for info in store.iterate_keys()]


async def _transfer(
    source: KeyValueStoreClient,
    target: KeyValueStoreClient,
    *,
    where: str,
    overwrite: bool,
    yes: bool,
    force: bool,
) -> tuple[int, int]:
    """Copy every record of `source` to `target`; return how many were copied, and how many vanished meanwhile.

    Nothing is written when `target` has a record of the same key and `overwrite` is false, nor when a state
    among those records must not be changed (`check_states`).

    Raises:
        CommandError: Keys clash, a state must not be changed, or a record appeared in `target` meanwhile.
    """
    keys = await _keys(source)
    present = set(await _keys(target))
    clashes = [key for key in keys if key in present]
    if clashes and not overwrite:
        shown = ", ".join(repr(key) for key in clashes[:_LISTED])
        more = f" and {len(clashes) - _LISTED} more" if len(clashes) > _LISTED else ""
        raise CommandError(
            f"{where} already has {len(clashes)} of the keys: {shown}{more}; nothing was written (pass --overwrite "
            "to replace them)"
        )
    states = await states_among(target, clashes, present)
    await check_states(target, where, states, action="overwrite", yes=yes, force=force)
    copied = vanished = 0
    with _progress() as progress:
        task = progress.add_task("copying records", total=len(keys))
        for key in keys:
            stored = await source.get_record(key=key)
            if stored is None:
                vanished += 1  # deleted since it was listed
            else:
                try:
                    await target.set_record(
                        key=key, value=stored.value, content_type=stored.content_type, if_absent=not overwrite
                    )
                except VersionConflictError:
                    raise CommandError(
                        f"record {key!r} was written to {where} by someone else meanwhile; the "
                        f"{counted(copied, 'record')} copied before it are kept"
                    ) from None
                copied += 1
            progress.advance(task)
    return copied, vanished


def _summary(copied: int, vanished: int) -> str:
    gone = f" ({counted(vanished, 'record')} deleted from the source meanwhile, not copied)" if vanished else ""
    return counted(copied, "record") + gone


@click.command()
@click.argument("store")
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False))
@storage_options()
@click.pass_context
def export(ctx: click.Context, store: str, folder: str) -> None:
    """Copy every record of STORE into DIR, a new folder in the file-system layout of one store.

    DIR is named after the store it becomes (`default`, or a store name): export to
    backup/key_value_stores/my-crawl, and FileSystemStorageClient(storage_dir="backup") (or Crawlee with that
    storage folder) opens it as the store my-crawl. It is made in Crawlee's layout, so Crawlee reads it too.
    """
    target_folder = _store_folder(folder)
    if target_folder.exists() and (not target_folder.is_dir() or any(target_folder.iterdir())):
        raise CommandError(f"{target_folder} exists and is not an empty folder: export into a new folder")

    async def work(client: StorageClient) -> tuple[int, int]:
        source = await open_store(client, store)
        target_folder.parent.mkdir(parents=True, exist_ok=True)
        async with _folder_store(target_folder, export=True) as target:
            return await _transfer(
                source, target, where=f"the folder {target_folder}", overwrite=False, yes=True, force=False
            )

    copied, vanished = with_storage(ctx, work)
    click.echo(f"exported {_summary(copied, vanished)} of store {store!r} to {target_folder}")


@click.command("import")
@click.argument("folder", metavar="DIR", type=click.Path(exists=True, file_okay=False))
@click.argument("store")
@overwrite_option
@storage_options()
@yes_option
@force_option
@click.pass_context
def import_(ctx: click.Context, folder: str, store: str, *, overwrite: bool, yes: bool, force: bool) -> None:
    """Copy every record of DIR, the folder of one store (an export, or a store of Crawlee), into STORE.

    STORE is created when no store has that name. Records of the same keys in STORE are never replaced without
    --overwrite: the keys are checked first, and nothing is written when one clashes.
    """
    source_folder = _store_folder(folder)

    async def work(client: StorageClient) -> tuple[int, int]:
        async with _folder_store(source_folder, export=False) as source:
            target = await open_store(client, store, create=True)
            return await _transfer(source, target, where=f"store {store!r}", overwrite=overwrite, yes=yes, force=force)

    copied, vanished = with_storage(ctx, work)
    click.echo(f"imported {_summary(copied, vanished)} of {source_folder} into store {store!r}")


@click.command()
@click.argument("store")
@click.argument("destination", metavar="DST_STORE")
@overwrite_option
@storage_options()
@destination_options
@yes_option
@force_option
@click.pass_context
def copy(ctx: click.Context, store: str, destination: str, *, overwrite: bool, yes: bool, force: bool) -> None:
    """Copy every record of STORE into DST_STORE, on the same storage or (with --to-...) on another.

    The destination's settings are the source's with the --to-... options on top: `--to-storage-client sql
    --to-sql-url URL` copies a folder's store into a database. DST_STORE is created when no store has that name;
    records of the same keys are never replaced without --overwrite (and nothing is written then).
    """
    source_settings = storage_configuration(ctx)
    target_settings = storage_configuration(ctx, destination=True)

    async def work(client: StorageClient) -> tuple[int, int]:
        source = await open_store(client, store)
        async with open_storage(target_settings) as target_client:
            target = await open_store(target_client, destination, create=True)
            if _same_storage(source_settings, target_settings) and (
                (await target.get_metadata()).id == (await source.get_metadata()).id
            ):
                raise CommandError(f"{store!r} and {destination!r} are the same store: nothing to copy")
            return await _transfer(
                source, target, where=f"store {destination!r}", overwrite=overwrite, yes=yes, force=force
            )

    copied, vanished = with_storage(ctx, work, configuration=source_settings)
    click.echo(f"copied {_summary(copied, vanished)} of store {store!r} into store {destination!r}")


def _same_storage(one: Configuration, other: Configuration) -> bool:
    """Whether two settings reach the same storage: the same ones, or one folder spelt two ways."""
    if one == other:
        return True
    if one.storage_client != other.storage_client or one.storage_client != "file_system":
        return False
    return Path(one.storage_dir).resolve() == Path(other.storage_dir).resolve()
