"""README's "Reliability" table names every test of the fault, property and security suites exactly once."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUITES = [
    *sorted((ROOT / "tests" / "faults").glob("test_*.py")),
    ROOT / "tests" / "test_properties.py",
    ROOT / "tests" / "test_security.py",
    # Hardening items whose tests live beside the dashboard's and the demo's
    ROOT / "tests" / "ui" / "test_crash_exit.py",
    ROOT / "tests" / "ui" / "test_steer_paste.py",
    ROOT / "tests" / "test_demo_first_minute.py",
]


def collected_from(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    rel = path.relative_to(ROOT).as_posix()
    return {
        f"{rel}::{node.name}"
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")
    }


def test_reliability_table_matches_the_tests_one_for_one() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Reliability\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "::" in line]
    named = [m for line in rows for m in re.findall(r"`(tests/[^`]+::test_\w+)`", line)]
    assert len(named) == len(rows), "one test per row"
    assert len(named) == len(set(named)), "a test is listed twice"
    expected = set().union(*(collected_from(p) for p in SUITES))
    assert set(named) == expected, {
        "not in the table": sorted(expected - set(named)),
        "no such test": sorted(set(named) - expected),
    }
