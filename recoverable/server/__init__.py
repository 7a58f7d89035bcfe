"""The key-value store API v2 of the Apify platform, served over any storage client.

`create_app(storage_client=...)` builds an ASGI app (Starlette); `recoverable serve` runs it with uvicorn.
`HttpStorageClient`, the official `apify-client` and anything else speaking the platform's API can use it:

| request | answer |
|---|---|
| `POST /v2/key-value-stores?name=N` | the named store, created when missing (201) or found (200) |
| `POST /v2/key-value-stores` | a new unnamed store (201) |
| `GET /v2/key-value-stores?offset&limit&desc&unnamed` | a page of stores |
| `GET`, `DELETE /v2/key-value-stores/{id}` | the store object; dropping it (204) |
| `GET /v2/key-value-stores/{id}/keys?exclusiveStartKey&limit&prefix` | a page of keys, in UTF-8 byte order |
| `GET`, `HEAD /v2/key-value-stores/{id}/records/{key}` | the bytes with their Content-Type and an ETag |
| `PUT` (or `POST`), `DELETE .../records/{key}` | 201 with the new ETag; 204 |

`{id}` may be a store id, `~name` or `username~name` (the server has one user, so the user name is not
checked); a name that does not exist is 404, never created. Keys are percent-decoded as UTF-8 from the raw
path, so any key of the library round-trips. Request bodies may be sent with `Content-Encoding: gzip` (any
number of members) or `deflate`. Writes and deletes honour `If-Match` and `If-None-Match` (412
`precondition-failed`, with the current version as the ETag when the record exists). Errors are
`{"error": {"type", "message"}}` with the platform's kebab-case types.

The app is bounded: a body larger than `max_body_size` once decoded is 413; bodies held at once beyond
`max_bytes_in_flight` get 503 `server-busy` with `Retry-After`; a body that stalls past `body_timeout` is
408. `recoverable serve` also closes connections whose request line and headers take longer than
`--header-timeout` (408), which plain uvicorn never does: run the app elsewhere behind a proxy that does.

Needs the `server` extra: `pip install 'recoverable[server]'`.
"""

from recoverable.server._app import create_app

__all__ = ["create_app"]
