"""The options that say where the stores are: one set, taken alike by `recoverable` itself and by every command.

`recoverable --storage-dir D keys S` and `recoverable keys S --storage-dir D` mean the same. Each option given
is remembered in the context's `StorageOptions`, the group's first, then the command's, so a command's own
option wins over the group's. What no option says comes from the environment, read by
`Configuration.from_env()` as the library reads it (`RECOVERABLE_STORAGE_CLIENT`, `RECOVERABLE_STORAGE_DIR`,
...), and the storage client is built from that configuration through the registry of backends: a new backend
needs nothing here.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import ValidationError

from recoverable.configuration import Configuration
from recoverable.errors import ConfigurationError
from recoverable.storages._registry import BACKENDS, backend_named

if TYPE_CHECKING:
    from collections.abc import Callable

    from recoverable.storages import StorageClient

__all__ = [
    "StorageOptions",
    "backend_names",
    "check_backend",
    "destination_options",
    "force_option",
    "json_option",
    "open_storage",
    "storage_configuration",
    "storage_options",
    "yes_option",
]

F = TypeVar("F", bound="Callable[..., Any]")

_SETTINGS = {
    "storage_client": "storage_client",
    "storage_dir": "storage_dir",
    "redis_url": "redis_url",
    "sql_url": "sql_url",
    "http_url": "http_url",
    "token": "http_token",
}
"""Each storage option, and the field of `Configuration` it sets."""


@dataclass
class StorageOptions:
    """The storage options given on the command line so far, by option name (a later one replaces an earlier).

    Attributes:
        given: The options of the storage the command works on.
        given_to: The `--to-...` options of `recoverable copy`, which say where the copy goes.
    """

    given: dict[str, object] = field(default_factory=dict)
    given_to: dict[str, object] = field(default_factory=dict)


def backend_names(*, served_only: bool = False) -> list[str]:
    """The names of the storage backends of the registry (those `serve` can serve, if asked)."""
    return [backend.name for backend in BACKENDS if backend.served or not served_only]


def check_backend(value: str, names: list[str]) -> str:
    """`value` when it is one of `names`, the backends offered.

    Raises:
        click.BadParameter: It is none of them; the message lists them, and the closest.
    """
    if value in names:
        return value
    close = difflib.get_close_matches(value.strip().lower().replace("-", "_"), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise click.BadParameter(f"invalid choice {value!r} (choose from {', '.join(map(repr, names))}){hint}")


def _remembered(
    convert: Callable[[str], object] | None = None,
) -> Callable[[click.Context, click.Parameter, Any], None]:
    """An option's callback: check the value given (with `convert`), and keep it in the context's `StorageOptions`."""

    def remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None or param.name is None:
            return
        if convert is not None:
            value = convert(value)
        options = ctx.ensure_object(StorageOptions)
        if param.name.startswith("to_"):
            options.given_to[param.name.removeprefix("to_")] = value
        else:
            options.given[param.name] = value

    return remember


def _option(
    flag: str, help_text: str, convert: Callable[[str], object] | None = None, **kwargs: Any
) -> Callable[[F], F]:
    return click.option(flag, help=help_text, callback=_remembered(convert), expose_value=False, **kwargs)


def _backend_option(flag: str, help_text: str, *, served_only: bool = False) -> Callable[[F], F]:
    names = backend_names(served_only=served_only)
    return _option(
        flag,
        help_text,
        lambda value: check_backend(value, names),
        metavar=f"[{'|'.join(names)}]",
    )


def storage_options(*, served_only: bool = False) -> Callable[[F], F]:
    """The storage options, for the group and for each command (`serve` offers only the backends it can serve)."""
    options = [
        _backend_option(
            "--storage-client",
            "where the stores are [default: RECOVERABLE_STORAGE_CLIENT, else file_system]",
            served_only=served_only,
        ),
        _option(
            "--storage-dir",
            "root folder of the file_system storage client [default: RECOVERABLE_STORAGE_DIR, else ./storage]",
            type=click.Path(file_okay=False, path_type=Path),
        ),
        _option("--redis-url", "server of the redis storage client, e.g. redis://localhost:6379/0 [default: "
                "RECOVERABLE_REDIS_URL]"),
        _option("--sql-url", "database of the sql storage client, e.g. sqlite+aiosqlite:///state.db [default: "
                "RECOVERABLE_SQL_URL]"),
        _option("--http-url", "server of the http storage client, e.g. http://10.0.0.5:8321 [default: "
                "RECOVERABLE_HTTP_URL]"),
        _option("--token", "bearer token the http storage client sends and `serve` requires [default: "
                "RECOVERABLE_HTTP_TOKEN]; prefer the variable: other users of the machine can see arguments"),
    ]  # fmt: skip

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def destination_options(command: F) -> F:
    """The `--to-...` options of `recoverable copy`: where the copy goes, on top of the source's settings."""
    options = [
        _backend_option("--to-storage-client", "storage client of the destination [default: the source's]"),
        _option("--to-storage-dir", "root folder of the destination's file_system storage client",
                type=click.Path(file_okay=False, path_type=Path)),
        _option("--to-redis-url", "server of the destination's redis storage client"),
        _option("--to-sql-url", "database of the destination's sql storage client"),
        _option("--to-http-url", "server of the destination's http storage client"),
        _option("--to-token", "bearer token of the destination's http storage client"),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


json_option = click.option("--json", "as_json", is_flag=True, help="print JSON, for scripts")
yes_option = click.option("--yes", "-y", is_flag=True, help="change a state record without asking first")
force_option = click.option(
    "--force", is_flag=True, help="change a state even while its lease is held by a live owner (which then loses it)"
)


def storage_configuration(ctx: click.Context, *, destination: bool = False) -> Configuration:
    """The settings of the storage a command works on: the environment's, with the options given on top.

    A command never empties a store it opens, whatever `RECOVERABLE_PURGE_ON_START` says.

    Args:
        ctx: The context of the command.
        destination: Where `recoverable copy` copies to: the source's settings with the `--to-...` options on top.

    Raises:
        ConfigurationError: An environment variable holds a value that is not valid.
    """
    options = ctx.ensure_object(StorageOptions)
    given = {**options.given, **(options.given_to if destination else {})}
    values = Configuration.from_env().model_dump()
    values.update({_SETTINGS[name]: value for name, value in given.items()})
    values["purge_on_start"] = False
    try:
        return Configuration.model_validate(values)
    except ValidationError as exc:  # pragma: no cover - every option is checked by its type
        raise ConfigurationError(f"invalid storage options: {exc}") from exc


def open_storage(configuration: Configuration) -> StorageClient:
    """The storage client `configuration` names, built by its backend of the registry.

    Raises:
        MissingDependencyError: The backend's extra is not installed.
        ConfigurationError: The configuration lacks what the backend needs (a URL, say).
    """
    return backend_named(configuration.storage_client).from_configuration(configuration)
