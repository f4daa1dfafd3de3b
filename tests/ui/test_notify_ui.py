"""The dashboard tells its terminal when the crew needs you: the bell and OSC 9 / OSC 777 for each notification of
the runtime's `terminal` channel, the window title carrying how many sessions wait; and the needs-you keys: `w`
(the next session that waits, across groups, wrapping around) and `0` (only those; again: all).

What reaches the terminal is captured at the one way out (`app.alerts.write`). End to end once: a real runtime with
a `[notify]` table, a real `jsonl` agent that asks for a permission, and the bytes the dashboard writes.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from crewtui.events import NotificationSent
from crewtui.model import SessionState, SpawnRequest
from crewtui.ui.alerts import BEL, POP_TITLE, PUSH_TITLE, TerminalAlerts, field, osc_2, osc_9, osc_777, window_title
from crewtui.ui.app import CrewApp, make_app
from tests.conftest import PY, crew_from, wait_for
from tests.ui.conftest import fake_app, recording, settle
from tests.ui.fake_runtime import FakeRuntime
from tests.ui.test_answer import WAITING_AGENT

SIZE = (140, 42)
OSC = re.compile(r"\x1b\](\d+);(.*?)\x07", re.S)
WAITING = ["code-review-pr-104", "triage-email-2", "ops-deploy-api"]  # the fake's waiting sessions (agents=True)


def capture(app: CrewApp) -> list[str]:
    """What the dashboard writes to its terminal besides frames."""
    out: list[str] = []
    app.alerts.write = out.append
    return out


def notification(**kw: Any) -> NotificationSent:
    base: dict[str, Any] = {
        "trigger": "waiting",
        "channel": "terminal",
        "title": "fix-login waits for you",
        "text": "fix-login: Bash rm -rf build",
        "sessions": ["s-1"],
    }
    return NotificationSent(**(base | kw))


def oscs(written: list[str]) -> list[tuple[str, str]]:
    return OSC.findall("".join(written))


# ------------------------------------------------------------------------------------------------ the sequences


def test_each_field_is_cleaned_of_control_characters_and_capped() -> None:
    hostile = "a\x1b]52;c;cm0gLXJm\x07b\x07c\x1b[2Jd\r\ne\tf\x9b31mg\u202eh\x00"
    cleaned = field(hostile, 200)
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u202e]", cleaned)
    assert cleaned == "ab␇cd · e fg\\u202eh␀"  # the OSC went with its payload; a stray control is shown, not sent
    assert field("x" * 500, 80) == "x" * 79 + "…"
    assert field("a;b", 10, semicolons=False) == "a,b"


def test_osc_9_and_777_carry_the_title_and_text_in_their_fields() -> None:
    assert (
        osc_9("2 sessions failed", "a: exit 1\nb: exit 2")
        == "\x1b]9;crewtui: 2 sessions failed · a: exit 1 · b: exit 2\x07"
    )
    seq = osc_777("run; rm -rf /", "body; with semicolons")
    assert seq == "\x1b]777;notify;crewtui: run, rm -rf /;body; with semicolons\x07"  # the title has no field separator
    assert osc_9("4;1", "") == "\x1b]9;crewtui: 4;1\x07"  # never read as ConEmu's progress bar (9;4;...)
    assert window_title(0) == "crewtui" and window_title(3) == "crewtui · 3 need you"
    assert osc_2(window_title(1200)) == "\x1b]2;crewtui · 1,200 need you\x07"


def test_alerts_ring_for_the_terminal_channel_only_and_not_while_the_terminal_is_lent() -> None:
    out: list[str] = []
    alerts = TerminalAlerts(out.append)
    alerts.notified(notification(channel="webhook:phone"))
    alerts.notified(notification(channel="desktop"))
    assert out == []
    alerts.notified(notification())
    assert out == [
        BEL
        + osc_9("fix-login waits for you", "fix-login: Bash rm -rf build")
        + osc_777("fix-login waits for you", "fix-login: Bash rm -rf build")
    ]
    out.clear()
    alerts.suspend()  # attached to a session: the terminal is its
    alerts.notified(notification(title="first"))
    alerts.notified(notification(title="second"))
    alerts.show_count(2)
    assert out == []
    alerts.resume()  # back: the last one missed is rung
    assert [k for k, _ in oscs(out)] == ["9", "777"] and "second" in out[0] and out[0].startswith(BEL)
    # Not in a browser.
    served = TerminalAlerts(out.append, enabled=lambda: False)
    out.clear()
    served.notified(notification())
    served.show_count(3)
    served.restore_title()
    assert out == []


def test_the_window_title_is_written_when_the_count_changes_and_given_back_at_exit() -> None:
    out: list[str] = []
    alerts = TerminalAlerts(out.append)
    for n in (0, 0, 2, 2, 2, 1, 0):
        alerts.show_count(n)
    assert out == [
        PUSH_TITLE + osc_2("crewtui"),
        osc_2("crewtui · 2 need you"),
        osc_2("crewtui · 1 need you"),
        osc_2("crewtui"),
    ]
    alerts.suspend()
    alerts.resume()
    alerts.show_count(0)  # the attached program may have set its own: written again
    assert out[-1] == osc_2("crewtui")
    alerts.restore_title()
    assert out[-1] == POP_TITLE


# ------------------------------------------------------------------------------------------------ the dashboard


async def test_the_dashboard_rings_for_each_terminal_notification_it_receives() -> None:
    app = fake_app(agents=True)
    written = capture(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        fake = app.runtime
        assert isinstance(fake, FakeRuntime)
        written.clear()
        fake.emit(notification(channel="webhook:phone"))  # not the dashboards' to ring
        fake.emit(notification(trigger="failed+timed_out", title="c-1 failed\x1b]0;owned\x07", text="c-1: exit 1"))
        await wait_for(lambda: app.alerts.rung == 1, what="rung")
        await pilot.pause()
        rung = "".join(w for w in written if "\x1b]2;" not in w)
        assert rung.startswith(BEL)
        assert oscs([rung]) == [
            ("9", "crewtui: c-1 failed · c-1: exit 1"),
            ("777", "notify;crewtui: c-1 failed;c-1: exit 1"),
        ]


async def test_a_served_dashboard_writes_nothing_to_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CrewApp, "is_web", property(lambda self: True))
    app = fake_app(agents=True)
    written = capture(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        fake = app.runtime
        assert isinstance(fake, FakeRuntime)
        fake.emit(notification())
        await pilot.pause(1.2)
    assert written == [] and app.alerts.rung == 0


async def test_the_window_title_carries_how_many_need_you() -> None:
    app = fake_app(agents=True)
    written = capture(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await wait_for(lambda: osc_2("crewtui · 3 need you") in "".join(written), what="the title")
        key = next(k for k, s in app.book.sessions.items() if s.label == WAITING[0])
        app.main_screen.session_tree.select_key(key)
        await pilot.pause()
        await pilot.press("a")  # approved: one fewer waits
        await wait_for(lambda: osc_2("crewtui · 2 need you") in "".join(written), what="the title, one fewer")
        await pilot.pause(1.2)
    titles = [v for k, v in oscs(written) if k == "2"]
    assert titles == ["crewtui · 3 need you", "crewtui · 2 need you"]  # once per change, not once a second
    assert written[0].startswith(PUSH_TITLE) and written[-1] == POP_TITLE  # the terminal's own title back at exit


async def test_a_waiting_session_rings_the_bell_and_sends_osc_9_end_to_end(make_orch: Any, tmp_path: Path) -> None:
    """The issue's "done when": a real runtime with a [notify] table; a real agent asks for a permission; its
    `waiting` becomes a notification on the terminal channel; the dashboard writes BEL and OSC 9 for it."""
    agent = tmp_path / "waiter.py"
    agent.write_text(WAITING_AGENT)
    crew = f"""
        [crew]
        name = "t"

        [notify]
        on = ["waiting"]
        group_for = "0.2s"
        desktop = false

        [agents.mine]
        preset = "jsonl"
        command = ["{PY}", "{agent}"]
        """
    orch = await make_orch(crew_from(textwrap.dedent(crew)))
    app = make_app(orch)
    written = capture(app)
    async with app.run_test(size=SIZE) as pilot:
        await app.loaded.wait()
        s = await orch.spawn(SpawnRequest(label="clean-1", agent="mine", task="clean up"))
        await wait_for(lambda: "\x1b]9;" in "".join(written), timeout=15, what="OSC 9 on the terminal")
        out = "".join(written)
        assert BEL in out
        (osc9,) = [v for k, v in oscs(written) if k == "9"]
        assert osc9.startswith("crewtui: ") and "clean-1" in osc9
        assert any(k == "777" and "clean-1" in v for k, v in oscs(written))
        assert orch.sessions[s.key].state == SessionState.WAITING
        await wait_for(lambda: osc_2("crewtui · 1 need you") in "".join(written), what="the title's count")
        await pilot.pause()


# ------------------------------------------------------------------------------------------------ w and 0


def current_label(app: CrewApp) -> str | None:
    ref = app.main_screen.session_tree.current
    return app.book.sessions[ref.id].label if ref is not None and ref.kind == "session" else None


async def test_w_goes_to_the_next_waiting_session_across_groups_and_wraps_around() -> None:
    app = fake_app(agents=True)
    notes = recording(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        tree = app.main_screen.session_tree
        # Fold a group with one that waits: `w` unfolds it.
        tree.nodes["g:ops"].collapse()
        await pilot.pause()
        seen = []
        for _ in range(4):
            await pilot.press("w")
            await wait_for(lambda: current_label(app) in WAITING and current_label(app) not in seen[-1:], what="moved")
            seen.append(current_label(app))
        assert seen[:3] == ["code-review-pr-104", "ops-deploy-api", "triage-email-2"]  # the tree's order
        assert seen[3] == seen[0]  # around again
        assert tree.nodes["g:ops"].is_expanded
    assert notes == []


async def test_w_says_when_nobody_waits_and_when_the_filter_hides_those_who_do() -> None:
    app = fake_app()  # no agent waits
    notes = recording(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("w")
        await pilot.pause()
    assert notes == ["nobody waits on you"]

    app = fake_app(agents=True)
    notes = recording(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("5")  # only the done ones
        await pilot.pause()
        await pilot.press("w")
        await pilot.pause()
        assert notes == ["3 sessions wait on you, hidden by the filter: escape clears it"]
        # The only one shown, already under the cursor.
        await pilot.press("escape", "0")
        await pilot.pause()
        app.book.sessions[
            next(k for k, s in app.book.sessions.items() if s.label == WAITING[1])
        ].state = SessionState.RUNNING
        app.book.sessions[
            next(k for k, s in app.book.sessions.items() if s.label == WAITING[2])
        ].state = SessionState.RUNNING
        await pilot.press("w")
        await wait_for(lambda: current_label(app) == WAITING[0], what="on it")
        await pilot.press("w")
        await pilot.pause()
        assert notes[-1] == f"only {WAITING[0]} waits on you"


async def test_0_shows_only_the_waiting_sessions_and_again_every_session() -> None:
    app = fake_app(agents=True)

    def shown() -> set[str]:
        return {app.book.sessions[n[2:]].label for n in app.main_screen.session_tree.nodes if n.startswith("s:")}

    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        every = shown()
        await pilot.press("0")
        await pilot.pause()
        assert shown() == set(WAITING)
        await pilot.press("w")
        await wait_for(lambda: current_label(app) in WAITING, what="on a waiting one")
        await pilot.press("0")
        await pilot.pause()
        assert shown() == every and app.book.state_filter is None
        await pilot.press("2", "2")  # any state key: again, every state
        await pilot.pause()
        assert shown() == every
