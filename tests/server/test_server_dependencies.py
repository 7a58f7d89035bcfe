"""The optional dependencies are imported only where needed, and a missing one says what to install."""

from __future__ import annotations

import subprocess
import textwrap


def _run(python: str, env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_importing_recoverable_needs_no_optional_package(python: str, child_env: dict[str, str]) -> None:
    result = _run(
        python,
        child_env,
        """
        import sys
        import recoverable
        from recoverable import HttpStorageClient, PlatformEventManager
        loaded = sorted(m for m in ("starlette", "uvicorn", "websockets") if m in sys.modules)
        print(loaded)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_missing_server_extra_names_the_install_command(python: str, child_env: dict[str, str]) -> None:
    result = _run(
        python,
        child_env,
        """
        import sys
        sys.modules["starlette"] = None
        from recoverable.errors import MissingDependencyError
        try:
            import recoverable.server
        except MissingDependencyError as exc:
            print(exc)
        from recoverable.cli import main
        sys.exit(main(["serve", "--storage-client", "memory"]))
        """,
    )
    assert "pip install 'recoverable[server]'" in result.stdout
    assert result.returncode == 2
    assert "pip install 'recoverable[server]'" in result.stderr


def test_a_missing_platform_extra_names_the_install_command(python: str, child_env: dict[str, str]) -> None:
    result = _run(
        python,
        child_env,
        """
        import sys
        sys.modules["websockets"] = None
        from recoverable import MissingDependencyError, PlatformEventManager
        try:
            PlatformEventManager(url="ws://127.0.0.1:1")
        except MissingDependencyError as exc:
            print(exc)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'recoverable[platform]'" in result.stdout
