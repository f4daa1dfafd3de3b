"""Snapshot tests of the dashboard on the deterministic fake runtime (50 sessions, crons, timeline).

Plain `def` tests: `snap_compare` runs its own event loop. Fixed terminal sizes, a FakeClock, TZ=UTC, no
blinking cursor, no animation. Update the baselines with `pytest tests/ui --snapshot-update` and look at
them (`screenshots/` has the same pictures, made by scripts/screenshots.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input, TextArea

from tests.ui.conftest import fake_app, opened, settle
from tests.ui.fake_runtime import ENDED, make_archive

WIDE = (140, 42)
NARROW = (80, 24)

Snap = Callable[..., bool]


RUNNING = "ads-auditor-2026-04-02-r6"  # a running session, sixth row


def steps(
    *keys: str, select: str | None = None, type_into: tuple[str, str] | None = None, pause: float | None = None
) -> Callable[[Pilot[None]], Any]:
    """Put the cursor on the session labelled `select`, press `keys`, then put text into an input
    (moving and typing key by key would cost a frame per key)."""

    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        app = pilot.app
        if select is not None:
            key = next(k for k, s in app.book.sessions.items() if s.label == select)  # type: ignore[attr-defined]
            app.main_screen.session_tree.select_key(key)  # type: ignore[attr-defined]
            await pilot.pause()
        if keys:
            await pilot.press(*keys)
        if type_into is not None:
            selector, text = type_into
            field = pilot.app.screen.query_one(selector)
            if isinstance(field, TextArea):
                field.text = text
                field.move_cursor(field.document.end)  # where typing leaves it
            else:
                assert isinstance(field, Input)
                field.value = text
        await pilot.pause(pause)
        await pilot.pause()

    return run


def test_main_screen_with_50_sessions(snap_compare: Snap) -> None:
    # Every group unfolded; the cursor on a running session: its detail and transcript tail on the right.
    assert snap_compare(fake_app(), terminal_size=WIDE, run_before=steps(select=RUNNING))


def test_tree_collapsed(snap_compare: Snap) -> None:
    async def collapse_all(pilot: Pilot[None]) -> None:
        await settle(pilot)
        app = pilot.app
        for node_id, node in app.main_screen.session_tree.nodes.items():  # type: ignore[attr-defined]
            if node_id.startswith("g:") and node.parent is app.main_screen.session_tree.root:  # type: ignore[attr-defined]
                node.collapse()
        await pilot.pause()

    assert snap_compare(fake_app(), terminal_size=WIDE, run_before=collapse_all)


def test_spawn_form_with_inline_errors(snap_compare: Snap) -> None:
    async def fill(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        form = pilot.app.screen
        form.query_one("#spawn-label", Input).value = "ops-deploy-api"  # held by a live session: refused
        form.query_one("#spawn-task", Input).value = "redeploy the api"
        form.query_one("#spawn-task", Input).focus()  # enter submits; a click would leave hover effects
        await pilot.press("enter")
        await pilot.pause(0.2)

    assert snap_compare(fake_app(), terminal_size=WIDE, run_before=fill)


def test_spawn_form_local_validation(snap_compare: Snap) -> None:
    async def fill(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        form = pilot.app.screen
        form.query_one("#spawn-label", Input).value = "Not A Label"
        form.query_one("#spawn-watchdog", Input).value = "soon"
        form.query_one("#spawn-watchdog", Input).focus()
        await pilot.press("enter")
        await pilot.pause()

    assert snap_compare(fake_app(), terminal_size=WIDE, run_before=fill)


def test_steer_prompt(snap_compare: Snap) -> None:
    assert snap_compare(
        fake_app(),
        terminal_size=WIDE,
        run_before=steps("s", select=RUNNING, type_into=("#steer-text", "keep it short")),
    )


def test_steer_broadcast_to_marked(snap_compare: Snap) -> None:
    # Mark r5 (done) and r6 (running): the ended one is skipped, and the prompt says so.
    assert snap_compare(
        fake_app(), terminal_size=WIDE, run_before=steps("space", "space", "s", select="ads-auditor-2026-04-02-r5")
    )


def test_kill_confirm(snap_compare: Snap) -> None:
    assert snap_compare(fake_app(), terminal_size=WIDE, run_before=steps("k", select=RUNNING))


def test_kill_group_confirm(snap_compare: Snap) -> None:
    assert snap_compare(fake_app(), terminal_size=WIDE, run_before=steps("k"))


def test_sweep_preview(snap_compare: Snap) -> None:
    assert snap_compare(fake_app(), terminal_size=WIDE, run_before=steps("x", pause=0.2))


def test_quit_question(snap_compare: Snap) -> None:
    assert snap_compare(fake_app(), terminal_size=WIDE, run_before=steps("q"))


def test_help_screen(snap_compare: Snap) -> None:
    assert snap_compare(fake_app(), terminal_size=WIDE, run_before=steps("question_mark"))


def test_filter_applied(snap_compare: Snap) -> None:
    assert snap_compare(
        fake_app(), terminal_size=WIDE, run_before=steps("slash", type_into=("#filter", "scout|pr-10[1-4]"))
    )


def test_invalid_filter_is_an_inline_error(snap_compare: Snap) -> None:
    assert snap_compare(fake_app(), terminal_size=WIDE, run_before=steps("slash", type_into=("#filter", "blog(")))


def test_state_filter_failed(snap_compare: Snap) -> None:
    assert snap_compare(fake_app(), terminal_size=WIDE, run_before=steps("6"))


def test_narrow_80x24(snap_compare: Snap) -> None:
    assert snap_compare(fake_app(), terminal_size=NARROW, run_before=steps())


def test_narrow_80x24_detail_tab(snap_compare: Snap) -> None:
    assert snap_compare(fake_app(), terminal_size=NARROW, run_before=steps("enter", select=RUNNING))


def test_narrow_80x24_schedule_tab(snap_compare: Snap) -> None:
    assert snap_compare(
        fake_app(), terminal_size=NARROW, run_before=steps("right_square_bracket", "right_square_bracket")
    )


def test_too_small(snap_compare: Snap) -> None:
    assert snap_compare(fake_app(), terminal_size=(50, 14), run_before=steps())


def test_runtime_without_scheduler(snap_compare: Snap) -> None:
    # The scheduler methods raise NotImplementedError: the panes say so, nothing crashes.
    assert snap_compare(fake_app(scheduler=False), terminal_size=WIDE, run_before=steps())


def test_no_sessions_yet(snap_compare: Snap) -> None:
    assert snap_compare(fake_app(sessions=False), terminal_size=WIDE, run_before=steps())


def test_ray_backend_shows_nodes(snap_compare: Snap) -> None:
    # Sessions on a Ray cluster: each row says its node, the detail pane names it, the header counts per node.
    app = fake_app(ray_nodes=("10.0.0.7/4f1a2b", "10.0.0.8/9c3d5e", "10.0.0.9/77e0aa"))
    assert snap_compare(app, terminal_size=WIDE, run_before=steps(select=RUNNING))


def test_timeline_zoomed_in_to_15_minutes(snap_compare: Snap) -> None:
    # `+` from the hour the fake's marks fill: a quarter of an hour either side, the times to the second.
    assert snap_compare(fake_app(), terminal_size=WIDE, run_before=steps("plus"))


def test_timeline_zoomed_out_to_6_hours(snap_compare: Snap) -> None:
    assert snap_compare(fake_app(), terminal_size=WIDE, run_before=steps("minus", pause=0.3))


def test_steer_multi_line_paste_says_how_it_is_sent(snap_compare: Snap) -> None:
    # Three lines (a blank one left out): the prompt says they go as three steers before anything is sent.
    text = "keep it short\n\ncite the sources\nthen stop"
    assert snap_compare(
        fake_app(), terminal_size=WIDE, run_before=steps("s", select=RUNNING, type_into=("#steer-text", text))
    )


def test_steer_over_the_limit_is_refused_before_sending(snap_compare: Snap) -> None:
    assert snap_compare(
        fake_app(),
        terminal_size=WIDE,
        run_before=steps("s", select=RUNNING, type_into=("#steer-text", "x" * 70_000)),
    )


def test_agent_escapes_are_shown_as_text(snap_compare: Snap) -> None:
    # An agent's last line with a title change, a screen wipe, colours, a bell, a right-to-left override and a
    # lone ESC: its row, its detail and its transcript show the words, the controls as symbols, and nothing acts.
    app = fake_app()
    s = next(s for s in app.runtime.sessions.values() if s.label == RUNNING)  # type: ignore[attr-defined]
    s.last_line = "done\x1b]0;owned\x07 \x1b[2J\x1b[31mred\x1b[0m bell\x07 rtl\u202eabc lone\x1b"
    s.reason = "exit code 1: \x9b2J wiped"
    assert snap_compare(app, terminal_size=WIDE, run_before=steps(select=RUNNING))


def older_app() -> Any:
    """The 50 sessions with a year-like history behind them: the window holds the fake's own ended sessions, and
    the archive's 406 are only counted (blog 240, research 120, blogger 15, digest 31: a group only there)."""
    return fake_app(archive=make_archive(), window=ENDED)


def on_row(node_id: str, *keys: str, wait: str | None = None) -> Callable[[Pilot[None]], Any]:
    """Put the cursor on a row by its id, press `keys`, and wait for the older page they asked for."""

    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        pilot.app.main_screen.session_tree.select_row(node_id)  # type: ignore[attr-defined]
        await pilot.pause()
        await pilot.pause()
        if keys:
            await pilot.press(*keys)
        if wait is not None:
            await opened(pilot, wait)

    return run


def test_older_history_rows(snap_compare: Snap) -> None:
    # Each top-level group with older history ends with a row saying how much; a group only in older history
    # (digest) has just that row; the title and the header say what is loaded and what is older.
    assert snap_compare(older_app(), terminal_size=WIDE, run_before=on_row("o:digest"))


def test_older_history_after_opening_a_page(snap_compare: Snap) -> None:
    # Enter on blog's older row: its 200 newest older sessions join the tree, the row (still under the cursor,
    # scrolled into view) says the 40 left, the title counts 250 loaded and 206 older.
    assert snap_compare(older_app(), terminal_size=WIDE, run_before=on_row("o:blog", "enter", wait="blog"))


# Sessions of agents with a preset (the fake's `agents=True`): activity instead of their JSON lines, a cost
# column, tokens and cost per group and per cron run, three waiting on a person ("3 need you", "today $…").
WAITING = "code-review-pr-104"


def test_agent_sessions_waiting_on_a_person(snap_compare: Snap) -> None:
    # The waiting session at the top of its group, selected: what it asks and the keys to answer it, its spend,
    # and its conversation as turns.
    assert snap_compare(fake_app(agents=True), terminal_size=WIDE, run_before=steps(select=WAITING))


def test_agent_conversation_turns(snap_compare: Snap) -> None:
    # A running Claude Code session: its turns (assistant text, tool calls with their results, a permission asked
    # and how it was answered), never the raw JSON lines.
    async def run(pilot: Pilot[None]) -> None:
        await steps(select=WAITING)(pilot)
        await pilot.press("a")
        await pilot.pause(0.1)
        pilot.app.main_screen.flush_events()  # type: ignore[attr-defined]
        await pilot.pause(0.7)  # the conversation is read again
        pilot.app.clear_notifications()  # no timed toast in a snapshot
        await pilot.pause()

    assert snap_compare(fake_app(agents=True), terminal_size=WIDE, run_before=run)


def test_state_filter_waiting(snap_compare: Snap) -> None:
    assert snap_compare(fake_app(agents=True), terminal_size=WIDE, run_before=steps("0", select=WAITING))


def test_approve_marked_confirm(snap_compare: Snap) -> None:
    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        app = pilot.app
        keys = [k for k, s in app.book.sessions.items() if s.label in (WAITING, "ops-deploy-api", "code-review-pr-103")]  # type: ignore[attr-defined]
        screen = app.main_screen  # type: ignore[attr-defined]
        # Marked as `space` marks them (rows, groups and the header's "3 marked" redrawn), without moving the cursor.
        screen.session_tree.refresh_rows(screen.book.toggle_mark(keys))
        screen.session_tree.refresh_groups()
        screen.update_header()
        await pilot.press("a")
        await pilot.pause()

    assert snap_compare(fake_app(agents=True), terminal_size=WIDE, run_before=run)


def test_deny_message_prompt(snap_compare: Snap) -> None:
    assert snap_compare(
        fake_app(agents=True),
        terminal_size=WIDE,
        run_before=steps("d", select=WAITING, type_into=("#answer-text", "not on the shared runner")),
    )


def test_steer_prompt_of_a_preset_agent(snap_compare: Snap) -> None:
    assert snap_compare(
        fake_app(agents=True),
        terminal_size=WIDE,
        run_before=steps("s", select="code-review-pr-103", type_into=("#steer-text", "also check the docs")),
    )


def test_agent_sessions_narrow(snap_compare: Snap) -> None:
    assert snap_compare(fake_app(agents=True), terminal_size=NARROW, run_before=steps(select=WAITING))
