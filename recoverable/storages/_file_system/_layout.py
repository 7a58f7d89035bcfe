r"""How keys, content types and store names become file names, and back.

The layout of a storage folder (`RECOVERABLE_STORAGE_DIR`, default `./storage`):

```
key_value_stores/
  default/                       the default store (opened with no id, name or alias)
  my-crawl/                      a named store
  _alias_<alias>/                a store opened by alias, the alias percent-encoded (`alias_dir_name`)
  <store>/__metadata__.json      the store's id, name and creation time (written once)
  <store>/<key>.json             a record with content type application/json, its bytes as written
  <store>/<key>.txt              text/plain; charset=utf-8
  <store>/<key>.bin              application/octet-stream
  <store>/<key>.html, .csv, ...  the other types of the table `_EXTENSIONS` below
  <store>/<key>.ct~<type>        any content type not in that table, percent-encoded after `ct~`
  <store>/.keys/<hash>           the full key of a record whose encoded key is too long for a file name
  <store>/.lock                  taken by writers (flock) so that conditional writes are atomic
  <store>/.~copy.<hash>          the version tag of a record that `copy_record` made a hard link of another
```

A store of Crawlee for Python (its `__metadata__.json` in Crawlee's spelling) keeps Crawlee's layout instead:
`<store>/<quote(key)>` and its sidecar `<quote(key)>.__metadata__.json` (`crawlee_record_name`), with
`.~pending.<hash>` announcing a change of content type under way and `.~key.<hash>` holding a long key
that Crawlee cannot name (see `StoreDir.write`).

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
from urllib.parse import quote

__all__ = [
    "COPY_PREFIX",
    "CRAWLEE_SIDECAR_SUFFIX",
    "KEYS_DIR",
    "LOCK_FILE",
    "LONG_KEY_PREFIX",
    "METADATA_FILE",
    "NEW_PREFIX",
    "PENDING_PREFIX",
    "TEMP_PREFIX",
    "alias_dir_name",
    "alias_from_dir_name",
    "content_type_from_extension",
    "crawlee_alias_dir_name",
    "crawlee_record_name",
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
ALIAS_PREFIX = "_alias_"
PENDING_PREFIX = ".~pending."
LONG_KEY_PREFIX = ".~key."
COPY_PREFIX = ".~copy."
_MAX_FILE_NAME_BYTES = 255
_MAX_ALIAS_ENCODED_BYTES = 200
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
    if safe.issuperset(text):
        return text
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


def encode_key(key: str, *, case_insensitive: bool, extension: str = "", hashed: bool = False) -> tuple[str, bool]:
    """Return the file-name stem of `key` and whether it is the hashed form of a long key.

    `extension` is the one the record file gets: stem, dot and extension together stay within 240 bytes.
    `hashed` asks for the hashed form whatever the key's length (its full text then goes to `.keys/` too).
    """
    stem = _percent_encode(key, _SAFE_CASE_INSENSITIVE if case_insensitive else _SAFE)
    # The store's own metadata file and Crawlee's sidecars contain this word; a key never spells it.
    stem = stem.replace(_RESERVED, "%5F" + _RESERVED[1:])
    # Room for the extension is 64 bytes, or more for a long `ct~` one, so that the name fits.
    room = _MAX_NAME_BYTES - 1 - max(64, len(extension))
    if len(stem) <= room and not hashed:
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
    """Return the folder name of the store opened by `alias` (`default` for the default store).

    `_alias_` and the alias percent-encoded as keys are (letters, digits and `-_.!'()` stay, every other
    byte of its UTF-8 form becomes `%XX`), so an alias is never a path, never hidden, and never the folder
    of a named store (a name holds no `_`). An alias that is a valid store name keeps its old folder,
    `_alias_<alias>`. One whose encoded form is longer than 200 bytes is a readable prefix, `~` and a hash
    (an encoded alias never holds `~`); the store's `__metadata__.json` records the alias in full.
    """
    if alias == DEFAULT_STORE_DIR:
        return DEFAULT_STORE_DIR
    encoded = _percent_encode(alias, _SAFE)
    if len(encoded) > _MAX_ALIAS_ENCODED_BYTES:
        prefix = encoded[:_HASHED_PREFIX_CHARS]
        cut = prefix.rfind("%", len(prefix) - 2)
        if cut != -1:
            prefix = prefix[:cut]
        encoded = f"{prefix}~{key_hash(alias)}"
    return ALIAS_PREFIX + encoded


def alias_from_dir_name(folder: str) -> str | None:
    """Return the alias whose folder is `folder`, or None: not an alias folder, or the hashed form of a long one."""
    if folder == DEFAULT_STORE_DIR:
        return DEFAULT_STORE_DIR
    if not folder.startswith(ALIAS_PREFIX) or "~" in folder:
        return None
    try:
        alias = _percent_decode(folder[len(ALIAS_PREFIX) :])
    except ValueError:  # also UnicodeDecodeError
        return None
    return alias if alias and alias_dir_name(alias) == folder else None


def crawlee_alias_dir_name(alias: str) -> str | None:
    r"""Return the folder Crawlee for Python gives the store of `alias`, when this client may look there.

    Crawlee names it by the alias itself. The alias rule already keeps it one path component (no `/`, `\`,
    NUL, `.` or `..`); the folders this client keeps for itself are left out (`default`, `_alias_...`, its
    temporary `.~...` folders), and so is a name too long to exist. The folder is used only when it holds
    a store that Crawlee made and that has no name (checked by the caller).
    """
    if (
        alias == DEFAULT_STORE_DIR
        or alias.startswith((ALIAS_PREFIX, ".~"))
        or len(alias.encode("utf-8")) > _MAX_FILE_NAME_BYTES
    ):
        return None
    return alias


def crawlee_record_name(key: str) -> str | None:
    """Return the file Crawlee for Python keeps the record of `key` in, or None when it cannot keep it.

    Crawlee names a record file by the key percent-encoded with `urllib.parse.quote(key, safe="")` and puts
    its sidecar beside it. A key is left to this library's own layout when that file and its sidecar would
    be too long a name, or when the file would be `.`, `..`, a sidecar, the store's `__metadata__.json`,
    or one of this library's own files (`.lock`, `.keys`, names starting with `.~`).
    """
    name = quote(key, safe="")
    if (
        name in {".", "..", METADATA_FILE, LOCK_FILE, KEYS_DIR}
        or name.startswith(".~")
        or name.endswith(CRAWLEE_SIDECAR_SUFFIX)
        or len(name.encode("utf-8")) + len(CRAWLEE_SIDECAR_SUFFIX) > _MAX_FILE_NAME_BYTES
    ):
        return None
    return name
