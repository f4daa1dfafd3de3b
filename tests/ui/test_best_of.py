"""Best of N in the dashboard: the spawn form's "best of" field, and the tries of a group side by side (`b`).

On the fake runtime with a best-of group (`FakeRuntime(best_of=True)`: fix-login-1 failed its merge check,
fix-login-2 is done and unmerged, fix-login-3 still runs; tests/ui/fake_workspaces.py): snapshots of what is drawn,
Pilot tests of the keys and of what they call; then once on a real runtime and a real git repository.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Input, Select, Static

from crewtui.events import SessionStateChanged
from crewtui.model import SessionState
from crewtui.ui.actions import ACTIONS, BINDINGS
from crewtui.ui.app import CrewApp, make_app
from crewtui.ui.screens.compare import CompareScreen
from crewtui.ui.screens.help import keys_table
from crewtui.ui.screens.spawn import SpawnScreen
from crewtui.ui.widgets.tries import TryColumn, fit_path, run_time
from crewtui.workspaces.git import git
from tests.ui.conftest import fake_app, key_of, recording, settle
from tests.ui.fake_workspaces import BEST_OF, BEST_OF_TASK, DIFF_SMALL, TRIES, count
from tests.ui.test_gateway import calls, fake, select
from tests.ui.test_workspaces import changes_read, editor_crew, shown

WIDE = (140, 42)
NARROW = (80, 24)
PLAIN = "ads-auditor-2026-04-02-r6"  # running, no workspace, no group

Snap = Callable[..., bool]


def best_of_app() -> CrewApp:
    """The fake with workspaces and the group of three tries (the other tests' fake apps stay as they were)."""
    return fake_app(best_of=True)


async def compare_of(pilot: Pilot[None], label: str) -> CompareScreen:
    """The cursor on `label`, then `b`: the view up and drawn."""
    app = pilot.app
    assert isinstance(app, CrewApp)
    await select(app, pilot, label)
    await pilot.press("b")
    await pilot.pause()
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, CompareScreen)
    return screen


def columns(screen: CompareScreen) -> dict[str, str]:
    """label -> what its column shows, as text."""
    out = {}
    for column in screen.query(TryColumn):
        label = screen.book.sessions[column.key].label
        out[label] = column_text(column)
    return out


def column_text(column: TryColumn) -> str:
    console = Console(width=60, color_system=None, record=True)
    console.print(column.content)  # the card, drawn at 60 columns
    return console.export_text()


def chosen(screen: CompareScreen) -> str:
    s = screen.current()
    assert s is not None
    return s.label


# ------------------------------------------------------------------------------------------------ snapshots


def compare_steps(label: str, *keys: str) -> Callable[[Pilot[None]], Any]:
    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await compare_of(pilot, label)
        if keys:
            await pilot.press(*keys)
        await pilot.pause()
        await pilot.pause()

    return run


def test_compare_view(snap_compare: Snap) -> None:
    # A column per try, the chosen one (fix-login-2, where the cursor was) framed in the accent colour: state and how
    # long it ran, tokens and cost, where its merge stands (fix-login-1's check failed, the last lines of its output),
    # its size and biggest files (+1 more file); the running one's changes are counted when it ends.
    assert snap_compare(best_of_app(), terminal_size=WIDE, run_before=compare_steps(TRIES[1]))


def test_compare_view_narrow(snap_compare: Snap) -> None:
    # At 80x24 three columns would not read: the tries are stacked, two lines each, and the chosen one (moved to the
    # first with ←) shows its failed check and its files.
    assert snap_compare(best_of_app(), terminal_size=NARROW, run_before=compare_steps(TRIES[1], "left"))


def test_spawn_form_best_of_refused_half_way(snap_compare: Snap) -> None:
    # The form with its "best of" field: three tries of triage-email, the second's label held by a live session:
    # which one was refused and why, how many started, inline.
    async def fill(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        fill_form(pilot.app.screen, "triage-email", "sub", "3", task="triage the inbox")
        pilot.app.screen.query_one("#spawn-best-of", Input).focus()
        await pilot.press("enter")
        await pilot.pause(0.2)

    assert snap_compare(best_of_app(), terminal_size=WIDE, run_before=fill)


# ------------------------------------------------------------------------------------------------ b


async def test_b_shows_each_try_of_the_group_side_by_side() -> None:
    app = best_of_app()
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        screen = await compare_of(pilot, TRIES[1])
        assert not screen.stacked
        assert [c.key for c in screen.query(TryColumn)] == [key_of(app, t) for t in TRIES]
        assert chosen(screen) == TRIES[1]  # where the cursor was; nothing chosen for the user
        cols = columns(screen)
        first, second, third = (cols[t] for t in TRIES)
        assert "✔ done  ran 11m02s" in first and "41.5k tok $0.1206" in first
        assert "⌥ check failed" in first and "1 failed, 57 passed in 3.02s" in first
        assert "2 files +4 −4 · 1 commit" in first and "src/api/auth.py" in first
        assert "⌥ unmerged" in second and "7 files +57 −14 · 2 commits" in second
        assert "+17   −7 src/api/auth.py" in second and "+1 more file" in second
        assert "static/logo.png" not in second  # a binary file counts nothing: it sorts last, under "+1 more"
        assert "▶ running  24m58s so far" in third and "changes counted when it ends" in third
        assert "at work in its worktree" in third
        summary = shown(screen.query_one("#compare-summary", Static).content)
        assert BEST_OF_TASK in summary and "merging one discards the others" in summary
        assert "Best of 3 · fix-login" in str(screen.query_one("#compare-title").render())


async def test_b_on_a_group_row_of_tries_opens_it_too() -> None:
    app = best_of_app()
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        app.main_screen.session_tree.select_row("g:" + BEST_OF)
        await pilot.pause()
        await pilot.pause()
        await pilot.press("b")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen) and screen.group == BEST_OF
        assert chosen(screen) == TRIES[0]


async def test_b_on_a_session_without_a_group_says_one_line_and_opens_nothing() -> None:
    app = best_of_app()
    notes = recording(app)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await select(app, pilot, PLAIN)
        await pilot.press("b")
        await pilot.pause()
        assert app.screen is app.main_screen
        app.main_screen.session_tree.select_row("g:code-review-pr")
        await pilot.pause()
        await pilot.pause()
        await pilot.press("b")
        await pilot.pause()
        assert app.screen is app.main_screen
    assert notes == [
        f"{PLAIN} is not one of a best-of group: b compares the tries of a task spawned with best of N",
        "group code-review-pr is not one best-of group: select one of its tries "
        "(b compares the tries of a task spawned with best of N)",
    ]


async def test_left_and_right_choose_a_try_and_the_cursor_follows() -> None:
    app = best_of_app()
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        screen = await compare_of(pilot, TRIES[0])
        await pilot.press("right")
        assert chosen(screen) == TRIES[1]
        await pilot.press("right", "right")  # the last stays chosen
        assert chosen(screen) == TRIES[2]
        await pilot.press("left", "left", "left")
        assert chosen(screen) == TRIES[0]
        await pilot.press("down")  # ↑↓ move too (they read naturally when the tries are stacked)
        await pilot.pause()
        await pilot.pause()
        assert chosen(screen) == TRIES[1]
        selected = [c.key for c in screen.query(TryColumn) if c.has_class("-selected")]
        assert selected == [key_of(app, TRIES[1])]
        ref = app.main_screen.session_tree.current
        assert ref is not None and ref.id == key_of(app, TRIES[1])  # the main screen's keys act on the same try


async def test_m_merges_the_chosen_try_through_the_runtime() -> None:
    app = best_of_app()
    notes = recording(app)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        screen = await compare_of(pilot, TRIES[0])
        await pilot.press("right", "m")
        await pilot.pause(0.1)
        assert calls(app, "merge") == [key_of(app, TRIES[1])]
        assert notes == [f"{TRIES[1]}: queued (crew/{TRIES[1]})"]
        assert app.screen is screen  # it stays: the merge's progress shows in its column
        app.main_screen.flush_events()
        await screen.refresh_tries()
        assert "⌥ queued" in columns(screen)[TRIES[1]]


async def test_m_refuses_as_the_main_screen_does() -> None:
    app = best_of_app()
    notes = recording(app)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await compare_of(pilot, TRIES[2])
        await pilot.press("m")  # still running
        await pilot.pause(0.1)
        assert calls(app, "merge") == []
        fake(app).sessions[key_of(app, TRIES[1])].merge = "merged"
        app.book.sessions[key_of(app, TRIES[1])].merge = "merged"
        await pilot.press("left", "m")  # merged already
        await pilot.pause(0.1)
        assert calls(app, "merge") == []
    assert notes == [
        f"{TRIES[2]} is still running: merge it when it has ended",
        f"{TRIES[1]}: its branch is already merged",
    ]


async def test_enter_opens_the_changes_of_the_chosen_try() -> None:
    app = best_of_app()
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await compare_of(pilot, TRIES[0])
        await pilot.press("right", "enter")
        await pilot.pause()
        assert app.screen is app.main_screen
        view = await changes_read(pilot)
        ref = app.main_screen.session_tree.current
        assert ref is not None and ref.id == key_of(app, TRIES[1])
        assert app.main_screen.changes_shown and view.key == key_of(app, TRIES[1])
        assert len(view.files) == 7
        assert calls(app, "diff") == [key_of(app, TRIES[1])]  # read for that try only


async def test_escape_q_and_b_close_it_and_do_nothing_else() -> None:
    app = best_of_app()
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        for key in ("escape", "q", "b"):
            await compare_of(pilot, TRIES[1])
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is app.main_screen, key
        assert calls(app, "merge") == [] and not app.main_screen.changes_shown
        assert app.exit_choice is None  # q closed the view, it did not ask to quit


async def test_the_view_follows_the_sessions_as_they_change() -> None:
    app = best_of_app()
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        screen = await compare_of(pilot, TRIES[2])
        key = key_of(app, TRIES[2])
        now = app.clock.now()
        mine = fake(app).sessions[key]  # as the runtime has it when the dashboard gets it again (its changes counted)
        mine.state, mine.ended_at, mine.changes = SessionState.DONE, now, count(DIFF_SMALL, 1)
        fake(app).emit(
            SessionStateChanged(
                session=key, label=TRIES[2], ts=now, old=SessionState.RUNNING, new=SessionState.DONE, attempt=1
            )
        )
        for _ in range(100):
            if "✔ done" in columns(screen)[TRIES[2]]:
                break
            await pilot.pause(0.05)  # the main screen applies the event, the view's timer draws it
        assert "✔ done  ran 24m58s" in columns(screen)[TRIES[2]]
        for _ in range(100):
            if "1 file +1 −1 · 1 commit" in columns(screen)[TRIES[2]]:
                break
            await pilot.pause(0.05)  # its counted changes come with the session, got again as it ended
        assert "+1   −1 Makefile" in columns(screen)[TRIES[2]]


async def test_best_of_is_in_the_one_registry_and_the_detail_says_it() -> None:
    specs = {a.id: a for a in ACTIONS}
    assert specs["best-of"].key == "b" and not specs["best-of"].show  # only for a try: its detail says so
    keys = [getattr(b, "key", None) for b in BINDINGS]
    assert keys.count("b") == 1 and len(keys) == len(set(keys))
    assert "Best of N: the tries" in shown(keys_table())
    app = best_of_app()
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await select(app, pilot, TRIES[0])
        assert "a try of fix-login  b compare the tries" in shown(app.main_screen.query_one("#detail", Static).content)
        await app.run_action("best_of")  # what the palette runs
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen)


async def test_at_80_columns_the_tries_are_stacked_and_two_fit_side_by_side() -> None:
    app = best_of_app()
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        screen = await compare_of(pilot, TRIES[1])
        assert screen.stacked
        cols = columns(screen)
        assert "7 files +57 −14" in cols[TRIES[1]] and "src/api/auth.py" in cols[TRIES[1]]
        assert len(cols[TRIES[0]].strip().splitlines()) == 2  # not chosen: two lines
        assert "check failed · 2 files +4 −4 · 1 commit" in cols[TRIES[0]]
        await pilot.press("escape")
        del fake(app).sessions[key_of(app, TRIES[2])]
        del app.book.sessions[key_of(app, TRIES[2])]
        screen = await compare_of(pilot, TRIES[1])
        assert not screen.stacked  # two columns of 36 read well at 80


def test_run_time_and_paths_cut_from_the_start() -> None:
    assert [run_time(t) for t in (42, 662, 3900)] == ["42s", "11m02s", "1h05m"]
    assert fit_path("src/api/handlers_102.py", 16) == "…handlers_102.py"
    assert fit_path("a.py", 16) == "a.py"
    assert "\x1b" not in fit_path("\x1b[31mred.py", 20)  # cleaned: an escape in a path is not sent to the terminal


# ------------------------------------------------------------------------------------------------ the spawn form


def fill_form(form: Any, label: str, agent: str, best_of: str, *, task: str = "fix it", domain: str = "") -> None:
    form.query_one("#spawn-label", Input).value = label
    form.query_one("#spawn-agent", Select).value = agent
    form.query_one("#spawn-task", Input).value = task
    form.query_one("#spawn-domain", Input).value = domain
    form.query_one("#spawn-best-of", Input).value = best_of


async def open_form(pilot: Pilot[None]) -> SpawnScreen:
    await pilot.press("n")
    await pilot.pause()
    form = pilot.app.screen
    assert isinstance(form, SpawnScreen)
    return form


async def submit(pilot: Pilot[None], form: SpawnScreen) -> None:
    form.query_one("#spawn-best-of", Input).focus()
    await pilot.press("enter")
    await pilot.pause(0.1)
    await pilot.pause()


def error_of(form: SpawnScreen, field: str) -> str:
    widget = form.query_one("#spawn-error" if field == "form" else f"#spawn-{field}-error", Static)
    return " ".join(shown(widget.content).split())


async def test_best_of_n_spawns_n_tries_labelled_and_grouped() -> None:
    app = best_of_app()
    notes = recording(app)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        form = await open_form(pilot)
        fill_form(form, "fix-signup", "sub", "3")
        await submit(pilot, form)
        assert app.screen is app.main_screen
        requests = calls(app, "spawn")
        assert [(r.label, r.best_of, r.agent, r.task) for r in requests] == [
            (f"fix-signup-{n}", "fix-signup", "sub", "fix it") for n in (1, 2, 3)
        ]
        tries = sorted((s for s in fake(app).sessions.values() if s.best_of == "fix-signup"), key=lambda s: s.label)
        assert [s.label for s in tries] == ["fix-signup-1", "fix-signup-2", "fix-signup-3"]
        assert notes == ["spawned 3 tries of fix-signup: fix-signup-1, fix-signup-2, fix-signup-3"]
        for _ in range(50):
            ref = app.main_screen.session_tree.current
            if ref is not None and ref.id == tries[0].key:
                break
            await pilot.pause(0.05)
        assert ref is not None and ref.id == tries[0].key  # the first try selected (the form dismissed with it)
        await pilot.press("b")
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen) and len(app.screen.query(TryColumn)) == 3


async def test_an_empty_best_of_spawns_one_session() -> None:
    app = best_of_app()
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        form = await open_form(pilot)
        fill_form(form, "fix-once", "sub", "")
        await submit(pilot, form)
        assert [(r.label, r.best_of) for r in calls(app, "spawn")] == [("fix-once", None)]


async def test_a_bad_best_of_is_an_inline_error_and_spawns_nothing() -> None:
    app = best_of_app()
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        form = await open_form(pilot)
        for value, error in (
            ("three", "best of N takes a number from 2 to 10, got 'three'"),
            ("1", "best of N takes 2 to 10 tries, got 1 (empty: one session)"),
            ("11", "best of N takes 2 to 10 tries, got 11 (empty: one session)"),
            ("-2", "best of N takes a number from 2 to 10, got '-2'"),
        ):
            fill_form(form, "fix-x", "sub", value)
            await submit(pilot, form)
            assert error_of(form, "best-of") == error
            assert app.screen is form
        fill_form(form, "fix-x", "sub", "2", domain="article:x")
        await submit(pilot, form)
        assert error_of(form, "best-of").startswith("best of N cannot share one domain")
        fill_form(form, "a" * 127, "sub", "10")  # a valid label; its tenth try's is one character too long
        await submit(pilot, form)
        assert error_of(form, "label").startswith("with best of 10: invalid label")
        assert error_of(form, "best-of") == ""  # the last submit's errors only
        assert calls(app, "spawn") == [] and app.screen is form


async def test_a_try_refused_half_way_is_said_inline_and_the_started_ones_stay() -> None:
    app = best_of_app()
    notes = recording(app)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        form = await open_form(pilot)
        fill_form(form, "triage-email", "sub", "3")  # triage-email-2 is a live session's label
        await submit(pilot, form)
        error = error_of(form, "form")
        assert error.startswith("triage-email-2 was refused: label 'triage-email-2' is held by live session")
        assert "1 of 3 tries started (triage-email-1)" in error
        assert app.screen is form
        assert [r.label for r in calls(app, "spawn")] == ["triage-email-1", "triage-email-2"]
        await submit(pilot, form)  # Spawn again: the one started is not started twice
        assert [r.label for r in calls(app, "spawn")] == ["triage-email-1", "triage-email-2", "triage-email-2"]
        await pilot.press("escape")  # keeps the one started: the dashboard selects it
        await pilot.pause()
        assert app.screen is app.main_screen
    assert notes == ["spawned triage-email-1 (running)"]


async def test_best_of_for_an_agent_without_a_workspace_is_the_runtimes_refusal_inline() -> None:
    app = best_of_app()
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        form = await open_form(pilot)
        fill_form(form, "essay", "writer", "2")
        await submit(pilot, form)
        assert error_of(form, "form") == "best of N needs a workspace: --repo PATH, or an agent with a workspace"
        assert app.screen is form
        assert [s for s in fake(app).sessions.values() if s.label.startswith("essay")] == []


# ------------------------------------------------------------------------------------------------ a real runtime

AGENT = """
import os, pathlib
n = os.environ["CREWTUI_SESSION_LABEL"].rsplit("-", 1)[1]
pathlib.Path("post.md").write_text("line 1\\nline 2, try " + n + "\\nline 3\\n")
print("done")
"""


async def test_a_real_best_of_two_spawned_from_the_form_compared_and_one_merged(make_orch: Any, tmp_path: Path) -> None:
    repo, crew = editor_crew(tmp_path, AGENT)
    orch = await make_orch(crew)
    app = make_app(orch)
    notes = recording(app)
    async with app.run_test(size=WIDE) as pilot:
        await app.loaded.wait()
        await pilot.pause()
        form = await open_form(pilot)
        fill_form(form, "fix-post", "editor", "2")
        await submit(pilot, form)
        for _ in range(200):
            if app.screen is app.main_screen:
                break
            await pilot.pause(0.02)
        assert notes[0] == "spawned 2 tries of fix-post: fix-post-1, fix-post-2"
        tries = {s.label: s for s in await orch.list() if s.best_of == "fix-post"}
        assert sorted(tries) == ["fix-post-1", "fix-post-2"]
        for _ in range(500):
            got = [await orch.get(s.key) for s in tries.values()]
            if all(s.state.terminal and s.changes is not None for s in got):
                break
            await asyncio.sleep(0.02)
        assert [s.merge for s in got] == ["none", "none"], got
        for _ in range(200):
            app.main_screen.flush_events()
            book = [app.book.sessions.get(s.key) for s in got]
            if all(b is not None and b.changes is not None for b in book):
                break
            await pilot.pause(0.02)
        screen = await compare_of(pilot, "fix-post-1")
        await screen.refresh_tries()
        assert "1 file +1 −1 · 1 commit" in columns(screen)["fix-post-2"]
        await pilot.press("right", "m")
        for _ in range(500):
            app.main_screen.flush_events()
            merges = [app.book.sessions[s.key].merge for s in got]
            if merges == ["discarded", "merged"]:
                break
            await pilot.pause(0.02)
        assert merges == ["discarded", "merged"]  # merging one discards the other: the runtime's doing
        await screen.refresh_tries()
        assert "⌥ merged" in columns(screen)["fix-post-2"] and "⌥ discarded" in columns(screen)["fix-post-1"]
        assert "fix-post-2 was merged" in shown(screen.query_one("#compare-summary", Static).content)
    assert git(repo, "show", "main:post.md").stdout == "line 1\nline 2, try 2\nline 3\n"
