"""Before a command changes a state: refuse while its owner lives (unless --force), and ask (unless --yes).

A state record is a record with a lease record `<key>.lease` beside it (`RecoverableState` keeps one there
while it owns the state), and a lease record counts as part of its state. `reset` and `rollback` treat any
key as a state record. Whether the lease's owner still lives is judged as a `RecoverableState` taking the
state over judges it (`lease_status`): a lease that expired, or whose owner was a process of this host that
is gone, no longer keeps anyone out.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import click

from recoverable._lease_record import LeaseRecord, decode_lease
from recoverable._ownership import LEASE_SUFFIX
from recoverable._processes import LeaseStatus, lease_status
from recoverable.cli._output import CommandError, counted
from recoverable.storages._validation import MAX_KEY_LENGTH, validate_key

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from recoverable.storages import KeyValueStoreClient

__all__ = ["LeaseView", "check_states", "lease_key", "read_lease", "states_among"]

_LISTED = 5
"""How many states a message names before it says how many more there are."""


@dataclass(frozen=True)
class LeaseView:
    """What the lease record of one state says.

    Attributes:
        key: The key of the state record.
        lease_key: The key of its lease record, or None when the state's key is too long to have one.
        status: "free" without a lease record, "damaged" when it cannot be read, else its `lease_status`.
        record: The lease record, when there is one that can be read.
        problem: What is wrong with a damaged lease record.
    """

    key: str
    lease_key: str | None
    status: LeaseStatus | Literal["free", "damaged"]
    record: LeaseRecord | None = None
    problem: str | None = None


def lease_key(key: str) -> str | None:
    """The key of the lease record of the state saved under `key`; None when it would be too long to exist."""
    return key + LEASE_SUFFIX if len(key) + len(LEASE_SUFFIX) <= MAX_KEY_LENGTH else None


async def read_lease(store: KeyValueStoreClient, key: str) -> LeaseView:
    """Read the lease record of the state saved under `key`, and judge it.

    Raises:
        StorageError: The store could not be read.
    """
    validate_key(key, store=None)
    beside = lease_key(key)
    stored = None if beside is None else await store.get_record(key=beside)
    if stored is None:
        return LeaseView(key=key, lease_key=beside, status="free")
    decoded = decode_lease(stored.value)
    if isinstance(decoded, str):
        return LeaseView(key=key, lease_key=beside, status="damaged", problem=decoded)
    return LeaseView(key=key, lease_key=beside, status=lease_status(decoded), record=decoded)


async def states_among(store: KeyValueStoreClient, keys: Iterable[str], present: Collection[str] | None) -> list[str]:
    """The states whose records are among `keys`: keys with a lease record beside them, and lease records' states.

    Args:
        store: The store holding the keys.
        keys: The keys about to be changed.
        present: Every key of the store, when the caller listed them already; else each lease is looked up.
    """
    states: dict[str, None] = {}
    for key in keys:
        validate_key(key)  # named as given, before any key made from it (its lease's) is
        if key.endswith(LEASE_SUFFIX):
            states[key.removesuffix(LEASE_SUFFIX)] = None
            continue
        beside = lease_key(key)
        if beside is None:
            continue
        if beside in present if present is not None else await store.record_exists(key=beside):
            states[key] = None
    return list(states)


def _named(keys: list[str]) -> str:
    shown = ", ".join(repr(key) for key in keys[:_LISTED])
    return shown + (f" and {len(keys) - _LISTED} more" if len(keys) > _LISTED else "")


async def check_states(
    store: KeyValueStoreClient, where: str, states: list[str], *, action: str, yes: bool, force: bool
) -> None:
    """Refuse to change states whose owner lives (unless `force`), then ask to go on (unless `yes` or no states).

    Args:
        store: The store holding the states.
        where: How messages name the store.
        states: The keys of the state records about to change.
        action: What the command does, for the question: "delete", "overwrite", ...
        yes: Go on without asking.
        force: Go on even while a live owner holds a lease.

    Raises:
        CommandError: A live owner holds the lease of a state and `force` is false; or no one said yes (stdin
            is not a terminal, or the answer was no).
    """
    if not states:
        return
    views = [await read_lease(store, key) for key in states]
    owned = [view for view in views if view.status == "live" and view.record is not None]
    if owned and not force:
        view = owned[0]
        assert view.record is not None  # noqa: S101 - kept by the filter above
        others = f" (and {len(owned) - 1} more states with a live owner)" if len(owned) > 1 else ""
        raise CommandError(
            f"state {view.key!r} of {where} is owned by {view.record.describe()}{others}: stop that program "
            "first, or pass --force to change it anyway (its owner then loses the state, and stops saving it)"
        )
    if yes:
        return
    what = f"{'state record' if len(states) == 1 else f'{len(states)} state records'} {_named(states)} of {where}"
    if sys.stdin is None or not sys.stdin.isatty():
        raise CommandError(
            f"this would {action} the {what}: pass --yes to do it without being asked (stdin is not a terminal, "
            "so the command cannot ask)"
        )
    owners = f" (--force: {counted(len(owned), 'live owner')} will lose {'its state' if len(owned) == 1 else 'theirs'})"
    # The question is asked inside the event loop, whose handler of SIGINT only cancels the task (which a
    # blocked read ignores): while it waits, Ctrl-C interrupts the read itself, as in any program.
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        confirmed = click.confirm(
            f"{action.capitalize()} the {what}{owners if owned else ''}?", default=False, err=True
        )
    finally:
        signal.signal(signal.SIGINT, handler)
    if not confirmed:
        raise CommandError("nothing was changed: not confirmed")
