"""Rules for store names, aliases and record keys, shared by every storage client."""

from __future__ import annotations

import re

from recoverable.errors import InvalidKeyError, InvalidStoreNameError

__all__ = ["MAX_KEY_LENGTH", "MAX_NAME_LENGTH", "validate_key", "validate_store_name"]

MAX_NAME_LENGTH = 63
"""Longest store name or alias, as on the Apify platform."""

MAX_KEY_LENGTH = 1024
"""Longest record key, in characters. The platform allows 256; our own backends allow more."""

_NAME_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?")


def validate_store_name(name: object, *, what: str = "store name") -> str:
    """Check a store name or alias and return it.

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
