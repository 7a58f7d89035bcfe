"""The one mapping of backend failures to the library's errors, which every storage client uses."""

from __future__ import annotations

import pytest

from recoverable.errors import InvalidKeyError, StorageBackendError, StoreLockedError
from recoverable.storages._backend_errors import MAX_KEY_CHARS, Backend, shown_key

BACKEND = Backend(
    where="on Example at example://db", hint="check the example", failures=(OSError,), secrets=["s3cret", None, ""]
)


def test_a_failure_becomes_a_backend_error_naming_action_record_store_place_cause_and_hint() -> None:
    with pytest.raises(StorageBackendError) as caught, BACKEND.mapped("write", store="crawl", key="STATE"):
        raise ConnectionResetError(104, "reset by peer with password s3cret")
    error = caught.value
    assert str(error) == (
        "could not write record 'STATE' of key-value store 'crawl' on Example at example://db: "
        "ConnectionResetError: [Errno 104] reset by peer with password *** (check the example)"
    )
    assert (error.store, error.key) == ("crawl", "STATE")
    assert isinstance(error.__cause__, ConnectionResetError)


def test_the_library_s_own_errors_and_other_exceptions_pass_through() -> None:
    own = InvalidKeyError("bad key", store="crawl", key="k")
    with pytest.raises(InvalidKeyError) as caught, BACKEND.mapped("write"):
        raise own
    assert caught.value is own
    with pytest.raises(KeyError), BACKEND.mapped("write"):
        raise KeyError("not a failure of the backend")


def test_long_keys_and_causes_are_shortened() -> None:
    key = "k" * 1024
    assert shown_key(key) == "k" * MAX_KEY_CHARS + "..."
    assert shown_key("short") == "short"
    with pytest.raises(StorageBackendError) as caught, BACKEND.mapped("read", key=key):
        raise OSError("x" * 5000)
    assert len(str(caught.value)) < 800


def test_a_backend_may_give_a_more_precise_error() -> None:
    def locked(exc: BaseException, action: str, what: str, store: str | None, key: str | None) -> StoreLockedError:
        return StoreLockedError(f"could not {action}{what}: locked ({exc})", store=store, key=key, holder_pid=7)

    backend = Backend(where="in x", hint="h", failures=(OSError,), special=locked)
    with pytest.raises(StoreLockedError) as caught, backend.mapped("write", store="s"):
        raise OSError("busy")
    assert caught.value.holder_pid == 7
    assert str(caught.value) == "could not write key-value store 's': locked (busy)"
