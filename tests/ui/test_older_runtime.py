"""Older history on a REAL runtime (real SQLite, sessions that really ran): a store with more ended sessions
than the dashboard's window. The dashboard holds the live ones and the window, counts the rest per group, and
loads a group's older sessions when its row is opened; a session that ends meanwhile stays in it."""

from __future__ import annotations

from typing import Any

from crewtui.model import SessionState, SpawnRequest
from crewtui.runtime.drivers import CallableContext
from crewtui.runtime.orchestrator import Orchestrator
from crewtui.ui.app import CrewApp, make_app
from tests.conftest import wait_for
from tests.ui.conftest import opened

S = SessionState
SIZE = (140, 42)
WINDOW = 10


async def work(ctx: CallableContext) -> dict[str, str]:
    ctx.output(f"working on {ctx.label}")
    return {"label": ctx.label}


async def hold(ctx: CallableContext) -> dict[str, str]:
    """Runs until steered."""
    return {"msg": await ctx.next_message()}


async def run_one(orch: Orchestrator, label: str) -> str:
    s = await orch.spawn(SpawnRequest(label=label, agent="work"))
    await orch.wait_ended(s.key, timeout=10)
    return s.key


async def test_a_store_with_more_history_than_the_window(make_orch: Any) -> None:
    # keep_ended=5: most of these leave the runtime's memory too; the store has them all.
    orch: Orchestrator = await make_orch(callables={"work": work, "hold": hold}, keep_ended=5)
    alpha = [await run_one(orch, f"alpha-{i}") for i in range(20)]
    gamma = [await run_one(orch, "gamma") for _ in range(3)]  # a bare label, three times over
    alphabet = [await run_one(orch, f"alphabet-{i}") for i in range(5)]  # a listing of "alpha" matches these
    beta = [await run_one(orch, f"beta-{i}") for i in range(WINDOW)]  # the newest: exactly the window
    live = (await orch.spawn(SpawnRequest(label="alpha-live", agent="hold"))).key
    await wait_for(lambda: orch.resolve(live).state == S.RUNNING, what="the live session")

    app: CrewApp = make_app(orch, window=WINDOW)
    async with app.run_test(size=SIZE) as pilot:
        await app.loaded.wait()
        await app.main_screen.older_counted.wait()
        await pilot.pause()
        tree = app.main_screen.session_tree
        assert set(app.book.sessions) == {live, *beta}
        assert app.book.older.horizon == beta[0]
        assert app.book.older.left == {"alpha": 20, "gamma": 3, "alphabet": 5}
        assert {n for n in tree.nodes if n.startswith("o:")} == {"o:alpha", "o:gamma", "o:alphabet"}
        assert app.main_screen.query_one("#left").border_title == "Sessions 11 loaded · 28 older"

        assert tree.select_row("o:alpha")
        await pilot.pause()
        await pilot.press("enter")
        await opened(pilot, "alpha")
        assert set(alpha) <= set(app.book.sessions) and not set(alphabet) & set(app.book.sessions)
        assert "o:alpha" not in tree.nodes and app.book.older.left == {"gamma": 3, "alphabet": 5}
        assert all(app.book.sessions[k].state == S.DONE for k in alpha)

        assert tree.select_row("o:gamma")
        await pilot.pause()
        await pilot.press("enter")
        await opened(pilot, "gamma")
        assert set(gamma) <= set(app.book.sessions) and "o:gamma" not in tree.nodes
        assert app.main_screen.query_one("#left").border_title == "Sessions 34 loaded · 5 older"

        # A session that ends stays, and a resync (live + the window) keeps what was loaded.
        await orch.send(live, "ok")
        await wait_for(lambda: app.book.sessions[live].state == S.DONE, what="the end reaching the dashboard")
        app.main_screen.resync()
        await pilot.pause(0.3)
        assert {live, *alpha, *gamma, *beta} <= set(app.book.sessions)
        assert app.book.older.left == {"alphabet": 5}
