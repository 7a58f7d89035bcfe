"""One owner per state: a lease record next to the state, renewed by its owner, taken with conditional writes.

The lease of the state saved under `KEY` is the JSON record `KEY.lease` in the same store:

```json
{"owner": "<random id>", "pid": 1234, "host": "crawler-7", "token": 3, "processStartedAt": "...",
 "acquiredAt": "...", "expiresAt": "..."}
```

- Taking a free lease is a write with `if_absent=True`; taking an expired one (or one whose owner process
  is gone from this host) is a write with `if_version=` the version read. Two processes racing for it
  cannot both win: the storage client's conditional write decides.
- The owner renews it every third of its time to live with `if_version=` its own last version; a renewal
  that conflicts means someone else took the lease: ownership is lost and the state stops saving.
- `token` (the fencing token) grows by one at each change of owner. A new owner that took the lease over
  (from an expired, dead or damaged lease) also rewrites the state record once, conditionally, right
  after loading it and before handing the state to its user (`RecoverableState` does), so a write by the
  previous owner that is still in flight either lands before (and is loaded) or is refused after (its
  version no longer matches). Every later save of the state is conditional on the version the owner last
  wrote. An owner releases its lease at `teardown()`, or as soon as it made its final save because the
  process is stopping (and writes nothing after). A lease released by its owner needs no such rewrite:
  an owner releases only once none of its writes is left without an answer; nor does the lease of an
  owner that died on this host when the store is written by the process itself
  (`KeyValueStoreClient.writes_end_with_the_writer`).
- On the file system a write holds the store's writers' lock. A previous owner frozen while holding it
  (SIGSTOP, a paused container) would block the takeover for as long as it stays frozen, and would
  finish its write once resumed. When the process holding that lock is the owner of the expired lease,
  on this host, the new owner ends it with SIGKILL (fencing by ending the stale owner) and takes over.

Expiry compares wall clocks; machines sharing a store need clocks synchronised to well under the time to live.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, TypeVar

import psutil

from recoverable._lease_record import MAX_TOKEN, LeaseRecord, decode_lease
from recoverable._processes import owner_died, pid_alive, pid_namespace, same_pids, same_user, started_at
from recoverable._timeout import bounded
from recoverable.errors import StateOwnershipError, StoreLockedError, VersionConflictError
from recoverable.storages._serialization import JSON

if TYPE_CHECKING:
    import logging
    from collections.abc import Awaitable

    from recoverable.storages import KeyValueStore

__all__ = ["DEFAULT_LEASE_TTL", "LEASE_SUFFIX", "LeaseRecord", "StateLease"]

LEASE_SUFFIX = ".lease"

DEFAULT_LEASE_TTL = timedelta(seconds=30)
"""How long a state's lease lives without renewal unless `lease_ttl=` says otherwise."""

OnOwned = Literal["fail", "wait"]
_T = TypeVar("_T")
_WAIT_POLL_SECS = 0.5
_FENCE_WAIT_SECS = 10.0
_FENCE_POLL_SECS = 0.02


class StateLease:
    """The lease of one state: acquire, renew in the background, release.

    Args:
        store: The store holding the state and its lease.
        state_key: The key of the state record; the lease is `state_key + ".lease"`.
        ttl: How long a lease lives without renewal.
        on_owned: What to do when another live process holds the lease: "fail" at once with
            `StateOwnershipError`, or "wait" until it is released or expires (then take it over).
        wait_timeout: Longest to wait with on_owned="wait"; None waits as long as it takes.
        op_timeout: Longest a single read or write of the lease may take (`StateTimeoutError` after).
        logger: Where to log takeovers and lost leases.
    """

    def __init__(
        self,
        *,
        store: KeyValueStore,
        state_key: str,
        ttl: timedelta,
        on_owned: OnOwned,
        wait_timeout: timedelta | None,
        op_timeout: timedelta,
        logger: logging.Logger,
    ) -> None:
        self._store = store
        self.state_key = state_key
        self.key = state_key + LEASE_SUFFIX
        self._ttl = ttl
        self._on_owned = on_owned
        self._wait_timeout = wait_timeout
        self._op_timeout = op_timeout
        self._log = logger
        self._owner = secrets.token_hex(8)
        self._host = socket.gethostname()
        self._started_at = started_at(os.getpid())
        self._pid_namespace = pid_namespace()
        self._record: LeaseRecord | None = None
        self._version: str | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._lost: str | None = None
        self._lost_to: str | None = None
        self.took_over = False
        """Whether the lease was taken from a previous owner (expired, dead or damaged), not found free."""
        self.previous_owner_dead = False
        """Whether the previous owner, when taken over, was a process of this host that had died."""

    @property
    def token(self) -> int | None:
        """The fencing token of the lease held, or None."""
        return self._record.token if self._record else None

    @property
    def lost(self) -> bool:
        """Whether this process learnt that it lost the lease."""
        return self._lost is not None

    @property
    def held(self) -> bool:
        """Whether this process holds the lease and has not learnt it lost it."""
        return self._record is not None and self._lost is None

    def ensure_valid(self) -> None:
        """Raise `StateOwnershipError` unless this process may write the state now.

        It may not when the lease was lost, or when it is about to expire because renewals failed: past
        its expiry another process may take it over and must find no write of ours landing after that.
        """
        if self._lost is not None:
            raise StateOwnershipError(self._lost, owner=self._lost_to)
        if self._record is None:
            raise StateOwnershipError(f"this process does not hold the lease {self.key!r}")
        margin = self._ttl / 10
        if self._record.expires_at - datetime.now(UTC) < margin:
            raise StateOwnershipError(
                f"the lease {self.key!r} in store {self._store.label!r} expires at "
                f"{self._record.expires_at.isoformat(timespec='seconds')} and could not be renewed (see the log); "
                "not saving, so that a process taking it over never sees a late write"
            )

    def _new_record(self, token: int) -> LeaseRecord:
        now = datetime.now(UTC)
        return LeaseRecord(
            owner=self._owner,
            pid=os.getpid(),
            host=self._host,
            token=token,
            acquired_at=now,
            expires_at=now + self._ttl,
            process_started_at=self._started_at,
            pid_namespace=self._pid_namespace,
        )

    async def _io(self, what: str, work: Awaitable[_T]) -> _T:
        return await bounded(
            work, within=self._op_timeout, what=f"{what} the lease {self.key!r} in store {self._store.label!r}"
        )

    def _encode(self, record: LeaseRecord) -> bytes:
        return record.model_dump_json(by_alias=True, indent=2).encode()

    async def _read(self) -> tuple[LeaseRecord | None, str | None]:
        stored = await self._io("loading", self._store.client.get_record(key=self.key))
        if stored is None:
            return None, None
        decoded = decode_lease(stored.value)
        if isinstance(decoded, LeaseRecord):
            return decoded, stored.version
        self._log.warning(
            "lease record %r of store %r is damaged (%s); treating it as expired", self.key, self._store.label, decoded
        )
        return None, stored.version

    def _is_free(self, record: LeaseRecord | None) -> bool:
        if record is None:
            return True
        if record.expires_at <= datetime.now(UTC):
            return True
        # Same host, process gone: a crash left the lease behind; no need to wait for it to expire.
        return self._died(record)

    def _same_pids(self, record: LeaseRecord) -> bool:
        """Whether the pid of `record` means the same process here: same host, same pid namespace."""
        return same_pids(record, host=self._host, namespace=self._pid_namespace)

    def _died(self, record: LeaseRecord) -> bool:
        """Whether the owner of `record` was a process of this host that is gone (or a zombie) by now."""
        return owner_died(record, host=self._host, namespace=self._pid_namespace, started=self._started_at)

    async def acquire(self) -> None:
        """Take the lease, or fail / wait as `on_owned` says.

        Raises:
            StateOwnershipError: Another live process holds the lease (on_owned="fail"), or it did not
                free it within `wait_timeout`.
        """
        loop = asyncio.get_running_loop()
        deadline = None if self._wait_timeout is None else loop.time() + self._wait_timeout.total_seconds()
        while True:
            current, version = await self._read()
            if current is not None and current.owner == self._owner:
                # A take of this lease whose answer was lost landed all the same (a retry of it then met a
                # conflict, the record having changed under it): the lease is held already.
                self._hold(current, version)
                return
            if self._is_free(current):
                if await self._take(current, version):
                    return
                continue  # someone else moved first, or a frozen owner was ended: look again
            assert current is not None  # noqa: S101 - _is_free(None) is True
            message = (
                f"state lease {self.key!r} in store {self._store.label!r} is held by {current.describe()}. Stop "
                "that process, wait for its lease to expire, or open the state with on_owned='wait'"
            )
            if self._on_owned == "fail":
                raise StateOwnershipError(message, owner=current.describe())
            remaining = current.expires_at - datetime.now(UTC)
            # Look again soon: the owner may release the lease long before it expires.
            pause = min(max(remaining.total_seconds(), 0.05), self._ttl.total_seconds() / 3, _WAIT_POLL_SECS)
            if deadline is not None:
                if loop.time() >= deadline:
                    raise StateOwnershipError(
                        f"gave up waiting after {self._wait_timeout}: {message}", owner=current.describe()
                    )
                pause = min(pause, max(deadline - loop.time(), 0.0))
            self._log.info("waiting for the lease of state %r held by %s", self.state_key, current.describe())
            await asyncio.sleep(pause)

    async def _take(self, current: LeaseRecord | None, version: str | None) -> bool:
        """Write this owner's lease over the free `current` (at `version`); False when that lost a race."""
        # The token only has to change at each change of owner; one that reached the top starts again.
        record = self._new_record(current.token + 1 if current and current.token < MAX_TOKEN else 1)
        # Set before the write: a take whose answer was lost is found held by `acquire` on its next look.
        self.took_over = version is not None
        self.previous_owner_dead = current is not None and self._died(current)
        try:
            self._version = await self._io(
                "taking",
                self._store.client.set_record(
                    key=self.key,
                    value=self._encode(record),
                    content_type=JSON,
                    if_version=version,
                    if_absent=version is None,
                ),
            )
        except VersionConflictError:
            return False
        except StoreLockedError as exc:
            if current is None or not await self._end_frozen_owner(current, exc):
                raise
            return False
        if current is not None:
            self._log.warning(
                "took over the lease of state %r in store %r from %s",
                self.state_key,
                self._store.label,
                current.describe(),
            )
        self._hold(record, self._version)
        return True

    async def _end_frozen_owner(self, previous: LeaseRecord, exc: StoreLockedError) -> bool:
        """End the expired owner `previous` when it is what holds the store's writers' lock; True if ended.

        A process frozen in the middle of a write keeps the lock for as long as it stays frozen, and once
        resumed it would finish that write over the new owner's. Ending it is the only way to make sure it
        never writes again; it is done only to the very process named by the expired lease, on this host.
        """
        pid = exc.holder_pid
        if (
            pid is None
            or pid != previous.pid
            or pid == os.getpid()
            or not self._same_pids(previous)
            or previous.expires_at > datetime.now(UTC)
            # Only the very process the lease names: started when it says (a lease without it is not enough),
            # alive (a dead holder's lock lives on in a process it forked, which is not the owner), and ours.
            or previous.process_started_at is None
            or not pid_alive(pid, previous.process_started_at)
            or not same_user(pid)
        ):
            return False
        try:
            status: str = psutil.Process(pid).status()
        except psutil.Error:
            status = "unknown"
        self._log.error(
            "the expired owner of state %r, %s, holds the writers' lock of store %r (process status: %s) and "
            "would finish its write after the takeover once it runs again; ending it with SIGKILL",
            self.state_key,
            previous.describe(),
            self._store.label,
            status,
        )
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        for _ in range(int(_FENCE_WAIT_SECS / _FENCE_POLL_SECS)):
            if not pid_alive(pid):
                break
            await asyncio.sleep(_FENCE_POLL_SECS)
        return True

    async def confirm(self) -> bool:
        """Read the lease record again: whether it still names this owner and fencing token.

        A process frozen for longer than its lease is not told by anything that it lost it; a check that
        reads the record after reading the state record sees any takeover that happened before that read.
        """
        if self._record is None or self._lost is not None:
            return False
        current, _ = await self._read()
        return current is not None and (current.owner, current.token) == (self._record.owner, self._record.token)

    async def current_owner(self) -> str | None:
        """A description of whoever else holds the lease record now, for messages; None while it is still ours."""
        try:
            current, _ = await self._read()
        except Exception:  # noqa: BLE001 - only for a message; the cause of the message matters more
            return "an unknown process (the lease could not be read)"
        if current is None:
            return "nobody (the lease was deleted)"
        if self._record is not None and (current.owner, current.token) == (self._record.owner, self._record.token):
            return None
        return current.describe()

    def _hold(self, record: LeaseRecord, version: str | None) -> None:
        self._record = record
        self._version = version
        self._lost = None
        self._renewer = asyncio.create_task(self._renew_loop(), name=f"renew lease {self.key}")

    async def renew(self) -> None:
        """Extend the lease now. On conflict the lease is marked lost (see `check`)."""
        if self._record is None or self._lost is not None:
            return
        record = self._record.model_copy(update={"expires_at": datetime.now(UTC) + self._ttl})
        for attempt in range(2):
            try:
                self._version = await self._io(
                    "renewing",
                    self._store.client.set_record(
                        key=self.key, value=self._encode(record), content_type=JSON, if_version=self._version
                    ),
                )
            except VersionConflictError:
                ours, current = await self._still_ours()
                if ours and attempt == 0:
                    continue
                owner = current.describe() if current else "nobody (the lease was deleted)"
                where = f"state {self.state_key!r} in store {self._store.label!r}"
                self.lose(f"lost the lease of {where}: it is now held by {owner}", owner=owner)
                return
            self._record = record
            return

    async def _still_ours(self) -> tuple[bool, LeaseRecord | None]:
        """After a conflict: whether the lease record is still this owner's, and the record that is there.

        A renewal whose answer was lost (a timeout, a retry after a dropped connection) may have landed and
        changed the version; the record then holds this owner and fencing token, and its version is taken.
        """
        current, version = await self._read()
        ours = (
            current is not None
            and self._record is not None
            and (current.owner, current.token) == (self._record.owner, self._record.token)
        )
        if ours:
            self._version = version
        return ours, current

    def lose(self, reason: str, *, owner: str | None = None) -> None:
        """Mark the lease lost: the state must stop saving.

        Args:
            reason: What happened, for the log and the errors of later saves.
            owner: Who holds the lease now, when known.
        """
        if self._lost is None:
            self._lost_to = owner
            self._lost = reason + "; this process no longer saves the state"
            self._log.error("%s", self._lost)

    async def _renew_loop(self) -> None:
        period = self._ttl.total_seconds() / 3
        while self._lost is None:
            await asyncio.sleep(period)
            try:
                await self.renew()
            except Exception:  # noqa: BLE001 - a failed renewal is retried; the lease lives on until it expires
                self._log.exception("renewing the lease %r failed; retrying in %.1f s", self.key, period)

    def abandon(self) -> None:
        """Stop renewing, without writing anything: the lease record stays and expires on its own.

        For a process that must let go at once and may not wait for the store (its task is being cancelled).
        """
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
        self._record = None

    async def release(self, *, let_expire: bool = False) -> None:
        """Stop renewing and delete the lease if it is still ours.

        Args:
            let_expire: Keep the record: the next owner then takes it over when it expires, and rewrites
                the state record first, which a write of this process still under way cannot match.
        """
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        if self._record is not None and self._lost is None and not let_expire:
            try:
                await self._io("releasing", self._store.client.delete_record(key=self.key, if_version=self._version))
            except VersionConflictError:
                ours, _ = await self._still_ours()
                if ours:
                    with contextlib.suppress(VersionConflictError):
                        await self._io(
                            "releasing", self._store.client.delete_record(key=self.key, if_version=self._version)
                        )
        self._record = None
