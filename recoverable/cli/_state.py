"""`recoverable reset` and `recoverable lease`: a state's record, and who owns the state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click
from rich.table import Table
from rich.text import Text

from recoverable.cli._confirm import LeaseView, check_states, read_lease
from recoverable.cli._options import force_option, json_option, storage_options, yes_option
from recoverable.cli._output import CommandError, print_json, printable, stdout_console
from recoverable.cli._stores import open_store, with_storage

if TYPE_CHECKING:
    from recoverable.storages import StorageClient

__all__ = ["lease", "reset"]

_STYLES = {"live": "bold green", "expired": "yellow", "owner gone": "red", "free": "dim", "damaged": "bold red"}
_MEANINGS = {
    "live": "its owner holds it: nobody else may load or save the state",
    "expired": "its owner stopped renewing it: the next program to open the state takes it over",
    "owner gone": "its owner was a process of this host that has ended: the next program takes it over at once",
    "free": "no lease record: nobody owns the state",
    "damaged": "the lease record cannot be read: the next program treats it as expired",
}


@click.command()
@click.argument("store")
@click.argument("key")
@storage_options()
@yes_option
@force_option
@click.pass_context
def reset(ctx: click.Context, store: str, key: str, *, yes: bool, force: bool) -> None:
    """Delete the state record KEY of STORE, so that the state starts from its default next time.

    The delete is conditional on the version just read: a save landing in between makes it fail, and nothing
    is deleted. The records beside the state (its lease, its history, the parts of a keyed state) are kept.
    """

    async def work(client: StorageClient) -> str:
        opened = await open_store(client, store)
        record = await opened.get_record(key=key)
        if record is None:
            raise CommandError(f"store {store!r} has no record {key!r}: nothing to reset")
        await check_states(opened, f"store {store!r}", [key], action="delete", yes=yes, force=force)
        await opened.delete_record(key=key, if_version=record.version)
        return record.version

    version = with_storage(ctx, work)
    click.echo(
        f"deleted the state record {key!r} of store {store!r} (version {version}); the records beside it are kept"
    )


def _lease_json(store: str, view: LeaseView) -> dict[str, object]:
    data: dict[str, object] = {"store": store, "key": view.key, "lease_key": view.lease_key, "status": view.status}
    if view.record is not None:
        data.update(view.record.model_dump(mode="json"))
    if view.problem is not None:
        data["problem"] = view.problem
    return data


def _until(moment: datetime) -> str:
    seconds = round((moment - datetime.now(UTC)).total_seconds())
    return f"in {seconds} s" if seconds >= 0 else f"{-seconds} s ago"


def _when(moment: datetime | None) -> str:
    return "unknown" if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")


@click.command()
@click.argument("store")
@click.argument("key")
@storage_options()
@json_option
@click.pass_context
def lease(ctx: click.Context, store: str, key: str, *, as_json: bool) -> None:
    """Tell who owns the state saved under KEY in STORE, from its lease record KEY.lease.

    The status is "live" (its owner holds it), "expired", "owner gone" (not expired, but its owner was a
    process of this host that has ended), "free" (no lease record) or "damaged".
    """

    async def work(client: StorageClient) -> LeaseView:
        return await read_lease(await open_store(client, store), key)

    view = with_storage(ctx, work)
    if as_json:
        print_json(_lease_json(store, view))
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("key", Text(printable(key)))
    table.add_row("store", store)
    table.add_row("status", Text(view.status, style=_STYLES[view.status]))
    table.add_row("", Text(_MEANINGS[view.status], style="dim"))
    record = view.record
    if record is not None:
        table.add_row("owner", Text(printable(record.owner)))
        table.add_row("process", Text(f"{record.pid} on host {printable(record.host)!r}"))
        table.add_row("process started", _when(record.process_started_at))
        table.add_row("fencing token", str(record.token))
        table.add_row("acquired", f"{_when(record.acquired_at)} ({_until(record.acquired_at)})")
        table.add_row("expires", f"{_when(record.expires_at)} ({_until(record.expires_at)})")
    if view.problem is not None:
        table.add_row("problem", Text(printable(view.problem)))
    stdout_console().print(table)
