"""How a state (a Pydantic model or a dataclass) becomes the JSON of its record, and back, losing nothing."""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import pydantic_core
from pydantic import BaseModel, PydanticUserError, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from recoverable.errors import ConfigurationError, SerializationError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["StateCodec", "model_with_config"]

_T = TypeVar("_T")


class StateCodec(Generic[_T]):
    """The JSON of one kind of state: written by alias, read back refusing what would be lost.

    - Floats that are NaN or infinite are written as `NaN`, `Infinity` and `-Infinity` (which Python's
      `json` and pydantic read back), not as `null`, which would not load into a float field. This holds for
      the fields of the model itself and for values of `Any`-typed containers; a model nested inside keeps
      its own config (pydantic's default writes `null` there).
    - A record holding fields the model does not know (a field renamed in the model) is refused: loading it
      would drop them at the next save. A model that sets `extra` in its config decides for itself; so does
      a dataclass (pydantic ignores unknown fields of one unless its config says otherwise). The values of
      computed fields, which the model writes itself, are not unknown.

    Args:
        default_state: An instance of the state's model or dataclass.
        key: The key of the state's record, for messages.

    Raises:
        ConfigurationError: `default_state` is not a Pydantic model or dataclass instance, or its model does
            not load back what it saves.
    """

    def __init__(self, default_state: _T, *, key: str) -> None:
        self.state_type: type[_T] = type(default_state)
        self._key = key
        name = self.state_type.__name__
        # TypeAdapter accepts plain types too (int, dict, object), so the kind of state is checked first.
        if not isinstance(default_state, BaseModel) and not (
            dataclasses.is_dataclass(default_state) and not isinstance(default_state, type)
        ):
            raise ConfigurationError(
                f"default_state must be an instance of a Pydantic model or a dataclass, not {name}"
            )
        try:
            self._adapter: TypeAdapter[_T] = TypeAdapter(self.state_type)
        except Exception as exc:
            raise ConfigurationError(
                f"default_state must be a Pydantic model or a dataclass, not {name}: {exc}"
            ) from exc
        self._writer = _writer_of(self.state_type, self._adapter)
        self.load = _loader_of(self.state_type, self._adapter)
        """The state of a record's JSON; raises pydantic's `ValidationError` when it does not fit."""

    def dump(self, state: _T) -> bytes:
        """The JSON of a state.

        Raises:
            SerializationError: A field cannot be written as JSON (the message names it); nothing was written.
        """
        try:
            return self._writer(state)
        except (PydanticSerializationError, ValueError, TypeError) as exc:
            raise self._unserializable(state, exc) from exc

    def copy(self, value: _T) -> _T:
        """A deep copy of a state."""
        if isinstance(value, BaseModel):
            return cast("_T", value.model_copy(deep=True))
        return copy.deepcopy(value)

    def check_round_trip(self, state: _T) -> None:
        """Refuse a model whose saved JSON does not load back as the same state.

        A field with only a serialization alias, say, would lose its value at the first restart.

        Raises:
            ConfigurationError: It does not.
        """
        data = self.dump(state)
        name = self.state_type.__name__
        try:
            again = self.dump(self._adapter.validate_json(data))
        except ValidationError as exc:
            raise ConfigurationError(
                f"{name} does not load back what it saves ({exc.errors()[0]['msg']} at "
                f"{exc.errors()[0]['loc']}): a field whose serialization alias differs from its validation alias "
                "would be lost at the first restart; give such fields `alias=` instead"
            ) from exc
        if again != data:
            raise ConfigurationError(
                f"{name} does not load back what it saves: the default state saved as {data[:200]!r} loads back "
                f"as {again[:200]!r}; check the aliases and serializers of the model"
            )

    def problem_of(self, exc: ValidationError, upgraded: str = "") -> tuple[str, list[dict[str, Any]]]:
        """What is wrong with a record that does not load, worded for a message, and pydantic's error list.

        Args:
            exc: The error `load` raised.
            upgraded: Said after the model's name, when the record was upgraded from an older schema first.
        """
        errors: list[dict[str, Any]] = [
            {"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in exc.errors(include_url=False)
        ]
        fields = ", ".join(".".join(str(p) for p in e["loc"]) or "(root)" for e in errors[:10])
        name = self.state_type.__name__
        if any(e["type"] == "json_invalid" for e in errors):
            return f"is not valid JSON ({errors[0]['msg']})", errors
        if all(e["type"] == "extra_forbidden" for e in errors):
            return (
                f"holds fields the model {name} does not know{upgraded}: {fields} (renamed or removed from the "
                "model?). Loading it would drop them at the next save. Rename them in the record or in a "
                "migration, or set extra='ignore' in the model's config if they may be dropped"
            ), errors
        return f"does not fit the model {name}{upgraded} (fields: {fields}; {errors[0]['msg']})", errors

    def _unserializable(self, state: _T, exc: Exception) -> SerializationError:
        """The error of a state that cannot become JSON, naming the fields that cannot."""
        names = (
            list(type(state).model_fields)
            if isinstance(state, BaseModel)
            else [f.name for f in dataclasses.fields(state)]  # type: ignore[arg-type]
        )
        failing = []
        for name in names:
            try:
                self._adapter.dump_python(state, mode="json", include={name})
            except (PydanticSerializationError, ValueError, TypeError):
                failing.append(name)
        fields = f"field(s) {', '.join(failing)}" if failing else "a value"
        return SerializationError(
            f"state {self._key!r} cannot be saved: {fields} of {self.state_type.__name__} cannot be written as JSON "
            f"({exc}); nothing was written, the state stays in memory. Give such fields a type pydantic can "
            "serialise (bytes must be UTF-8, or use Base64Bytes)",
            key=self._key,
        )


def model_with_config(state_type: type[BaseModel], **config: Any) -> type[BaseModel] | None:
    """A subclass of the model with `config` added to its own, or None when pydantic refuses to build one."""
    try:
        return type(
            state_type.__name__,
            (state_type,),
            {"model_config": {**state_type.model_config, **config}, "__module__": state_type.__module__},
        )
    except (PydanticUserError, TypeError):  # a RootModel, say
        return None


def _writer_of(state_type: type[_T], adapter: TypeAdapter[_T]) -> Callable[[_T], bytes]:
    if isinstance(state_type, type) and issubclass(state_type, BaseModel):
        model: type[BaseModel] = state_type
        if "ser_json_inf_nan" not in state_type.model_config:
            model = model_with_config(state_type, ser_json_inf_nan="constants") or state_type
        serializer = model.__pydantic_serializer__
        return lambda state: serializer.to_json(state, by_alias=True)
    return lambda state: adapter.dump_json(state, by_alias=True)


def _loader_of(state_type: type[_T], adapter: TypeAdapter[_T]) -> Callable[[bytes], _T]:
    if not (isinstance(state_type, type) and issubclass(state_type, BaseModel)) or "extra" in state_type.model_config:
        return adapter.validate_json
    strict = model_with_config(state_type, extra="forbid")
    if strict is None:
        return adapter.validate_json
    computed = set(state_type.model_computed_fields) | {
        f.alias for f in state_type.model_computed_fields.values() if f.alias
    }

    def load_model(data: bytes) -> _T:
        try:
            loaded = strict.model_validate_json(data)
        except ValidationError as exc:
            written_by_the_model = {
                e["loc"][0] for e in exc.errors() if e["type"] == "extra_forbidden" and e["loc"][0] in computed
            }
            if not written_by_the_model:
                raise
            # The values of computed fields are the model's own output, recomputed on load: left out.
            record = pydantic_core.from_json(data, allow_inf_nan=True)
            for name in written_by_the_model:
                record.pop(name, None)
            loaded = strict.model_validate_json(pydantic_core.to_json(record, inf_nan_mode="constants"))
        # Of the model's own class, as every other state: the fields were validated above.
        return cast(
            "_T",
            state_type.model_construct(
                _fields_set=loaded.model_fields_set,
                **{name: getattr(loaded, name) for name in state_type.model_fields},
            ),
        )

    return load_model
