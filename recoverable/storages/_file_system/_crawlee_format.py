"""How the files of a Crawlee store are spelled: its metadata, the sidecar of each record, and announcements.

Crawlee for Python keeps a record in the file `<quote(key)>` and its key, content type and size in the sidecar
`<quote(key)>.__metadata__.json`; its store's `__metadata__.json` is in snake_case. A change of content type
that this library makes in such a store is announced first in a `.~pending.<hash>` file (see `CrawleeLayout`).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from recoverable.storages._file_system._layout import PENDING_PREFIX, key_hash
from recoverable.storages._file_system._no_follow import read_if_regular

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

__all__ = [
    "crawlee_metadata_json",
    "crawlee_sidecar_json",
    "is_crawlee_metadata",
    "pending_json",
    "pending_name",
    "read_crawlee_sidecar",
    "read_pending",
]


def is_crawlee_metadata(data: Mapping[str, object]) -> bool:
    """Whether a store's `__metadata__.json` is in Crawlee's spelling: Crawlee for Python made the store or opened it.

    Crawlee writes `created_at` (and rewrites the file, in its spelling, whenever it opens or changes the
    store); this library writes `createdAt`.
    """
    return "created_at" in data and "createdAt" not in data


def crawlee_metadata_json(data: Mapping[str, object], now: datetime) -> bytes:
    """The `__metadata__.json` of a Crawlee store as Crawlee writes it: `data`, accessed and modified `now`."""
    fields: dict[str, object] = {"id": data.get("id"), "name": data.get("name")}
    fields.update(data)
    fields["accessed_at"] = now
    fields["modified_at"] = now
    fields.setdefault("created_at", now)
    ordered = {k: fields[k] for k in ("id", "name", "accessed_at", "created_at", "modified_at")} | fields
    return json.dumps(ordered, ensure_ascii=False, indent=2, default=str).encode()


def crawlee_sidecar_json(key: str, content_type: str, size: int) -> bytes:
    """The sidecar of a Crawlee record, as Crawlee writes it."""
    return json.dumps({"key": key, "content_type": content_type, "size": size}, ensure_ascii=False, indent=2).encode()


def read_crawlee_sidecar(name: str, dir_fd: int) -> tuple[str, str] | str | None:
    """The key and content type a Crawlee sidecar names; what it is when it is not a regular file; else None."""
    found = read_if_regular(name, dir_fd)
    if not isinstance(found, bytes):
        return found
    data = _json_object(found)
    if data is None:
        return None
    key = data.get("key")
    content_type = data.get("content_type", data.get("contentType"))
    if not isinstance(key, str) or not isinstance(content_type, str):
        return None
    return key, content_type


def pending_name(record: str) -> str:
    """The file that announces a change of content type of the Crawlee record in file `record`."""
    return PENDING_PREFIX + key_hash(record)


def pending_json(*, record: str, version: str, key: str, content_type: str, size: int) -> bytes:
    """The announcement that file `record`, at `version`, is the record of `key` with a new content type."""
    announcement = {"record": record, "version": version, "key": key, "content_type": content_type, "size": size}
    return json.dumps(announcement, ensure_ascii=False).encode()


def read_pending(name: str, dir_fd: int) -> tuple[str, str, str, str] | None:
    """The record file, its version, key and content type a `.~pending.` file announces; None if unusable."""
    found = read_if_regular(name, dir_fd)
    data = _json_object(found) if isinstance(found, bytes) else None
    if data is None:
        return None
    fields = (data.get("record"), data.get("version"), data.get("key"), data.get("content_type"))
    if not all(isinstance(f, str) and f for f in fields):
        return None
    record, version, key, content_type = (str(f) for f in fields)
    if record != os.path.basename(record) or record in {".", ".."} or name != pending_name(record):
        return None
    return record, version, key, content_type


def _json_object(data: bytes) -> dict[str, Any] | None:
    """The JSON object in a file Crawlee or this module wrote, or None when it holds anything else."""
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
