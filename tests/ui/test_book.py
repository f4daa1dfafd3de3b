"""The dashboard's pure parts: label grouping (radix tree on `-`), and the session copy patched by events."""

from __future__ import annotations

import pytest

from crewtui.events import (
    CronFired,
    RunClosed,
    SessionOutput,
    SessionRetried,
    SessionSpawned,
    SessionStateChanged,
    WatchdogFired,
)
from crewtui.formatting import duration, fit, relative
from crewtui.model import Session, SessionState
from crewtui.ui.book import SessionBook, completion_rate
from crewtui.ui.grouping import GroupNode, LeafNode, build_forest, natural_key, walk
from crewtui.ui.label_filter import FilterError

S = SessionState


def shape(items: list[GroupNode | LeafNode]) -> list[object]:
    out: list[object] = []
    for item in items:
        if isinstance(item, GroupNode):
            out.append((item.prefix, shape(item.children)))
        else:
            out.append(item.name)
    return out


def test_labels_group_on_dash_boundaries_and_single_child_groups_fold() -> None:
    forest = build_forest(
        [
            ("1", "blog-publisher-superada-2026-04-02"),
            ("2", "blog-publisher-openclaw-guide-2026-04-02"),
            ("3", "ads-auditor-2026-04-02-r1"),
            ("4", "ads-auditor-2026-04-02-r2"),
            ("5", "ads-auditor-2026-04-02-r10"),
            ("6", "solo"),
            ("7", "research-scout-llm-evals-r1"),
            ("8", "research-scout-llm-evals-r2"),
            ("9", "research-scout-tooling-r1"),
        ]
    )
    assert shape(forest) == [
        ("ads-auditor-2026-04-02", ["r1", "r2", "r10"]),  # natural order: r2 before r10
        ("blog-publisher", ["openclaw-guide-2026-04-02", "superada-2026-04-02"]),
        ("research-scout", [("research-scout-llm-evals", ["r1", "r2"]), "tooling-r1"]),
        "solo",
    ]


def test_a_label_that_is_also_a_prefix_sits_in_its_group() -> None:
    forest = build_forest([("1", "blog"), ("2", "blog-a"), ("3", "blog-b")])
    assert shape(forest) == [("blog", ["blog", "a", "b"])]
    parents = {item.id: parent for parent, item in walk(forest)}
    assert parents == {"g:blog": None, "s:1": "g:blog", "s:2": "g:blog", "s:3": "g:blog"}


def test_natural_key() -> None:
    assert sorted(["r10", "r2", "r1"], key=natural_key) == ["r1", "r2", "r10"]


def session(key: str, label: str, state: SessionState = S.RUNNING) -> Session:
    return Session(key=key, label=label, state=state, created_at=100.0, updated_at=100.0)


def test_book_patches_sessions_from_events_and_reports_what_changed() -> None:
    book = SessionBook()
    ch = book.load([session("a", "x-1")])
    assert ch.structure and ch.rows == {"a"}
    ch = book.apply(
        [
            SessionSpawned(session="b", label="x-2", ts=101.0, snapshot=session("b", "x-2")),
            SessionOutput(session="a", label="x-1", ts=102.0, lines=["one", "two"]),
            SessionStateChanged(
                session="a", label="x-1", ts=103.0, old=S.RUNNING, new=S.FAILED, exit_code=3, reason="exit code 3"
            ),
            SessionRetried(session="a", label="x-1", ts=104.0, attempt=2),
            SessionOutput(session="zzz", ts=105.0, lines=["?"]),
            CronFired(job="j", nominal=100.0, ts=106.0),
            WatchdogFired(session="a", label="x-1", ts=107.0, outcome="retried"),
            RunClosed(job="j", run="j#1", rate=0.5, ts=108.0),
        ]
    )
    a = book.sessions["a"]
    assert ch.structure and ch.rows == {"a", "b"}
    assert a.state == S.FAILED and a.exit_code == 3 and a.ended_at == 103.0 and a.attempt == 2
    assert a.last_line == "two" and a.last_output_at == 102.0
    assert ch.output == {"a": [("stdout", ["one", "two"])]}
    assert ch.unknown == {"zzz"} and ch.schedule
    assert [(m.kind, m.outcome) for m in ch.marks] == [
        ("retry", "attempt 2 (user)"),
        ("cron", "ran"),
        ("watchdog", "retried"),
        ("run", "50%"),
    ]


def test_filters_marks_and_rates() -> None:
    book = SessionBook()
    book.load([session("a", "blog-a", S.DONE), session("b", "blog-b", S.FAILED), session("c", "ops-c")])
    book.set_pattern("^blog")
    assert {k for k, _ in book.visible_items()} == {"a", "b"}
    book.state_filter = S.DONE
    assert {k for k, _ in book.visible_items()} == {"a"}
    with pytest.raises(FilterError):
        book.set_pattern("(")
    book.set_pattern("")
    book.state_filter = None
    assert book.toggle_mark(["a", "b"]) == {"a", "b"} and book.marked == {"a", "b"}
    book.toggle_mark(["a", "b"])
    assert book.marked == set()
    assert completion_rate(book.counts()) == 0.5
    assert completion_rate({S.RUNNING: 3}) is None
    assert [s.key for s in book.members("blog", visible_only=False)] == ["a", "b"]


def test_formats() -> None:
    assert [duration(x) for x in (5, 119, 120, 7199, 7200, 200000)] == ["5s", "119s", "2m", "119m", "2h", "2d"]
    assert relative(190, 100) == "in 1m30s" and relative(40, 100) == "1m00s ago"
    assert fit("abcdef", 4) == "abc…" and fit("ab", 4) == "ab  "


async def test_events_arriving_under_a_modal_are_applied() -> None:
    """The main screen's widgets are found while a modal is on top (App.query_one would search the modal)."""
    from crewtui.ui.screens.help import HelpScreen
    from tests.ui.conftest import fake_app, settle

    app = fake_app()
    async with app.run_test(size=(140, 42)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        s = session("s-new", "fresh-one")
        app.runtime.emit(SessionSpawned(session=s.key, label=s.label, snapshot=s))  # type: ignore[attr-defined]
        app.runtime.emit(SessionOutput(session=s.key, label=s.label, lines=["hello"]))  # type: ignore[attr-defined]
        await pilot.pause(0.3)
        app.main_screen.flush_events()
        assert "s:s-new" in app.main_screen.session_tree.nodes and app.is_running
        assert app.book.sessions["s-new"].last_line == "hello"


def test_node_of_a_session_follows_its_state_events_and_is_counted_per_node() -> None:
    book = SessionBook()
    book.load([session("a", "x-1"), session("b", "x-2"), session("c", "y-1")])
    assert book.node_counts() == {}  # all local: the header shows no node list
    book.apply(
        [
            SessionStateChanged(session="a", label="x-1", ts=1.0, old=S.PENDING, new=S.RUNNING, node="10.0.0.7/4f1a2b"),
            SessionStateChanged(session="b", label="x-2", ts=1.0, old=S.PENDING, new=S.RUNNING, node="10.0.0.7/4f1a2b"),
            SessionStateChanged(session="c", label="y-1", ts=1.0, old=S.PENDING, new=S.RUNNING, node="10.0.0.8/9c3d5e"),
        ]
    )
    assert book.sessions["a"].node == "10.0.0.7/4f1a2b"
    assert book.node_counts() == {"10.0.0.7/4f1a2b": 2, "10.0.0.8/9c3d5e": 1}
    # Ended sessions no longer count; a retry waiting to be placed has no node yet.
    book.apply(
        [
            SessionStateChanged(session="b", label="x-2", ts=2.0, old=S.RUNNING, new=S.DONE, node="10.0.0.7/4f1a2b"),
            SessionStateChanged(session="c", label="y-1", ts=2.0, old=S.RUNNING, new=S.LOST, node="10.0.0.8/9c3d5e"),
            SessionStateChanged(session="c", label="y-1", ts=3.0, old=S.LOST, new=S.PENDING, attempt=2),
        ]
    )
    assert book.sessions["c"].node is None
    assert book.node_counts() == {"10.0.0.7/4f1a2b": 1}
