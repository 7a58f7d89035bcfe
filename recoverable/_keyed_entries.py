"""How the entries of a keyed state become the JSON of its records, and back, losing nothing.

- A snapshot part of a `KeyedRecoverableState` is a JSON object of its entries, `{"key": value, ...}`; of a
  `RecoverableSet`, a JSON array of its items.
- A changelog record is a JSON object with a member per part that changed, named `<depth>.<index>` after its
  region: a JSON array of two, what the save set there (an object of entries, or an array of items added)
  and what it deleted (an array of keys or items). A load applies each member to its part whole.
- The value of an entry of a `KeyedRecoverableState` is serialised when it changes (assigned, or at the end
  of its `edit()` block) and kept until the save writes it: a save joins what is ready.

Values are written by alias. Records carry the schema version of the values in their content type, as a
`RecoverableState` record does; an older record is upgraded value by value with the migrations when read.
A value model that does not set `extra` in its config refuses fields it does not know (a field renamed in
the model), as `RecoverableState` does: that check costs a second validation, so it runs only on records
written while the model's fields were different (each record names a digest of them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pydantic_core
from pydantic import BaseModel, PydanticUserError, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from recoverable._schema import Schema, SchemaProblem
from recoverable._state_codec import model_with_config
from recoverable.errors import ConfigurationError, SerializationError

if TYPE_CHECKING:
    from recoverable._keyed_parts import Changes, Region

__all__ = ["ItemEntries", "RecordProblem", "ValueEntries"]

_V = TypeVar("_V")
_T = TypeVar("_T", str, int)


class RecordProblem(Exception):  # noqa: N818 - turned into StateValidationError by the state, with the key
    """A record of a keyed state that cannot be read, and pydantic's errors when there are some."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


def _problem(exc: ValidationError, what: str) -> RecordProblem:
    errors: list[dict[str, Any]] = [
        {"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in exc.errors(include_url=False)
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        return RecordProblem(f"is not valid JSON ({errors[0]['msg']})", errors)
    where = ", ".join(".".join(str(p) for p in e["loc"]) or "(root)" for e in errors[:10])
    return RecordProblem(f"does not fit {what} (at {where}; {errors[0]['msg']})", errors)


class ValueEntries(Generic[_V]):
    """The records of a `KeyedRecoverableState`: str keys, values of `value_type`.

    Args:
        value_type: Any type pydantic can validate and serialise.
        schema: The schema version and migrations of the values.
        key: The state's key, for messages.

    Raises:
        ConfigurationError: pydantic cannot handle `value_type`.
    """

    def __init__(self, value_type: Any, schema: Schema, *, key: str) -> None:
        self._key = key
        self._schema = schema
        self.name = getattr(value_type, "__name__", repr(value_type))
        try:
            self._value: TypeAdapter[_V] = TypeAdapter(value_type)
            self._part: TypeAdapter[dict[str, _V]] = TypeAdapter(dict[str, value_type])
            self._changes: TypeAdapter[dict[str, tuple[dict[str, _V], list[str]]]] = TypeAdapter(
                dict[str, tuple[dict[str, value_type], list[str]]]
            )
        except (PydanticUserError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"value_type {self.name} is not a type pydantic can validate: {exc}") from exc
        self.model_type: type | None = (
            value_type
            if isinstance(value_type, type)
            and (issubclass(value_type, BaseModel) or dataclasses.is_dataclass(value_type))
            else None
        )
        self._strict_part: TypeAdapter[Any] | None = None
        self._strict_changes: TypeAdapter[Any] | None = None
        self._computed: set[str] = set()
        if (
            isinstance(value_type, type)
            and issubclass(value_type, BaseModel)
            and "extra" not in value_type.model_config
        ):
            strict = model_with_config(value_type, extra="forbid")
            if strict is not None:
                self._strict_part = TypeAdapter(dict[str, strict])  # type: ignore[valid-type]
                self._strict_changes = TypeAdapter(dict[str, tuple[dict[str, strict], list[str]]])  # type: ignore[valid-type]
                self._computed = set(value_type.model_computed_fields) | {
                    f.alias for f in value_type.model_computed_fields.values() if f.alias
                }
        self.fields = _digest(self._value)
        """A digest of the values' JSON schema: a record written under another one is checked for unknown fields."""

    def new(self) -> dict[str, _V]:
        return {}

    def dump_value(self, value: _V) -> bytes:
        return self._value.dump_json(value, by_alias=True, warnings="error")

    def dump_part(self, entries: dict[str, _V]) -> bytes:
        """The JSON of a part's entries.

        Raises:
            SerializationError: A value cannot be written as JSON; the message names its key.
        """
        try:
            return self._part.dump_json(entries, by_alias=True, warnings="error")
        except (PydanticSerializationError, ValueError, TypeError) as exc:
            raise self._unserializable(entries, exc) from exc

    def piece(self, key: str, value: _V) -> bytes | None:
        """The JSON member of an entry, `"key":value`, made when it changes; None when it cannot be made now.

        A value that cannot be written (yet) is serialised again by the save, which then says why it cannot.
        """
        try:
            return pydantic_core.to_json(key) + b":" + self._value.dump_json(value, by_alias=True, warnings="error")
        except (PydanticSerializationError, ValueError, TypeError):
            return None

    def dump_changes(self, taken: list[tuple[Region, Changes[Any], dict[str, _V]]]) -> bytes:
        """The JSON of a changelog record: for each part, its region, its changes and its entries now.

        Raises:
            SerializationError: A value cannot be written as JSON; the message names its key.
        """
        members = []
        for (depth, index), changes, entries in taken:
            pieces: dict[str, bytes | None] = changes.set
            missing = [key for key, piece in pieces.items() if piece is None]
            for key in missing:
                pieces[key] = self.piece(key, entries[key])
            failing = {key: entries[key] for key in missing if pieces[key] is None}
            if failing:
                raise self._unserializable(failing, ValueError("see the values named"))
            deleted = pydantic_core.to_json(sorted(changes.deleted, key=str))
            joined = b",".join(piece for piece in pieces.values() if piece is not None)
            members.append(b'"%d.%d":[{%s},%s]' % (depth, index, joined, deleted))
        return b"{" + b",".join(members) + b"}"

    def load_part(self, data: bytes, *, version: int, fields: str | None) -> dict[str, _V]:
        """The entries of a part record.

        Raises:
            RecordProblem: The record is not JSON, or does not fit the value type.
            SchemaProblem: The record cannot be upgraded to this schema version.
        """
        if version != self._schema.version:
            parsed = self._parse(data, version)
            if not isinstance(parsed, dict):
                raise RecordProblem(f"holds a JSON {type(parsed).__name__}, not an object of entries")
            data = self._to_json({k: self._schema.upgrade_value(v, version) for k, v in parsed.items()})
        if self._strict_part is not None and fields != self.fields:
            self._check_known(self._strict_part, data)
        try:
            return self._part.validate_json(data)
        except ValidationError as exc:
            raise _problem(exc, f"the value type {self.name}") from exc

    def load_changes(
        self, data: bytes, *, version: int, fields: str | None
    ) -> dict[str, tuple[dict[str, _V], list[str]]]:
        """What a changelog record set and deleted, part by part (by the region's name, `<depth>.<index>`).

        Raises:
            RecordProblem: The record is not JSON, or does not fit the value type.
            SchemaProblem: The record cannot be upgraded to this schema version.
        """
        if version != self._schema.version:
            parsed = self._parse(data, version)
            if not isinstance(parsed, dict) or not all(
                isinstance(member, list) and len(member) == 2 and isinstance(member[0], dict)  # noqa: PLR2004
                for member in parsed.values()
            ):
                raise RecordProblem("is not a changelog record (a JSON object of arrays of an object and an array)")
            data = self._to_json(
                {
                    region: [{k: self._schema.upgrade_value(v, version) for k, v in upserts.items()}, deletes]
                    for region, (upserts, deletes) in parsed.items()
                }
            )
        if self._strict_changes is not None and fields != self.fields:
            self._check_known(self._strict_changes, data)
        try:
            return self._changes.validate_json(data)
        except ValidationError as exc:
            raise _problem(exc, f"a changelog of {self.name} values") from exc

    def _parse(self, data: bytes, version: int) -> Any:
        self._schema.check_upgradable(version)
        try:
            return pydantic_core.from_json(data, allow_inf_nan=True)
        except ValueError as exc:
            raise RecordProblem(f"is of schema version {version} and is not valid JSON ({exc})") from exc

    @staticmethod
    def _to_json(value: object) -> bytes:
        try:
            return pydantic_core.to_json(value, inf_nan_mode="constants")
        except PydanticSerializationError as exc:
            raise SchemaProblem(
                f"cannot be upgraded: the migrations returned a value that is not JSON ({exc})", in_record=False
            ) from exc

    def _check_known(self, strict: TypeAdapter[Any], data: bytes) -> None:
        """Refuse a record holding fields the value model does not know (the values of computed fields aside)."""
        try:
            strict.validate_json(data)
        except ValidationError as exc:
            unknown = [
                e
                for e in exc.errors(include_url=False)
                if e["type"] == "extra_forbidden" and not (e["loc"] and e["loc"][-1] in self._computed)
            ]
            if unknown:
                where = ", ".join(".".join(str(p) for p in e["loc"]) for e in unknown[:10])
                raise RecordProblem(
                    f"holds fields the model {self.name} does not know: {where} (renamed or removed from the "
                    "model?). Loading it would drop them at the next save. Rename them in a migration "
                    "(schema_version and migrations), or set extra='ignore' in the model's config if they may be "
                    "dropped",
                    [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in unknown],
                ) from exc

    def _unserializable(self, entries: dict[str, _V], exc: Exception) -> SerializationError:
        failing = []
        for key, value in entries.items():
            try:
                self._value.dump_json(value, by_alias=True, warnings="error")
            except (PydanticSerializationError, ValueError, TypeError):
                failing.append(key)
                if len(failing) == 10:  # noqa: PLR2004 - enough to find them
                    break
        keys = ", ".join(map(repr, failing)) or "?"
        return SerializationError(
            f"state {self._key!r} cannot be saved: the value(s) of {keys} cannot be written as JSON as a "
            f"{self.name} (not of that type, or holding what JSON cannot: {exc}); nothing was written, the state "
            "stays in memory and is saved once they are fixed",
            key=self._key,
        )


class ItemEntries(Generic[_T]):
    """The records of a `RecoverableSet`: items of `item_type`, str or int.

    Raises:
        ConfigurationError: `item_type` is neither str nor int.
    """

    fields: str | None = None

    def __init__(self, item_type: type[_T]) -> None:
        if item_type not in (str, int):
            raise ConfigurationError(f"item_type must be str or int, not {item_type!r}")
        self.item_type: type[_T] = item_type
        self._part: TypeAdapter[set[_T]] = TypeAdapter(set[item_type])  # type: ignore[valid-type]
        self._changes: TypeAdapter[dict[str, tuple[set[_T], list[_T]]]] = TypeAdapter(
            dict[str, tuple[set[item_type], list[item_type]]]  # type: ignore[valid-type]
        )

    def new(self) -> set[_T]:
        return set()

    def dump_part(self, entries: set[_T]) -> bytes:
        return self._part.dump_json(entries)

    def dump_changes(self, taken: list[tuple[Region, Changes[Any], set[_T]]]) -> bytes:
        """The JSON of a changelog record: for each part, its region and its changes."""
        members: dict[str, Any] = {
            f"{depth}.{index}": (changes.set, list(changes.deleted)) for (depth, index), changes, _ in taken
        }
        return self._changes.dump_json(members)

    def load_part(self, data: bytes, *, version: int, fields: str | None) -> set[_T]:  # noqa: ARG002 - one shape
        """The items of a part record.

        Raises:
            RecordProblem: The record is not a JSON array of items of the set's type.
        """
        try:
            return self._part.validate_json(data, strict=True)
        except ValidationError as exc:
            raise _problem(exc, f"a set of {self.item_type.__name__}") from exc

    def load_changes(
        self,
        data: bytes,
        *,
        version: int,  # noqa: ARG002 - the records of a set have one version
        fields: str | None,  # noqa: ARG002 - and no fields
    ) -> dict[str, tuple[set[_T], list[_T]]]:
        """What a changelog record added and removed.

        Raises:
            RecordProblem: The record is not a changelog of items of the set's type.
        """
        try:
            return self._changes.validate_json(data, strict=True)
        except ValidationError as exc:
            raise _problem(exc, f"a changelog of {self.item_type.__name__} items") from exc


def _digest(adapter: TypeAdapter[Any]) -> str | None:
    try:
        schema = adapter.json_schema(mode="serialization")
    except Exception:  # noqa: BLE001 - a type without a JSON schema is checked at every load instead
        return None
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()[:16]
