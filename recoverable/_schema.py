"""Schema versions of saved states: where a record's version is kept, and upgrading a record step by step.

The version travels in the record's content type, as a parameter: `application/json; schema-version=2`.
Every storage client keeps a content type exactly as written, and readers that only look at the media type
(Crawlee among them) still read the record as JSON. A record without the parameter is of version 1: every
record Crawlee writes, and every record of a state that sets no `schema_version`. Version 1 is written
without the parameter, so such a state writes exactly what it always wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pydantic_core

from recoverable.errors import ConfigurationError
from recoverable.storages._serialization import JSON
from recoverable.storages._validation import suffixed_key

__all__ = ["Migration", "Schema", "SchemaProblem", "backup_key"]

Migration = Callable[[dict[str, Any]], dict[str, Any]]
"""Upgrades the JSON object of a record of one version to that of the next: `migrations[n]` takes version n."""

_PARAMETER = "schema-version"


class SchemaProblem(Exception):  # noqa: N818 - not an error of its own: the state turns it into StateValidationError
    """Why a saved record cannot be upgraded or read, and whose fault it is.

    Attributes:
        in_record: True when the record itself is bad (not JSON, not an object, a malformed version), so
            that `on_invalid="reset"` may set it aside; False when the code cannot handle a good record (it
            is newer than the code, a migration is missing or failed): then the record is never set aside.
    """

    def __init__(self, message: str, *, in_record: bool) -> None:
        super().__init__(message)
        self.in_record = in_record


class Schema:
    """The schema version a state writes, the migrations that bring older records up to it.

    Args:
        version: The version of the model; records are written with it.
        migrations: `migrations[n]` upgrades a version-n record (its JSON object, a dict) to version n+1.
            The keys must run without a gap up to `version - 1`; they may start above 1 when upgrades of
            the oldest records were dropped (such records are then refused with a clear message).

    Raises:
        ConfigurationError: The version or the migrations are not as described.
    """

    def __init__(self, version: int | None, migrations: Mapping[int, Migration] | None) -> None:
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
            raise ConfigurationError(f"schema_version must be an int of at least 1 or None, not {version!r}")
        if migrations is not None and not isinstance(migrations, Mapping):
            raise ConfigurationError(
                f"migrations must be a mapping of int to function, not {type(migrations).__name__}"
            )
        steps = dict(migrations or {})
        if steps and version is None:
            raise ConfigurationError(
                "migrations need a schema_version: pass schema_version=N, the version your model has now"
            )
        current = version or 1
        for number, migration in steps.items():
            if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number < current:
                raise ConfigurationError(
                    f"migrations keys are the versions they upgrade from, 1 to {current - 1} for "
                    f"schema_version={current}; {number!r} is not one of them"
                )
            if not callable(migration):
                raise ConfigurationError(
                    f"migrations[{number}] must be a function from the dict of a version-{number} record to the "
                    f"dict of a version-{number + 1} record, not {type(migration).__name__}"
                )
        if steps:
            oldest = min(steps)
            missing = [n for n in range(oldest, current) if n not in steps]
            if missing:
                raise ConfigurationError(
                    f"migrations has no upgrade from version(s) {', '.join(map(str, missing))}: with schema_version="
                    f"{current}, every version from the oldest upgraded ({oldest}) to {current - 1} needs one"
                )
        self.version = current
        self._steps = steps
        self.content_type = JSON if current == 1 else f"{JSON}; {_PARAMETER}={current}"

    def version_of(self, content_type: str) -> int:
        """The schema version of a record with this content type (1 when it does not say).

        Raises:
            SchemaProblem: The content type names a version that is not a positive integer.
        """
        for parameter in content_type.split(";")[1:]:
            name, _, value = parameter.strip().partition("=")
            if name.strip().lower() == _PARAMETER:
                value = value.strip().strip('"')
                if not (value.isascii() and value.isdigit()) or int(value) < 1:
                    raise SchemaProblem(
                        f"has the content type {content_type!r}, whose schema version {value!r} is not a positive "
                        "integer",
                        in_record=True,
                    )
                return int(value)
        return 1

    def upgrade(self, data: bytes, found: int) -> bytes:
        """The JSON of a version-`found` record brought up to this schema's version, step by step.

        Raises:
            SchemaProblem: The record is newer than this schema, no migration starts at its version, it is
                not a JSON object, or a migration failed or returned something other than a JSON object.
        """
        self.check_upgradable(found)
        if found == self.version:
            return data
        try:
            value = pydantic_core.from_json(data, allow_inf_nan=True)
        except ValueError as exc:
            raise SchemaProblem(f"is of schema version {found} and is not valid JSON ({exc})", in_record=True) from exc
        value = self.upgrade_value(value, found)
        try:
            return pydantic_core.to_json(value, inf_nan_mode="constants")
        except pydantic_core.PydanticSerializationError as exc:
            raise SchemaProblem(
                f"cannot be upgraded: the dict of schema version {self.version} that the migrations returned holds "
                f"a value that is not JSON ({exc})",
                in_record=False,
            ) from exc

    def upgrade_value(self, value: object, found: int) -> dict[str, Any]:
        """A version-`found` JSON object (a dict) brought up to this schema's version, step by step.

        Raises:
            SchemaProblem: A migration starting at its version is missing (checked by `upgrade`), it is not a
                dict, or a migration failed or returned something other than a dict.
        """
        for number in range(found, self.version):
            if not isinstance(value, dict):
                raise SchemaProblem(self._not_a_dict(value, number, found), in_record=number == found)
            try:
                value = self._steps[number](value)
            except Exception as exc:
                raise SchemaProblem(
                    f"cannot be upgraded from schema version {number} to {number + 1}: migrations[{number}] "
                    f"raised {type(exc).__name__}: {exc}",
                    in_record=False,
                ) from exc
        if not isinstance(value, dict):
            raise SchemaProblem(self._not_a_dict(value, self.version, found), in_record=found == self.version)
        return value

    def check_upgradable(self, found: int) -> None:
        """Refuse a record of a version this schema cannot bring up to its own.

        Raises:
            SchemaProblem: The record is newer than this schema, or no migration starts at its version.
        """
        if found > self.version:
            raise SchemaProblem(
                f"was saved with schema version {found}, newer than this program's {self.version} (a newer "
                "release wrote it). It was left untouched: run the newer release, or add the model of version "
                f"{found} and a migration back",
                in_record=False,
            )
        if found != self.version and found not in self._steps:
            given = f"migrations start at version {min(self._steps)}" if self._steps else "no migrations were given"
            raise SchemaProblem(
                f"is of schema version {found}, and there is no migration from it to version {self.version} "
                f"({given}). Add migrations[{found}]",
                in_record=False,
            )

    @staticmethod
    def _not_a_dict(value: object, number: int, found: int) -> str:
        if number == found:
            return f"is of schema version {found} but holds a JSON {type(value).__name__}, not an object (a dict)"
        hint = ": return the dict, even when the migration changed it in place" if value is None else ""
        return (
            f"cannot be upgraded: migrations[{number - 1}] returned {type(value).__name__}, not the dict of a "
            f"version-{number} record{hint}"
        )


def backup_key(key: str, version: int) -> str:
    """The key under which a record of `version` is kept, as it was, when it is upgraded."""
    return suffixed_key(key, f".schema-v{version}-backup")
