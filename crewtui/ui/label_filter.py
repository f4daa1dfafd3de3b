"""The sessions filter: a regular expression searched in labels, by an engine that cannot run away.

Python's `re` backtracks: `(a+)+$` against a few long labels would take longer than anyone waits, and the
dashboard matches on its one thread, so a filter could freeze it (a core pinned, `q` ignored). RE2 (the
`google-re2` binding, published by the RE2 authors) matches in time linear in the label, whatever the
pattern. Its syntax is Python's without what needs backtracking: look-arounds, backreferences, atomic
groups, possessive quantifiers, conditionals (and Python's `\\Z` is RE2's `\\z`). A pattern that uses one of
those is refused with a line that says so.
"""

from __future__ import annotations

import re

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

_OPTIONS = re2.Options()
_OPTIONS.case_sensitive = False
_OPTIONS.log_errors = False  # RE2 logs a bad pattern to stderr, which is the dashboard's terminal

PYTHON_ONLY = (
    "look-arounds, backreferences, atomic groups and \\Z are Python-only: the filter uses RE2 syntax, "
    "which never backtracks (write \\z for \\Z)"
)


class FilterError(ValueError):
    """A pattern the filter cannot use. Its message is one line for the user."""


def _explain(pattern: str, error: Exception) -> str:
    detail = error.args[0] if error.args else error
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", errors="replace")
    try:
        re.compile(pattern)  # compiling only: nothing is matched, so nothing can run away
    except Exception:  # re.error, or a RecursionError on absurd nesting: Python refuses it too
        return f"invalid regex: {detail}"
    return f"not supported here ({detail}): {PYTHON_ONLY}"


class LabelFilter:
    """A compiled filter: `search(label)` as `re.search` with IGNORECASE would answer, in linear time."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        try:
            self._regex = re2.compile(pattern, _OPTIONS)
        except re2.error as exc:
            raise FilterError(_explain(pattern, exc)) from None

    def search(self, text: str) -> bool:
        return self._regex.search(text) is not None
