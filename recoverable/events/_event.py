"""Event names and their payload models, matching the JSON of the Apify platform's event websocket."""

import json
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "Event",
    "EventAbortingData",
    "EventData",
    "EventExitData",
    "EventMigratingData",
    "EventPersistStateData",
    "EventSystemInfoData",
    "event_data_model",
    "parse_platform_message",
]


class Event(StrEnum):
    """The names of the events an event manager emits; the values are the platform's names."""

    PERSIST_STATE = "persistState"
    """Save your state now. Emitted periodically, on exit, and before a migration."""

    SYSTEM_INFO = "systemInfo"
    """CPU and memory usage of the process (locally) or of the run (on the platform)."""

    MIGRATING = "migrating"
    """The process is about to be stopped and restarted elsewhere (locally: it received SIGTERM)."""

    ABORTING = "aborting"
    """The process is about to be stopped for good (locally: it received SIGINT)."""

    EXIT = "exit"
    """The process is exiting."""


class _EventPayload(BaseModel):
    """Common configuration of the payload models: immutable, built from field names or platform aliases."""

    # Frozen because one payload instance is handed to every listener of an emission: a listener must
    # not be able to change what the next listener sees.
    model_config = ConfigDict(populate_by_name=True, frozen=True)


class EventPersistStateData(_EventPayload):
    """Payload of `Event.PERSIST_STATE`; platform JSON `{"isMigrating": bool}`."""

    is_migrating: bool = Field(default=False, alias="isMigrating")
    """True when the state is persisted because the process is migrating to another machine."""


class EventSystemInfoData(_EventPayload):
    """Payload of `Event.SYSTEM_INFO`; the platform's `systemInfo` JSON.

    CPU usages are percentages (0 to 100) of the CPU capacity available to the process.
    """

    mem_avg_bytes: int = Field(alias="memAvgBytes")
    """Average memory usage since the manager started, in bytes."""

    mem_current_bytes: int = Field(alias="memCurrentBytes")
    """Current memory usage, in bytes."""

    mem_max_bytes: int = Field(alias="memMaxBytes")
    """Highest memory usage seen since the manager started, in bytes."""

    cpu_avg_usage: float = Field(alias="cpuAvgUsage")
    """Average CPU usage since the manager started, in percent."""

    cpu_max_usage: float = Field(alias="cpuMaxUsage")
    """Highest CPU usage seen since the manager started, in percent."""

    cpu_current_usage: float = Field(alias="cpuCurrentUsage")
    """Current CPU usage, in percent."""

    is_cpu_overloaded: bool = Field(alias="isCpuOverloaded")
    """True when the CPU is saturated."""

    created_at: datetime = Field(alias="createdAt")
    """When the figures were measured."""


class EventMigratingData(_EventPayload):
    """Payload of `Event.MIGRATING`; platform JSON `{"timeRemainingSecs": number | null}`."""

    time_remaining_secs: float | None = Field(default=None, alias="timeRemainingSecs")
    """Seconds left before the process is stopped, when known."""


class EventAbortingData(_EventPayload):
    """Payload of `Event.ABORTING` (no fields)."""


class EventExitData(_EventPayload):
    """Payload of `Event.EXIT` (no fields)."""


EventData: TypeAlias = (
    EventPersistStateData | EventSystemInfoData | EventMigratingData | EventAbortingData | EventExitData
)
"""The payload of any event."""

_EVENT_DATA_MODELS: dict[Event, type[EventData]] = {
    Event.PERSIST_STATE: EventPersistStateData,
    Event.SYSTEM_INFO: EventSystemInfoData,
    Event.MIGRATING: EventMigratingData,
    Event.ABORTING: EventAbortingData,
    Event.EXIT: EventExitData,
}


def event_data_model(event: Event) -> type[EventData]:
    """Return the payload model of an event.

    Args:
        event: The event.

    Returns:
        The pydantic model class that the event's data must be an instance of.
    """
    return _EVENT_DATA_MODELS[Event(event)]


def parse_platform_message(raw: str | bytes) -> tuple[Event, EventData]:
    """Parse one message of the platform's event websocket.

    A message is JSON `{"name": <event name>, "createdAt": <ISO time>, "data": {...}}`. A missing or null
    `data` is read as `{}` (the platform sends none for `aborting` and `exit`); fields of `data` that the
    model does not know are ignored, so newer platform versions do not break older clients.

    Args:
        raw: The message, as text or UTF-8 bytes.

    Returns:
        The event and its validated payload.

    Raises:
        ValueError: The message is not JSON, not a JSON object, names no event or an unknown one, or its
            data does not fit the event's payload model. The message says which.
    """
    try:
        message: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"platform event message is not valid JSON: {exc}") from exc
    if not isinstance(message, dict):
        # A message of the wrong shape is a bad value, not a programming error: ValueError, like the others.
        raise ValueError(f"platform event message must be a JSON object, got {type(message).__name__}")  # noqa: TRY004

    name = message.get("name")
    if not isinstance(name, str):
        raise ValueError(f"platform event message has no string 'name' field: {message!r}")  # noqa: TRY004
    try:
        event = Event(name)
    except ValueError:
        known = ", ".join(repr(e.value) for e in Event)
        raise ValueError(f"unknown platform event name {name!r}; known names are {known}") from None

    data = message.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"'data' of platform event {name!r} must be a JSON object, got {type(data).__name__}")  # noqa: TRY004
    try:
        payload = event_data_model(event).model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"invalid data for platform event {name!r}: {exc}") from exc
    return event, payload
