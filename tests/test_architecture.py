"""The shape the code keeps: module sizes, no import cycles, one place that names a session dir's files.

The layers themselves (`model <- store <- runtime <- control <- ui <- cli`) are import-linter's contracts in
pyproject.toml, which `.ci/run` checks; these tests hold what import-linter does not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

from crewtui.locations import SessionDir

PACKAGE = Path(__file__).resolve().parent.parent / "crewtui"
MAX_MODULE_LINES = 600
MAX_FACADE_LINES = 450


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_600_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_the_orchestrator_facade_stays_small() -> None:
    assert len((PACKAGE / "runtime" / "orchestrator.py").read_text().splitlines()) < MAX_FACADE_LINES


def test_every_module_says_what_it_is_for() -> None:
    missing = [
        str(p.relative_to(PACKAGE))
        for p in _modules()
        if p.read_text().strip() and ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert missing == []


def _strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Groups of modules that import each other, directly or through others (Tarjan), larger than one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


@pytest.mark.parametrize("type_checking", [False, True], ids=["runtime imports", "with TYPE_CHECKING imports"])
def test_no_two_modules_import_each_other(type_checking: bool) -> None:
    graph = grimp.build_graph("crewtui", exclude_type_checking_imports=not type_checking)
    assert _strongly_connected(graph) == []


def test_the_shim_writes_the_names_session_dir_gives() -> None:
    shim = (PACKAGE / "runtime" / "drivers" / "shim.sh").read_text()
    for name in (
        SessionDir.STDOUT,
        SessionDir.STDERR,
        SessionDir.STDIN_FIFO,
        SessionDir.PID,
        SessionDir.EXIT,
        SessionDir.TTY_SOCKET,
        SessionDir.AGENT_EXIT,
        SessionDir.PTS,
    ):
        assert f"$DIR/{name}" in shim or f"{name} " in shim, name


def test_only_session_dir_spells_a_session_dirs_file_names() -> None:
    names = {
        SessionDir.STDOUT,
        SessionDir.STDERR,
        SessionDir.STDIN_FIFO,
        SessionDir.PID,
        SessionDir.EXIT,
        SessionDir.RESULT,
        SessionDir.TTY_SOCKET,
        SessionDir.AGENT_EXIT,
    }  # (not PTS: "pts" is in too many words)
    spelled = []
    for path in _modules():
        if path.name == "locations.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and any(name in node.value for name in names)
            ):
                spelled.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value[:60]!r}")
    assert spelled == []
