"""Copies of a record made as hard links, and the version tags that tell them from the record they copy.

`copy_record` copies a record without copying its bytes: the new record file is a hard link to the source's
file, made under a temporary name and renamed into place. A record's version is its file's modification
time, inode and size (`version_of`), which the two names share; so the copy's version also carries a tag of
its own, kept in a small file named after the copy's file name and that file's version (`tag_name`). A file
of that name and version that has a tag is a copy, with version `<version>-<tag>`; any other file has no
tag. Each copy gets a new random tag, so the copy's version never equals the source's, nor a version the
key had before, even when the same source file is linked to the same name again.

The tag is written (durably) before the link is renamed into place: a crash in between leaves the old
record and a tag that names a file version no record has, which the next writer removes. A tag goes when
its file does (a write or delete of the key, a purge). Nothing here follows a symbolic link: the link is made
of the name itself (never of what a symbolic link points to), and is checked to be the very file whose
version was checked before it replaces anything; a tag file that is a link, a folder or another special file
is never read, and its record is refused, as one whose Crawlee sidecar is.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets

from recoverable.storages._file_system._durable_writes import durable_write, remove_if_present
from recoverable.storages._file_system._layout import COPY_PREFIX, TEMP_PREFIX, key_hash
from recoverable.storages._file_system._no_follow import read_if_regular

__all__ = ["LINKS_UNSUPPORTED", "TagNotAFile", "link_temp", "read_tag", "remove_tag", "tag_name", "tagged", "write_tag"]

_TAG_BYTES = 8
_TAG_RE = re.compile(f"[0-9a-f]{{{2 * _TAG_BYTES}}}")

LINKS_UNSUPPORTED = frozenset({errno.EPERM, errno.EMLINK, errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})
"""The errors of a hard link that mean "not here" (a file system without them, too many links, a policy)."""


def tag_name(record: str, version: str) -> str:
    """The file holding the tag of the record file `record` while that file has the version `version`."""
    return COPY_PREFIX + key_hash(f"{record}\x00{version}")


def tagged(version: str, tag: str | None) -> str:
    """The version of a record whose file has `version`: with the tag of a copy, when it is one."""
    return version if tag is None else f"{version}-{tag}"


class TagNotAFile(Exception):  # noqa: N818 - not an error of the library: the caller raises the refusal
    """The tag file of a record is a link, a folder or another special file: the record is refused."""

    def __init__(self, name: str, what: str) -> None:
        super().__init__(name, what)
        self.name = name
        self.what = what


def read_tag(record: str, version: str, folder: int) -> str | None:
    """The tag of the record file `record` at `version` in the open folder, or None when it is no copy.

    Raises:
        TagNotAFile: The tag's file is a link, a folder or another special file (never followed).
    """
    name = tag_name(record, version)
    found = read_if_regular(name, folder)
    if isinstance(found, str):
        raise TagNotAFile(name, found)
    if found is None:
        return None
    try:
        data = json.loads(found)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("record") != record or data.get("version") != version:
        return None
    tag = data.get("tag")
    return tag if isinstance(tag, str) and _TAG_RE.fullmatch(tag) else None


def write_tag(record: str, version: str, folder: int) -> str:
    """Give the record file `record`, once it has `version`, a new tag (durably); return the tag."""
    tag = secrets.token_hex(_TAG_BYTES)
    body = json.dumps({"record": record, "version": version, "tag": tag}, ensure_ascii=False).encode()
    durable_write(folder, tag_name(record, version), body)
    return tag


def remove_tag(record: str, version: str, folder: int) -> None:
    """Remove the tag of the record file `record` at `version`, if it has one (the caller fsyncs the folder)."""
    remove_if_present(tag_name(record, version), folder)


def link_temp(folder: int, source: str, stat: os.stat_result) -> str | None:
    """Hard-link the file `source` of the open folder to a new temporary name; return that name.

    The link is made of the name itself, never of what a symbolic link there points to, and it is kept only
    when it is the very file of `stat` (the one whose version was checked): None when another file took the
    name since. A temporary link left by a crash is removed by the next holder of the writers' lock.

    Raises:
        OSError: The link could not be made; `LINKS_UNSUPPORTED` holds the errors that mean the file system
            (or its policy) allows no hard link here.
    """
    temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    os.link(source, temp, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    try:
        linked = os.stat(temp, dir_fd=folder, follow_symlinks=False)
    except BaseException:
        remove_if_present(temp, folder)
        raise
    if not os.path.samestat(linked, stat):
        remove_if_present(temp, folder)
        return None
    return temp
