"""Every key of the dashboard, pressed in a running app on a REAL orchestrator (real processes, real SQLite).

Each test checks the runtime afterwards, not just the screen: a killed session's process is really gone
and the store says so, a spawn made a running session, a steer reached the agent's stdin, and so on.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from textual.command import CommandPalette
from textual.widgets import Input, Static, TextArea

from crewtui.locations import DataDir
from crewtui.model import SessionState, SpawnRequest
from crewtui.runtime.orchestrator import Orchestrator
from crewtui.ui.app import CrewApp, make_app
from crewtui.ui.screens.confirm import ConfirmScreen
from crewtui.ui.screens.help import HelpScreen
from crewtui.ui.screens.quit import QuitScreen
from crewtui.ui.screens.spawn import SpawnScreen
from crewtui.ui.screens.steer import SteerScreen
from crewtui.ui.screens.sweep import SweepScreen
from tests.conftest import ECHO_AGENT, PY, SLEEPER, crew_from, pid_alive, py, wait_for
from tests.ui.conftest import recording

S = SessionState
SIZE = (140, 42)

CREW = f"""
[crew]
name = "ui"
stale_after = "1s"

[agents.echo]
command = [{json.dumps(PY)}, "-c", {json.dumps(ECHO_AGENT.replace("{", "{{").replace("}", "}}"))}]

[[cron]]
name = "batch"
schedule = {{ kind = "every", every = "1h" }}
spawn = {{ agent = "echo", label = "batch-{{item}}-r{{run}}", task = "go", items = ["a", "b"] }}
"""


def store_state(dd: DataDir, key: str) -> str:
    con = sqlite3.connect(dd.store)
    try:
        return con.execute("select state from sessions where key = ?", (key,)).fetchone()[0]
    finally:
        con.close()


async def ready(app: CrewApp, pilot: Any) -> None:
    await app.loaded.wait()
    app.main_screen.flush_events()
    await pilot.pause()


async def shown(app: CrewApp, key: str) -> None:
    await wait_for(lambda: "s:" + key in app.main_screen.session_tree.nodes, what=f"row of {key}")


async def select(app: CrewApp, pilot: Any, key: str) -> None:
    await shown(app, key)
    app.main_screen.session_tree.select_key(key)
    await wait_for(
        lambda: app.main_screen.session_tree.current is not None and app.main_screen.session_tree.current.id == key,
        what="cursor on row",
    )
    await pilot.pause()


async def spawn(orch: Orchestrator, label: str, argv: list[str] | None = None) -> str:
    s = await orch.spawn(SpawnRequest(label=label, argv=argv or py(SLEEPER)))
    return s.key


@pytest.fixture
async def crew_orch(make_orch: Any) -> Orchestrator:
    return await make_orch(crew_from(CREW))


# ------------------------------------------------------------------------------------------------ n


async def test_n_spawn_form_spawns_a_running_session(crew_orch: Orchestrator) -> None:
    app = make_app(crew_orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, SpawnScreen)
        await pilot.press(*"writer-one")  # typed: the form takes keys
        form = app.screen
        form.query_one("#spawn-task", Input).value = "say hi"
        form.query_one("#spawn-watchdog", Input).value = "10m"
        await pilot.click("#spawn-watchdog")
        await pilot.press("enter")
        await wait_for(lambda: not isinstance(app.screen, SpawnScreen), what="form closed")
        s = crew_orch.resolve("writer-one")
        assert s.state == S.RUNNING and s.agent == "echo" and s.task == "say hi" and s.watchdog_after == 600
        assert pid_alive(s.agent_pid)
        await shown(app, s.key)
        await wait_for(
            lambda: (
                app.main_screen.session_tree.current is not None and app.main_screen.session_tree.current.id == s.key
            ),
            what="new row selected",
        )


async def test_n_spawn_form_shows_errors_inline_and_spawns_nothing(crew_orch: Orchestrator) -> None:
    taken = await spawn(crew_orch, "taken-label")
    holder = (await crew_orch.spawn(SpawnRequest(label="domain-holder", argv=py(SLEEPER), domain="article:held"))).key
    app = make_app(crew_orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, SpawnScreen)
        # A label the runtime would refuse anyway, and a duration that is not one: both said in the form.
        form.query_one("#spawn-label", Input).value = "Bad Label"
        form.query_one("#spawn-watchdog", Input).value = "soon"
        await pilot.click("#spawn-watchdog")
        await pilot.press("enter")
        await pilot.pause()
        assert "invalid label" in str(form.query_one("#spawn-label-error", Static).render())
        assert "duration" in str(form.query_one("#spawn-watchdog-error", Static).render())
        assert isinstance(app.screen, SpawnScreen)
        # A duplicate live label: the runtime's own message, inline.
        label_input = form.query_one("#spawn-label", Input)
        label_input.value = "taken-label"
        form.query_one("#spawn-watchdog", Input).value = ""
        await pilot.click("#spawn-ok")
        await wait_for(
            lambda: "taken-label" in str(form.query_one("#spawn-error", Static).render()), what="runtime refusal shown"
        )
        assert taken in str(form.query_one("#spawn-error", Static).render())
        assert isinstance(app.screen, SpawnScreen)
        # A held domain: refused by the runtime, inline, naming the holder.
        label_input.value = "fresh-label"
        form.query_one("#spawn-domain", Input).value = "article:held"
        label_input.focus()
        await pilot.press("enter")  # enter in a field submits the form too
        await wait_for(
            lambda: "article:held" in str(form.query_one("#spawn-error", Static).render()), what="held domain shown"
        )
        assert holder in str(form.query_one("#spawn-error", Static).render())
        await pilot.press("escape")
        await pilot.pause()
    assert sorted(s.label for s in crew_orch.sessions.values()) == ["domain-holder", "taken-label"]


# ------------------------------------------------------------------------------------------------ s


async def test_s_steers_the_selected_session(crew_orch: Orchestrator) -> None:
    key = await spawn(crew_orch, "echo-one", py(ECHO_AGENT))
    app = make_app(crew_orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select(app, pilot, key)
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, SteerScreen)
        app.screen.query_one("#steer-text", TextArea).text = "hello there"
        await pilot.press("enter")
        await wait_for(lambda: crew_orch.sessions[key].last_line == "steered: hello there", what="agent echo")
        history = await crew_orch.history(key)
        assert "steered: hello there" in history.lines
        # The live transcript shows it too.
        await wait_for(
            lambda: any("steered: hello there" in line.text for line in app.main_screen.transcript.lines),
            what="transcript line",
        )


async def test_s_broadcasts_to_marked_and_refuses_an_ended_session(crew_orch: Orchestrator) -> None:
    a = await spawn(crew_orch, "echo-a", py(ECHO_AGENT))
    b = await spawn(crew_orch, "echo-b", py(ECHO_AGENT))
    ended = await spawn(crew_orch, "quick-one", py("print('bye')"))
    await crew_orch.wait_ended(ended, timeout=10)
    app = make_app(crew_orch)
    notes = recording(app)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select(app, pilot, ended)
        await pilot.press("s")
        await pilot.pause()
        assert not isinstance(app.screen, SteerScreen)
        assert any("quick-one has ended (done)" in n for n in notes)
        await select(app, pilot, a)
        await pilot.press("space")
        await select(app, pilot, b)
        await pilot.press("space")
        assert app.book.marked == {a, b}
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, SteerScreen)
        app.screen.query_one("#steer-text", TextArea).text = "to all"
        await pilot.press("enter")
        for key in (a, b):
            await wait_for(lambda key=key: crew_orch.sessions[key].last_line == "steered: to all", what="broadcast")


# ------------------------------------------------------------------------------------------------ k


async def test_k_kills_the_selected_session_for_real(crew_orch: Orchestrator, data_dir: DataDir) -> None:
    key = await spawn(crew_orch, "sleeper-one")
    pid = crew_orch.sessions[key].agent_pid
    assert pid_alive(pid)
    app = make_app(crew_orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select(app, pilot, key)
        await pilot.press("k")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(lambda: crew_orch.sessions[key].state == S.KILLED, what="killed")
        await wait_for(lambda: app.book.sessions[key].state == S.KILLED, what="UI copy updated")
    assert not pid_alive(pid)
    await crew_orch.flush()
    assert store_state(data_dir, key) == "killed"


async def test_k_cancel_kills_nothing(crew_orch: Orchestrator) -> None:
    key = await spawn(crew_orch, "sleeper-two")
    app = make_app(crew_orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select(app, pilot, key)
        await pilot.press("k")
        await pilot.pause()
        await pilot.press("n")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
    assert crew_orch.sessions[key].state == S.RUNNING


async def test_k_on_a_group_kills_the_whole_group(crew_orch: Orchestrator, data_dir: DataDir) -> None:
    keys = [await spawn(crew_orch, f"blog-publisher-{item}-2026-04-02") for item in ("superada", "openclaw-guide")]
    other = await spawn(crew_orch, "research-scout-x")
    app = make_app(crew_orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await shown(app, keys[0])
        group = app.main_screen.session_tree.nodes["g:blog-publisher"]
        app.main_screen.session_tree.move_cursor(group)
        await wait_for(
            lambda: (
                app.main_screen.session_tree.current is not None
                and app.main_screen.session_tree.current.kind == "group"
            ),
            what="group row",
        )
        await pilot.press("k")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "blog-publisher" in str(app.screen.query_one("#confirm-body", Static).render())
        await pilot.press("y")
        for key in keys:
            await wait_for(lambda key=key: crew_orch.sessions[key].state == S.KILLED, what="group member killed")
    assert crew_orch.sessions[other].state == S.RUNNING
    await crew_orch.flush()
    assert {store_state(data_dir, k) for k in keys} == {"killed"}


async def test_k_kills_the_marked_sessions(crew_orch: Orchestrator) -> None:
    a, b, c = [await spawn(crew_orch, f"m-{n}") for n in ("a", "b", "c")]
    app = make_app(crew_orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        for key in (a, c):
            await select(app, pilot, key)
            await pilot.press("space")
        await pilot.press("k", "y")
        for key in (a, c):
            await wait_for(lambda key=key: crew_orch.sessions[key].state == S.KILLED, what="marked killed")
    assert crew_orch.sessions[b].state == S.RUNNING


# ------------------------------------------------------------------------------------------------ x


async def test_x_previews_the_stale_sessions_then_sweeps_them(crew_orch: Orchestrator, data_dir: DataDir) -> None:
    key = await spawn(crew_orch, "quiet-one")  # prints once, then silence: stale after 1 s
    pid = crew_orch.sessions[key].agent_pid
    await wait_for(lambda: crew_orch.stale_sessions() != [], what="stale")
    app = make_app(crew_orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("x")
        await wait_for(lambda: isinstance(app.screen, SweepScreen), what="sweep preview")
        assert [i.key for i in app.screen.items] == [key]  # type: ignore[attr-defined]
        assert crew_orch.sessions[key].state == S.RUNNING  # a preview kills nothing
        await pilot.press("y")
        await wait_for(lambda: crew_orch.sessions[key].state == S.KILLED, what="swept")
    assert "stale" in (crew_orch.sessions[key].reason or "")
    assert not pid_alive(pid)
    await crew_orch.flush()
    assert store_state(data_dir, key) == "killed"


async def test_x_with_nothing_stale_says_so(make_orch: Any) -> None:
    orch = await make_orch()
    await spawn(orch, "busy-one")
    app = make_app(orch)
    notes = recording(app)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("x")
        await wait_for(lambda: any("nothing is stale" in n for n in notes), what="note")
        assert not isinstance(app.screen, SweepScreen)


# ------------------------------------------------------------------------------------------------ r


async def test_r_retries_a_failed_session(crew_orch: Orchestrator) -> None:
    key = await spawn(crew_orch, "flaky-one", py("import sys; sys.exit(3)"))
    await crew_orch.wait_ended(key, timeout=10)
    assert crew_orch.sessions[key].state == S.FAILED
    app = make_app(crew_orch)
    notes = recording(app)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select(app, pilot, key)
        await pilot.press("r")
        await wait_for(lambda: crew_orch.sessions[key].attempt == 2, what="attempt 2")
        await wait_for(lambda: app.book.sessions[key].attempt == 2, what="UI shows attempt 2")
        running = await spawn(crew_orch, "still-running")
        await select(app, pilot, running)
        await wait_for(lambda: app.book.sessions[running].state == S.RUNNING, what="UI copy running")
        await pilot.press("r")
        await pilot.pause()
        assert any("still-running is running; only a failed" in n for n in notes)
    assert crew_orch.sessions[running].attempt == 1


# ------------------------------------------------------------------------------------------------ t


async def test_t_triggers_the_selected_cron_job(crew_orch: Orchestrator) -> None:
    app = make_app(crew_orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        assert app.main_screen.meters.selected_job == "batch"
        await pilot.press("t")
        await wait_for(
            lambda: {s.label for s in crew_orch.sessions.values()} == {"batch-a-r1", "batch-b-r1"}, what="run spawned"
        )
        runs = await crew_orch.runs("batch")
        assert len(runs) == 1 and runs[0].number == 1
        await wait_for(lambda: len(app.main_screen.runs.get("batch", [])) == 1, what="meters reloaded")


# ------------------------------------------------------------------------------------------------ filters


async def test_slash_filters_by_regex_and_bad_regex_is_an_inline_error(crew_orch: Orchestrator) -> None:
    keys = {label: await spawn(crew_orch, label) for label in ("alpha-one", "alpha-two", "beta-one")}
    app = make_app(crew_orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        for key in keys.values():
            await shown(app, key)
        await pilot.press("slash")
        assert app.focused is app.query_one("#filter", Input)
        await pilot.press(*"e$")
        await pilot.pause()
        shown_keys = {n[2:] for n in app.main_screen.session_tree.nodes if n.startswith("s:")}
        assert shown_keys == {keys["alpha-one"], keys["beta-one"]}
        await pilot.press("(")
        await pilot.pause()
        error = app.query_one("#filter-error", Static)
        assert error.has_class("-shown") and "invalid regex" in str(error.render())
        # The last valid filter stays applied.
        assert {n[2:] for n in app.main_screen.session_tree.nodes if n.startswith("s:")} == shown_keys
        app.query_one("#filter", Input).value = "beta"
        await pilot.press("enter")
        await pilot.pause()
        assert {n[2:] for n in app.main_screen.session_tree.nodes if n.startswith("s:")} == {keys["beta-one"]}
        assert app.focused is app.main_screen.session_tree
        await pilot.press("escape")
        await pilot.pause()
        assert {n[2:] for n in app.main_screen.session_tree.nodes if n.startswith("s:")} == set(keys.values())


async def test_number_keys_filter_by_state(crew_orch: Orchestrator) -> None:
    running = await spawn(crew_orch, "run-one")
    failed = await spawn(crew_orch, "fail-one", py("import sys; sys.exit(1)"))
    done = await spawn(crew_orch, "done-one", py("print('ok')"))
    await crew_orch.wait_ended(failed, timeout=10)
    await crew_orch.wait_ended(done, timeout=10)
    app = make_app(crew_orch)

    def rows() -> set[str]:
        return {n[2:] for n in app.main_screen.session_tree.nodes if n.startswith("s:")}

    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await wait_for(lambda: rows() == {running, failed, done}, what="all rows")
        for key, expected in (
            ("2", {running}),
            ("6", {failed}),
            ("5", {done}),
            ("8", set()),
            ("1", {running, failed, done}),
        ):
            await pilot.press(key)
            await pilot.pause()
            assert rows() == expected, key


async def test_space_marks_and_unmarks(crew_orch: Orchestrator) -> None:
    key = await spawn(crew_orch, "mark-me")
    app = make_app(crew_orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select(app, pilot, key)
        await pilot.press("space")
        assert app.book.marked == {key}
        assert str(app.main_screen.session_tree.nodes["s:" + key].label).startswith("● ")
        await select(app, pilot, key)
        await pilot.press("space")
        assert app.book.marked == set()


# ------------------------------------------------------------------------------------------------ navigation


async def test_enter_focuses_the_transcript_of_the_selected_session(crew_orch: Orchestrator) -> None:
    key = await spawn(crew_orch, "talky", py("print('line one', flush=True); import time; time.sleep(60)"))
    app = make_app(crew_orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await select(app, pilot, key)
        await wait_for(
            lambda: any("line one" in line.text for line in app.main_screen.transcript.lines), what="history"
        )
        await pilot.press("enter")
        await pilot.pause()
        assert app.focused is app.main_screen.transcript


async def test_question_mark_help_and_ctrl_p_palette_from_the_same_registry(crew_orch: Orchestrator) -> None:
    app = make_app(crew_orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("ctrl+p")
        await wait_for(lambda: isinstance(app.screen, CommandPalette), what="palette")
        await pilot.press(*"spawn")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, SpawnScreen), what="spawn form from the palette")


async def test_narrow_terminal_uses_tabs_and_tiny_says_the_minimum(crew_orch: Orchestrator) -> None:
    key = await spawn(crew_orch, "narrow-one")
    app = make_app(crew_orch)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(app, pilot)
        assert app.screen.has_class("-narrow")
        assert app.query_one("#pane-tabs").display and not app.query_one("#right").display
        await select(app, pilot, key)
        await pilot.press("enter")
        await pilot.pause()
        assert app.main_screen.pane == "detail"
        assert app.query_one("#right").display and not app.query_one("#left").display
        await pilot.press("right_square_bracket")
        await pilot.pause()
        assert app.main_screen.pane == "schedule" and app.query_one("#bottom").display
        await pilot.resize_terminal(50, 12)
        await pilot.pause()
        assert app.screen.has_class("-tiny")
        assert "at least 60×16" in str(app.query_one("#too-small", Static).render())
        await pilot.resize_terminal(140, 42)
        await pilot.pause()
        assert not app.screen.has_class("-narrow") and not app.screen.has_class("-tiny")


# ------------------------------------------------------------------------------------------------ q


async def test_q_leave_running_keeps_the_processes(crew_orch: Orchestrator) -> None:
    key = await spawn(crew_orch, "survivor")
    pid = crew_orch.sessions[key].agent_pid
    stopped: list[bool] = []

    async def on_quit(kill: bool) -> None:
        stopped.append(kill)

    app = make_app(crew_orch, on_quit=on_quit)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("l")
        await wait_for(lambda: not app.is_running, what="app exited")
    assert stopped == [False] and app.exit_choice == "leave"
    assert pid_alive(pid) and crew_orch.sessions[key].state == S.RUNNING


async def test_q_kill_all_kills_every_live_session(crew_orch: Orchestrator) -> None:
    keys = [await spawn(crew_orch, f"doomed-{n}") for n in range(2)]
    pids = [crew_orch.sessions[k].agent_pid for k in keys]
    app = make_app(crew_orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("k")
        await wait_for(lambda: not app.is_running, what="app exited")
    assert app.exit_choice == "kill"
    assert all(crew_orch.sessions[k].state == S.KILLED for k in keys)
    assert not any(pid_alive(p) for p in pids)


async def test_q_cancel_stays(crew_orch: Orchestrator) -> None:
    app = make_app(crew_orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert app.is_running and not isinstance(app.screen, QuitScreen)


# ------------------------------------------------------------------------------------------------ attach


async def test_attached_dashboard_works_over_the_socket_and_q_just_leaves(data_dir: DataDir) -> None:
    from crewtui.control.client import RemoteRuntime
    from crewtui.control.host import RuntimeHost

    host = RuntimeHost(data_dir, crew_from(CREW), tail_interval=0.05)
    orch = await host.start()
    try:
        before = await spawn(orch, "already-there")
        app = make_app(RemoteRuntime(data_dir.socket, data_dir.root), attached=True)
        async with app.run_test(size=SIZE) as pilot:
            await ready(app, pilot)
            await shown(app, before)
            assert "attached to" in str(app.main_screen.query_one("#status", Static).render())
            live = await spawn(orch, "arrives-later")  # an event over the socket's watch stream
            await select(app, pilot, live)
            await pilot.press("k", "y")
            await wait_for(lambda: orch.sessions[live].state == S.KILLED, what="killed over the socket")
            await pilot.press("q")
            await wait_for(lambda: not app.is_running, what="attached q leaves at once")
        assert orch.sessions[before].state == S.RUNNING
    finally:
        await host.stop(kill_sessions=True)


async def test_sighup_exits_cleanly_and_leaves_sessions_running(crew_orch: Orchestrator) -> None:
    import os
    import signal

    from crewtui.cli.dashboard import exit_on_hangup

    key = await spawn(crew_orch, "outlives-the-terminal")
    app = make_app(crew_orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        with exit_on_hangup(app):
            os.kill(os.getpid(), signal.SIGHUP)
            await wait_for(lambda: not app.is_running, what="exit on SIGHUP")
    assert app.exit_choice == "leave"
    assert crew_orch.sessions[key].state == S.RUNNING and pid_alive(crew_orch.sessions[key].agent_pid)


# ------------------------------------------------------------------------------------------------ detail


def detail_text(app: CrewApp) -> str:
    """The detail pane as plain text."""
    import io

    from rich.console import Console

    from crewtui.ui.widgets.detail import SessionDetail

    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(app.main_screen.query_one("#detail", SessionDetail).content)
    return console.file.getvalue()  # type: ignore[attr-defined]


async def test_detail_shows_the_pids_of_a_session_that_started_after_the_listing_and_of_its_retry(
    crew_orch: Orchestrator,
) -> None:
    app = make_app(crew_orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        # Spawned after the first listing: the dashboard knows it from events only, which carry no pids.
        key = await spawn(crew_orch, "pids-come-later")
        await wait_for(lambda: crew_orch.sessions[key].agent_pid is not None, what="the session's processes")
        await select(app, pilot, key)
        first = (crew_orch.sessions[key].agent_pid, crew_orch.sessions[key].shim_pid)
        await wait_for(
            lambda: f"agent {first[0]} · shim {first[1]}" in detail_text(app),
            what="the pids in the detail pane on selection",
        )
        # A new attempt runs new processes: shown when the selected session is running again.
        await crew_orch.kill(key)
        await wait_for(lambda: app.book.sessions[key].state == S.KILLED, what="UI copy killed")
        await pilot.press("r")
        await wait_for(
            lambda: crew_orch.sessions[key].attempt == 2 and crew_orch.sessions[key].agent_pid is not None,
            what="attempt 2 running",
        )
        second = (crew_orch.sessions[key].agent_pid, crew_orch.sessions[key].shim_pid)
        assert second != first
        await wait_for(
            lambda: f"agent {second[0]} · shim {second[1]}" in detail_text(app),
            what="the new attempt's pids in the detail pane",
        )
    await crew_orch.kill(key)


# ------------------------------------------------------------------------------------------------ + and -


def timeline_lanes(app: CrewApp) -> tuple[int, dict[str, str], str]:
    """The timeline as plain text: the column of "now", each lane's cells (after the lane name), the title."""
    from crewtui.ui.widgets.timeline import LANE_W, Timeline

    lines = app.main_screen.query_one("#timeline", Timeline).render().plain.splitlines()
    now_x = lines[1].index("┃") - LANE_W
    lanes = {line[:LANE_W].strip(): line[LANE_W:] for line in lines[2:6]}
    return now_x, lanes, str(app.main_screen.query_one("#timeline-pane").border_title)


async def test_plus_and_minus_zoom_the_timeline_from_a_minute_to_a_day_either_side(crew_orch: Orchestrator) -> None:
    # A cron fire now (a fresh crew: the timeline fits itself to a minute) and a watchdog due in 120 s.
    await crew_orch.cron_trigger("batch")
    await crew_orch.spawn(SpawnRequest(label="watched", argv=py(SLEEPER), watchdog_after=120))
    app = make_app(crew_orch)
    notes = recording(app)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        now_x, lanes, title = timeline_lanes(app)
        assert title == "Timeline · past 1m · next 1m"
        assert lanes["cron"][now_x - 1 : now_x + 1].count("◆") == 1  # the fire, at now
        assert "○" not in lanes["watch"]  # 120 s away: off the axis

        def watchdog_offset() -> int:
            x, lanes, _ = timeline_lanes(app)
            return lanes["watch"].index("○") - x

        axis = len(lanes["watch"]) - 1  # columns from one end to the other
        for key, span, label in (("minus", 300, "5m"), ("minus", 900, "15m")):
            await pilot.press(key)
            await pilot.pause()
            assert timeline_lanes(app)[2] == f"Timeline · past {label} · next {label}"
            # Re-placed: 120 s is 120 / (2 * span) of the axis right of now.
            assert abs(watchdog_offset() - 120 / (2 * span) * axis) <= 1.5, label

        for key, label in (("minus", "1h"), ("minus", "6h"), ("minus", "1d")):
            await pilot.press(key)
            await pilot.pause()
            assert timeline_lanes(app)[2] == f"Timeline · past {label} · next {label}"
        await pilot.press("minus")  # clamped: a day is the widest
        await pilot.pause()
        assert timeline_lanes(app)[2] == "Timeline · past 1d · next 1d"
        assert notes[-1] == "the timeline is at its widest: a day either side of now"
        # The longer span was fetched: the next batch fire (within the hour) is on the axis, close to now.
        await wait_for(lambda: "◇" in timeline_lanes(app)[1]["cron"], what="the next fire at a day's span")

        for label in ("6h", "1h", "15m", "5m", "1m"):
            await pilot.press("plus")
            await pilot.pause()
            assert timeline_lanes(app)[2] == f"Timeline · past {label} · next {label}"
        assert "○" not in timeline_lanes(app)[1]["watch"]
        await pilot.press("plus")  # clamped: a minute is the narrowest
        await pilot.pause()
        assert timeline_lanes(app)[2] == "Timeline · past 1m · next 1m"
        assert notes[-1] == "the timeline is at its narrowest: a minute either side of now"


def test_an_unzoomed_timeline_fits_its_span_to_the_marks_and_a_zoomed_one_keeps_it() -> None:
    from crewtui.model import TimelineItem
    from crewtui.ui.widgets.timeline import Timeline

    now = 1_000_000.0
    timeline = Timeline(lambda: now)

    def fed(*ages: float, upcoming: float | None = None) -> str:
        items = [TimelineItem(ts=now - age, kind="cron", name="job") for age in ages]
        if upcoming is not None:
            items.append(TimelineItem(ts=now + upcoming, kind="cron", name="job", future=True))
        timeline.set_items(items, now)
        return timeline.title

    # A crew's marks age: the span widens with them, from a minute to an hour; never wider on its own.
    assert fed(5, 2, upcoming=30) == "Timeline · past 1m · next 1m"
    assert fed(200, 5, upcoming=30) == "Timeline · past 5m · next 5m"
    assert fed(700, upcoming=30) == "Timeline · past 15m · next 15m"
    assert fed(3000) == "Timeline · past 1h · next 1h"
    assert fed(20000) == "Timeline · past 1h · next 1h"
    # Nothing yet: as far as the next mark; nothing at all: an hour.
    assert fed(upcoming=200) == "Timeline · past 5m · next 5m"
    assert fed() == "Timeline · past 1h · next 1h"
    assert timeline.window(now) == (now - 3600, now + 3600)
    # Zoomed: the user's span stays, whatever comes, and only that much is asked for.
    assert timeline.widen(-1)
    assert fed(5, upcoming=30) == "Timeline · past 15m · next 15m"
    assert timeline.window(now) == (now - 900, now + 900)
