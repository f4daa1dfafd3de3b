"""Fixtures for the dashboard tests: a fixed time zone, and apps on the fake or on a real runtime."""

from __future__ import annotations

import os
import time
from typing import Any

os.environ["TZ"] = "UTC"  # clock times in the panes are local time: fix it so snapshots match anywhere
os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")
time.tzset()

from textual.pilot import Pilot  # noqa: E402

from crewtui.clock import FakeClock  # noqa: E402
from crewtui.ui.app import CrewApp, make_app  # noqa: E402
from crewtui.ui.older import WINDOW  # noqa: E402
from tests.ui.fake_runtime import T0, FakeRuntime  # noqa: E402


def fake_app(*, window: int = WINDOW, **kw: object) -> CrewApp:
    """The dashboard on the deterministic fake, ready for a snapshot: no blinking, no animation. `window`: the
    ended sessions it lists (`fake_runtime.ENDED` holds exactly the fake's own, before any `archive`)."""
    clock = FakeClock(T0)
    app = make_app(FakeRuntime(clock, **kw), clock=clock, window=window)  # type: ignore[arg-type]
    app.cursor_blink = False
    app.animation_level = "none"
    return app


async def settle(pilot: Pilot[None]) -> None:
    """Wait until the first listing and the schedule are shown, older history counted, and everything buffered
    is applied."""
    app = pilot.app
    assert isinstance(app, CrewApp)
    await app.loaded.wait()
    await app.main_screen.older_counted.wait()
    app.main_screen.flush_events()
    await pilot.pause()
    await pilot.pause()


async def opened(pilot: Pilot[None], prefix: str) -> None:
    """Wait until the page an opened older row asked for is shown."""
    app = pilot.app
    assert isinstance(app, CrewApp)
    await pilot.pause()
    while prefix in app.book.older.loading:
        await pilot.pause(0.01)
    await pilot.pause()
    await pilot.pause()


def recording(app: CrewApp) -> list[str]:
    """Notifications the app shows, as text (the test harness does not draw toasts)."""
    notes: list[str] = []
    real = app.notify

    def notify(message: str, **kw: Any) -> None:
        notes.append(message)
        real(message, **kw)

    app.notify = notify  # type: ignore[method-assign]
    return notes


def key_of(app: CrewApp, label: str) -> str:
    return next(k for k, s in app.book.sessions.items() if s.label == label)
