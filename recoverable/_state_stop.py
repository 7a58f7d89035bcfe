"""The hand-over at a stop: a state that hears the process is stopping saves once more and lets go of its lease."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, TypeVar

from recoverable._state_record import StateRecord
from recoverable.errors import StateOwnershipError
from recoverable.events import Event, EventAbortingData, EventData, EventExitData, EventMigratingData

if TYPE_CHECKING:
    from recoverable._history import Trigger

__all__ = ["STOP_EVENTS", "StateStop"]

TStateModel = TypeVar("TStateModel")

STOP_EVENTS = (Event.MIGRATING, Event.ABORTING, Event.EXIT)
"""The events that mean the process is stopping: the state makes its final save and lets go of its lease."""


def _stop_cause(event_data: EventData) -> str:
    """The stop an event announces, for the log."""
    if isinstance(event_data, EventMigratingData):
        return "a migration (MIGRATING: SIGTERM, or the platform's migration)"
    if isinstance(event_data, EventAbortingData):
        return "an abort (ABORTING: Ctrl-C / SIGINT, or the platform's abort)"
    if isinstance(event_data, EventExitData):
        return "the exit (EXIT)"
    return "a migration (PERSIST_STATE with is_migrating)"


class StateStop(StateRecord[TStateModel]):
    """The hand-over of `RecoverableState` at a stop (see "Stopping" in its docstring and docs/ownership.md)."""

    _initialized: bool

    async def _on_stop_event(self, event_data: EventData) -> None:
        migrating = not isinstance(event_data, (EventAbortingData, EventExitData))
        await self._hand_over(_stop_cause(event_data), "migrating" if migrating else "teardown")

    async def _hand_over(self, cause: str, trigger: Trigger) -> None:
        """Save one last time because the process is stopping, then let go of the lease (see "Stopping")."""
        if self._released_for is not None or not self._initialized or self._lease is None:
            return  # handed over already, torn down, or no lease to hand over (lease_ttl=None): saves go on
        kvs = self._store()
        saved = False
        try:
            async with self._persist_lock:
                if self._released_for is not None or not self._initialized or self._lease is None:
                    return
                try:
                    await self._persist_locked(kvs, mode="explicit", trigger=trigger)
                    saved = True
                except StateOwnershipError as exc:
                    self._log.error("the final save of state %r for %s was refused: %s", self._key, cause, exc)
                except Exception:  # noqa: BLE001 - the process is stopping: say what is lost, let go all the same
                    self._log.exception(
                        "the final save of state %r for %s failed; its changes since the last save are lost",
                        self._key,
                        cause,
                    )
                self._released_for = cause
                await self._release_lease()
        except asyncio.CancelledError:
            # A second signal cut the hand-over short, before or during the last save (which may still land):
            # the process lets go all the same, without another write, and the lease is left to expire.
            if self._released_for is None and self._initialized and self._lease is not None:
                self._released_for = cause
                self._abandon_lease()
            raise
        if saved:
            self._log.info(
                "state %r made its final save for %s and let go of its lease: another process may take it over "
                "now, and this process saves it no more",
                self._key,
                cause,
            )
