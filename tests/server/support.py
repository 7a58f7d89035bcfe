"""Helpers of the server tests: a store to work in, and the URL of a record."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    import httpx

__all__ = ["new_store", "record_url"]


async def new_store(api: httpx.AsyncClient, name: str = "s") -> str:
    """Create (or find) the store named `name` through the API; return its id."""
    response = await api.post("/v2/key-value-stores", params={"name": name})
    assert response.status_code in (200, 201)
    store_id: str = response.json()["data"]["id"]
    return store_id


def record_url(store_id: str, key: str) -> str:
    """The path of the record `key` of the store `store_id`, the key percent-encoded."""
    return f"/v2/key-value-stores/{store_id}/records/{quote(key, safe='')}"
