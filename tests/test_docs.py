"""The README and docs/ must not drift from the code: tables and trees, links, examples, named functions."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

import recoverable
from recoverable import configuration, errors

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
PAGES = sorted(DOCS.glob("*.md"))
README_MAX_LINES = 150

_FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def _doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _table_rows(text: str, first_column: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"| `{first_column}")]


def _tree(text: str) -> list[str]:
    start = text.index("RecoverableError\n")
    return text[start : text.index("```", start)].strip().splitlines()


def _python_block_after(text: str, heading: str) -> str:
    """The first ```python block after the line `heading`."""
    start = text.index(f"\n{heading}\n")
    match = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL).search(text, start)
    assert match is not None, f"no python block after {heading!r}"
    return match.group(1)


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces turned into hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for match in _HEADING.finditer(_FENCE.sub("", text)):
        slug = _slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _relative_links(text: str) -> list[str]:
    prose = _INLINE_CODE.sub("", _FENCE.sub("", text))
    return [t for t in _LINK.findall(prose) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def _broken(source: Path, target: str) -> str | None:
    """Why the link `target` written in `source` does not resolve, or None."""
    path_part, _, anchor = target.partition("#")
    path = (source.parent / path_part).resolve() if path_part else source
    if not path.exists():
        return f"{source.name}: {target}: no such file"
    if anchor and (path.suffix != ".md" or anchor not in _anchors(path.read_text(encoding="utf-8"))):
        return f"{source.name}: {target}: no heading #{anchor} in {path.name}"
    return None


# --- what the docs repeat from docstrings ----------------------------------------------------------


def test_the_configuration_table_of_the_docs_is_the_module_docstring_s() -> None:
    documented = _table_rows(configuration.__doc__ or "", "")
    assert documented
    assert _table_rows(_doc("configuration.md"), "") == documented


def test_every_environment_variable_read_by_from_env_is_documented() -> None:
    source = Path(configuration.__file__).read_text(encoding="utf-8")
    read = set(re.findall(r'"((?:RECOVERABLE|ACTOR)_[A-Z_]+)"', source))
    documented = set(re.findall(r"`((?:RECOVERABLE|ACTOR)_[A-Z_]+)`", configuration.__doc__ or ""))
    assert read
    assert read <= documented, read - documented


def test_every_environment_variable_read_by_from_env_is_in_the_docs() -> None:
    source = Path(configuration.__file__).read_text(encoding="utf-8")
    read = set(re.findall(r'"((?:RECOVERABLE|ACTOR|CRAWLEE|APIFY)_[A-Z_]+)"', source))
    documented = set(re.findall(r"`([A-Z]+_[A-Z_]+)`", _doc("configuration.md") + _doc("crawlee.md")))
    assert any(name.startswith("CRAWLEE_") for name in read)
    assert read <= documented, read - documented


def test_the_error_tree_of_the_docs_is_the_module_docstring_s() -> None:
    assert _tree(_doc("errors.md")) == _tree(errors.__doc__ or "")


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


# --- links ------------------------------------------------------------------------------------------


def test_every_relative_link_and_anchor_of_the_readme_and_docs_resolves() -> None:
    broken = []
    for source in [REPO_ROOT / "README.md", *PAGES]:
        links = _relative_links(source.read_text(encoding="utf-8"))
        broken += [why for target in links if (why := _broken(source, target)) is not None]
    assert not broken, "\n".join(broken)


def test_the_link_checker_catches_a_missing_page_and_a_missing_anchor() -> None:
    readme = REPO_ROOT / "README.md"
    assert _broken(readme, "docs/ownership.md#one-owner-per-state") is None
    assert _broken(readme, "docs/no-such-page.md") is not None
    assert _broken(readme, "docs/ownership.md#no-such-heading") is not None
    assert _slug("How it differs from Crawlee's `KeyValueStore`") == "how-it-differs-from-crawlees-keyvaluestore"


def test_the_readme_links_every_docs_page() -> None:
    linked = {(REPO_ROOT / target.partition("#")[0]).resolve() for target in _relative_links(README)}
    assert PAGES
    assert [page.name for page in PAGES if page.resolve() not in linked] == []


def test_every_docs_page_named_in_a_docstring_exists() -> None:
    named = [
        (module.relative_to(REPO_ROOT), target)
        for module in sorted((REPO_ROOT / "recoverable").rglob("*.py"))
        for target in re.findall(r"docs/[\w-]+\.md(?:#[\w-]+)?", module.read_text(encoding="utf-8"))
    ]
    assert named
    broken = [f"{module}: {why}" for module, target in named if (why := _broken(REPO_ROOT / "README.md", target))]
    assert not broken, "\n".join(broken)


def test_the_crawlee_differences_are_linked_from_the_recoverable_state_docstring() -> None:
    doc = recoverable.RecoverableState.__doc__ or ""
    assert "docs/crawlee.md#how-it-differs-from-crawlees-recoverablestate" in doc
    assert "Crawlee: False" not in doc  # the list itself lives in docs/crawlee.md only


def test_every_repository_path_named_in_the_docs_exists() -> None:
    # `tests/unit/...` of crawlee-python is named too: only this repository's own folders are checked.
    own = r"`((?:recoverable/|examples/|benchmarks/|tests/conformance/|tests/test_)[\w./]*)`"
    named = [(page.name, path) for page in PAGES for path in re.findall(own, page.read_text("utf-8"))]
    assert named
    missing = [f"{page}: {path}" for page, path in named if not (REPO_ROOT / path).exists()]
    assert not missing, "\n".join(missing)


# --- the architecture page names modules and functions ---------------------------------------------


def _names(node: ast.stmt) -> set[str]:
    """The names a statement of a module or class body defines: a function, a class, an assigned name."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return {target.id for target in targets if isinstance(target, ast.Name)}


def _defined(tree: ast.Module, dotted: str) -> bool:
    """Whether the module defines `dotted`: a top-level name, or `Class.member`."""
    body: list[ast.stmt] = tree.body
    for part in dotted.split("."):
        found = [node for node in body if part in _names(node)]
        if not found:
            return False
        body = found[-1].body if isinstance(found[-1], ast.ClassDef) else []
    return True


def test_every_function_the_architecture_page_names_in_its_table_exists() -> None:
    rows = [line for line in _doc("architecture.md").splitlines() if re.match(r"\| [a-z].* \| `recoverable/", line)]
    assert len(rows) > 20
    missing = []
    for row in rows:
        _, module, functions = (cell.strip() for cell in row.strip("|").split("|"))
        path = REPO_ROOT / module.strip("`")
        if not path.is_file():
            missing.append(f"{module}: no such module")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = re.findall(r"`([\w.]+)`", functions)
        assert names, row
        missing += [f"{module}: {name}" for name in names if not _defined(tree, name)]
    assert not missing, "\n".join(missing)


def test_the_architecture_check_catches_a_renamed_function() -> None:
    tree = ast.parse("class A:\n    def b(self): ...\nC = 1\n")
    assert _defined(tree, "A.b")
    assert _defined(tree, "C")
    assert not _defined(tree, "A.c")
    assert not _defined(tree, "B")


# --- the README -----------------------------------------------------------------------------------


def test_the_readme_is_one_page_with_the_two_set_up_commands() -> None:
    assert len(README.splitlines()) <= README_MAX_LINES
    assert "```bash\npip install -e . && python examples/resumable_crawler.py\n```" in README
    assert "```bash\npip install -e '.[dev]' && python -m pytest\n```" in README


def test_the_quick_start_of_the_readme_runs_and_resumes(python: str, child_env: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "quick_start.py"
    script.write_text(_python_block_after(README, "## Quick start"), encoding="utf-8")
    outputs = [
        subprocess.run(
            [python, str(script)], cwd=tmp_path, env=child_env, capture_output=True, text=True, timeout=60, check=True
        ).stdout
        for _ in range(2)
    ]
    assert outputs == ["pages done: 1\n", "pages done: 2\n"]
    record = "./storage/key_value_stores/my-crawl/CRAWL.json"
    assert f"`{record}`" in README
    assert (tmp_path / record).is_file()


@pytest.mark.parametrize(("page", "heading"), [("storage-clients.md", "## The key-value store")])
def test_an_example_of_the_docs_prints_what_its_comments_say(
    page: str, heading: str, python: str, child_env: dict[str, str], tmp_path: Path
) -> None:
    code = _python_block_after(_doc(page), heading)
    expected = []
    for line in code.splitlines():
        if "print(" in line:
            # What a line prints: its trailing comment, or else the string literal it prints.
            said = re.search(r"\)\s+#\s*(.+)$", line) or re.search(r'print\("([^"]*)"\)', line)
            assert said is not None, line
            expected.append(said.group(1))
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run(
        [python, str(script)], cwd=tmp_path, env=child_env, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.splitlines() == expected
