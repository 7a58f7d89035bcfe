"""How Python values become bytes with a content type, and back.

| value | stored as | read back as |
|---|---|---|
| dict, list, int, float, bool, None | `application/json` | the same JSON types |
| Pydantic model, dataclass | `application/json` | a dict |
| str | `text/plain; charset=utf-8` | str |
| bytes, bytearray, memoryview | `application/octet-stream` | bytes |

An explicit content type wins: bytes are stored as they are under it, a str is encoded as UTF-8 (and,
under a JSON content type, must already be JSON text), and any other value must have a JSON content type.
JSON is written by pydantic-core; NaN and infinities are kept (as `NaN`, `Infinity`), never turned into
`null`. A value JSON cannot represent is refused with `SerializationError` and nothing is written.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from pydantic_core import SchemaSerializer, core_schema

from recoverable.errors import DeserializationError, SerializationError

__all__ = [
    "BINARY",
    "CRAWLEE_NONE",
    "JSON",
    "TEXT",
    "decode_value",
    "encode_value",
    "is_json",
    "normalize_content_type",
]

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
CRAWLEE_NONE = "application/x-none"
_ANY = SchemaSerializer(core_schema.any_schema())


def normalize_content_type(content_type: str) -> str:
    """Lower-case the media type, parameter names and charset; one space after each `;`.

    Raises:
        ValueError: The text is not `type/subtype` with optional `; name=value` parameters.
    """
    parts = [p.strip() for p in content_type.split(";")]
    media = parts[0].lower()
    kind, slash, sub = media.partition("/")
    if not slash or not kind or not sub or any(c.isspace() for c in media):
        raise ValueError(f"content type {content_type!r} is not of the form 'type/subtype', e.g. 'application/json'")
    params: list[str] = []
    for param in parts[1:]:
        if not param:
            continue
        name, eq, value = param.partition("=")
        if not eq or not name.strip():
            raise ValueError(f"content type {content_type!r} has a parameter {param!r} that is not 'name=value'")
        name = name.strip().lower()
        value = value.strip()
        if name == "charset":
            value = value.strip('"').lower()
        params.append(f"{name}={value}")
    return "; ".join([media, *params])


def is_json(content_type: str) -> bool:
    """Tell whether a (normalized) content type holds JSON."""
    media = content_type.split(";", 1)[0]
    return media == JSON or media.endswith("+json")


def _charset(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name == "charset" and value:
            return value
    return "utf-8"


def _to_json(value: Any, *, key: str, store: str | None, indent: int | None) -> bytes:
    try:
        # A model serialises to JSON with its own config, which turns NaN and infinities into null whatever
        # `inf_nan_mode` says, also when nested in a dict: models become Python values first (field aliases
        # as declared), and only then JSON.
        plain = _ANY.to_python(value, by_alias=True)
        return pydantic_core.to_json(plain, indent=indent, inf_nan_mode="constants")
    except pydantic_core.PydanticSerializationError as exc:
        raise SerializationError(
            f"value for key {key!r} ({type(value).__name__}) cannot be stored as JSON: {exc}. Store JSON types, "
            "a Pydantic model, str or bytes, or pass bytes with an explicit content_type",
            store=store,
            key=key,
        ) from exc


def encode_value(
    value: Any,
    content_type: str | None,
    *,
    key: str,
    store: str | None = None,
    indent: int | None = 2,
) -> tuple[bytes, str]:
    """Turn a value into the bytes and the content type to store.

    Raises:
        SerializationError: The value cannot be stored (under the given content type); nothing was written.
    """
    if content_type is not None:
        try:
            content_type = normalize_content_type(content_type)
        except ValueError as exc:
            raise SerializationError(str(exc), store=store, key=key) from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), content_type or BINARY
    if isinstance(value, str):
        if content_type is None:
            return value.encode("utf-8"), TEXT
        if is_json(content_type):
            try:
                pydantic_core.from_json(value)
            except ValueError as exc:
                raise SerializationError(
                    f"str value for key {key!r} is not JSON text ({exc}), but content type {content_type!r} "
                    "says it is; pass the Python value instead of a str to have it serialised",
                    store=store,
                    key=key,
                ) from None
        try:
            return value.encode(_charset(content_type)), content_type
        except (LookupError, UnicodeEncodeError) as exc:
            raise SerializationError(
                f"str value for key {key!r} cannot be encoded as {content_type!r}: {exc}", store=store, key=key
            ) from None
    if content_type is not None and not is_json(content_type):
        raise SerializationError(
            f"a {type(value).__name__} value for key {key!r} cannot be stored as {content_type!r}: only str and "
            "bytes take a non-JSON content type; omit content_type to store it as JSON",
            store=store,
            key=key,
        )
    return _to_json(value, key=key, store=store, indent=indent), content_type or JSON


def decode_value(data: bytes, content_type: str, *, key: str, store: str | None = None) -> Any:
    """Turn stored bytes back into a value, as their content type says.

    Raises:
        DeserializationError: The bytes are not what the content type says (invalid JSON or text).
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media == CRAWLEE_NONE:
        return None
    if is_json(media):
        try:
            return pydantic_core.from_json(data)
        except ValueError as exc:
            raise DeserializationError(
                f"record {key!r} says it is {content_type!r} but is not valid JSON: {exc}",
                store=store,
                key=key,
            ) from None
    if media.startswith("text/"):
        try:
            return data.decode(_charset(content_type.lower()))
        except (LookupError, UnicodeDecodeError) as exc:
            raise DeserializationError(
                f"record {key!r} says it is {content_type!r} but cannot be decoded as such: {exc}",
                store=store,
                key=key,
            ) from None
    return data
