"""Fixtures of the tests that run Crawlee for Python beside the library: its global services, reset per test."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from crawlee import service_locator
from crawlee._service_locator import ServiceLocator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storages import KeyValueStore as CrawleeKeyValueStore

from recoverable.events import _default

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

CRAWLEE_PERSIST_INTERVAL = timedelta(milliseconds=50)
"""The period of Crawlee's PERSIST_STATE in these tests; the library's own stays at its default of 60 s."""


@pytest.fixture(autouse=True)
def _isolated_crawlee(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Crawlee's process-wide services (configuration, event manager, storage client, open storages), empty.

    Each test starts with none set, as a fresh process does, and whatever it set is put back afterwards. Crawlee
    keeps its files under the test's folder.
    """
    monkeypatch.setenv("CRAWLEE_STORAGE_DIR", str(tmp_path / "crawlee-storage"))
    saved = (service_locator._configuration, service_locator._event_manager, service_locator._storage_client)
    saved_instances = ServiceLocator.global_storage_instance_manager
    saved_autosaved = dict(CrawleeKeyValueStore._autosaved_values)
    service_locator._configuration = None
    service_locator._event_manager = None
    service_locator._storage_client = None
    ServiceLocator.global_storage_instance_manager = None
    CrawleeKeyValueStore._autosaved_values.clear()
    # The tests run crawlers for a second or two: look for them more often than every second.
    monkeypatch.setattr(_default, "CRAWLEE_WATCH_SECS", 0.05)
    try:
        yield
    finally:
        service_locator._configuration, service_locator._event_manager, service_locator._storage_client = saved
        ServiceLocator.global_storage_instance_manager = saved_instances
        CrawleeKeyValueStore._autosaved_values.clear()
        CrawleeKeyValueStore._autosaved_values.update(saved_autosaved)


@pytest.fixture
def crawlee_configuration(tmp_path: Path) -> CrawleeConfiguration:
    """Crawlee's configuration, set in its service locator: PERSIST_STATE every 50 ms, files under the test's folder."""
    configuration = CrawleeConfiguration(
        persist_state_interval=CRAWLEE_PERSIST_INTERVAL, storage_dir=str(tmp_path / "crawlee-storage")
    )
    service_locator.set_configuration(configuration)
    return configuration
