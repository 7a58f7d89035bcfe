import types

import recoverable.events

PUBLIC = {
    "Event",
    "EventAbortingData",
    "EventData",
    "EventExitData",
    "EventListener",
    "EventManager",
    "EventMigratingData",
    "EventPersistStateData",
    "EventSystemInfoData",
    "LocalEventManager",
    "PlatformEventManager",
    "event_data_model",
    "parse_platform_message",
}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(recoverable.events.__all__) == PUBLIC
    assert len(recoverable.events.__all__) == len(PUBLIC)
    assert recoverable.events.__all__ == sorted(recoverable.events.__all__)
    module_names = {name for name in vars(recoverable.events) if not name.startswith("_")}
    assert module_names == PUBLIC


def test_public_names_are_defined_in_private_modules() -> None:
    for name in PUBLIC:
        obj = getattr(recoverable.events, name)
        if isinstance(obj, types.UnionType):  # a type alias has no module of its own
            continue
        assert obj.__module__.startswith("recoverable.events._"), (name, obj.__module__)
