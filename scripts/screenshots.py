"""Make the README's SVG screenshots of the dashboard, from the deterministic fake runtime at a fixed time.

Run from the repository root: `python scripts/screenshots.py [OUT_DIR]` (default `screenshots/`). Writes
main.svg, spawn.svg, kill-confirm.svg, sweep.svg, help.svg, narrow-80x24.svg, ray-nodes.svg, and agents-waiting.svg,
agents-approve-marked.svg and agents-deny.svg (a crew of preset agents, some waiting on a person), gateway.svg and
gateway-paused.svg (the model gateway's pools; a session paused over its budget), changes.svg and changes-narrow.svg
(the Changes view of a session's branch, a diff of several files), peek.svg (a terminal session's screen, peeked),
best-of.svg (three tries of one task compared).
The same fake runtime and key presses as the snapshot tests, so the pictures show what the tests check.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["TZ"] = "UTC"  # the panes show local clock times: fix them like the tests do
os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")
time.tzset()

from textual.pilot import Pilot  # noqa: E402
from textual.widgets import Input, Select  # noqa: E402

from tests.ui.conftest import fake_app, settle  # noqa: E402
from tests.ui.fake_gateway import PAUSED_LABEL  # noqa: E402
from tests.ui.fake_terminals import CHECKOUT  # noqa: E402
from tests.ui.test_best_of import TRIES, compare_steps  # noqa: E402
from tests.ui.test_gateway import gateway_view, select  # noqa: E402
from tests.ui.test_snapshots import WAITING, steps  # noqa: E402
from tests.ui.test_terminal_peek import peek_at  # noqa: E402
from tests.ui.test_workspaces import changes_view, changes_view_narrow  # noqa: E402

Steps = Callable[[Pilot[None]], Awaitable[None]]


async def nothing(pilot: Pilot[None]) -> None:
    pass


async def running_session(pilot: Pilot[None]) -> None:
    await pilot.press(*["down"] * 6)  # ads-auditor-2026-04-02-r6: running, with a transcript


async def spawn_with_error(pilot: Pilot[None]) -> None:
    await pilot.press("n")
    await pilot.pause()
    form = pilot.app.screen
    form.query_one("#spawn-label", Input).value = "ops-deploy-api"  # held by a live session: refused inline
    form.query_one("#spawn-agent", Select).value = "sub"
    task = form.query_one("#spawn-task", Input)
    task.value = "redeploy the api"
    task.focus()
    await pilot.press("enter")
    await pilot.pause(0.2)


async def kill_confirm(pilot: Pilot[None]) -> None:
    await pilot.press("down", "down", "down", "down", "down", "down")  # ads-auditor ... r6, running
    await pilot.press("k")
    await pilot.pause()


async def sweep(pilot: Pilot[None]) -> None:
    await pilot.press("x")
    await pilot.pause(0.2)


async def help_screen(pilot: Pilot[None]) -> None:
    await pilot.press("question_mark")
    await pilot.pause()


async def approve_marked(pilot: Pilot[None]) -> None:
    app = pilot.app
    keys = [k for k, s in app.book.sessions.items() if s.label in (WAITING, "ops-deploy-api", "code-review-pr-103")]  # type: ignore[attr-defined]
    screen = app.main_screen  # type: ignore[attr-defined]
    # Marked as `space` marks them (rows, groups and the header's "3 marked" redrawn), without moving the cursor.
    screen.session_tree.refresh_rows(screen.book.toggle_mark(keys))
    screen.session_tree.refresh_groups()
    screen.update_header()
    await pilot.press("a")
    await pilot.pause()


async def paused_session(pilot: Pilot[None]) -> None:
    await select(pilot.app, pilot, PAUSED_LABEL)  # type: ignore[arg-type]


# The crew on three Ray nodes, as tests/ui/test_snapshots.py::test_ray_backend_shows_nodes shows it.
RAY_NODES = ("10.0.0.7/4f1a2b", "10.0.0.8/9c3d5e", "10.0.0.9/77e0aa")

SHOTS: list[tuple[str, tuple[int, int], Steps, dict[str, object]]] = [
    ("main.svg", (140, 42), running_session, {}),
    ("spawn.svg", (140, 42), spawn_with_error, {}),
    ("kill-confirm.svg", (140, 42), kill_confirm, {}),
    ("sweep.svg", (140, 42), sweep, {}),
    ("help.svg", (140, 42), help_screen, {}),
    ("narrow-80x24.svg", (80, 24), nothing, {}),
    ("ray-nodes.svg", (140, 42), running_session, {"ray_nodes": RAY_NODES}),
    # The same crews and key presses as tests/ui/test_snapshots.py's test_agent_* and test_*_marked/_prompt.
    ("agents-waiting.svg", (140, 42), steps(select=WAITING), {"agents": True}),
    ("agents-approve-marked.svg", (140, 42), approve_marked, {"agents": True}),
    (
        "agents-deny.svg",
        (140, 42),
        steps("d", select=WAITING, type_into=("#answer-text", "not on the shared runner")),
        {"agents": True},
    ),
    # As tests/ui/test_gateway.py's test_gateway_view and test_session_paused_in_the_gateway.
    ("gateway.svg", (140, 42), gateway_view, {}),
    ("gateway-paused.svg", (140, 42), paused_session, {"agents": True, "holds": True}),
    # As tests/ui/test_workspaces.py's test_changes_view and test_changes_view_narrow.
    ("changes.svg", (140, 42), changes_view, {"workspaces": True}),
    ("changes-narrow.svg", (80, 24), changes_view_narrow, {"workspaces": True}),
    # As tests/ui/test_terminal_peek.py's test_snapshot_peek_of_a_live_terminal_session, on a taller terminal.
    ("peek.svg", (160, 48), peek_at(CHECKOUT), {"terminals": True}),
    # As tests/ui/test_best_of.py's test_compare_view: three tries of one task side by side.
    ("best-of.svg", (140, 42), compare_steps(TRIES[1]), {"best_of": True}),
]


async def shoot(out: Path, name: str, size: tuple[int, int], steps: Steps, fake: dict[str, object]) -> None:
    app = fake_app(**fake)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await steps(pilot)
        await pilot.pause()
        app.save_screenshot(name, str(out))


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, size, shot_steps, fake in SHOTS:
        await shoot(out, name, size, shot_steps, fake)
        print(out / name)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "screenshots"))
