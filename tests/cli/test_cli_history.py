"""The commands docs/history.md names: "`recoverable history`, `recoverable diff` and `recoverable rollback` do the
same from the command line"."""

from __future__ import annotations

import pytest

from recoverable.cli import main


@pytest.mark.parametrize("command", ["history", "diff", "rollback"])
def test_the_history_commands_the_documentation_names_exist(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0, capsys.readouterr().err
