import json
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, ValidationError

from recoverable.events import (
    Event,
    EventAbortingData,
    EventExitData,
    EventMigratingData,
    EventPersistStateData,
    EventSystemInfoData,
    event_data_model,
    parse_platform_message,
)

SYSTEM_INFO_JSON = {
    "memAvgBytes": 1000,
    "memCurrentBytes": 1200,
    "memMaxBytes": 1500,
    "cpuAvgUsage": 12.5,
    "cpuMaxUsage": 80.0,
    "cpuCurrentUsage": 40.25,
    "isCpuOverloaded": False,
    "createdAt": "2024-05-01T12:30:00.123000Z",
}


def test_event_values_are_the_platform_names() -> None:
    assert {e.name: e.value for e in Event} == {
        "PERSIST_STATE": "persistState",
        "SYSTEM_INFO": "systemInfo",
        "MIGRATING": "migrating",
        "ABORTING": "aborting",
        "EXIT": "exit",
    }
    assert Event("persistState") is Event.PERSIST_STATE
    assert f"{Event.MIGRATING}" == "migrating"


def test_persist_state_alias_round_trip() -> None:
    assert EventPersistStateData.model_validate({"isMigrating": True}).is_migrating is True
    assert EventPersistStateData.model_validate({"is_migrating": True}).is_migrating is True
    assert EventPersistStateData(is_migrating=True).model_dump(by_alias=True) == {"isMigrating": True}
    assert EventPersistStateData().is_migrating is False


def test_migrating_alias_round_trip() -> None:
    assert EventMigratingData.model_validate({"timeRemainingSecs": 30}).time_remaining_secs == 30.0
    assert EventMigratingData.model_validate({"timeRemainingSecs": None}).time_remaining_secs is None
    assert EventMigratingData().model_dump(by_alias=True) == {"timeRemainingSecs": None}
    assert EventMigratingData(time_remaining_secs=1.5).model_dump(by_alias=True) == {"timeRemainingSecs": 1.5}


def test_empty_payloads_dump_to_empty_objects() -> None:
    assert EventAbortingData().model_dump(by_alias=True) == {}
    assert EventExitData().model_dump(by_alias=True) == {}


def test_system_info_alias_round_trip() -> None:
    data = EventSystemInfoData.model_validate(SYSTEM_INFO_JSON)
    assert data.mem_avg_bytes == 1000
    assert data.mem_current_bytes == 1200
    assert data.mem_max_bytes == 1500
    assert data.cpu_avg_usage == 12.5
    assert data.cpu_max_usage == 80.0
    assert data.cpu_current_usage == 40.25
    assert data.is_cpu_overloaded is False
    assert data.created_at == datetime(2024, 5, 1, 12, 30, 0, 123000, tzinfo=UTC)
    dumped = data.model_dump(mode="json", by_alias=True)
    assert set(dumped) == set(SYSTEM_INFO_JSON)
    assert EventSystemInfoData.model_validate(dumped) == data
    assert EventSystemInfoData.model_validate(data.model_dump()) == data


def test_payloads_are_immutable() -> None:
    data = EventPersistStateData(is_migrating=False)
    with pytest.raises(ValidationError):
        data.is_migrating = True  # type: ignore[misc]


def test_event_data_model_covers_every_event() -> None:
    expected: dict[Event, type[BaseModel]] = {
        Event.PERSIST_STATE: EventPersistStateData,
        Event.SYSTEM_INFO: EventSystemInfoData,
        Event.MIGRATING: EventMigratingData,
        Event.ABORTING: EventAbortingData,
        Event.EXIT: EventExitData,
    }
    for event in Event:
        assert event_data_model(event) is expected[event]


@pytest.mark.parametrize("as_bytes", [False, True])
def test_parse_persist_state(as_bytes: bool) -> None:
    text = json.dumps({"name": "persistState", "createdAt": "2024-05-01T12:30:00Z", "data": {"isMigrating": True}})
    event, data = parse_platform_message(text.encode() if as_bytes else text)
    assert event is Event.PERSIST_STATE
    assert data == EventPersistStateData(is_migrating=True)


def test_parse_system_info() -> None:
    event, data = parse_platform_message(json.dumps({"name": "systemInfo", "data": SYSTEM_INFO_JSON}))
    assert event is Event.SYSTEM_INFO
    assert data == EventSystemInfoData.model_validate(SYSTEM_INFO_JSON)


def test_parse_migrating() -> None:
    event, data = parse_platform_message('{"name": "migrating", "data": {"timeRemainingSecs": 12}}')
    assert event is Event.MIGRATING
    assert data == EventMigratingData(time_remaining_secs=12)


@pytest.mark.parametrize("data", ['"data": null', '"data": {}', None])
@pytest.mark.parametrize(("name", "model"), [("aborting", EventAbortingData), ("exit", EventExitData)])
def test_parse_events_without_data(name: str, model: type[BaseModel], data: str | None) -> None:
    raw = f'{{"name": "{name}", "createdAt": "2024-05-01T12:30:00Z"{", " + data if data else ""}}}'
    event, payload = parse_platform_message(raw)
    assert event == name
    assert type(payload) is model


def test_parse_ignores_unknown_data_fields() -> None:
    _, data = parse_platform_message('{"name": "persistState", "data": {"isMigrating": false, "newField": 1}}')
    assert data == EventPersistStateData(is_migrating=False)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
        ('{"data": {}}', "no string 'name'"),
        ('{"name": 5}', "no string 'name'"),
        ('{"name": "teleporting", "data": {}}', "unknown platform event name 'teleporting'"),
        ('{"name": "persistState", "data": [1]}', "'data' of platform event 'persistState' must be a JSON object"),
        ('{"name": "persistState", "data": {"isMigrating": "perhaps"}}', "invalid data for platform event"),
        ('{"name": "systemInfo", "data": {"memAvgBytes": 1}}', "invalid data for platform event 'systemInfo'"),
    ],
)
def test_parse_rejects_bad_messages(raw: str | bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_platform_message(raw)


def test_parse_error_names_the_failing_field() -> None:
    with pytest.raises(ValueError, match="isMigrating"):
        parse_platform_message('{"name": "persistState", "data": {"isMigrating": "perhaps"}}')


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match="'persistState'") as info:
        parse_platform_message('{"name": "nope"}')
    assert "'systemInfo'" in str(info.value)
