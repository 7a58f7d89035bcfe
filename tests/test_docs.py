"""The README repeats tables and trees from docstrings; they must not drift apart, nor from the code."""

from __future__ import annotations

import re
from pathlib import Path

import recoverable
from recoverable import configuration, errors

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _table_rows(text: str, first_column: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"| `{first_column}")]


def _tree(text: str) -> list[str]:
    start = text.index("RecoverableError\n")
    return text[start : text.index("```", start)].strip().splitlines()


def test_the_configuration_table_of_the_readme_is_the_module_docstring_s() -> None:
    documented = _table_rows(configuration.__doc__ or "", "")
    assert documented
    assert [row for row in _table_rows(README, "") if row in documented] == documented


def test_every_environment_variable_read_by_from_env_is_documented() -> None:
    source = Path(configuration.__file__).read_text(encoding="utf-8")
    read = set(re.findall(r'"((?:RECOVERABLE|ACTOR)_[A-Z_]+)"', source))
    documented = set(re.findall(r"`((?:RECOVERABLE|ACTOR)_[A-Z_]+)`", configuration.__doc__ or ""))
    assert read
    assert read <= documented, read - documented


def test_the_error_tree_of_the_readme_is_the_module_docstring_s() -> None:
    assert _tree(README) == _tree(errors.__doc__ or "")


def test_the_error_tree_matches_the_classes() -> None:
    parents: list[str] = []
    seen: set[str] = set()
    for line in _tree(errors.__doc__ or ""):
        name = re.search(r"[A-Za-z]+Error", line)
        assert name is not None, line
        depth = (name.start()) // 4
        parents = parents[:depth]
        cls = getattr(errors, name.group())
        if parents:
            assert cls.__bases__[0] is getattr(errors, parents[-1]), (name.group(), parents[-1])
        parents.append(name.group())
        seen.add(name.group())
    assert seen == set(errors.__all__)
    assert seen <= set(recoverable.__all__)
