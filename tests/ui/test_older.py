"""A year of history, loaded on demand: the dashboard lists the live sessions and a window of recent ended ones,
counts what is older per group (`older`), and loads a group's next page when its older row is opened.

The pure parts (the forest with older rows, the counts, the pages) directly; the screen on the deterministic
fake, whose `archive` is older history that is listed and counted but never loaded unless asked for, and whose
`calls` say what the dashboard asked. tests/ui/test_older_runtime.py does it on a real runtime.
"""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot

from crewtui.model import Session, SessionState
from crewtui.ui.app import CrewApp
from crewtui.ui.calls import FAILED
from crewtui.ui.grouping import GroupNode, Item, LeafNode, build_forest
from crewtui.ui.older import OlderHistory, Page, fetch_page
from tests.ui.conftest import fake_app, opened, settle
from tests.ui.fake_runtime import ENDED, FakeRuntime, make_archive

S = SessionState
SIZE = (140, 42)


def shape(items: list[Item]) -> list[object]:
    out: list[object] = []
    for item in items:
        if isinstance(item, GroupNode):
            out.append((item.prefix, shape(item.children)))
        elif isinstance(item, LeafNode):
            out.append(item.name)
        else:
            out.append(f"<older {item.prefix}>")
    return out


def session(key: str, label: str, state: SessionState = S.DONE) -> Session:
    return Session(key=key, label=label, state=state, created_at=0.0, updated_at=0.0)


# ------------------------------------------------------------------------------------------------ pure parts


def test_a_group_with_older_history_is_a_top_group_ending_with_its_row() -> None:
    items = [("1", "blog-publisher-a"), ("2", "blog-publisher-b"), ("3", "solo"), ("4", "ops-x")]
    assert shape(build_forest(items)) == [("blog-publisher", ["a", "b"]), "ops-x", "solo"]
    # blog is its own group now (not folded into blog-publisher), a single session (solo) becomes a group, and
    # digest, only in older history, is a group with just its older row; ops has none: unchanged.
    assert shape(build_forest(items, older=["blog", "solo", "digest"])) == [
        ("blog", [("blog-publisher", ["a", "b"]), "<older blog>"]),
        ("digest", ["<older digest>"]),
        ("solo", ["solo", "<older solo>"]),
        "ops-x",
    ]
    # Once its older history is loaded, a group keeps its place (its rows do not fold into blog-publisher); one
    # with no session shown (under a filter) is not drawn.
    assert shape(build_forest(items, tops=["blog", "digest"])) == [
        ("blog", [("blog-publisher", ["a", "b"])]),
        "ops-x",
        "solo",
    ]


def test_the_counts_leave_out_what_the_book_holds_and_pages_bring_them_down() -> None:
    older = OlderHistory()
    assert not older.window_listed([session("s-5", "a-1")], window=2)  # not full: nothing is older
    assert older.complete and older.horizon is None and older.summary == ""

    older = OlderHistory()
    assert older.window_listed([session("s-5", "a-1"), session("s-6", "a-2")], window=2)
    assert older.horizon == "s-5" and older.pending and older.summary == "counting older…"
    assert not older.window_listed([session("s-7", "a-3"), session("s-8", "a-4")], window=2)  # set once
    book = {
        "s-1": session("s-1", "blog-x"),  # ended, below the horizon, held (a page brought it): counted, not left
        "s-2": session("s-2", "ops-y", S.RUNNING),  # live when listed: not counted by the runtime either
        "s-5": session("s-5", "a-1"),
    }
    older.set_counts({"blog": 10, "ops": 2, "a": 0}, book)
    assert older.left == {"blog": 9, "ops": 2} and older.total == 11 and older.summary == "11 older"
    assert not older.needs_count(book)

    added = [session(f"s-0{i}", "blog-x") for i in range(5)]
    older.paged("blog", added, Page(added, "s-00", exhausted=False))
    assert older.left == {"blog": 4, "ops": 2} and older.cursor_of("blog") == "s-00" and older.cursor_of("ops") == "s-5"
    older.paged("ops", [], Page([], "s-5", exhausted=True))
    assert older.left == {"blog": 4}
    # An old live session ended since: the book moved under the horizon, a resync counts again.
    book["s-2"] = session("s-2", "ops-y", S.DONE)
    for s in added:
        book[s.key] = s
    assert older.needs_count(book)


async def test_a_page_keeps_its_group_and_reads_past_others_that_share_its_prefix() -> None:
    # The 5 oldest sessions are blog's; 500 newer ones are blogger's (a prefix listing of "blog" matches them).
    fake = FakeRuntime(sessions=False)
    for i in range(505):
        s = session(f"s-{i:04d}", "blog-post" if i < 5 else f"blogger-{i}")
        fake.sessions[s.key] = s

    async def call(name: str, **kw: Any) -> Any:
        return await getattr(fake, name)(**kw)

    page = await fetch_page(call, "blog", "s-9999")
    assert [s.key for s in page.sessions] == [f"s-{i:04d}" for i in range(5)] and page.exhausted  # type: ignore[union-attr]
    # A reader with fewer raw pages stops early, where the next opening goes on from.
    page = await fetch_page(call, "blog", "s-9999", raw_pages=2)
    assert page is not None and page.sessions == [] and not page.exhausted and page.cursor == "s-0105"

    async def failing(name: str, **kw: Any) -> Any:
        return FAILED

    assert await fetch_page(failing, "blog", "s-9999") is None


# ------------------------------------------------------------------------------------------------ the screen


def older_app() -> CrewApp:
    return fake_app(archive=make_archive(), window=ENDED)


def lists(app: CrewApp) -> list[dict[str, Any]]:
    return [args for name, args in app.runtime.calls if name == "list"]  # type: ignore[attr-defined]


def olders(app: CrewApp) -> list[str]:
    return [args for name, args in app.runtime.calls if name == "older"]  # type: ignore[attr-defined]


def title(app: CrewApp) -> str:
    return str(app.main_screen.query_one("#left").border_title)


def header(app: CrewApp) -> str:
    return str(app.main_screen.query_one("#status").render())


def labels(app: CrewApp, prefix: str) -> set[str]:
    return {s.label for s in app.book.sessions.values() if s.prefix == prefix}


async def open_row(pilot: Pilot[None], prefix: str) -> None:
    app = pilot.app
    assert isinstance(app, CrewApp)
    assert app.main_screen.session_tree.select_row("o:" + prefix)
    await pilot.pause()
    await pilot.press("enter")
    await opened(pilot, prefix)


async def test_the_dashboard_lists_live_sessions_and_a_window_never_everything() -> None:
    app = older_app()
    fake: FakeRuntime = app.runtime  # type: ignore[assignment]
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        horizon = min(k for k, s in fake.sessions.items() if s.state.terminal)
        assert lists(app) == [
            {"state": None, "prefix": None, "limit": None, "before": None, "since": None, "ended": False},
            {"state": None, "prefix": None, "limit": ENDED, "before": None, "since": None, "ended": True},
        ]
        assert olders(app) == [horizon]
        assert set(app.book.sessions) == set(fake.sessions)  # not one of the 406 older
        assert app.book.older.left == {"blog": 240, "research": 120, "blogger": 15, "digest": 31}
        assert title(app) == "Sessions 50 loaded · 406 older"
        assert "50 loaded" in header(app) and "406 older" in header(app)
        tree = app.main_screen.session_tree
        assert {n for n in tree.nodes if n.startswith("o:")} == {"o:blog", "o:research", "o:blogger", "o:digest"}
        assert "240 older ended sessions" in str(tree.nodes["o:blog"].label)

        # A resync lists the same way, and counts nothing again: nothing moved under the horizon.
        app.main_screen.resync()
        await pilot.pause(0.1)
        assert lists(app)[2:] == lists(app)[:2] and len(olders(app)) == 1
        assert set(app.book.sessions) == set(fake.sessions)


async def test_without_older_history_nothing_is_counted_and_the_title_is_as_before() -> None:
    app = fake_app()  # 34 ended sessions: the window of 500 is not full
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert [a["limit"] for a in lists(app) if a["ended"]] == [500]
        assert all(a["ended"] is not None for a in lists(app))
        assert olders(app) == [] and title(app) == "Sessions 50"
        assert not any(n.startswith("o:") for n in app.main_screen.session_tree.nodes)


async def test_enter_on_an_older_row_loads_pages_until_the_row_goes() -> None:
    app = older_app()
    fake: FakeRuntime = app.runtime  # type: ignore[assignment]
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        tree = app.main_screen.session_tree
        horizon = app.book.older.horizon
        archived_blog = sorted(k for k, s in fake.archive.items() if s.prefix == "blog")

        await open_row(pilot, "blog")
        page = lists(app)[-1]
        assert page == {"state": None, "prefix": "blog", "limit": 200, "before": horizon, "since": None, "ended": True}
        assert set(archived_blog[-200:]) <= set(app.book.sessions)  # the newest 200 of them
        assert not set(archived_blog[:-200]) & set(app.book.sessions)
        assert app.book.older.left["blog"] == 40
        assert "40 older ended sessions" in str(tree.nodes["o:blog"].label)
        assert tree.current is not None and tree.current.node_id == "o:blog"  # enter again goes on
        assert title(app) == "Sessions 250 loaded · 206 older"

        await pilot.press("enter")
        await opened(pilot, "blog")
        assert lists(app)[-1]["before"] == archived_blog[-200]
        assert set(archived_blog) <= set(app.book.sessions)
        assert "o:blog" not in tree.nodes and "blog" not in app.book.older.left
        assert tree.current is not None and tree.current.kind == "session"
        assert labels(app, "blogger") == set()  # a "blog" listing matched them; they are not blog's
        assert title(app) == "Sessions 290 loaded · 166 older"
        assert app.book.older.left == {"research": 120, "blogger": 15, "digest": 31}


async def test_a_group_only_in_older_history_opens_like_any_other() -> None:
    app = older_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        tree = app.main_screen.session_tree
        digest = tree.nodes["g:digest"]
        assert [c.data.node_id for c in digest.children if c.data] == ["o:digest"]
        await open_row(pilot, "digest")
        assert len(labels(app, "digest")) == 31 and "o:digest" not in tree.nodes
        assert tree.group_counts("digest") == {S.DONE: 27, S.FAILED: 4}


async def test_a_filter_hides_the_older_rows_until_it_is_cleared() -> None:
    app = older_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        tree = app.main_screen.session_tree
        await pilot.press("6")  # failed only: which older sessions failed is not known until they are loaded
        await pilot.pause()
        assert not any(n.startswith("o:") for n in tree.nodes) and "g:digest" not in tree.nodes
        assert title(app) == "Sessions 4 of 50 loaded · 406 older"
        await pilot.press("1")
        await pilot.pause()
        assert {n for n in tree.nodes if n.startswith("o:")} == {"o:blog", "o:research", "o:blogger", "o:digest"}
