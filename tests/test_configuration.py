"""Settings read from the environment, and the default storage client each one builds."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from recoverable import Configuration, ConfigurationError, HttpStorageClient
from recoverable.storages import KeyValueStore, default_storage_client


def test_defaults_without_any_variable() -> None:
    configuration = Configuration.from_env({})
    assert configuration == Configuration()
    assert configuration.storage_dir == Path("./storage")
    assert configuration.storage_client == "file_system"
    assert configuration.persist_state_interval == timedelta(seconds=60)
    assert configuration.system_info_interval == timedelta(seconds=60)
    assert configuration.state_timeout == timedelta(seconds=60)


def test_every_variable_is_read() -> None:
    configuration = Configuration.from_env(
        {
            "RECOVERABLE_STORAGE_DIR": "/data/state",
            "RECOVERABLE_STORAGE_CLIENT": "sql",
            "RECOVERABLE_REDIS_URL": "redis://127.0.0.1:6379/0",
            "RECOVERABLE_SQL_URL": "sqlite+aiosqlite:///state.db",
            "RECOVERABLE_HTTP_URL": "http://127.0.0.1:8321",
            "RECOVERABLE_HTTP_TOKEN": "secret-token",
            "RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS": "1500",
            "RECOVERABLE_SYSTEM_INFO_INTERVAL_MILLIS": "250",
            "RECOVERABLE_STATE_TIMEOUT_SECS": "2.5",
        }
    )
    assert configuration.storage_dir == Path("/data/state")
    assert configuration.storage_client == "sql"
    assert configuration.redis_url == "redis://127.0.0.1:6379/0"
    assert configuration.sql_url == "sqlite+aiosqlite:///state.db"
    assert configuration.http_url == "http://127.0.0.1:8321"
    assert configuration.http_token == "secret-token"  # noqa: S105 - a test value
    assert "secret-token" not in repr(configuration)
    assert configuration.persist_state_interval == timedelta(milliseconds=1500)
    assert configuration.system_info_interval == timedelta(milliseconds=250)
    assert configuration.state_timeout == timedelta(seconds=2.5)


@pytest.mark.parametrize(
    ("variables", "expected_ms"),
    [
        ({"CRAWLEE_PERSIST_STATE_INTERVAL_MILLIS": "700"}, 700),
        ({"APIFY_PERSIST_STATE_INTERVAL_MILLIS": "800"}, 800),
        ({"APIFY_PERSIST_STATE_INTERVAL_MILLIS": "800", "CRAWLEE_PERSIST_STATE_INTERVAL_MILLIS": "700"}, 700),
        ({"RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS": "600", "CRAWLEE_PERSIST_STATE_INTERVAL_MILLIS": "700"}, 600),
    ],
)
def test_crawlee_and_apify_persist_intervals_are_honoured_in_order(variables: dict[str, str], expected_ms: int) -> None:
    assert Configuration.from_env(variables).persist_state_interval == timedelta(milliseconds=expected_ms)


def test_the_storage_dir_falls_back_to_crawlee_s_then_apify_s_and_ours_wins() -> None:
    env = {"APIFY_LOCAL_STORAGE_DIR": "/apify"}
    assert Configuration.from_env(env).storage_dir == Path("/apify")
    env["CRAWLEE_STORAGE_DIR"] = "/crawlee"
    assert Configuration.from_env(env).storage_dir == Path("/crawlee")
    env["RECOVERABLE_STORAGE_DIR"] = "/ours"
    assert Configuration.from_env(env).storage_dir == Path("/ours")
    env["RECOVERABLE_STORAGE_DIR"] = ""  # empty: unset
    assert Configuration.from_env(env).storage_dir == Path("/crawlee")
    env["CRAWLEE_STORAGE_DIR"] = ""
    assert Configuration.from_env(env).storage_dir == Path("/apify")


async def test_the_default_store_lives_in_crawlee_s_storage_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RECOVERABLE_STORAGE_DIR")
    monkeypatch.setenv("CRAWLEE_STORAGE_DIR", str(tmp_path / "crawlee-storage"))
    configuration = Configuration.from_env()
    store = await KeyValueStore.open(name="shared", configuration=configuration)
    await store.set_value("k", {"v": 1})
    record = tmp_path / "crawlee-storage" / "key_value_stores" / "shared" / "k.json"
    assert json.loads(record.read_bytes()) == {"v": 1}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS", "0"),
        ("RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS", "-5"),
        ("RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS", "soon"),
        ("CRAWLEE_PERSIST_STATE_INTERVAL_MILLIS", "1.5"),
        ("RECOVERABLE_SYSTEM_INFO_INTERVAL_MILLIS", "0"),
        ("RECOVERABLE_STATE_TIMEOUT_SECS", "0"),
        ("RECOVERABLE_STATE_TIMEOUT_SECS", "inf"),
        ("RECOVERABLE_STATE_TIMEOUT_SECS", "nan"),
        ("RECOVERABLE_STORAGE_CLIENT", "floppy"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Configuration.from_env({variable: value})
    assert variable in str(caught.value)
    assert repr(value) in str(caught.value)


def test_the_storage_client_error_lists_the_choices() -> None:
    with pytest.raises(ConfigurationError, match="'file_system', 'memory', 'redis', 'sql', 'http'"):
        Configuration.from_env({"RECOVERABLE_STORAGE_CLIENT": "File_System"})


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RECOVERABLE_STORAGE_DIR", str(tmp_path))
    assert Configuration.from_env().storage_dir == tmp_path


def test_configuration_is_frozen_and_refuses_unknown_settings() -> None:
    with pytest.raises(ValueError, match="extra"):
        Configuration(storage_folder="/x")  # type: ignore[call-arg]
    configuration = Configuration()
    with pytest.raises(ValueError, match="frozen"):
        configuration.storage_client = "memory"  # type: ignore[misc]


def test_http_default_storage_client_is_built_from_the_configuration() -> None:
    configuration = Configuration(storage_client="http", http_url="http://127.0.0.1:1", http_token="t")  # noqa: S106
    client = default_storage_client(configuration)
    assert isinstance(client, HttpStorageClient)
    assert default_storage_client(configuration) is client


def test_redis_and_sql_default_storage_clients_are_built_from_the_configuration() -> None:
    from recoverable.storages import RedisStorageClient, SqlStorageClient  # noqa: PLC0415

    redis_configuration = Configuration(storage_client="redis", redis_url="redis://127.0.0.1:1/0")
    assert isinstance(default_storage_client(redis_configuration), RedisStorageClient)
    sql_configuration = Configuration(storage_client="sql", sql_url="sqlite+aiosqlite:///unused.db")
    assert isinstance(default_storage_client(sql_configuration), SqlStorageClient)
