"""The key-value store API v2 as the HTTP client and `recoverable serve` both speak it, and what they add to it.

The API is the Apify platform's (see the README and `recoverable.server`). Our server adds, in ways the
platform's clients ignore:

- `ETag: "<version>"` on every record it reads or writes, the record's version with any character that
  may not appear in an entity tag percent-encoded (`%` included, so the encoding reverses exactly);
- `If-Match` and `If-None-Match` on record writes and deletes, answered with 412 `precondition-failed`
  and, when the record exists, its current version as the ETag of that answer;
- the header `X-Recoverable-Server: <version>` on every answer, which tells our client that the server
  does all of the above (the platform sends no ETag, so conditional writes cannot be sent to it).
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote, unquote

__all__ = [
    "CONTENT_HASH_PREFIX",
    "ERROR_INVALID_RECORD_KEY",
    "ERROR_INVALID_REQUEST",
    "ERROR_INVALID_VALUE",
    "ERROR_METHOD_NOT_ALLOWED",
    "ERROR_NOT_FOUND",
    "ERROR_PAGE_NOT_FOUND",
    "ERROR_PRECONDITION_FAILED",
    "ERROR_RATE_LIMIT",
    "ERROR_REQUEST_TOO_LARGE",
    "ERROR_SERVER",
    "ERROR_TOKEN_NOT_PROVIDED",
    "ERROR_TOKEN_NOT_VALID",
    "ERROR_UNSUPPORTED_MEDIA_TYPE",
    "MAX_LIST_LIMIT",
    "SERVER_HEADER",
    "content_hash_version",
    "etag_for",
    "parse_etag",
    "parse_etag_list",
    "path_segment",
]

SERVER_HEADER = "X-Recoverable-Server"
"""Sent by `recoverable serve` on every answer; its presence means ETags and conditional writes work."""

MAX_LIST_LIMIT = 1000
"""Most keys one listing request returns, as on the platform."""

CONTENT_HASH_PREFIX = "sha256:"
"""Prefix of versions the client derives from content when the server sends no ETag."""

ERROR_INVALID_REQUEST = "invalid-request"
ERROR_INVALID_VALUE = "invalid-value"
ERROR_INVALID_RECORD_KEY = "invalid-record-key"
ERROR_TOKEN_NOT_PROVIDED = "token-not-provided"  # noqa: S105 - an error type, not a secret
ERROR_TOKEN_NOT_VALID = "token-not-valid"  # noqa: S105 - same
ERROR_NOT_FOUND = "record-not-found"
ERROR_PAGE_NOT_FOUND = "page-not-found"
ERROR_METHOD_NOT_ALLOWED = "method-not-allowed"
ERROR_PRECONDITION_FAILED = "precondition-failed"
ERROR_REQUEST_TOO_LARGE = "request-too-large"
ERROR_UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"
ERROR_RATE_LIMIT = "rate-limit-exceeded"
ERROR_SERVER = "internal-server-error"

# RFC 9110 etagc: "!" and "#" to "~" (obs-text left out); "%" is encoded so that decoding is exact.
_ETAG_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


def path_segment(text: str) -> str:
    """Percent-encode `text` as one URL path segment: every character but letters, digits and `-._~`.

    The segments `.` and `..` are encoded too (`%2E`), so that no client or proxy removes them as dot segments.
    """
    segment = quote(text, safe="")
    if segment in (".", ".."):
        return segment.replace(".", "%2E")
    return segment


def etag_for(version: str) -> str:
    """Return the strong entity tag (quotes included) that carries `version`."""
    return '"' + quote(version, safe=_ETAG_SAFE) + '"'


def parse_etag(value: str | None) -> str | None:
    """Return the version carried by a strong entity tag, or None for a missing, weak or malformed one."""
    if value is None:
        return None
    value = value.strip()
    if len(value) < 2 or value[0] != '"' or value[-1] != '"' or '"' in value[1:-1]:  # noqa: PLR2004 - two quotes
        return None
    try:
        return unquote(value[1:-1], errors="strict")
    except UnicodeDecodeError:
        return None


def parse_etag_list(value: str) -> list[str] | None:
    """Parse an `If-Match` / `If-None-Match` value: None for `*`, else the versions of its strong tags.

    Weak tags (`W/"..."`) are dropped: conditional writes compare strongly.

    Raises:
        ValueError: The header is not a list of entity tags.
    """
    value = value.strip()
    if value == "*":
        return None
    versions: list[str] = []
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        if item.startswith("W/"):
            if parse_etag(item[2:]) is None:
                raise ValueError(f"malformed entity tag {item!r}")
            continue
        version = parse_etag(item)
        if version is None:
            raise ValueError(f"malformed entity tag {item!r}")
        versions.append(version)
    if not versions and not value:
        raise ValueError("empty entity tag list")
    return versions


def content_hash_version(value: bytes, content_type: str) -> str:
    """The version of a record read from a server that sends no ETag: a hash of its content type and bytes.

    Equal content gives equal versions, so such a version tells whether a record changed, not whether it
    was written again.
    """
    digest = hashlib.sha256(content_type.encode("utf-8") + b"\x00" + value).hexdigest()
    return CONTENT_HASH_PREFIX + digest[:40]
