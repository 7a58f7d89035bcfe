"""The event manager of a program running on the Apify platform: events from the platform's websocket."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Self

from typing_extensions import override

from recoverable._backoff import backoff_delay
from recoverable.configuration import Configuration
from recoverable.errors import ConfigurationError, MissingDependencyError
from recoverable.events._event import Event, EventPersistStateData, parse_platform_message
from recoverable.events._event_manager import EventManager, _check_positive

if TYPE_CHECKING:
    from types import TracebackType

    from websockets.asyncio.client import connect

__all__ = ["PlatformEventManager"]

logger = logging.getLogger(__name__)

_FIRST_RECONNECT_DELAY_SECS = 0.1
_MAX_MESSAGE_BYTES = 1024 * 1024


class PlatformEventManager(EventManager):
    """The event manager of a program run by the Apify platform (or anything speaking its event websocket).

    While active, in addition to the periodic PERSIST_STATE of `EventManager`, it keeps a websocket open to
    `url` and emits every event the platform sends there (`persistState`, `systemInfo`, `migrating`,
    `aborting`, `exit`, as JSON `{"name", "createdAt", "data"}`). On `migrating` it emits
    `Event.MIGRATING` and then `Event.PERSIST_STATE` with `is_migrating=True`, so that every state is saved
    before the process moves to another machine.

    The connection is made in the background: entering does not wait for it. When it cannot be made or is
    lost, the manager logs a warning and tries again after an exponential backoff with jitter (from 0.1 s
    up to `reconnect_max_delay`), and starts from the shortest delay again after each successful
    connection. Meanwhile the periodic PERSIST_STATE goes on. Messages that are not valid events are
    logged and skipped. Exiting closes the connection, then does what `EventManager` does (a last
    PERSIST_STATE, waiting for the listeners).

    Args:
        url: The websocket, `ws://` or `wss://`. Defaults to `ACTOR_EVENTS_WEBSOCKET_URL`, which the
            platform sets for every run.
        persist_state_interval: Period of the local PERSIST_STATE. Defaults to
            `Configuration.persist_state_interval`.
        close_timeout: How long exiting waits for listeners before cancelling them; `None` waits.
        reconnect_max_delay: The longest wait between two connection attempts.
        configuration: Where defaults come from; `Configuration.from_env()` when omitted and needed.

    Raises:
        ConfigurationError: No URL was given or configured, it is not a websocket URL, or an interval is
            not positive.
        MissingDependencyError: The `websockets` package is not installed.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        persist_state_interval: timedelta | None = None,
        close_timeout: timedelta | None = None,
        reconnect_max_delay: timedelta = timedelta(seconds=30),
        configuration: Configuration | None = None,
    ) -> None:
        if url is None:
            configuration = configuration or Configuration.from_env()
            url = configuration.events_websocket_url
        if not url:
            raise ConfigurationError(
                "PlatformEventManager needs the platform's event websocket: pass url= or set "
                "ACTOR_EVENTS_WEBSOCKET_URL (the Apify platform sets it for every run); outside the "
                "platform, use LocalEventManager"
            )
        if not url.startswith(("ws://", "wss://")):
            raise ConfigurationError(f"the event websocket URL must start with ws:// or wss://, got {url!r}")
        _check_positive("reconnect_max_delay", reconnect_max_delay)
        _import_websockets()
        super().__init__(
            persist_state_interval=persist_state_interval, close_timeout=close_timeout, configuration=configuration
        )
        self._url = url
        self._reconnect_max_delay = reconnect_max_delay.total_seconds()
        self._connection_task: asyncio.Task[None] | None = None
        self._connected = False

    @property
    def url(self) -> str:
        """The websocket the events come from."""
        return self._url

    @property
    def connected(self) -> bool:
        """True while the websocket is open."""
        return self._connected

    @override
    async def __aenter__(self) -> Self:
        """Activate the manager: start the periodic PERSIST_STATE and connect to the websocket in the background.

        Raises:
            RuntimeError: The manager is already active.
        """
        await super().__aenter__()
        self._connection_task = asyncio.get_running_loop().create_task(
            self._receive_forever(), name="recoverable platform events websocket"
        )
        return self

    @override
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        exc_traceback: TracebackType | None,
    ) -> None:
        """Deactivate the manager: close the websocket, then as `EventManager.__aexit__`.

        Raises:
            RuntimeError: The manager is not active.
        """
        task, self._connection_task = self._connection_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await super().__aexit__(exc_type, exc_value, exc_traceback)

    async def _receive_forever(self) -> None:
        connect, websocket_error = _import_websockets()
        failures = 0
        while True:
            try:
                async with connect(self._url, max_size=_MAX_MESSAGE_BYTES, proxy=None) as connection:
                    self._connected = True
                    failures = 0
                    logger.info("Connected to the platform event websocket %s", self._url)
                    async for message in connection:
                        self._handle(message)
                logger.warning("The platform event websocket %s was closed; reconnecting", self._url)
            except (OSError, TimeoutError, websocket_error) as exc:
                failures += 1
                logger.warning(
                    "The platform event websocket %s failed (%s: %s); attempt %d to reconnect",
                    self._url,
                    type(exc).__name__,
                    exc,
                    failures,
                )
            except Exception:
                # Whatever went wrong, the events must keep coming once it is fixed: log it and go on trying.
                failures += 1
                logger.exception("The platform event websocket %s failed unexpectedly; reconnecting", self._url)
            finally:
                self._connected = False
            await asyncio.sleep(self._reconnect_delay(failures))

    def _reconnect_delay(self, failures: int) -> float:
        return backoff_delay(failures, first=_FIRST_RECONNECT_DELAY_SECS, maximum=self._reconnect_max_delay)

    def _handle(self, message: str | bytes) -> None:
        try:
            event, data = parse_platform_message(message)
        except ValueError as exc:
            logger.warning("Skipped a message of the platform event websocket: %s", exc)
            return
        logger.debug("Platform event %s: %r", event.value, data)
        self.emit(event=event, event_data=data)
        if event is Event.MIGRATING:
            self.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData(is_migrating=True))


def _import_websockets() -> tuple[type[connect], type[Exception]]:
    """The websocket client of the optional `websockets` package and its base exception, or a clear error.

    Raises:
        MissingDependencyError: websockets (13 or newer, for its asyncio API) is not installed.
    """
    try:
        from websockets.asyncio.client import connect  # noqa: PLC0415 - an optional dependency
        from websockets.exceptions import WebSocketException  # noqa: PLC0415
    except ImportError as exc:
        raise MissingDependencyError(
            "PlatformEventManager needs the websockets package (13 or newer): pip install 'recoverable[platform]'"
        ) from exc
    return connect, WebSocketException
