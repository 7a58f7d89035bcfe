"""What the tests of a state's history share: the model, how a state is made, how saves are made."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from recoverable import RecoverableState
from state.support import KEY, quiet_event_manager

if TYPE_CHECKING:
    from recoverable.events import EventManager

JSON = "application/json"


class Crawl(BaseModel):
    pages: int = 0
    urls: list[str] = []


def make_state(
    kvs: Any,
    *,
    key: str = KEY,
    history: int = 3,
    on_invalid: Literal["raise", "reset", "previous"] = "raise",
    manager: EventManager | None = None,
    lease_ttl: timedelta | None = timedelta(seconds=30),
    **more: Any,
) -> RecoverableState[Crawl]:
    """A state of `Crawl` saved under `key` in `kvs`, with a history, on an event manager only the test drives."""
    return RecoverableState(
        default_state=Crawl(),
        persist_state_key=key,
        key_value_store=kvs,
        event_manager=manager or quiet_event_manager(),
        history=history,
        on_invalid=on_invalid,
        lease_ttl=lease_ttl,
        **more,
    )


async def save_pages(state: RecoverableState[Crawl], *pages: int) -> None:
    """One explicit save of each page count in turn."""
    for count in pages:
        state.current_value.pages = count
        await state.persist_state()
