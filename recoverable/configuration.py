"""Settings read from `RECOVERABLE_*` environment variables.

| variable | default | meaning |
|---|---|---|
| `RECOVERABLE_STORAGE_DIR` | `./storage` | root folder of the file system storage client |
| `RECOVERABLE_STORAGE_CLIENT` | `file_system` | storage client built when none is passed: `file_system` or `memory` |
| `RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS` | `60000` | period of PERSIST_STATE events of `LocalEventManager` |
| `RECOVERABLE_SYSTEM_INFO_INTERVAL_MILLIS` | `60000` | period of SYSTEM_INFO events of `LocalEventManager` |
| `RECOVERABLE_STATE_TIMEOUT_SECS` | `60` | longest a state load or save may take before it fails |

For the persist interval, `CRAWLEE_PERSIST_STATE_INTERVAL_MILLIS` and `APIFY_PERSIST_STATE_INTERVAL_MILLIS`
are honoured too (in that order, after the `RECOVERABLE_` one), so programs moved from Crawlee keep
their setting.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recoverable.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Configuration"]

StorageClientName = Literal["file_system", "memory"]


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

    persist_state_interval: timedelta = Field(default=timedelta(seconds=60), gt=timedelta(0))
    """How often `LocalEventManager` emits PERSIST_STATE."""

    system_info_interval: timedelta = Field(default=timedelta(seconds=60), gt=timedelta(0))
    """How often `LocalEventManager` emits SYSTEM_INFO."""

    state_timeout: timedelta = Field(default=timedelta(seconds=60), gt=timedelta(0))
    """Longest a single load or save of a `RecoverableState` may take."""

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
        if dir_ := env.get("RECOVERABLE_STORAGE_DIR"):
            values["storage_dir"] = Path(dir_)
        if client := env.get("RECOVERABLE_STORAGE_CLIENT"):
            values["storage_client"] = _storage_client_name(client)
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
            raw = env["RECOVERABLE_STATE_TIMEOUT_SECS"]
            try:
                secs = float(raw)
            except ValueError:
                secs = -1.0
            if not secs > 0:
                raise ConfigurationError(f"RECOVERABLE_STATE_TIMEOUT_SECS={raw!r} is not a positive number of seconds")
            values["state_timeout"] = timedelta(seconds=secs)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:  # pragma: no cover - every field is checked above
            raise ConfigurationError(f"invalid configuration from the environment: {exc}") from exc


def _storage_client_name(raw: str) -> StorageClientName:
    if raw == "file_system":
        return "file_system"
    if raw == "memory":
        return "memory"
    raise ConfigurationError(
        f"RECOVERABLE_STORAGE_CLIENT={raw!r} is not a storage client: use 'file_system' or 'memory'"
    )


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
