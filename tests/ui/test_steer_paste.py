"""The steer prompt with pasted text, on a REAL orchestrator: several lines are sent as that many steers (the
prompt says so first), and a line the runtime would refuse (over 64 KiB) is refused in the prompt, which stays
open with the text. A paste comes as the terminal sends it: one Paste event to the app."""

from __future__ import annotations

from typing import Any

from textual import events
from textual.widgets import Static, TextArea

from crewtui.runtime.orchestrator import Orchestrator
from crewtui.ui.app import CrewApp, make_app
from crewtui.ui.screens.steer import SteerScreen
from tests.conftest import ECHO_AGENT, py, wait_for
from tests.ui.test_keys import SIZE, ready, select, spawn


async def open_steer(app: CrewApp, pilot: Any, key: str) -> SteerScreen:
    await select(app, pilot, key)
    await pilot.press("s")
    await pilot.pause()
    assert isinstance(app.screen, SteerScreen)
    return app.screen


def shown(screen: SteerScreen, widget_id: str) -> str:
    return str(screen.query_one(widget_id, Static).render())


def kept(screen: SteerScreen) -> str:
    """The text the prompt holds (whatever widget holds it)."""
    field = screen.query_one("#steer-text")
    return field.text if isinstance(field, TextArea) else field.value  # type: ignore[attr-defined]


async def test_a_multi_line_paste_is_sent_as_one_steer_a_line_and_the_prompt_says_so(make_orch: Any) -> None:
    orch: Orchestrator = await make_orch()
    key = await spawn(orch, "echo-paste", py(ECHO_AGENT))
    app = make_app(orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        screen = await open_steer(app, pilot, key)
        pasted = "first line\r\nsecond line\n\n   \nthird line\n"
        app.post_message(events.Paste(pasted))
        await pilot.pause()
        await pilot.pause()
        # Every line kept, as pasted (the text area writes line ends as \n).
        assert kept(screen) == pasted.replace("\r\n", "\n")
        assert "3 lines: they will be sent as 3 steers" in shown(screen, "#steer-info")
        await pilot.press("enter")
        await wait_for(lambda: orch.sessions[key].last_line == "steered: third line", what="the third steer")
    history = await orch.history(key)
    assert [line for line in history.lines if line.startswith("steered")] == [
        "steered: first line",
        "steered: second line",
        "steered: third line",
    ]


async def test_a_paste_over_64_kib_is_refused_in_the_prompt_which_keeps_the_text(make_orch: Any) -> None:
    orch: Orchestrator = await make_orch()
    key = await spawn(orch, "echo-big", py(ECHO_AGENT))
    app = make_app(orch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        screen = await open_steer(app, pilot, key)
        big = "x" * 100_000
        app.post_message(events.Paste(big))
        await pilot.pause()
        await pilot.pause()
        # Said before anything is sent: the size, and the limit the runtime keeps.
        error = shown(screen, "#steer-error")
        assert "100,000 bytes" in error and "at most 65,535" in error
        await pilot.press("enter")
        await pilot.pause()
        await pilot.pause()
        assert app.screen is screen  # still open...
        assert kept(screen) == big  # ...with the text
        # Shortened to the limit, it goes.
        screen.query_one("#steer-text", TextArea).text = "y" * 65_535
        await pilot.pause()
        assert shown(screen, "#steer-error") == ""
        await pilot.press("enter")
        await wait_for(lambda: (orch.sessions[key].last_line or "").startswith("steered: yyy"), what="the steer")
    history = await orch.history(key)
    assert not any(line.startswith("steered: xxx") for line in history.lines)
