"""The sessions filter is RE2: a Python-only construct is refused with a line that says what differs, and the
last filter that worked stays applied."""

from __future__ import annotations

from textual.widgets import Input, Static

from crewtui.ui.label_filter import PYTHON_ONLY, LabelFilter
from tests.ui.conftest import fake_app, settle


async def test_a_python_only_construct_is_refused_with_a_line_saying_what_differs() -> None:
    app = fake_app()
    async with app.run_test(size=(140, 42)) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        filt = app.query_one("#filter", Input)
        filt.value = "scout"
        await pilot.pause()
        shown = {s.label for s in app.book.sessions.values() if app.book.visible(s)}
        assert shown and all("scout" in label for label in shown)
        for pattern in ("scout(?!-tooling)", r"(blog)-\1", "(?<=research-)scout", r"scout\Z"):
            filt.value = pattern
            await pilot.pause()
            error = str(app.query_one("#filter-error", Static).render())
            assert error.startswith("not supported here (") and PYTHON_ONLY in error, (pattern, error)
            assert "\n" not in error
            # The last filter that worked is still the one applied.
            assert {s.label for s in app.book.sessions.values() if app.book.visible(s)} == shown
        filt.value = "blog("  # wrong in any syntax: said as such
        await pilot.pause()
        assert str(app.query_one("#filter-error", Static).render()) == "invalid regex: missing ): blog("


def test_the_filter_matches_as_pythons_re_would_for_the_common_syntax() -> None:
    labels = ["blog-publisher-superada-r1", "research-scout-llm-evals-r2", "code-review-pr-104", "ops-deploy-api"]
    for pattern, expected in (
        ("scout|pr-10[1-4]", {labels[1], labels[2]}),
        ("^BLOG", {labels[0]}),  # case-insensitive
        (r"r\d$", {labels[0], labels[1]}),
        (r"\bdeploy\b", {labels[3]}),
        ("(?P<name>api)$", {labels[3]}),
    ):
        f = LabelFilter(pattern)
        assert {label for label in labels if f.search(label)} == expected, pattern
