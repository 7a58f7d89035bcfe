"""Settings read from `RECOVERABLE_*` environment variables.

| variable | default | meaning |
|---|---|---|
| `RECOVERABLE_STORAGE_DIR` | `./storage` | root folder of the file system storage client |
| `RECOVERABLE_STORAGE_CLIENT` | `file_system` | default client: `file_system`, `memory`, `redis`, `sql` or `http` |
| `RECOVERABLE_REDIS_URL` | none | server of the Redis storage client, e.g. `redis://localhost:6379/0` |
| `RECOVERABLE_SQL_URL` | none | database of the SQL storage client, e.g. `sqlite+aiosqlite:///state.db` |
| `RECOVERABLE_HTTP_URL` | none | server of the HTTP storage client, e.g. `http://10.0.0.5:8321` |
| `RECOVERABLE_HTTP_TOKEN` | none | bearer token the HTTP storage client sends, and `recoverable serve` requires |
| `RECOVERABLE_HTTP_TIMEOUT_SECS` | `30` | longest the HTTP storage client waits on the network per attempt |
| `ACTOR_EVENTS_WEBSOCKET_URL` | none | the platform's event websocket, read by `PlatformEventManager` |
| `RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS` | `60000` | period of PERSIST_STATE events of `LocalEventManager` |
| `RECOVERABLE_SYSTEM_INFO_INTERVAL_MILLIS` | `60000` | period of SYSTEM_INFO events of `LocalEventManager` |
| `RECOVERABLE_STATE_TIMEOUT_SECS` | `60` | longest a state load or save may take before it fails |
| `RECOVERABLE_PURGE_ON_START` | `false` | empty the default store and alias stores when a program first opens them |

For the storage folder, `CRAWLEE_STORAGE_DIR` and `APIFY_LOCAL_STORAGE_DIR` are honoured too, and for the
persist interval `CRAWLEE_PERSIST_STATE_INTERVAL_MILLIS` and `APIFY_PERSIST_STATE_INTERVAL_MILLIS`: each
checked in that order, after the `RECOVERABLE_` one, so programs moved from Crawlee keep their settings
(and a Crawlee crawler and the library's states share one storage folder). An empty storage folder
variable counts as unset.
"""

from __future__ import annotations

import difflib
import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recoverable.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Configuration"]

StorageClientName = Literal["file_system", "memory", "redis", "sql", "http"]

_URL_SETTINGS = {"RECOVERABLE_REDIS_URL": "redis_url", "RECOVERABLE_SQL_URL": "sql_url"}


class Configuration(BaseModel):
    """Settings of the library; `Configuration.from_env()` reads them from the environment.

    Build one by hand to override the environment in code:
    `Configuration(storage_dir=Path("/data/state"))`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    storage_dir: Path = Path("./storage")
    """Root folder of the file system storage client."""

    storage_client: StorageClientName = "file_system"
    """Storage client built when a store is opened without one."""

    redis_url: str | None = None
    """Server of the Redis storage client (`RECOVERABLE_REDIS_URL`)."""

    sql_url: str | None = None
    """Database of the SQL storage client (`RECOVERABLE_SQL_URL`)."""

    http_url: str | None = None
    """Server of the HTTP storage client (`RECOVERABLE_HTTP_URL`)."""

    http_token: str | None = Field(default=None, repr=False)
    """Bearer token of the HTTP storage client and of `recoverable serve` (`RECOVERABLE_HTTP_TOKEN`)."""

    http_timeout: timedelta = Field(default=timedelta(seconds=30), gt=timedelta(0))
    """Longest the HTTP storage client waits on the network per attempt (`RECOVERABLE_HTTP_TIMEOUT_SECS`)."""

    events_websocket_url: str | None = None
    """The platform's event websocket, for `PlatformEventManager` (`ACTOR_EVENTS_WEBSOCKET_URL`)."""

    persist_state_interval: timedelta = Field(default=timedelta(seconds=60), gt=timedelta(0))
    """How often `LocalEventManager` emits PERSIST_STATE."""

    system_info_interval: timedelta = Field(default=timedelta(seconds=60), gt=timedelta(0))
    """How often `LocalEventManager` emits SYSTEM_INFO."""

    state_timeout: timedelta = Field(default=timedelta(seconds=60), gt=timedelta(0))
    """Longest a single load or save of a `RecoverableState` may take."""

    purge_on_start: bool = False
    """Empty the default store and alias stores the first time `KeyValueStore.open()` opens them on a storage
    client (`RECOVERABLE_PURGE_ON_START`). Off by default, unlike Crawlee: a recoverable state must survive a
    restart, and a purge at start would throw away the very state the restart should resume from."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Configuration:
        """Build the configuration from environment variables (see the module docstring).

        Args:
            environ: The variables to read; `os.environ` when omitted.

        Raises:
            ConfigurationError: A variable holds a value that is not valid; the message names it.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for var in ("RECOVERABLE_STORAGE_DIR", "CRAWLEE_STORAGE_DIR", "APIFY_LOCAL_STORAGE_DIR"):
            if dir_ := env.get(var):
                values["storage_dir"] = Path(dir_)
                break
        if client := env.get("RECOVERABLE_STORAGE_CLIENT"):
            values["storage_client"] = _storage_client_name(client)
        values.update({field: env[var] for var, field in _URL_SETTINGS.items() if env.get(var)})
        values.update(_http_settings(env))
        for var in (
            "RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS",
            "CRAWLEE_PERSIST_STATE_INTERVAL_MILLIS",
            "APIFY_PERSIST_STATE_INTERVAL_MILLIS",
        ):
            if var in env:
                values["persist_state_interval"] = _positive_millis(env, var)
                break
        if "RECOVERABLE_SYSTEM_INFO_INTERVAL_MILLIS" in env:
            values["system_info_interval"] = _positive_millis(env, "RECOVERABLE_SYSTEM_INFO_INTERVAL_MILLIS")
        if "RECOVERABLE_STATE_TIMEOUT_SECS" in env:
            values["state_timeout"] = _positive_secs(env, "RECOVERABLE_STATE_TIMEOUT_SECS")
        if "RECOVERABLE_PURGE_ON_START" in env:
            values["purge_on_start"] = _flag(env, "RECOVERABLE_PURGE_ON_START")
        try:
            return cls.model_validate(values)
        except ValidationError as exc:  # pragma: no cover - every field is checked above
            raise ConfigurationError(f"invalid configuration from the environment: {exc}") from exc


def _storage_client_name(raw: str) -> StorageClientName:
    names: tuple[StorageClientName, ...] = get_args(StorageClientName)
    for name in names:
        if raw == name:
            return name
    close = difflib.get_close_matches(raw.strip().lower().replace("-", "_"), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigurationError(
        f"RECOVERABLE_STORAGE_CLIENT={raw!r} is not a storage client{hint}: use one of {', '.join(map(repr, names))}"
    )


def _http_settings(env: Mapping[str, str]) -> dict[str, object]:
    """The settings of the HTTP storage client and of `PlatformEventManager`."""
    values: dict[str, object] = {}
    if http_url := env.get("RECOVERABLE_HTTP_URL"):
        values["http_url"] = http_url
    if http_token := env.get("RECOVERABLE_HTTP_TOKEN"):
        values["http_token"] = http_token
    if "RECOVERABLE_HTTP_TIMEOUT_SECS" in env:
        values["http_timeout"] = _positive_secs(env, "RECOVERABLE_HTTP_TIMEOUT_SECS")
    if events_url := env.get("ACTOR_EVENTS_WEBSOCKET_URL"):
        values["events_websocket_url"] = events_url
    return values


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _flag(env: Mapping[str, str], var: str) -> bool:
    raw = env[var]
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise ConfigurationError(f"{var}={raw!r} is not a boolean: use true or false (also 1/0, yes/no, on/off)")


def _positive_secs(env: Mapping[str, str], var: str) -> timedelta:
    raw = env[var]
    try:
        secs = float(raw)
    except ValueError:
        secs = -1.0
    if not secs > 0 or secs == float("inf"):
        raise ConfigurationError(f"{var}={raw!r} is not a positive number of seconds")
    return timedelta(seconds=secs)


def _positive_millis(env: Mapping[str, str], var: str) -> timedelta:
    raw = env[var]
    try:
        millis = int(raw)
    except ValueError:
        millis = 0
    if millis <= 0:
        raise ConfigurationError(f"{var}={raw!r} is not a positive whole number of milliseconds")
    return timedelta(milliseconds=millis)
