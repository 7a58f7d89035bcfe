"""Rules for store ids, names, aliases and record keys, shared by every storage client.

Each rule is checked in one place, here, and called at every public entry point: the `KeyValueStore`
facade, and each storage client and store client itself (a program may call those directly, and the server
passes what it receives in URLs to them). A value that breaks a rule is refused before anything is created,
read or written.
"""

from __future__ import annotations

import re

from recoverable.errors import ConfigurationError, InvalidKeyError, InvalidStoreNameError

__all__ = [
    "CRAWLEE_DEFAULT_ALIAS",
    "DEFAULT_ALIAS",
    "MAX_ALIAS_LENGTH",
    "MAX_ID_LENGTH",
    "MAX_KEY_LENGTH",
    "MAX_NAME_LENGTH",
    "store_alias",
    "suffixed_key",
    "validate_key",
    "validate_store_alias",
    "validate_store_id",
    "validate_store_name",
    "validate_store_reference",
]

MAX_NAME_LENGTH = 63
"""Longest store name, as on the Apify platform."""

MAX_ALIAS_LENGTH = 1024
"""Longest store alias, in characters: as long as a record key (Crawlee sets no limit)."""

DEFAULT_ALIAS = "default"
"""The alias of the default store, the one opened with no id, name or alias."""

CRAWLEE_DEFAULT_ALIAS = "__default__"
"""Crawlee's reserved alias of the default store; it opens the default store here too."""

MAX_KEY_LENGTH = 1024
"""Longest record key, in characters. The platform allows 256; our own backends allow more."""

MAX_ID_LENGTH = 255
"""Longest store id. Ours are 17 letters and digits; the platform also takes `username~store-name`."""

_NAME_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?")
_ID_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._~-]*")


def validate_store_name(name: object, *, what: str = "store name") -> str:
    """Check a store name and return it.

    Names are 1 to 63 characters of letters, digits and hyphens, not starting or ending with a hyphen.

    Raises:
        InvalidStoreNameError: The name breaks a rule; the message says which.
    """
    if not isinstance(name, str):
        raise InvalidStoreNameError(f"{what} must be a str, not {type(name).__name__}")
    if not name or len(name) > MAX_NAME_LENGTH or not _NAME_RE.fullmatch(name):
        raise InvalidStoreNameError(
            f"{what} {name!r} is invalid: use 1 to {MAX_NAME_LENGTH} letters, digits and hyphens "
            "(no hyphen at either end), e.g. 'my-crawl-1'",
            store=name,
        )
    return name


def validate_store_id(store_id: object) -> str:
    """Check a store id and return it.

    Ids are 1 to 255 letters, digits and `-_.~`, starting with a letter or a digit: what the storage clients
    make (17 letters and digits) and what the Apify platform takes (`username~store-name` as well), and never
    a path, a path segment such as `..`, or anything a URL, a Redis key or a file name would read otherwise.

    Raises:
        InvalidStoreNameError: The id breaks a rule; the message says which.
    """
    if not isinstance(store_id, str):
        raise InvalidStoreNameError(f"store id must be a str, not {type(store_id).__name__}")
    if len(store_id) > MAX_ID_LENGTH or not _ID_RE.fullmatch(store_id):
        raise InvalidStoreNameError(
            f"store id {store_id!r} is invalid: use 1 to {MAX_ID_LENGTH} letters, digits and '-_.~', starting "
            "with a letter or a digit; ids come from a store's metadata (`KeyValueStore.id`), e.g. "
            "'a1B2c3D4e5F6g7H8i'",
            store=store_id,
        )
    return store_id


def validate_store_alias(alias: object) -> str:
    r"""Check a store alias and return it.

    Crawlee's rule: any text but an empty one, `.` or `..`, or one holding `/`, `\` or NUL; here also at
    most `MAX_ALIAS_LENGTH` characters and no lone surrogate (it could not be stored as UTF-8). An alias is
    data, like a key: every storage client stores it safely whatever characters it holds (the file system
    client never uses it as a path by itself).

    Raises:
        InvalidStoreNameError: The alias breaks a rule; the message says which.
    """
    if not isinstance(alias, str):
        raise InvalidStoreNameError(f"store alias must be a str, not {type(alias).__name__}")
    problem = None
    if not alias:
        problem = "it is empty"
    elif alias in {".", ".."}:
        problem = "it is a directory reference"
    elif "/" in alias or "\\" in alias:
        problem = "it holds a path separator ('/' or '\\')"
    elif "\x00" in alias:
        problem = "it holds a NUL character"
    elif len(alias) > MAX_ALIAS_LENGTH:
        problem = f"it is {len(alias)} characters long"
    else:
        try:
            alias.encode("utf-8")
        except UnicodeEncodeError:
            problem = "it holds a lone surrogate, which is not valid Unicode"
    if problem is not None:
        shown = alias if len(alias) <= 80 else alias[:80] + "..."  # noqa: PLR2004
        raise InvalidStoreNameError(
            f"store alias {shown!r} is invalid: {problem}. An alias is any text of 1 to {MAX_ALIAS_LENGTH} "
            "characters but '.' and '..', without '/', '\\' or NUL, e.g. 'my run #1'",
            store=shown,
        )
    return alias


def store_alias(alias: str | None) -> str:
    """The alias a store is opened by: `DEFAULT_ALIAS` for the default store (no alias, or Crawlee's `__default__`)."""
    return DEFAULT_ALIAS if alias is None or alias == CRAWLEE_DEFAULT_ALIAS else alias


def validate_store_reference(*, id: object, name: object, alias: object) -> None:
    """Check how a store is asked for: at most one of `id`, `name` and `alias` (None means not given), each valid.

    The name `default` is refused: it would be the default store on one backend and another store on the
    next (the default store is opened with no id, name or alias).

    Raises:
        ConfigurationError: More than one of them was given (also a `ValueError`, as Crawlee's).
        InvalidStoreNameError: The id, name or alias breaks its rule; the message says which.
    """
    given = [label for label, value in (("id", id), ("name", name), ("alias", alias)) if value is not None]
    if len(given) > 1:
        quoted = ", ".join(f'"{label}"' for label in given)
        raise ConfigurationError(
            f'Only one of "id", "name", "alias" can be specified, but following arguments were specified: {quoted}; '
            "pass one of them to open a store, or none for the default store"
        )
    if id is not None:
        validate_store_id(id)
    if name is not None:
        validate_store_name(name)
        if name == DEFAULT_ALIAS:
            raise InvalidStoreNameError(
                "store name 'default' is reserved for the default store: open that one with no id, name or alias "
                "(or with alias='default'), or pick another name",
                store=name,
            )
    if alias is not None:
        validate_store_alias(alias)


def suffixed_key(key: str, suffix: str) -> str:
    """The key of a record kept beside `key` (a backup, say): `key` + `suffix`, `key` cut short to fit the limit."""
    return key[: MAX_KEY_LENGTH - len(suffix)] + suffix


def validate_key(key: object, *, store: str | None = None) -> str:
    """Check a record key and return it.

    A key is any non-empty `str` of at most `MAX_KEY_LENGTH` characters without NUL characters or lone
    surrogates. Keys are data: every storage client stores them safely whatever characters they hold.

    Raises:
        InvalidKeyError: The key breaks a rule; the message says which.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(f"a record key must be a str, not {type(key).__name__}", store=store)
    if not key:
        raise InvalidKeyError("a record key must not be empty", store=store, key=key)
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(
            f"record key of {len(key)} characters is too long: at most {MAX_KEY_LENGTH} are allowed",
            store=store,
            key=key[:64] + "...",
        )
    if "\x00" in key:
        raise InvalidKeyError(f"record key {key!r} contains a NUL character", store=store, key=key)
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKeyError(
            f"record key {key!r} is not valid Unicode (it holds a lone surrogate)", store=store, key=key
        ) from None
    return key
