"""`__all__` of each public package lists exactly what it exports, and every name is documented."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
import textwrap

import pytest

import recoverable

PACKAGES = ["recoverable", "recoverable.events", "recoverable.storages", "recoverable.errors", "recoverable.server"]


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_sorted_unique_and_importable(package: str) -> None:
    module = importlib.import_module(package)
    names = module.__all__
    assert len(names) == len(set(names))
    assert sorted(names, key=lambda n: (not n.isupper(), n)) == names or names == sorted(names)
    for name in names:
        assert getattr(module, name) is not None, name


@pytest.mark.parametrize("package", PACKAGES)
def test_nothing_public_is_left_out_of_all(package: str) -> None:
    module = importlib.import_module(package)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name not in {"annotations", "TYPE_CHECKING"}
    }
    assert public <= set(module.__all__), public - set(module.__all__)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_class_and_function_has_a_docstring(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{package}.{name} has no docstring"


def test_the_top_level_exports_the_whole_user_facing_api() -> None:
    expected = {
        "RecoverableState",
        "KeyValueStore",
        "LocalEventManager",
        "PlatformEventManager",
        "EventManager",
        "Event",
        "FileSystemStorageClient",
        "MemoryStorageClient",
        "HttpStorageClient",
        "RedisStorageClient",
        "SqlStorageClient",
        "Configuration",
        "RecoverableError",
        "StateOwnershipError",
        "StateValidationError",
    }
    assert expected <= set(recoverable.__all__)


def test_every_error_derives_from_the_one_root() -> None:
    from recoverable import errors  # noqa: PLC0415

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.RecoverableError), name
        assert name in recoverable.__all__, name


@pytest.mark.parametrize(
    ("blocked", "missing"),
    [
        (["redis"], {"RedisStorageClient"}),
        (["sqlalchemy"], {"SqlStorageClient"}),
        (["redis", "sqlalchemy"], {"RedisStorageClient", "SqlStorageClient"}),
    ],
)
def test_a_star_import_works_without_the_optional_clients_packages(blocked: list[str], missing: set[str]) -> None:
    # A child process, where the packages of the extras are made impossible to import.
    code = textwrap.dedent(
        f"""
        import json, sys
        for package in {blocked!r}:
            sys.modules[package] = None
        namespaces = {{}}
        for package in ("recoverable", "recoverable.storages"):
            exec(f"from {{package}} import *", namespaces.setdefault(package, {{}}))
        import recoverable
        from recoverable.errors import MissingDependencyError
        errors = {{}}
        for name in {sorted(missing)!r}:
            try:
                getattr(recoverable, name)
            except MissingDependencyError as exc:
                errors[name] = str(exc)
        print(json.dumps({{"names": {{p: sorted(n) for p, n in namespaces.items()}}, "errors": errors}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    for package in ("recoverable", "recoverable.storages"):
        exported = set(importlib.import_module(package).__all__)
        assert set(report["names"][package]) >= exported - missing, package
        assert not set(report["names"][package]) & missing, package
    assert set(report["errors"]) == missing  # named on their own, they still say what to install
    for message in report["errors"].values():
        assert "pip install 'recoverable[" in message


def test_a_star_import_includes_the_optional_clients_when_installed() -> None:
    namespace: dict[str, object] = {}
    exec("from recoverable import *", namespace)  # noqa: S102 - the star import under test

    assert namespace["RedisStorageClient"] is recoverable.RedisStorageClient
    assert namespace["SqlStorageClient"] is recoverable.SqlStorageClient
