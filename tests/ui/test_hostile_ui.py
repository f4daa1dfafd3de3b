"""A hostile pass on the dashboard: what agents and users write is shown as text, never obeyed, whatever it holds;
careless keys and odd input are refused in one line; a runtime that goes away is one line per action, not one per
session; a crew of 1,000 sessions, a chain of 50 children and 200 cron jobs are shown without a crash."""

from __future__ import annotations

import html
import re
from typing import Any

from textual.widgets import Input

from crewtui.clock import FakeClock
from crewtui.model import CronJobInfo, Session, SessionState, TimelineItem
from crewtui.ui.app import CrewApp, make_app
from crewtui.ui.screens.confirm import ConfirmScreen
from crewtui.ui.screens.gateway import GatewayScreen
from crewtui.ui.screens.main import MainScreen
from crewtui.ui.screens.spawn import SpawnScreen
from tests.ui.conftest import key_of, recording, settle
from tests.ui.fake_runtime import T0, FakeRuntime

S = SessionState
SIZE = (160, 50)
# Markup (Textual's action markup among it), unbalanced brackets, terminal escapes, a bidi override, zero-width,
# wide and combining characters, line breaks, a NUL, and a 10,000-character line.
HOSTILE = (
    "[@click=app.quit]CLICK[/] [bold red]RED [link=https://evil.example]LINK[/link] ] [ [/x] "
    "\x1b]0;TITLE\x07\x1b[2J \u202eEVIL \u200bZW 漢字 e\u0301 \r\nNEXT\x00 " + "A" * 10_000
)


def app_on(runtime: FakeRuntime, clock: FakeClock) -> CrewApp:
    app = make_app(runtime, clock=clock)  # type: ignore[arg-type]
    app.cursor_blink = False
    app.animation_level = "none"
    return app


def screen_text(app: CrewApp) -> str:
    """What the screen shows, as text (from the SVG a snapshot is made of)."""
    return html.unescape(re.sub(r"<[^>]+>", "", app.export_screenshot())).replace("\xa0", " ")


def no_quit(app: CrewApp) -> list[str]:
    """Record any quit instead of quitting: `[@click=app.quit]` shown as markup would be one click from it."""
    quits: list[str] = []

    async def quit_() -> None:
        quits.append("quit")

    app.action_quit = quit_  # type: ignore[method-assign]
    return quits


class Hostile(FakeRuntime):
    """Every text an agent, a crew file or an upstream can put in front of the user, hostile."""

    async def cron_list(self) -> list[CronJobInfo]:
        jobs = await super().cron_list()
        return [*jobs, CronJobInfo(name=HOSTILE[:300], schedule=HOSTILE[:200], payload="spawn")]

    async def timeline(self, start: float, end: float) -> list[TimelineItem]:
        items = await super().timeline(start, end)
        return [*items, TimelineItem(ts=T0 - 60, kind="notify", name=HOSTILE, outcome=HOSTILE)]


def make_hostile(clock: FakeClock) -> Hostile:
    rt = Hostile(clock, agents=True, workspaces=True, holds=True)
    for s in rt.sessions.values():
        s.task = s.last_line = s.reason = s.activity = HOSTILE
        s.result = {"text": HOSTILE}
        s.queued_steers = [HOSTILE]
        if s.merge:
            s.merge_note = HOSTILE
        if s.pool:
            s.pool = HOSTILE[:60]
        if s.gateway_hold:
            s.gateway_hold = "paused: " + HOSTILE
        if s.needs and s.needs.get("kind") == "question":
            s.needs = {"kind": "question", "id": "q", "text": HOSTILE}
        elif s.needs:
            s.needs = {**s.needs, "tool": HOSTILE[:80], "input": {"command": HOSTILE}}
    for pool in rt.gateway_info.pools:
        pool.name, pool.pause_reason, pool.upstream = HOSTILE[:40], HOSTILE, HOSTILE[:80]
    return rt


async def test_hostile_text_in_every_pane_is_shown_as_typed_and_never_obeyed() -> None:
    clock = FakeClock(T0)
    rt = make_hostile(clock)
    app = app_on(rt, clock)
    quits = no_quit(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        tree = app.main_screen.session_tree
        for key in list(rt.sessions):  # every session's detail, in turn
            tree.select_key(key)
            await pilot.pause()
        shown = screen_text(app)
        assert "[@click=app.quit]CLICK[/]" in shown and "[bold red]RED" in shown
        assert "\x1b" not in shown and "\u202e" not in shown
        await pilot.press("g")  # pool names, upstreams and pause reasons
        await pilot.pause(0.2)
        assert isinstance(app.screen, GatewayScreen)
        assert "[@click=app.quit]" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.click(offset=(60, 20))  # a click anywhere on the panes: no link to follow
        await pilot.pause()
        assert app.crashed is None and quits == []
        assert app.is_running


class Down(FakeRuntime):
    """A runtime that goes away after the first listing: every call then fails with `error`."""

    VERBS = ("send", "kill", "retry", "answer", "sweep", "cron_trigger", "resume", "merge", "discard", "spawn")

    def __init__(self, clock: FakeClock, error: BaseException) -> None:
        super().__init__(clock, agents=True)
        self.down = False
        self.error = error

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name in Down.VERBS and super().__getattribute__("down"):
            error = super().__getattribute__("error")

            async def fail(*_: Any, **__: Any) -> Any:
                raise error

            return fail
        return value


async def marked_live(app: CrewApp, pilot: Any, n: int) -> list[str]:
    keys = [k for k, s in app.book.sessions.items() if s.state in (S.RUNNING, S.PENDING)][:n]
    for key in keys:
        app.main_screen.session_tree.select_key(key)
        await pilot.pause()
        await pilot.press("space")
    await pilot.pause()
    assert app.book.marked == set(keys)
    return keys


async def test_killing_marked_sessions_with_the_runtime_gone_is_one_line_not_one_per_session() -> None:
    clock = FakeClock(T0)
    rt = Down(clock, ConnectionError("the runtime's socket closed"))
    app = app_on(rt, clock)
    notes = recording(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await marked_live(app, pilot, 8)
        rt.down = True
        await pilot.press("k")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await pilot.pause(0.2)
        assert notes == ["kill failed: the runtime's socket closed (and 7 more failed)"]
        assert app.crashed is None and isinstance(app.screen, MainScreen)


async def test_steering_marked_sessions_with_the_runtime_gone_is_one_line_not_one_per_session() -> None:
    clock = FakeClock(T0)
    rt = Down(clock, ConnectionError("the runtime's socket closed"))
    app = app_on(rt, clock)
    notes = recording(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await marked_live(app, pilot, 5)
        rt.down = True
        await pilot.press("s")
        await pilot.pause()
        await pilot.press("h", "i", "enter")
        await pilot.pause(0.2)
        assert notes == ["send failed: the runtime's socket closed (and 4 more failed)"]


async def test_a_call_that_times_out_says_it_timed_out_rather_than_ending_on_a_colon() -> None:
    clock = FakeClock(T0)
    rt = Down(clock, TimeoutError())  # asyncio.wait_for raises it, with no message
    app = app_on(rt, clock)
    notes = recording(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.main_screen.session_tree.select_key(key_of(app, "code-review-pr-105"))  # failed: retryable
        await pilot.pause()
        rt.down = True
        await pilot.press("r")
        await pilot.pause(0.2)
        assert notes == ["retry failed: timed out"]
        rt.error = OSError()
        await pilot.press("r")
        await pilot.pause(0.2)
        assert notes[-1] == "retry failed: OSError"


async def test_odd_input_is_refused_in_the_forms_and_keys_other_than_y_do_not_confirm() -> None:
    clock = FakeClock(T0)
    rt = FakeRuntime(clock)
    app = app_on(rt, clock)
    quits = no_quit(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        # The spawn form: a huge label with markup, a 100 kB task, out-of-range numbers; then escape mid-form.
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, SpawnScreen)
        form.query_one("#spawn-label", Input).value = "x" * 5_000 + "[b]"
        form.query_one("#spawn-task", Input).value = "[@click=app.quit]" + "t" * 100_000
        for watchdog, best_of in (("-5m", "99999999999999999999"), ("nan", "0"), ("1e308", "1.5"), ("\x1b[2J", "-3")):
            form.query_one("#spawn-watchdog", Input).value = watchdog
            form.query_one("#spawn-best-of", Input).value = best_of
            await pilot.press("enter")
            await pilot.pause()
            assert app.screen is form
        assert not [c for c in rt.calls if c[0] == "spawn"]
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        # The filter: regex metacharacters, 10 kB, a NUL; escape clears it and every session is back.
        await pilot.press("slash")
        await pilot.pause()
        box = app.main_screen.query_one("#filter", Input)
        for pattern in ("(", "[", "a{99999}", "\\", "(?P<x>", "*" * 10_000, "x" * 10_240, "(a+)+$", "\\p{L}", "\x00"):
            box.value = pattern
            await pilot.pause()
            await pilot.press("enter")
            await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        # A kill confirm answered by other keys: nothing is killed, and q does not quit from under it.
        app.main_screen.session_tree.select_key(key_of(app, "code-review-pr-103"))
        await pilot.pause()
        await pilot.press("k")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        for key in ("a", "q", "k", "z", "Y", "space"):
            await pilot.press(key)
            await pilot.pause()
        assert not [c for c in rt.calls if c[0] == "kill"]
        assert app.crashed is None and quits == []


class Big(FakeRuntime):
    async def cron_list(self) -> list[CronJobInfo]:
        return [
            CronJobInfo(name=f"job-{i:03d}", schedule="every 5m", payload="spawn", next_fire=T0 + 60, runs=3)
            for i in range(200)
        ]


async def test_a_thousand_sessions_a_chain_of_fifty_children_and_200_cron_jobs() -> None:
    clock = FakeClock(T0)
    rt = Big(clock, sessions=False)
    states = list(SessionState)
    for i in range(1_000):
        key = f"s-01big{i:020d}"
        rt.sessions[key] = Session(
            key=key, label=f"grp{i % 7}-s-{i}", state=states[i % len(states)], created_at=T0 - i, updated_at=T0 - i
        )
    parent = None
    for d in range(50):
        key = f"s-01deep{d:019d}"
        rt.sessions[key] = Session(
            key=key, label=f"deep-{d}", state=S.RUNNING, created_at=T0, updated_at=T0, parent=parent, depth=d
        )
        parent = key
    assert parent is not None
    app = app_on(rt, clock)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert all(f"s-01deep{d:019d}" in app.book.sessions for d in range(50))  # live: all listed
        app.main_screen.session_tree.select_key(parent)
        await pilot.pause()
        for key in ("left", "right", "space", "2", "1", "w", "0", "0", "right_square_bracket", "down", "down"):
            await pilot.press(key)
            await pilot.pause()
        assert app.crashed is None and app.is_running


async def test_best_of_with_digits_int_cannot_read_is_refused_in_the_form_not_a_crash() -> None:
    clock = FakeClock(T0)
    rt = FakeRuntime(clock, workspaces=True)
    app = app_on(rt, clock)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, SpawnScreen)
        form.query_one("#spawn-label", Input).value = "fix-login"
        for best_of in ("²", "①", "9" * 5_000):  # digits to str.isdigit, not to int()
            form.query_one("#spawn-best-of", Input).value = best_of
            await pilot.press("enter")
            await pilot.pause()
            assert app.crashed is None and app.screen is form
            error = str(form.query_one("#spawn-best-of-error").render())
            assert error.startswith("best of N takes a number from 2 to 10")
        assert not [c for c in rt.calls if c[0] == "spawn"]


async def test_a_refusal_quoting_a_huge_value_leaves_the_form_buttons_on_screen() -> None:
    clock = FakeClock(T0)
    rt = FakeRuntime(clock)
    app = app_on(rt, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, SpawnScreen)
        form.query_one("#spawn-label", Input).value = "x" * 5_000
        form.query_one("#spawn-watchdog", Input).value = "9" * 5_000 + "x"
        await pilot.press("enter")
        await pilot.pause()
        label_error = str(form.query_one("#spawn-label-error").render())
        assert label_error.startswith("invalid label 'xxx") and " … " in label_error
        assert label_error.endswith("starting with a letter or digit")  # the rule, at its end, is kept
        for button in ("#spawn-ok", "#spawn-cancel"):
            assert form.query_one(button).region.bottom <= 40


async def test_a_spawn_that_times_out_says_so_in_the_form() -> None:
    clock = FakeClock(T0)
    rt = Down(clock, TimeoutError())
    app = app_on(rt, clock)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        rt.down = True
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, SpawnScreen)
        form.query_one("#spawn-label", Input).value = "fix-login"
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert str(form.query_one("#spawn-error").render()) == "spawn failed: timed out"


async def test_retrying_many_marked_sessions_is_one_line_not_one_per_session() -> None:
    clock = FakeClock(T0)
    rt = FakeRuntime(clock)
    app = app_on(rt, clock)
    notes = recording(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        ended = [k for k, s in app.book.sessions.items() if s.state in (S.FAILED, S.KILLED, S.TIMED_OUT, S.LOST)]
        assert len(ended) > 4
        for key in ended:
            app.main_screen.session_tree.select_key(key)
            await pilot.pause()
            await pilot.press("space")
        await pilot.press("r")
        await pilot.pause(0.2)
        assert len(notes) == 1 and notes[0].startswith(f"retrying {len(ended)} sessions: ")
