"""The checks of `RecoverableState`'s arguments, made at construction, before `initialize()` takes anything."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from recoverable._history import check_state_key
from recoverable._ownership import LEASE_SUFFIX
from recoverable.configuration import Configuration
from recoverable.errors import ConfigurationError, InvalidKeyError
from recoverable.events import EventManager
from recoverable.storages import KeyValueStore
from recoverable.storages._crawlee import is_crawlee_key_value_store
from recoverable.storages._validation import MAX_KEY_LENGTH, validate_key, validate_store_id, validate_store_name

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["LIFECYCLE_ARGUMENTS", "check_arguments", "lifecycle_arguments"]


LIFECYCLE_ARGUMENTS = (
    "persist_state_key",
    "persistence_enabled",
    "persist_state_kvs_name",
    "persist_state_kvs_id",
    "persist_state_kvs_factory",
    "logger",
    "key_value_store",
    "event_manager",
    "on_invalid",
    "timeout",
    "lease_ttl",
    "on_owned",
    "lease_wait_timeout",
    "configuration",
)
"""The keywords every kind of state takes, checked by `check_arguments` and kept by `StateLifecycle._setup`."""


def lifecycle_arguments(given: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords every kind of state takes, picked from what its constructor was given (its `locals()`)."""
    return {name: given[name] for name in LIFECYCLE_ARGUMENTS}


def check_arguments(
    *,
    persist_state_key: object,
    persistence_enabled: object,
    persist_state_kvs_name: object,
    persist_state_kvs_id: object,
    persist_state_kvs_factory: object,
    logger: object,
    key_value_store: object,
    event_manager: object,
    on_invalid: object,
    timeout: object,
    lease_ttl: object,
    on_owned: object,
    lease_wait_timeout: object,
    configuration: object,
) -> None:
    """Refuse arguments of `RecoverableState` that cannot work, naming each and what to pass instead.

    Raises:
        ConfigurationError: An argument is of the wrong kind or value, or more than one store was specified.
        InvalidKeyError: `persist_state_key` is not a valid key, or too long for the state's lease record.
        InvalidStoreNameError: The store's name or id breaks its rules.
    """
    given = [
        name
        for name, value in (
            ("persist_state_kvs_name", persist_state_kvs_name),
            ("persist_state_kvs_id", persist_state_kvs_id),
            ("persist_state_kvs_factory", persist_state_kvs_factory),
            ("key_value_store", key_value_store),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ConfigurationError(f"pass at most one way to find the store, not {' and '.join(given)}")
    # Identity, not equality: 1 == True and 0 == False, and neither is an accepted value.
    if not (persistence_enabled is True or persistence_enabled is False or persistence_enabled == "explicit_only"):
        raise ConfigurationError(
            f"persistence_enabled must be True, False or 'explicit_only', not {persistence_enabled!r}"
        )
    if on_invalid not in ("raise", "reset", "previous"):
        raise ConfigurationError(f"on_invalid must be 'raise', 'reset' or 'previous', not {on_invalid!r}")
    for label, value in (
        ("timeout", timeout),
        ("lease_ttl", lease_ttl),
        ("lease_wait_timeout", lease_wait_timeout),
    ):
        if value is not None and (not isinstance(value, timedelta) or value <= timedelta(0)):
            raise ConfigurationError(f"{label} must be a positive timedelta or None, not {value!r}")
    if on_owned not in ("fail", "wait"):
        raise ConfigurationError(f"on_owned must be 'fail' or 'wait', not {on_owned!r}")
    _check_kinds(
        event_manager=event_manager,
        key_value_store=key_value_store,
        persist_state_kvs_factory=persist_state_kvs_factory,
        logger=logger,
        configuration=configuration,
    )
    key = validate_key(persist_state_key)
    check_state_key(key)
    if lease_ttl is not None and len(key) + len(LEASE_SUFFIX) > MAX_KEY_LENGTH:
        raise InvalidKeyError(
            f"persist_state_key of {len(key)} characters is too long for a state with a lease, whose "
            f"record is the key plus {LEASE_SUFFIX!r}: use at most {MAX_KEY_LENGTH - len(LEASE_SUFFIX)} "
            "characters",
            key=key[:80],
        )
    if persist_state_kvs_name is not None:
        validate_store_name(persist_state_kvs_name)
    if persist_state_kvs_id is not None:
        validate_store_id(persist_state_kvs_id)


def _check_kinds(
    *,
    event_manager: object,
    key_value_store: object,
    persist_state_kvs_factory: object,
    logger: object,
    configuration: object,
) -> None:
    """Refuse arguments of the wrong kind at construction, before `initialize()` takes anything."""
    for name, value, kind in (
        ("event_manager", event_manager, EventManager),
        ("key_value_store", key_value_store, KeyValueStore),
        ("logger", logger, logging.Logger),
        ("configuration", configuration, Configuration),
    ):
        if value is not None and not isinstance(value, kind):
            hint = ""
            if name == "key_value_store" and is_crawlee_key_value_store(value):
                hint = (
                    ": pass an async function returning Crawlee's store as persist_state_kvs_factory instead "
                    "(with lease_ttl=None)"
                )
            elif name == "event_manager" and type(value).__module__.startswith("crawlee."):
                hint = (
                    " (Crawlee's): leave event_manager out, and the state saves on the events of Crawlee's "
                    "manager whenever a crawler runs"
                )
            raise ConfigurationError(f"{name} must be a {kind.__name__} or None, not {type(value).__name__}{hint}")
    if persist_state_kvs_factory is not None and not callable(persist_state_kvs_factory):
        raise ConfigurationError(
            "persist_state_kvs_factory must be an async callable returning a KeyValueStore, "
            f"not {type(persist_state_kvs_factory).__name__}"
        )
