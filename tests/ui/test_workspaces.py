"""Workspaces in the dashboard: the Changes view (`c`) of a session's branch, `m` (merge) and `D` (discard), the merge
mark of a row and the branch in the detail. On the fake runtime (its workspaces are tests/ui/fake_workspaces.py):
snapshots of what is drawn, Pilot tests of the keys and of what they call; then once on a real runtime and a real
git repository.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Input, Static

from crewtui.errors import CrewError
from crewtui.events import SessionStateChanged, WorkspaceChanged
from crewtui.model import Session, SessionState, SpawnRequest
from crewtui.ui.actions import ACTIONS, BINDINGS
from crewtui.ui.app import CrewApp, make_app
from crewtui.ui.book import SessionBook
from crewtui.ui.diffs import changes_text, diff_line, diff_text, merge_mark, split_diff
from crewtui.ui.screens.confirm import ConfirmScreen
from crewtui.ui.widgets.changes import ChangesPane, DiffView, FileList
from crewtui.ui.widgets.detail import SessionDetail
from crewtui.ui.widgets.tries import file_lines
from crewtui.workspaces.git import git
from tests.conftest import crew_from
from tests.ui.conftest import fake_app, recording, settle
from tests.ui.fake_workspaces import CONFLICT, CONFLICT_NOTE, DIFF_SMALL, LIVE, MERGED, REVIEW, count
from tests.ui.test_gateway import calls, select, text_of
from tests.workspaces.test_git_workspaces import make_repo

WIDE = (140, 42)
NARROW = (80, 24)
PLAIN = "ads-auditor-2026-04-02-r6"  # running, no workspace
REVIEW_FILES = [
    "Makefile",
    "docs/auth.md",
    "src/api/auth.py",
    "src/api/errors.py",
    "src/api/handlers_102.py",
    "static/logo.png",
    "tests/api/test_auth.py",
]

Snap = Callable[..., bool]


def shown(text: Text | Any) -> str:
    console = Console(width=200, color_system=None, record=True)
    console.print(text)
    return console.export_text()


def pane(app: CrewApp) -> ChangesPane:
    return app.main_screen.changes_pane


async def changes_read(pilot: Pilot[None]) -> ChangesPane:
    """Wait until the Changes view has read its diff (or said why not) and drawn it."""
    view = pane(pilot.app)  # type: ignore[arg-type]
    await pilot.pause()
    while view.loading:
        await pilot.pause(0.01)
    await pilot.pause()
    await pilot.pause()
    return view


def diff_shown(app: CrewApp) -> str:
    return text_of(app.main_screen.query_one("#changes-text", Static))


def changes_of(label: str, *keys: str) -> Callable[[Pilot[None]], Any]:
    """The cursor on `label`, its Changes view open, then `keys`."""

    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await select(pilot.app, pilot, label)  # type: ignore[arg-type]
        await pilot.press("c")
        await changes_read(pilot)
        if keys:
            await pilot.press(*keys)
        await pilot.pause()
        await pilot.pause()

    return run


def workspace_app(**kw: Any) -> CrewApp:
    return fake_app(workspaces=True, **kw)


# ------------------------------------------------------------------------------------------------ snapshots

# The file with two hunks, a new import and a line longer than the pane: every colour of a diff at once.
changes_view = changes_of(REVIEW, "down", "down")
# At 80x24, in the diff of the same file: its end, where the long line wraps.
changes_view_narrow = changes_of(REVIEW, "down", "down", "enter", "end")


def test_changes_view(snap_compare: Snap) -> None:
    # code-review-pr-102: its branch and counts, not merged, the keys; seven files with their counts (a binary one,
    # two new ones); src/api/auth.py's diff: file headers bold, hunk headers cyan, added green, removed red.
    assert snap_compare(workspace_app(), terminal_size=WIDE, run_before=changes_view)


def test_changes_view_narrow(snap_compare: Snap) -> None:
    # The same on the Detail tab of an 80x24 terminal: the list cut to five rows, the diff wrapped to the width.
    assert snap_compare(workspace_app(), terminal_size=NARROW, run_before=changes_view_narrow)


def test_session_in_conflict_detail(snap_compare: Snap) -> None:
    # A merge in conflict, set apart above the detail's facts with its note and keys; the rows (filtered to the code
    # reviews and ops) show where each branch stands: conflict, unmerged, at work in its worktree, discarded, no
    # changes, merged, queued, its check failed.
    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("slash")
        pilot.app.screen.query_one("#filter", Input).value = "code-review|ops"
        await pilot.press("enter")
        await select(pilot.app, pilot, CONFLICT)  # type: ignore[arg-type]

    assert snap_compare(workspace_app(), terminal_size=WIDE, run_before=run)


# ------------------------------------------------------------------------------------------------ c


async def test_c_shows_the_changes_and_c_again_the_detail() -> None:
    app = workspace_app()
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        key = await select(app, pilot, REVIEW)
        await pilot.press("c")
        view = await changes_read(pilot)
        screen = app.main_screen
        assert view.display and not screen.query_one("#detail").display and not screen.transcript.display
        assert [f.path for f in view.files] == REVIEW_FILES
        assert calls(app, "diff") == [key]
        assert isinstance(app.focused, FileList)
        prompts = [shown(view.file_list.get_option_at_index(i).prompt) for i in range(len(REVIEW_FILES))]
        assert prompts[2].split() == ["+17", "−7", "M", "src/api/auth.py"]
        assert prompts[5].split() == ["bin", "M", "static/logo.png"]
        summary = text_of(screen.query_one("#changes-summary", Static))
        assert "crew/code-review-pr-102 from main" in summary and "7 files +57 −14 · 2 commits" in summary
        assert "⌥ unmerged" in summary and "m merge" in summary and "D discard" in summary
        assert "changes" in str(screen.query_one("#right").border_title)
        assert "diff --git a/Makefile b/Makefile" in diff_shown(app)
        await pilot.press("c")
        await pilot.pause()
        assert not view.display and screen.query_one("#detail").display
        assert app.focused is screen.session_tree
        assert "changes" not in str(screen.query_one("#right").border_title)


async def test_changes_view_moves_between_files_and_scrolls() -> None:
    app = workspace_app()
    async with app.run_test(size=NARROW) as pilot:
        await changes_of(REVIEW)(pilot)
        view = pane(app)
        assert app.main_screen.pane == "detail"  # a narrow terminal: the detail tab comes into view
        await pilot.press("down", "down")
        assert view.current == 2 and view.file_list.highlighted == 2
        assert "+++ b/src/api/auth.py" in diff_shown(app)
        await pilot.press("pagedown")  # from the list: the diff scrolls
        await pilot.pause()
        diff = view.diff_view
        assert diff.scroll_y > 0
        await pilot.press("end")  # the list's: the last file
        await pilot.pause()
        assert view.current == 6 and "+++ b/tests/api/test_auth.py" in diff_shown(app)
        assert diff.scroll_y == 0  # a file's diff starts at its top
        await pilot.press("home", "enter")  # the first file; into its diff
        await pilot.pause()
        assert isinstance(app.focused, DiffView)
        await pilot.press("down", "down", "down")
        await pilot.pause()
        assert diff.scroll_y == 3
        await pilot.press("right", "right")  # in the diff, ←→ pick a file
        await pilot.pause()
        assert view.current == 2 and view.file_list.highlighted == 2 and diff.scroll_y == 0
        await pilot.press("left")
        await pilot.pause()
        assert view.current == 1 and "+++ b/docs/auth.md" in diff_shown(app)
        await pilot.press("left", "left", "left")  # stops at the first
        await pilot.pause()
        assert view.current == 0


async def test_changes_view_follows_the_selection() -> None:
    app = workspace_app()
    async with app.run_test(size=WIDE) as pilot:
        await changes_of(REVIEW)(pilot)
        key = await select(app, pilot, CONFLICT)
        view = await changes_read(pilot)
        assert [f.path for f in view.files] == ["src/api/auth.py", "src/api/handlers_102.py"]
        assert calls(app, "diff")[-1] == key
        summary = text_of(app.main_screen.query_one("#changes-summary", Static))
        assert "⌥ conflict" in summary and "CONFLICT (content)" in summary and "m again" in summary
        n = len(calls(app, "diff"))
        await pilot.pause(1.2)  # the detail refreshes every second: the diff is not read again
        assert len(calls(app, "diff")) == n
        await select(app, pilot, PLAIN)
        view = await changes_read(pilot)
        assert view.files == [] and len(calls(app, "diff")) == n
        assert f"{PLAIN} has no workspace" in text_of(app.main_screen.query_one("#changes-summary", Static))
        app.main_screen.session_tree.select_row("g:code-review-pr")
        await pilot.pause()
        await pilot.pause()
        assert "select a session" in text_of(app.main_screen.query_one("#changes-summary", Static))
        await select(app, pilot, "code-review-pr-105")  # discarded: no branch left to read
        await changes_read(pilot)
        assert "discarded: nothing is left to show" in diff_shown(app) and len(calls(app, "diff")) == n


async def test_changes_view_says_a_failed_read_in_the_pane() -> None:
    app = workspace_app()
    notes = recording(app)

    async def refused(ref: str, stat: bool = False) -> str:
        raise CrewError("git diff: bad revision 'crew/code-review-pr-102'")

    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        app.runtime.diff = refused  # type: ignore[method-assign]
        await changes_of(REVIEW)(pilot)
        assert "the diff could not be read: git diff: bad revision" in diff_shown(app)
        assert pane(app).files == [] and notes == []


async def test_a_diff_is_foreign_text() -> None:
    # Markup, escape sequences and control characters in a diff are shown as text; tabs are expanded.
    diff = (
        "diff --git a/x.md b/x.md\n--- a/x.md\n+++ b/x.md\n@@ -1 +1 @@ [bold]ctx[/]\n"
        "-[red]old[/red]\n+\tnew \x1b]0;owned\x07\x1b[2Jbell\x07 [/x]\n"
    )
    app = workspace_app()

    async def fixed(ref: str, stat: bool = False) -> str:
        return diff

    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        app.runtime.diff = fixed  # type: ignore[method-assign]
        await changes_of(REVIEW)(pilot)
        text = diff_shown(app)
        assert "-[red]old[/red]" in text and "@@ [bold]ctx[/]" in text
        assert "+   new bell␇ [/x]" in text  # the tab to the next stop of 4
        assert "\x1b" not in text and "owned" not in text


# ------------------------------------------------------------------------------------------------ m


async def test_m_queues_the_branch_and_says_so() -> None:
    app = workspace_app()
    notes = recording(app)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        key = await select(app, pilot, REVIEW)
        await pilot.press("m")
        await pilot.pause(0.1)
        assert calls(app, "merge") == [key]
        assert notes[-1] == f"{REVIEW}: queued (crew/{REVIEW})"
        app.main_screen.flush_events()  # the runtime's workspace event
        await pilot.pause()
        assert app.book.sessions[key].merge == "queued"
        assert "⌥ queued" in str(app.main_screen.session_tree.nodes["s:" + key].label)
        assert "⌥ queued" in text_of(app.main_screen.query_one("#detail", SessionDetail))


async def test_m_on_a_live_merged_or_workspace_less_session_says_so_and_calls_nothing() -> None:
    app = workspace_app()
    notes = recording(app)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        for label in (LIVE, PLAIN, MERGED):
            await select(app, pilot, label)
            await pilot.press("m")
            await pilot.pause()
        app.main_screen.session_tree.select_row("g:code-review-pr")
        await pilot.pause()
        await pilot.press("m")
        await pilot.pause()
        assert calls(app, "merge") == []
        assert notes == [
            f"{LIVE} is still running: merge it when it has ended",
            f"{PLAIN} has no workspace: no branch to merge",
            f"{MERGED}: its branch is already merged",
            "select a session with a workspace to merge its branch",
        ]


async def test_m_on_a_conflict_tries_again_and_a_refusal_is_one_line() -> None:
    app = workspace_app()
    notes = recording(app)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        key = await select(app, pilot, CONFLICT)
        await pilot.press("m")
        await pilot.pause(0.1)
        assert calls(app, "merge") == [key] and notes[-1] == f"{CONFLICT}: queued (crew/{CONFLICT})"
        app.main_screen.flush_events()
        await pilot.pause()
        assert app.book.sessions[key].merge_note is None
        app.book.sessions[key].merge = "none"  # this copy behind the runtime's: the runtime refuses, in one line
        await pilot.press("m")
        await pilot.pause(0.1)
        assert notes[-1] == f"{CONFLICT}: its branch is already queued" and "\n" not in notes[-1]


# ------------------------------------------------------------------------------------------------ D


async def test_d_asks_first_and_discards_only_on_yes() -> None:
    app = workspace_app()
    notes = recording(app)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        key = await select(app, pilot, REVIEW)
        await pilot.press("D")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and app.screen.id == "discard-confirm"
        body = text_of(app.screen.query_one("#confirm-body", Static))
        assert REVIEW in body and f"crew/{REVIEW} from main" in body and "7 files +57 −14" in body
        await pilot.press("n")
        await pilot.pause()
        assert app.screen is app.main_screen and calls(app, "discard") == []
        await pilot.press("D")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause(0.1)
        assert calls(app, "discard") == [key]
        assert notes[-1] == f"{REVIEW}: discarded (crew/{REVIEW})"
        app.main_screen.flush_events()
        await pilot.pause()
        assert "⌥ discarded" in str(app.main_screen.session_tree.nodes["s:" + key].label)


async def test_d_on_a_live_merged_or_workspace_less_session_says_so_and_asks_nothing() -> None:
    app = workspace_app()
    notes = recording(app)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        for label in (LIVE, PLAIN, MERGED):
            await select(app, pilot, label)
            await pilot.press("D")
            await pilot.pause()
            assert app.screen is app.main_screen
        assert calls(app, "discard") == []
        assert notes == [
            f"{LIVE} is still running: kill it first",
            f"{PLAIN} has no workspace: no branch to discard",
            f"{MERGED}: its branch is merged; nothing to discard",
        ]


async def test_changes_merge_and_discard_are_in_the_one_registry() -> None:
    specs = {a.id: a for a in ACTIONS}
    assert (specs["changes"].key, specs["merge"].key, specs["discard"].key) == ("c", "m", "D")
    keys = [getattr(b, "key", None) for b in BINDINGS]
    assert len(keys) == len(set(keys)), "a key bound twice"
    app = workspace_app()
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await select(app, pilot, REVIEW)
        await app.run_action("changes")  # what the palette runs
        view = await changes_read(pilot)
        assert view.display and len(view.files) == 7


# ------------------------------------------------------------------------------------------------ rows, detail, book


async def test_rows_and_detail_say_where_each_branch_stands() -> None:
    app = workspace_app()
    async with app.run_test(size=(200, 42)) as pilot:
        await settle(pilot)
        tree = app.main_screen.session_tree
        marks = {
            s.label: str(tree.nodes["s:" + k].label).split("#", 1)[1]
            for k, s in app.book.sessions.items()
            if s.merge is not None
        }
        assert "⌥ conflict approved" in marks[CONFLICT]
        assert "⌥ unmerged approved" in marks[REVIEW]
        assert "⌥ reviewing" in marks[LIVE]  # at work in its worktree
        assert "⌥ discarded" in marks["code-review-pr-105"]
        assert "⌥ no changes" in marks["code-review-pr-106"]
        assert "⌥ merged ok" in marks[MERGED]
        assert "⌥ check failed" in marks["ops-deploy-web"]
        assert "⌥" not in str(
            tree.nodes["s:" + next(k for k, s in app.book.sessions.items() if s.label == PLAIN)].label
        )
        await select(app, pilot, CONFLICT)
        detail = text_of(app.main_screen.query_one("#detail", SessionDetail))
        assert "merge conflict  c changes  m again  D discard" in detail
        assert CONFLICT_NOTE in detail.replace("\n", " ") or "CONFLICT (content)" in detail
        assert "branch crew/code-review-pr-101 from main at" in detail and "2 files +4 −4 · 1 commit" in detail
        await select(app, pilot, "ops-rotate-keys")
        detail = text_of(app.main_screen.query_one("#detail", SessionDetail))
        assert "⌥ queued: main is checked out in /home/u/ops" in detail
        await select(app, pilot, LIVE)
        detail = text_of(app.main_screen.query_one("#detail", SessionDetail))
        assert "changes counted when it ends" in detail and "⌥ in its worktree  c what it committed so far" in detail


def test_the_book_applies_workspace_events() -> None:
    book = SessionBook()
    s = Session(key="s-1", label="fix", state=SessionState.DONE, created_at=0, updated_at=0)
    s.branch, s.merge = "crew/fix", "none"
    book.load([s])

    def ev(action: str, merge: str | None, **kw: Any) -> WorkspaceChanged:
        return WorkspaceChanged(session="s-1", label="fix", ts=5, action=action, merge=merge, **kw)  # type: ignore[arg-type]

    ch = book.apply([ev("queued", "queued", changes={"files": [], "commits": 0})])
    s = book.sessions["s-1"]
    assert "s-1" in ch.rows and s.merge == "queued" and s.merge_queued_at == 5 and s.changes is not None
    assert [m.kind for m in ch.marks] == ["merge"]
    book.apply([ev("waiting", "queued", note="main is checked out in /u/blog")])
    assert s.merge_note == "main is checked out in /u/blog"
    book.apply([ev("conflict", "conflict", files=["a.py", "b.py"], note="CONFLICT (content): a.py")])
    assert s.merge == "conflict" and s.merge_note == "conflict in a.py, b.py: CONFLICT (content): a.py"
    book.apply([ev("merged", "merged", note="nothing to merge: already in main")])
    book.apply([ev("removed", None, note="worktree /w and branch crew/fix removed")])
    assert s.merge == "merged" and s.merge_note == "nothing to merge: already in main"
    assert merge_mark(s) is not None and merge_mark(s).plain == "⌥ merged"  # type: ignore[union-attr]
    ended = SessionStateChanged(session="s-1", label="fix", ts=6, old=SessionState.DONE, new=SessionState.FAILED)
    assert book.apply([ended]).refetch == {"s-1"}  # its counted changes: got again


async def test_a_session_that_ends_in_a_workspace_is_got_again_for_its_counted_changes() -> None:
    # The runtime counts what a session changed as it ends; the state event does not carry it: the dashboard asks.
    app = workspace_app()
    async with app.run_test(size=WIDE) as pilot:
        await changes_of(LIVE)(pilot)
        key = next(k for k, s in app.book.sessions.items() if s.label == LIVE)
        theirs = app.runtime.sessions[key]  # type: ignore[attr-defined]
        theirs.state, theirs.changes = SessionState.DONE, count(DIFF_SMALL, 1)
        n = len(calls(app, "diff"))
        app.runtime.emit(  # type: ignore[attr-defined]
            SessionStateChanged(
                session=key, label=LIVE, ts=app.clock.now(), old=SessionState.RUNNING, new=SessionState.DONE, attempt=1
            )
        )
        for _ in range(100):
            if app.book.sessions[key].changes is not None:
                break
            await pilot.pause(0.02)
        assert app.book.sessions[key].changes == theirs.changes
        await changes_read(pilot)
        summary = text_of(app.main_screen.query_one("#changes-summary", Static))
        assert "1 file +1 −1 · 1 commit" in summary and "⌥ unmerged" in summary
        assert len(calls(app, "diff")) > n  # ended: its diff read again (the end commit)


# ------------------------------------------------------------------------------------------------ split, colour


def test_a_diff_splits_per_file_with_paths_statuses_and_counts() -> None:
    text = "\n".join(
        [
            "diff --git a/src/a.py b/src/a.py",
            "index 1..2 100644",
            "--- a/src/a.py",
            "+++ b/src/a.py",
            "@@ -1,2 +1,2 @@",
            "-old",
            "+new",
            "+more",
            "--- not a header: a removed line that starts with two dashes",
            "diff --git a/gone.txt b/gone.txt",
            "deleted file mode 100644",
            "--- a/gone.txt",
            "+++ /dev/null",
            "@@ -1 +0,0 @@",
            "-bye",
            "diff --git a/img.png b/img.png",
            "new file mode 100644",
            "Binary files /dev/null and b/img.png differ",
            "diff --git a/old name.md b/new name.md",
            "similarity index 100%",
            "rename from old name.md",
            "rename to new name.md",
            'diff --git "a/caf\\303\\251.md" "b/caf\\303\\251.md"',
            '--- "a/caf\\303\\251.md"',
            '+++ "b/caf\\303\\251.md"',
            "@@ -1 +1 @@",
            "-x",
            "+y",
            "diff --git a/with space.txt b/with space.txt",
            "--- a/with space.txt\t",
            "+++ b/with space.txt\t",
            "@@ -1 +1 @@",
            "-1",
            "+2",
        ]
    )
    files = split_diff(text)
    assert [(f.path, f.status, f.binary) for f in files] == [
        ("src/a.py", "M", False),
        ("gone.txt", "D", False),
        ("img.png", "A", True),
        ("new name.md", "R", False),
        ("café.md", "M", False),
        ("with space.txt", "M", False),
    ]
    assert [f.counts() for f in files] == [(2, 2), (0, 1), (-1, -1), (0, 0), (1, 1), (1, 1)]
    assert split_diff("") == []


def test_diff_colours_headers_hunks_added_and_removed() -> None:
    (f,) = split_diff(
        "diff --git a/m b/m\n--- a/m\n+++ b/m\n@@ -1,2 +1,2 @@ def f():\n-a\n+\tb\n c\n\\ No newline at end of file\n"
    )
    lines = [diff_line(line, in_hunk=i >= 3) for i, line in enumerate(f.lines)]
    assert [str(line.style) for line in lines[:3]] == ["bold", "bold", "bold"]  # file headers
    assert [(str(s.style), lines[3].plain[s.start : s.end]) for s in lines[3].spans] == [
        ("#56b6c2", "@@ -1,2 +1,2 @@"),  # the hunk header cyan, its context dim
        ("#7f848e", " def f():"),
    ]
    assert [str(line.style) for line in lines[4:7]] == ["#e06c75", "#98c379", ""]
    assert lines[5].plain == "+   b"  # the tab expanded to the next stop of 4
    assert "italic" in str(lines[7].style)
    assert diff_text(f).plain == "\n".join(line.plain for line in lines)


# ------------------------------------------------------------------------------------------------ a real runtime

AGENT = """
import pathlib
pathlib.Path("post.md").write_text("line 1\\nline 2, fixed\\nline 3\\n")
pathlib.Path("notes.md").write_text("what I changed\\n")
print("done")
"""


def editor_crew(tmp_path: Path, agent: str) -> tuple[Path, Any]:
    """A real repository in tmp_path (the user on a branch of their own, so main can be merged into) and a crew
    whose `editor` runs `agent` in a worktree of it."""
    repo = make_repo(tmp_path / "blog")
    git(repo, "checkout", "--quiet", "-b", "work")
    crew = crew_from(
        f"""
        [crew]
        name = "coders"

        [agents.editor]
        command = [{json.dumps(sys.executable)}, "-c", {json.dumps(agent)}]

        [agents.editor.workspace]
        repo = {json.dumps(str(repo))}
        base = "main"
        """
    )
    return repo, crew


async def test_a_real_branch_reviewed_then_merged(make_orch: Any, tmp_path: Path) -> None:
    repo, crew = editor_crew(tmp_path, AGENT)
    orch = await make_orch(crew)
    s = await orch.spawn(SpawnRequest(label="fix-post", agent="editor"))
    for _ in range(500):
        s = await orch.get(s.key)
        if s.state.terminal and s.changes is not None:
            break
        await asyncio.sleep(0.02)
    assert s.state == SessionState.DONE and s.merge == "none", s
    app = make_app(orch)
    notes = recording(app)
    async with app.run_test(size=WIDE) as pilot:
        await app.loaded.wait()
        await pilot.pause()
        await select(app, pilot, "fix-post")
        await pilot.press("c")
        view = await changes_read(pilot)
        assert [f.path for f in view.files] == ["notes.md", "post.md"]
        await pilot.press("down")
        await pilot.pause()
        assert "+line 2, fixed" in diff_shown(app) and "-line 2" in diff_shown(app)
        assert "2 files +2 −1 · 1 commit" in text_of(app.main_screen.query_one("#changes-summary", Static))
        await pilot.press("m")
        for _ in range(500):
            if app.book.sessions[s.key].merge == "merged":
                break
            await pilot.pause(0.02)
        assert notes[0] == "fix-post: queued (crew/fix-post)"
        assert app.book.sessions[s.key].merge == "merged"
        await pilot.pause(0.2)
        assert "⌥ merged" in str(app.main_screen.session_tree.nodes["s:" + s.key].label)
    assert git(repo, "show", "main:post.md").stdout == "line 1\nline 2, fixed\nline 3\n"


def test_counts_say_every_file_though_only_the_biggest_are_listed() -> None:
    """A session's `changes` lists its biggest files and counts them all (`files_total`): the summary and a try's
    card say the count, not the length of the list."""
    changes = {
        "files": [
            {"path": "big.js", "insertions": 900, "deletions": 0},
            {"path": "b.js", "insertions": 5, "deletions": 1},
        ],
        "files_total": 12_000,
        "insertions": 20_000,
        "deletions": 1,
        "commits": 1,
    }
    summary = changes_text(changes)
    assert summary is not None and summary.plain.startswith("12000 files +20000")
    last = file_lines(changes, 1)[-1]
    assert isinstance(last, Text) and last.plain == "+11999 more files"
    older = {k: v for k, v in changes.items() if k != "files_total"}  # a record from before the count
    assert changes_text(older).plain.startswith("2 files")  # type: ignore[union-attr]
