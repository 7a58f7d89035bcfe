r"""How keys, content types and store names become file names, and back.

The layout of a storage folder (`RECOVERABLE_STORAGE_DIR`, default `./storage`):

```
key_value_stores/
  default/                       the default store (opened with no id, name or alias)
  my-crawl/                      a named store
  _alias_<alias>/                a store opened by alias
  <store>/__metadata__.json      the store's id, name and creation time (written once)
  <store>/<key>.json             a record with content type application/json, its bytes as written
  <store>/<key>.txt              text/plain; charset=utf-8
  <store>/<key>.bin              application/octet-stream
  <store>/<key>.html, .csv, ...  the other types of the table `_EXTENSIONS` below
  <store>/<key>.ct~<type>        any content type not in that table, percent-encoded after `ct~`
  <store>/.keys/<hash>           the full key of a record whose encoded key is too long for a file name
  <store>/.lock                  taken by writers (flock) so that conditional writes are atomic
```

A key is percent-encoded: letters, digits and `-_.!'()` stay as they are, every other byte of its
UTF-8 form becomes `%XX`, so no key can name a path outside its store (`/`, `\`, NUL and leading
dots are never a problem: a record file always ends with an extension the library chose). On a
case-insensitive file system upper-case letters are encoded too, so `State` and `state` stay two keys.
A key whose encoded form would make a file name longer than 240 bytes is stored as a readable prefix,
`~` and a hash, and its full text is kept once in `.keys/<hash>`.

Every file and folder of a store above is a regular file or a folder, never a link: what is found instead
is refused, never followed (`recoverable.storages._file_system._no_follow`).
"""

from __future__ import annotations

import hashlib
import string

__all__ = [
    "CRAWLEE_SIDECAR_SUFFIX",
    "KEYS_DIR",
    "LOCK_FILE",
    "METADATA_FILE",
    "NEW_PREFIX",
    "TEMP_PREFIX",
    "alias_dir_name",
    "content_type_from_extension",
    "decode_stem",
    "encode_key",
    "extension_for",
    "split_record_name",
]

METADATA_FILE = "__metadata__.json"
CRAWLEE_SIDECAR_SUFFIX = ".__metadata__.json"
LOCK_FILE = ".lock"
KEYS_DIR = ".keys"
TEMP_PREFIX = ".~tmp."
NEW_PREFIX = ".~new."
DEFAULT_STORE_DIR = "default"
_MAX_NAME_BYTES = 240
_HASHED_PREFIX_CHARS = 80

_SAFE = frozenset(string.ascii_letters + string.digits + "-_.!'()")
_SAFE_CASE_INSENSITIVE = _SAFE - frozenset(string.ascii_uppercase)
_RESERVED = "__metadata__"

_EXTENSIONS: dict[str, str] = {
    "application/json": "json",
    "text/plain; charset=utf-8": "txt",
    "application/octet-stream": "bin",
    "text/html; charset=utf-8": "html",
    "text/csv; charset=utf-8": "csv",
    "text/markdown; charset=utf-8": "md",
    "application/xml": "xml",
    "application/pdf": "pdf",
    "application/gzip": "gz",
    "application/zip": "zip",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/svg+xml": "svg",
}
_CONTENT_TYPES = {ext: ct for ct, ext in _EXTENSIONS.items()}
_CT_PREFIX = "ct~"


def _percent_encode(text: str, safe: frozenset[str]) -> str:
    out: list[str] = []
    for char in text:
        if char in safe:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def _percent_decode(text: str) -> str:
    if "%" not in text:
        return text
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or not all(c in string.hexdigits for c in pair):  # noqa: PLR2004
                raise ValueError(f"{text!r} is not percent-encoded")
            raw += bytes.fromhex(pair)
            i += 3
        else:
            raw += text[i].encode("utf-8")
            i += 1
    return raw.decode("utf-8")


def key_hash(key: str) -> str:
    """Return the hash that names a long key's entry in `.keys/`."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def encode_key(key: str, *, case_insensitive: bool, extension: str = "") -> tuple[str, bool]:
    """Return the file-name stem of `key` and whether it is the hashed form of a long key.

    `extension` is the one the record file gets: stem, dot and extension together stay within 240 bytes.
    """
    stem = _percent_encode(key, _SAFE_CASE_INSENSITIVE if case_insensitive else _SAFE)
    # The store's own metadata file and Crawlee's sidecars contain this word; a key never spells it.
    stem = stem.replace(_RESERVED, "%5F" + _RESERVED[1:])
    # Room for the extension is 64 bytes, or more for a long `ct~` one, so that the name fits.
    room = _MAX_NAME_BYTES - 1 - max(64, len(extension))
    if len(stem) <= room:
        return stem, False
    prefix = stem[: max(0, min(_HASHED_PREFIX_CHARS, room - 1 - len(key_hash(key))))]
    # Never cut a %XX escape in half.
    cut = prefix.rfind("%", len(prefix) - 2)
    if cut != -1:
        prefix = prefix[:cut]
    return f"{prefix}~{key_hash(key)}", True


def decode_stem(stem: str) -> tuple[str | None, str | None]:
    """Return `(key, None)` for a plain stem, or `(None, hash)` for the hashed form of a long key.

    A stem that no key encodes to (a file put in the folder by hand) gives `(None, None)`.
    """
    if "~" in stem:
        return None, stem.rsplit("~", 1)[1]
    try:
        return _percent_decode(stem), None
    except ValueError:  # also UnicodeDecodeError
        return None, None


def extension_for(content_type: str) -> str:
    """Return the file extension (without the dot) that records `content_type`."""
    known = _EXTENSIONS.get(content_type)
    if known is not None:
        return known
    return _CT_PREFIX + _percent_encode(content_type, frozenset(string.ascii_letters + string.digits + "-_"))


def content_type_from_extension(extension: str) -> str | None:
    """Return the content type an extension records, or None when it is not one of ours."""
    if extension.startswith(_CT_PREFIX):
        try:
            return _percent_decode(extension[len(_CT_PREFIX) :])
        except (ValueError, UnicodeDecodeError):
            return None
    return _CONTENT_TYPES.get(extension)


def split_record_name(name: str) -> tuple[str, str] | None:
    """Split a record file name into `(stem, content type)`, or None when the file is not a record of ours."""
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or name.startswith(TEMP_PREFIX):
        return None
    content_type = content_type_from_extension(extension)
    if content_type is None:
        return None
    return stem, content_type


def alias_dir_name(alias: str) -> str:
    """Return the folder name of the store opened by `alias` (`default` for the default store)."""
    return DEFAULT_STORE_DIR if alias == "default" else f"_alias_{alias}"
