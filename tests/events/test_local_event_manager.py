import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import FrameType, SimpleNamespace

import psutil
import pytest

from recoverable.configuration import Configuration
from recoverable.errors import ConfigurationError
from recoverable.events import (
    Event,
    EventAbortingData,
    EventManager,
    EventMigratingData,
    EventPersistStateData,
    EventSystemInfoData,
    LocalEventManager,
)

HOUR = timedelta(hours=1)


async def until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll until `predicate()` holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.01)


def make_manager(
    *,
    persist_state_interval: timedelta = HOUR,
    system_info_interval: timedelta = HOUR,
    handle_signals: bool = True,
    close_timeout: timedelta | None = None,
) -> LocalEventManager:
    return LocalEventManager(
        persist_state_interval=persist_state_interval,
        system_info_interval=system_info_interval,
        handle_signals=handle_signals,
        close_timeout=close_timeout,
        configuration=Configuration(),
    )


@pytest.fixture(autouse=True)
def usual_sigint_handler() -> Iterator[None]:
    """Give SIGINT Python's usual handler, even when pytest was started with SIGINT ignored (in the background)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# --- configuration --------------------------------------------------------------------------------------


def test_is_an_event_manager() -> None:
    assert isinstance(make_manager(), EventManager)


def test_intervals_come_from_the_configuration() -> None:
    configuration = Configuration(
        persist_state_interval=timedelta(seconds=3), system_info_interval=timedelta(seconds=4)
    )
    manager = LocalEventManager(configuration=configuration)
    assert manager.persist_state_interval == timedelta(seconds=3)
    assert manager.system_info_interval == timedelta(seconds=4)


def test_intervals_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS", "1500")
    monkeypatch.setenv("RECOVERABLE_SYSTEM_INFO_INTERVAL_MILLIS", "2500")
    manager = LocalEventManager()
    assert manager.persist_state_interval == timedelta(milliseconds=1500)
    assert manager.system_info_interval == timedelta(milliseconds=2500)


def test_bad_system_info_interval_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="system_info_interval"):
        make_manager(system_info_interval=timedelta(0))


# --- timers ---------------------------------------------------------------------------------------------


async def test_periodic_persist_state_is_inherited() -> None:
    manager = make_manager(persist_state_interval=timedelta(milliseconds=50))
    received: list[EventPersistStateData] = []
    async with manager:
        manager.on(event=Event.PERSIST_STATE, listener=received.append)
        await until(lambda: len(received) >= 3)
    assert all(not data.is_migrating for data in received)


async def test_system_info_describes_this_process() -> None:
    manager = make_manager(system_info_interval=timedelta(milliseconds=50))
    received: list[EventSystemInfoData] = []
    async with manager:
        manager.on(event=Event.SYSTEM_INFO, listener=received.append)
        await until(lambda: len(received) >= 1)
        busy_until = time.monotonic() + 0.3
        while time.monotonic() < busy_until:  # use some CPU, so that the usage is not zero
            sum(range(10_000))
        await until(lambda: len(received) >= 4)
        rss = psutil.Process().memory_info().rss

    assert max(data.cpu_max_usage for data in received) > 0
    previous_max = 0
    for data in received:
        assert rss / 2 < data.mem_current_bytes < rss * 2
        assert 0 < data.mem_avg_bytes <= data.mem_max_bytes
        assert data.mem_current_bytes <= data.mem_max_bytes
        assert data.mem_max_bytes >= previous_max
        previous_max = data.mem_max_bytes
        assert 0 <= data.cpu_current_usage <= 100
        assert 0 <= data.cpu_avg_usage <= data.cpu_max_usage <= 100
        assert data.cpu_current_usage <= data.cpu_max_usage
        assert data.created_at.tzinfo is not None
        assert abs(datetime.now(UTC) - data.created_at) < timedelta(minutes=1)
    assert [d.created_at for d in received] == sorted(d.created_at for d in received)


class FakeProcess:
    """Stands for `psutil.Process`: each sample reports the next (rss bytes, cpu percent of all cores)."""

    def __init__(self, figures: list[tuple[int, float]], cores: int) -> None:
        self._figures = iter(figures)
        self._cores = cores
        self._current: tuple[int, float] | None = None

    def oneshot(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    def memory_info(self) -> SimpleNamespace:
        self._current = next(self._figures)
        return SimpleNamespace(rss=self._current[0])

    def cpu_percent(self, interval: float | None = None) -> float:  # noqa: ARG002 - psutil's signature
        # psutil reports the percent of one core, summed over the cores used.
        return 0.0 if self._current is None else self._current[1] * self._cores


def fake_process_figures(
    manager: LocalEventManager, monkeypatch: pytest.MonkeyPatch, figures: list[tuple[int, float]]
) -> None:
    monkeypatch.setattr(manager, "_process", FakeProcess(figures, manager._available_cores))


def test_system_info_averages_maxima_and_overload_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    manager = make_manager()
    fake_process_figures(manager, monkeypatch, [(100, 10.0), (300, 94.9), (200, 95.0), (50, 150.0)])
    first, second, third, fourth = (manager._collect_system_info() for _ in range(4))

    assert (first.mem_current_bytes, first.mem_avg_bytes, first.mem_max_bytes) == (100, 100, 100)
    assert (first.cpu_current_usage, first.cpu_avg_usage, first.cpu_max_usage) == (10.0, 10.0, 10.0)
    assert not first.is_cpu_overloaded

    assert (second.mem_current_bytes, second.mem_avg_bytes, second.mem_max_bytes) == (300, 200, 300)
    assert second.cpu_current_usage == pytest.approx(94.9)
    assert second.cpu_avg_usage == pytest.approx(52.45)
    assert not second.is_cpu_overloaded  # below 95 percent

    assert (third.mem_current_bytes, third.mem_avg_bytes, third.mem_max_bytes) == (200, 200, 300)
    assert third.cpu_current_usage == pytest.approx(95.0)
    assert third.is_cpu_overloaded  # 95 percent and above

    assert fourth.cpu_current_usage == 100.0  # measurement noise above the capacity is capped
    assert fourth.cpu_max_usage == 100.0
    assert fourth.is_cpu_overloaded
    assert (fourth.mem_current_bytes, fourth.mem_max_bytes) == (50, 300)


async def test_system_info_figures_restart_on_each_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    manager = make_manager(handle_signals=False)
    fake_process_figures(manager, monkeypatch, [(1000, 50.0), (10, 1.0)])
    async with manager:
        manager._collect_system_info()
    async with manager:
        data = manager._collect_system_info()
    assert (data.mem_avg_bytes, data.mem_max_bytes, data.cpu_max_usage) == (10, 10, 1.0)


# --- signal handlers: installation ----------------------------------------------------------------------


def current_handlers() -> tuple[object, object]:
    return signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)


async def test_signal_handlers_are_installed_and_restored() -> None:
    before = current_handlers()
    manager = make_manager()
    async with manager:
        inside = current_handlers()
        assert inside[0] != before[0]
        assert inside[1] != before[1]
    assert current_handlers() == before
    # And again, after re-entering.
    async with manager:
        assert current_handlers() != before
    assert current_handlers() == before


async def test_signal_handling_can_be_turned_off() -> None:
    before = current_handlers()
    async with make_manager(handle_signals=False):
        assert current_handlers() == before
    assert current_handlers() == before


async def test_ignored_signal_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sigterm_before = signal.getsignal(signal.SIGTERM)
        async with make_manager():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) != sigterm_before
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == sigterm_before
    finally:
        signal.signal(signal.SIGINT, previous)


def test_signals_are_not_handled_outside_the_main_thread(caplog: pytest.LogCaptureFixture) -> None:
    before = current_handlers()
    seen: list[tuple[object, object]] = []
    failures: list[BaseException] = []

    async def run() -> None:
        async with make_manager() as manager:
            seen.append(current_handlers())
            assert manager.active

    def thread_main() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:
            failures.append(exc)

    with caplog.at_level(logging.DEBUG, logger="recoverable.events"):
        thread = threading.Thread(target=thread_main)
        thread.start()
        thread.join(timeout=30)
    assert failures == []
    assert seen == [before]
    assert current_handlers() == before
    assert any("not in the main thread" in r.getMessage() for r in caplog.records)


# --- signal handlers: in this process, with a Python handler standing in for the default one ------------


class Recorder:
    """A Python-level signal handler that records the signals it receives."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002 - a signal handler
        self.received.append(signum)


@pytest.fixture
def sigterm_recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    previous = signal.signal(signal.SIGTERM, recorder)
    try:
        yield recorder
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def sigint_recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    previous = signal.signal(signal.SIGINT, recorder)
    try:
        yield recorder
    finally:
        signal.signal(signal.SIGINT, previous)


async def test_sigterm_emits_migrating_then_persist_state_before_delivery(sigterm_recorder: Recorder) -> None:
    events: list[tuple[str, object]] = []
    gate = asyncio.Event()

    def on_migrating(data: EventMigratingData) -> None:
        events.append(("migrating", data.time_remaining_secs))

    async def on_persist_state(data: EventPersistStateData) -> None:
        events.append(("persistState", data.is_migrating))
        await gate.wait()
        events.append(("persistState done", data.is_migrating))

    async with make_manager() as manager:
        manager.on(event=Event.MIGRATING, listener=on_migrating)
        manager.on(event=Event.PERSIST_STATE, listener=on_persist_state)
        os.kill(os.getpid(), signal.SIGTERM)
        await until(lambda: ("persistState", True) in events)
        await asyncio.sleep(0.1)
        assert sigterm_recorder.received == []  # held back while listeners run
        gate.set()
        await until(lambda: sigterm_recorder.received == [signal.SIGTERM])
        assert events == [("migrating", None), ("persistState", True), ("persistState done", True)]
        assert signal.getsignal(signal.SIGTERM) is sigterm_recorder
        assert manager.active
    assert signal.getsignal(signal.SIGTERM) is sigterm_recorder
    assert events[-1] == ("persistState done", False)  # the final one, on exit


async def test_sigint_emits_aborting_then_persist_state_before_delivery(sigint_recorder: Recorder) -> None:
    events: list[tuple[str, object]] = []

    def on_aborting(data: EventAbortingData) -> None:
        events.append(("aborting", data))

    async def on_persist_state(data: EventPersistStateData) -> None:
        await asyncio.sleep(0.2)
        events.append(("persistState", data.is_migrating))

    async with make_manager() as manager:
        manager.on(event=Event.ABORTING, listener=on_aborting)
        manager.on(event=Event.PERSIST_STATE, listener=on_persist_state)
        os.kill(os.getpid(), signal.SIGINT)
        await until(lambda: sigint_recorder.received == [signal.SIGINT])
        assert events == [("aborting", EventAbortingData()), ("persistState", False)]
        assert signal.getsignal(signal.SIGINT) is sigint_recorder


async def test_signal_waits_at_most_close_timeout(sigterm_recorder: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    async def stuck() -> None:
        await asyncio.sleep(3600)

    with caplog.at_level(logging.WARNING, logger="recoverable.events"):
        async with make_manager(close_timeout=timedelta(milliseconds=100)) as manager:
            manager.on(event=Event.MIGRATING, listener=stuck)
            os.kill(os.getpid(), signal.SIGTERM)
            await until(lambda: sigterm_recorder.received == [signal.SIGTERM])
    assert any("still running" in r.getMessage() for r in caplog.records)


async def test_second_signal_goes_straight_to_the_previous_handler(
    sigterm_recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    outcome: list[str] = []

    async def stuck() -> None:
        outcome.append("started")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    with caplog.at_level(logging.WARNING, logger="recoverable.events"):
        async with make_manager() as manager:
            manager.on(event=Event.MIGRATING, listener=stuck)
            os.kill(os.getpid(), signal.SIGTERM)
            await until(lambda: outcome == ["started"])
            assert sigterm_recorder.received == []
            os.kill(os.getpid(), signal.SIGTERM)
            # The second signal reached the previous handler without going through the event loop ...
            assert sigterm_recorder.received == [signal.SIGTERM]
            # ... and the first follows once the listener still running is cancelled.
            await until(lambda: sigterm_recorder.received == [signal.SIGTERM, signal.SIGTERM])
            assert outcome == ["started", "cancelled"]
            assert signal.getsignal(signal.SIGTERM) is sigterm_recorder
    assert any("SIGTERM received again" in r.getMessage() for r in caplog.records)


async def test_second_signal_is_delivered_even_while_a_listener_blocks_the_loop(sigint_recorder: Recorder) -> None:
    seen_by_listener: list[list[int]] = []

    def blocking() -> None:
        # Stands for a sync listener stuck in a long computation: the loop cannot run while it does.
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C again
        deadline = time.monotonic() + 10
        while not sigint_recorder.received and time.monotonic() < deadline:
            time.sleep(0.01)
        seen_by_listener.append(list(sigint_recorder.received))

    async with make_manager() as manager:
        manager.on(event=Event.ABORTING, listener=blocking)
        os.kill(os.getpid(), signal.SIGINT)
        await until(lambda: len(sigint_recorder.received) == 2)
    assert seen_by_listener == [[signal.SIGINT]]
