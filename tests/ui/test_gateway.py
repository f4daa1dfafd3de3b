"""The model gateway in the dashboard: the gateway view (`g`) per pool, sessions whose requests wait in the gateway
(their rows and detail), and `R`, which resumes a session paused over its budget. On the fake runtime (its gateway
is tests/ui/fake_gateway.py): snapshots of what is drawn, Pilot tests of the keys and of what they call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Input, Static

from crewtui.errors import CrewError
from crewtui.events import SessionAgentUpdate
from crewtui.model import Session, SessionState
from crewtui.spend import GatewayInfo, TokenCounts, UsageTotals
from crewtui.ui.actions import ACTIONS, BINDINGS
from crewtui.ui.app import CrewApp, make_app
from crewtui.ui.book import SessionBook
from crewtui.ui.screens.gateway import NO_GATEWAY, GatewayScreen
from crewtui.ui.widgets.detail import SessionDetail, spend_rows
from crewtui.ui.widgets.gateway_pool import PoolBlock
from tests.conftest import crew_from
from tests.ui.conftest import fake_app, recording, settle
from tests.ui.fake_gateway import PAUSED_LABEL, QUEUED
from tests.ui.fake_runtime import FakeRuntime

WIDE = (140, 42)
NARROW = (80, 24)
QUEUED_LABEL = "code-review-pr-108"

Snap = Callable[..., bool]


def fake(app: CrewApp) -> FakeRuntime:
    assert isinstance(app.runtime, FakeRuntime)
    return app.runtime


def calls(app: CrewApp, name: str) -> list[Any]:
    return [args for verb, args in fake(app).calls if verb == name]


async def select(app: CrewApp, pilot: Pilot[None], label: str) -> str:
    key = next(k for k, s in app.book.sessions.items() if s.label == label)
    app.main_screen.session_tree.select_key(key)
    await pilot.pause()
    await pilot.pause()
    assert app.main_screen.session_tree.current is not None and app.main_screen.session_tree.current.id == key
    return key


async def gateway_shown(pilot: Pilot[None]) -> GatewayScreen:
    """Wait until the gateway view is up and its first read is drawn."""
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, GatewayScreen)
    while screen.info is None:
        await pilot.pause(0.01)
    await pilot.pause()
    await pilot.pause()
    return screen


def text_of(widget: Static) -> str:
    console = Console(width=200, color_system=None, record=True)
    console.print(widget.content)
    return console.export_text()


# ------------------------------------------------------------------------------------------------ snapshots


async def gateway_view(pilot: Pilot[None]) -> None:
    await settle(pilot)
    await pilot.press("g")
    await gateway_shown(pilot)


def test_gateway_view(snap_compare: Snap) -> None:
    # Two pools: anthropic near its request limit, its cap learned from a 429, three in line, paused by upstream;
    # openai held, its daily budget spent. Sparklines of the last ten minutes beside each rate.
    assert snap_compare(fake_app(), terminal_size=WIDE, run_before=gateway_view)


def test_gateway_view_narrow(snap_compare: Snap) -> None:
    assert snap_compare(fake_app(), terminal_size=NARROW, run_before=gateway_view)


def test_gateway_view_without_a_gateway(snap_compare: Snap) -> None:
    # No pool names a provider: one line says how to get a gateway.
    assert snap_compare(fake_app(gateway=False), terminal_size=WIDE, run_before=gateway_view)


def filtered_to_code_review(label: str) -> Callable[[Pilot[None]], Any]:
    """Filtered to short names, so the activity column has room for a whole hold; the cursor on `label`."""

    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("slash")
        pilot.app.screen.query_one("#filter", Input).value = "code-review"
        await pilot.press("enter")
        await select(pilot.app, pilot, label)  # type: ignore[arg-type]
        await pilot.pause()

    return run


def test_session_queued_in_the_gateway_row(snap_compare: Snap) -> None:
    # code-review-pr-108 says where it waits in the gateway, in the hold's colour (the cursor is on another row, so
    # the colour shows).
    assert snap_compare(
        fake_app(agents=True, holds=True), terminal_size=WIDE, run_before=filtered_to_code_review("code-review-pr-103")
    )


def test_session_queued_in_the_gateway_detail(snap_compare: Snap) -> None:
    # Its detail: the hold, and its spend as the gateway measured it.
    assert snap_compare(
        fake_app(agents=True, holds=True), terminal_size=WIDE, run_before=filtered_to_code_review(QUEUED_LABEL)
    )


def test_session_paused_in_the_gateway(snap_compare: Snap) -> None:
    # Paused over its budget: set apart above its facts with the key that resumes it, its row in red, its spend as
    # the gateway measured it beside what its agent reported.
    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await select(pilot.app, pilot, PAUSED_LABEL)  # type: ignore[arg-type]
        await pilot.pause()

    assert snap_compare(fake_app(agents=True, holds=True), terminal_size=WIDE, run_before=run)


# ------------------------------------------------------------------------------------------------ g


async def test_g_opens_the_gateway_view_and_escape_q_or_g_close_it() -> None:
    app = fake_app()
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        for close in ("escape", "q", "g"):
            before = len(calls(app, "gateway"))
            await pilot.press("g")
            screen = await gateway_shown(pilot)
            assert len(calls(app, "gateway")) > before  # each opening reads the pools afresh
            blocks = list(screen.query(PoolBlock))
            assert [b.pool.name for b in blocks] == ["anthropic", "openai"]
            await pilot.press(close)
            await pilot.pause()
            assert app.screen is app.main_screen, close
        assert app.exit_choice is None  # q closed the view; it did not ask to quit
        closed = len(calls(app, "gateway"))
        await pilot.pause(1.3)
        assert len(calls(app, "gateway")) == closed  # a closed view stops reading


async def test_gateway_view_reads_again_every_second() -> None:
    app = fake_app()
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await pilot.press("g")
        screen = await gateway_shown(pilot)
        block = screen.query(PoolBlock).first()
        assert "queue 3" in text_of(block.query_one(".gateway-facts", Static))
        fake(app).gateway_info.pools[0].queue = 7
        fake(app).gateway_info.pools[0].paused_for = 0
        await pilot.pause(1.3)
        await pilot.pause()
        facts = text_of(block.query_one(".gateway-facts", Static))
        assert "queue 7" in facts and "paused" not in facts
        assert len(calls(app, "gateway")) >= 2


async def test_gateway_view_shows_every_pool_fact() -> None:
    app = fake_app()
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await pilot.press("g")
        screen = await gateway_shown(pilot)
        anthropic, openai = list(screen.query(PoolBlock))
        facts = text_of(anthropic.query_one(".gateway-facts", Static))
        assert "in flight 4 of 4 (learned from a 429)" in facts
        assert "queue 3 · oldest waits 12s" in facts
        assert "paused 18s more: upstream said 429 (retry-after 20s)" in facts
        assert "17 absorbed, 2 passed" in facts
        assert "$8.42 of $10.00 a day" in facts
        assert "429 Too Many Requests" in facts
        assert "46/min of 50 · 92%" in text_of(anthropic.query_one(".gateway-rate-text.-requests", Static))
        assert "limits 400k in, 80k out" in text_of(anthropic.query_one(".gateway-rate-text.-tokens", Static))
        held = text_of(openai.query_one(".gateway-facts", Static))
        assert "held its daily budget is spent: $25.03 of $25.00" in held
        assert "paused" not in held
        summary = text_of(screen.query_one("#gateway-summary", Static))
        assert "listening on http://127.0.0.1:8787" in summary


async def test_gateway_view_without_a_gateway_says_how_to_get_one() -> None:
    app = fake_app(gateway=False)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await pilot.press("g")
        screen = await gateway_shown(pilot)
        assert text_of(screen.query_one("#gateway-summary", Static)).strip() == NO_GATEWAY
        assert not list(screen.query(PoolBlock))


async def test_gateway_view_says_a_failed_read_in_the_dialog_not_in_toasts() -> None:
    app = fake_app()
    notes = recording(app)

    async def refused() -> GatewayInfo:
        raise CrewError("the runtime is stopping")

    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        fake(app).gateway = refused  # type: ignore[method-assign]
        await pilot.press("g")
        await pilot.pause(0.2)
        screen = app.screen
        assert isinstance(screen, GatewayScreen)
        assert "the runtime is stopping" in text_of(screen.query_one("#gateway-summary", Static))
        assert notes == []


async def test_gateway_and_resume_are_in_the_one_registry() -> None:
    specs = {a.id: a for a in ACTIONS}
    assert specs["gateway"].key == "g" and specs["gateway"].show
    assert specs["resume"].key == "R"
    keys = [getattr(b, "key", None) for b in BINDINGS]
    assert keys.count("g") == 1 and keys.count("R") == 1
    app = fake_app()
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await app.run_action("gateway")  # what the palette runs
        await gateway_shown(pilot)


# ------------------------------------------------------------------------------------------------ R


async def test_r_resumes_a_session_paused_in_the_gateway() -> None:
    app = fake_app(agents=True, holds=True)
    notes = recording(app)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        key = await select(app, pilot, PAUSED_LABEL)
        await pilot.press("R")
        await pilot.pause(0.1)
        assert calls(app, "resume") == [(PAUSED_LABEL, None, None)]
        assert notes[-1] == f"{PAUSED_LABEL}: resumed, its budget now $4.00"
        app.main_screen.flush_events()  # the runtime's update: the hold is gone
        await pilot.pause()
        assert app.book.sessions[key].gateway_hold is None
        assert "paused" not in str(app.main_screen.session_tree.nodes["s:" + key].label)


async def test_r_on_a_session_not_paused_says_so_and_calls_nothing() -> None:
    app = fake_app(agents=True, holds=True)
    notes = recording(app)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await select(app, pilot, QUEUED_LABEL)
        await pilot.press("R")
        await pilot.pause()
        await select(app, pilot, "code-review-pr-101")
        await pilot.press("R")
        await pilot.pause()
        assert calls(app, "resume") == []
        assert notes == [
            f"{QUEUED_LABEL} is not paused in the gateway ({QUEUED}); nothing to resume",
            "code-review-pr-101 is not paused in the gateway; nothing to resume",
        ]
        assert all("\n" not in n for n in notes)


# ------------------------------------------------------------------------------------------------ book, detail


def test_agent_update_brings_usage_and_gateway_hold() -> None:
    book = SessionBook()
    book.load([Session(key="s-1", label="a", state=SessionState.RUNNING, created_at=0, updated_at=0)])
    usage = UsageTotals(requests=4, tokens=TokenCounts(input=10, output=5), cost_usd=0.02)
    ch = book.apply(
        [
            SessionAgentUpdate(
                session="s-1", label="a", ts=1, tokens=usage.tokens, cost_usd=0.02, usage=usage, gateway_hold=QUEUED
            )
        ]
    )
    s = book.sessions["s-1"]
    assert "s-1" in ch.rows and ch.usage
    assert s.usage == usage and s.gateway_hold == QUEUED and s.cost_usd == 0.02
    book.apply([SessionAgentUpdate(session="s-1", label="a", ts=2, usage=usage)])
    assert s.gateway_hold is None


def test_spend_rows_say_what_the_gateway_measured_and_what_the_agent_reported() -> None:
    s = Session(key="s-1", label="a", created_at=0, updated_at=0, cost_usd=0.5, tokens=TokenCounts(input=1000))
    assert [name for name, _ in spend_rows(s)] == ["spent"]
    s.usage = UsageTotals(requests=12, tokens=TokenCounts(input=1000), cost_usd=0.5)
    s.reported_cost_usd = 0.5
    rows = dict(spend_rows(s))
    assert "measured by the gateway: 12 requests" in str(rows["spent"])
    assert "reported" not in rows  # the same as the gateway's: said once
    s.reported_cost_usd = 0.42
    assert "$0.4200" in str(dict(spend_rows(s))["reported"])


async def test_a_plain_session_shows_its_hold_in_its_row_and_detail() -> None:
    # No preset (its row shows its last line, not an activity): the hold still shows, in its row and its detail.
    app = fake_app(holds=True)
    async with app.run_test(size=(220, 42)) as pilot:
        await settle(pilot)
        key = await select(app, pilot, "research-scout-llm-evals-r3")
        row = app.main_screen.session_tree.nodes["s:" + key].label
        assert "queued for anthropic (1st)" in str(row)
        assert app.book.sessions[key].preset is None
        shown = text_of(app.main_screen.query_one("#detail", SessionDetail))
        assert "gateway queued for anthropic (1st)" in shown
        assert "measured by the gateway: 3 requests" in shown


async def test_paused_text_is_never_markup() -> None:
    app = fake_app(agents=True, holds=True)
    hold = "paused: [bold red]over[/] its budget [/x] \x1b[2J"
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        key = await select(app, pilot, QUEUED_LABEL)
        s = app.book.sessions[key]
        s.gateway_hold = hold
        app.main_screen.session_tree.refresh_rows([key])
        app.main_screen.flush_events()
        detail = app.main_screen.query_one("#detail", SessionDetail)
        detail.show_session(s, app.clock.now())
        await pilot.pause()
        assert "[bold red]over[/] its budget [/x]" in text_of(detail)
        row = app.main_screen.session_tree.nodes["s:" + key].label
        assert "paused: [bold" in str(row)  # cut to its column, as written


# ------------------------------------------------------------------------------------------------ a real runtime


async def test_g_on_a_real_runtime_shows_its_gateway_pool(make_orch: Any) -> None:
    # A pool that names a provider: the runtime starts its gateway on loopback; the view shows the pool as it is,
    # idle (no request went out).
    crew = crew_from(
        """
        [crew]
        name = "gw"

        [pools.anthropic]
        provider = "anthropic"
        upstream = "http://127.0.0.1:9"
        max_concurrent_requests = 3
        budget_usd = { per_day = 5.0 }
        """
    )
    orch = await make_orch(crew)
    app = make_app(orch)
    async with app.run_test(size=WIDE) as pilot:
        await app.loaded.wait()
        await pilot.press("g")
        screen = await gateway_shown(pilot)
        assert screen.info is not None and screen.info.url is not None
        assert "listening on http://127.0.0.1:" in text_of(screen.query_one("#gateway-summary", Static))
        (block,) = screen.query(PoolBlock)
        assert block.pool.name == "anthropic"
        assert "http://127.0.0.1:9" in text_of(block.query_one(".gateway-head", Static))
        facts = text_of(block.query_one(".gateway-facts", Static))
        assert "in flight 0 of 3" in facts and "queue empty" in facts
        assert "$0.0000 of $5.00 a day" in facts


async def test_g_on_a_real_runtime_without_a_gateway_pool(make_orch: Any) -> None:
    orch = await make_orch()
    app = make_app(orch)
    async with app.run_test(size=WIDE) as pilot:
        await app.loaded.wait()
        await pilot.press("g")
        screen = await gateway_shown(pilot)
        assert text_of(screen.query_one("#gateway-summary", Static)).strip() == NO_GATEWAY
