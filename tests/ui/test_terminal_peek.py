"""Terminal sessions in the dashboard: the peek (a live, read-only render of the selected session's screen) and
`enter`, which attaches to one (the dashboard suspends itself around `crewtui.attaching.attach`).

On the fake runtime's terminal sessions (tests/ui/fake_terminals.py), with snapshots; and on a real orchestrator
with a real program on a pseudo-terminal held by dtach: its screen peeked through pyte, `enter` attaching to it
(the attach itself recorded, not run: tests/test_terminal_sessions.py attaches through a real terminal).
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Static

from crewtui import attaching
from crewtui.model import Session, SessionState, SpawnRequest, TerminalScreen
from crewtui.ui.app import CrewApp, make_app
from crewtui.ui.widgets.peek import CURSOR_STYLE, TerminalPeek, screen_text, shown_span
from tests.conftest import PY, wait_for
from tests.ui.conftest import fake_app, key_of, recording, settle
from tests.ui.fake_runtime import FakeRuntime
from tests.ui.fake_terminals import CHECKOUT, ENDED_SHELL, SEARCH

WIDE = (140, 42)
NARROW = (80, 24)
Snap = Callable[..., bool]


async def select(app: CrewApp, pilot: Pilot[None], label: str) -> str:
    key = key_of(app, label)
    app.main_screen.session_tree.select_key(key)
    await wait_for(
        lambda: app.main_screen.session_tree.current is not None and app.main_screen.session_tree.current.id == key,
        what=f"cursor on {label}",
    )
    await pilot.pause()
    return key


def peeks(app: CrewApp) -> int:
    fake = app.runtime
    assert isinstance(fake, FakeRuntime)
    return sum(1 for name, _ in fake.calls if name == "peek")


def peek_of(app: CrewApp) -> TerminalPeek:
    return app.main_screen.peek


def text_of(widget: Static) -> str:
    console = Console(width=200, color_system=None, record=True)
    console.print(widget.render())
    return console.export_text()


async def peeked(pilot: Pilot[None], reads: int = 1) -> None:
    """Wait until the peek has drawn `reads` screens, and what it scrolled to is laid out."""
    app = pilot.app
    assert isinstance(app, CrewApp)
    await wait_for(lambda: peek_of(app).reads >= reads, what="the peek's read")
    await pilot.pause()
    await pilot.pause()


# ------------------------------------------------------------------------------------------------ rendering


def test_the_screen_is_drawn_as_plain_text_with_the_cursor_cell_reversed() -> None:
    screen = TerminalScreen(key="k", label="l", rows=3, cols=10, lines=["$ ls", "a  b"], cursor=(1, 6))
    text = screen_text(screen)
    assert text.plain == "$ ls\na  b   \n"  # the cursor two cells past the line's end: padded to it
    assert [(s.start, s.end, str(s.style)) for s in text.spans] == [(11, 12, CURSOR_STYLE)]
    # On a character, counting cells: a wide character takes two.
    wide = TerminalScreen(key="k", label="l", rows=1, cols=10, lines=["日本語x"], cursor=(0, 6))
    assert [text_span(screen_text(wide))] == ["x"]
    # An ended session has no cursor.
    ended = screen.model_copy(update={"live": False})
    assert screen_text(ended).spans == []


def text_span(text: Any) -> str:
    (span,) = text.spans
    return str(text.plain[span.start : span.end])


def test_what_an_agent_drew_is_shown_never_obeyed() -> None:
    screen = TerminalScreen(
        key="k",
        label="l",
        rows=2,
        cols=40,
        lines=["\x1b]52;c;cm0gLXJmIH4=\x07ok \x1b[2Jdone", "[bold]not markup[/bold] lone \x1b"],
        cursor=(0, 0),
        live=False,
    )
    text = screen_text(screen)
    assert text.plain == "ok done\n[bold]not markup[/bold] lone ␛"
    assert "\x1b" not in text.plain and "\x07" not in text.plain


def test_how_much_of_the_screen_a_clipped_box_shows() -> None:
    # A box of 80 columns (a border cell either side) in a viewport of 50, scrolled to 0, then to the far end.
    assert shown_span(0, 50, 80) == 49
    assert shown_span(32, 50, 80) == 49
    assert shown_span(0, 100, 80) == 80


async def test_the_cursor_stays_in_view_when_the_pane_is_laid_out_again() -> None:
    """The scroll that brought the cursor into view was made once, for the pane's size then: a window made smaller
    afterwards (or a first layout that settled after the read, under load) left the cursor out of view."""
    from textual.containers import ScrollableContainer

    app = fake_app(terminals=True)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await select(app, pilot, CHECKOUT)
        await peeked(pilot)
        await pilot.resize_terminal(*NARROW)
        await pilot.press("right_square_bracket")  # 80 columns: one pane at a time, the detail's now
        await settle(pilot)
        await pilot.pause(0.1)
        box = app.query_one("#peek-box", ScrollableContainer)
        shown = peek_of(app).shown
        assert shown is not None
        top, height = round(box.scroll_y), box.scrollable_content_region.height
        assert height < shown.rows + 2  # clipped: it has to scroll
        assert top <= shown.cursor[0] + 1 < top + height, (top, height, shown.cursor)


# ------------------------------------------------------------------------------------------------ polling


async def test_peek_reads_while_a_terminal_session_is_selected_and_stops_when_it_is_not() -> None:
    app = fake_app(terminals=True)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        assert peeks(app) == 0 and not peek_of(app).polling  # nothing selected that has a screen
        await select(app, pilot, CHECKOUT)
        await peeked(pilot, reads=2)  # read again while it stays selected (twice a second)
        assert peek_of(app).polling and app.main_screen.has_class("-peek")
        assert app.query_one("#peek").display and not app.main_screen.transcript.region.area  # instead of it
        screen = text_of(app.query_one("#peek-screen", Static))
        assert "> yes, and run it" in screen and "Shall I change" in screen
        note = text_of(app.query_one("#peek-note", Static))
        assert "live" in note and "showing 55x11 of 80x24" in note  # the pane is smaller: clipped
        await pilot.press("right_square_bracket")  # the next pane: the screen, to scroll it
        await pilot.pause()
        assert app.focused is app.query_one("#peek-box")
        # A session that is not a terminal session: no peek, no reads, its transcript back.
        await select(app, pilot, "ops-deploy-api")
        assert not peek_of(app).polling and not app.main_screen.has_class("-peek")
        before = peeks(app)
        await pilot.pause(1.2)
        assert peeks(app) == before
        # Back on one, then on its group: the same.
        await select(app, pilot, SEARCH)
        await wait_for(lambda: peeks(app) > before, what="reads again")
        app.main_screen.session_tree.select_row("g:pair-claude")
        await wait_for(lambda: not peek_of(app).polling, what="stops on a group")
        before = peeks(app)
        await pilot.pause(1.2)
        assert peeks(app) == before


async def test_an_ended_terminal_session_shows_its_last_screen_read_once() -> None:
    app = fake_app(terminals=True)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await select(app, pilot, ENDED_SHELL)
        await peeked(pilot)
        await pilot.pause(1.2)
        assert peeks(app) == 1 and not peek_of(app).polling
        assert "ended" in text_of(app.query_one("#peek-note", Static))
        assert "alembic upgrade head" in text_of(app.query_one("#peek-screen", Static))


async def test_a_failed_read_is_said_in_the_pane_not_in_a_toast() -> None:
    app = fake_app(terminals=True)
    notes = recording(app)
    fake = app.runtime
    assert isinstance(fake, FakeRuntime)
    fake.peek_error = "pair-claude-checkout: its output cannot be read: \x1b[31mpermission denied"
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await select(app, pilot, CHECKOUT)
        await peeked(pilot, reads=2)
        note = text_of(app.query_one("#peek-note", Static)).strip()
        assert note == "could not read its screen: pair-claude-checkout: its output cannot be read: permission denied"
        assert peek_of(app).polling  # it keeps trying
        # It comes back: the screen is drawn, the line says so.
        fake.peek_error = None
        reads = peek_of(app).reads
        await peeked(pilot, reads=reads + 1)
        assert "live" in text_of(app.query_one("#peek-note", Static))
    assert notes == []


async def test_peek_reads_only_while_its_pane_is_on_view() -> None:
    app = fake_app(terminals=True)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        await select(app, pilot, CHECKOUT)  # the narrow layout shows the Sessions tab: the screen is not on view
        await pilot.pause(1.2)
        assert peek_of(app).polling and peeks(app) == 0
        await pilot.press("right_square_bracket")  # the Detail tab
        await peeked(pilot)
        assert "> yes, and run it" in text_of(app.query_one("#peek-screen", Static))
        assert app.focused is app.query_one("#peek-box")  # where its transcript would be: to scroll it


# ------------------------------------------------------------------------------------------------ snapshots


def peek_at(label: str, *keys: str) -> Callable[[Pilot[None]], Any]:
    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        app = pilot.app
        assert isinstance(app, CrewApp)
        await select(app, pilot, label)
        if keys:
            await pilot.press(*keys)
        await peeked(pilot)
        await pilot.pause(0.1)
        await pilot.pause()

    return run


def test_snapshot_peek_of_a_live_terminal_session(snap_compare: Snap) -> None:
    assert snap_compare(fake_app(terminals=True), terminal_size=WIDE, run_before=peek_at(CHECKOUT))


def test_snapshot_peek_of_an_ended_terminal_session(snap_compare: Snap) -> None:
    assert snap_compare(fake_app(terminals=True), terminal_size=WIDE, run_before=peek_at(ENDED_SHELL))


def test_snapshot_peek_narrow(snap_compare: Snap) -> None:
    assert snap_compare(
        fake_app(terminals=True), terminal_size=NARROW, run_before=peek_at(CHECKOUT, "right_square_bracket")
    )


# ------------------------------------------------------------------------------------------------ enter attaches


class Suspends:
    """Stands in for `App.suspend` (the test harness's driver cannot suspend): records that it was used, and that
    nothing ran outside it."""

    def __init__(self) -> None:
        self.entered = 0
        self.inside = False
        self.printed = io.StringIO()  # what went to the terminal meanwhile (Textual points sys.stdout at it)

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        self.entered += 1
        self.inside = True
        try:
            with contextlib.redirect_stdout(self.printed):
                yield
        finally:
            self.inside = False


def lend_terminal(app: CrewApp, monkeypatch: pytest.MonkeyPatch, *, check: bool = True) -> tuple[Suspends, list[str]]:
    """`App.suspend` recorded; `crewtui.attaching.attach` records the session it got (inside the suspend) and
    returns at once, as after a detach; with `check=False`, the fake's sessions (which have no terminal on this
    machine) pass `attach_command`'s checks."""
    suspends = Suspends()
    attached: list[str] = []

    def attach(s: Session) -> int:
        assert suspends.inside, "attached outside the suspend"
        attached.append(s.label)
        return 0

    monkeypatch.setattr(app, "suspend", suspends)
    monkeypatch.setattr(attaching, "attach", attach)
    if not check:
        monkeypatch.setattr(attaching, "attach_command", lambda s: (["dtach"], Path("/")))
    return suspends, attached


async def test_enter_on_a_terminal_session_suspends_the_dashboard_attaches_and_comes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = fake_app(terminals=True)
    notes = recording(app)
    suspends, attached = lend_terminal(app, monkeypatch, check=False)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        key = await select(app, pilot, CHECKOUT)
        await peeked(pilot)
        await pilot.press("enter")
        await wait_for(lambda: bool(notes), what="back from the attach")
        assert attached == [CHECKOUT] and suspends.entered == 1
        assert notes == [f"detached from {CHECKOUT}"]
        # As it was: the main screen, the cursor on the session, its screen read again.
        assert app.screen is app.main_screen and app.focused is app.main_screen.session_tree
        assert app.main_screen.session_tree.current is not None and app.main_screen.session_tree.current.id == key
        reads = peek_of(app).reads
        await peeked(pilot, reads=reads + 1)
    assert suspends.printed.getvalue() == f"attaching to {CHECKOUT}; detach with Ctrl-\\ (it keeps running)\n"


async def test_enter_where_the_terminal_cannot_be_lent_says_how_to_attach_from_a_shell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = fake_app(terminals=True)
    notes = recording(app)
    attached: list[Session] = []
    monkeypatch.setattr(attaching, "attach", attached.append)
    monkeypatch.setattr(attaching, "attach_command", lambda s: (["dtach"], Path("/")))
    async with app.run_test(size=WIDE) as pilot:  # the test harness's driver cannot suspend
        await settle(pilot)
        await select(app, pilot, CHECKOUT)
        await pilot.press("enter")
        await wait_for(lambda: bool(notes), what="the line")
        # Served in a browser: the same line, without asking the runtime anything.
        monkeypatch.setattr(CrewApp, "is_web", property(lambda self: True))
        await pilot.press("enter")
        await wait_for(lambda: len(notes) == 2, what="the second line")
    assert notes == [f"attach from a terminal: crewtui attach {CHECKOUT}"] * 2
    assert attached == []


async def test_enter_on_an_ended_terminal_session_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    app = fake_app(terminals=True)
    notes = recording(app)
    suspends, attached = lend_terminal(app, monkeypatch)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await select(app, pilot, ENDED_SHELL)
        await pilot.press("enter")
        await wait_for(lambda: bool(notes), what="the refusal")
    assert notes == [f"{ENDED_SHELL} has ended (done): there is no terminal to attach to"]
    assert attached == [] and suspends.entered == 0


async def test_enter_on_a_session_that_is_not_a_terminal_session_opens_its_transcript(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = fake_app(terminals=True)
    suspends, attached = lend_terminal(app, monkeypatch, check=False)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await select(app, pilot, "ops-deploy-api")
        await pilot.press("enter")
        await pilot.pause()
        assert app.focused is app.main_screen.transcript
    assert attached == [] and suspends.entered == 0


# ------------------------------------------------------------------------------------------------ a real one

ASK = "name = input('Name? '); print('hello ' + name, flush=True)"

needs_dtach = pytest.mark.skipif(shutil.which("dtach") is None, reason="dtach is missing: scripts/install-debian.sh")


@needs_dtach
async def test_a_real_terminal_session_is_peeked_and_attached_to(
    make_orch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    orch = await make_orch()
    s = await orch.spawn(SpawnRequest(label="asks-name", argv=[PY, "-c", ASK], tty=True))
    assert s.tty
    try:
        await wait_for(lambda: orch.sessions[s.key].state == SessionState.RUNNING, what="running")
        app = make_app(orch)
        notes = recording(app)
        suspends, attached = lend_terminal(app, monkeypatch)  # attach_command's checks are real: dtach, its socket
        async with app.run_test(size=WIDE) as pilot:
            await app.loaded.wait()
            app.main_screen.flush_events()
            await wait_for(lambda: "s:" + s.key in app.main_screen.session_tree.nodes, what="row")
            await select(app, pilot, "asks-name")
            # The program's question, through pyte, with the cursor after it.
            await wait_for(
                lambda: "Name?" in text_of(app.query_one("#peek-screen", Static)), timeout=15, what="its screen"
            )
            shown = peek_of(app).shown
            assert shown is not None and shown.live and shown.cursor == (0, len("Name? "))
            await pilot.press("enter")
            await wait_for(lambda: bool(notes), what="back from the attach")
            assert attached == ["asks-name"] and suspends.entered == 1 and notes == ["detached from asks-name"]
            # Without dtach, attaching is refused in one line naming the package.
            monkeypatch.setattr(attaching.shutil, "which", lambda name: None)
            await pilot.press("enter")
            await wait_for(lambda: len(notes) == 2, what="the refusal")
            assert notes[1] == "attaching needs dtach: apt install dtach" and attached == ["asks-name"]
    finally:
        await orch.kill(s.key)
