"""The sweep preview with worktrees: stale sessions to kill, worktrees of ended sessions to remove (their work
merged, or none) and worktrees kept because they hold work not merged, each with what the sweep does and why."""

from __future__ import annotations

from collections.abc import Callable

from textual.widgets import Button

from crewtui.model import SweepItem
from crewtui.ui.screens.sweep import SweepScreen, sweep_counts, sweep_title
from tests.ui.conftest import fake_app, recording, settle
from tests.ui.test_gateway import calls, text_of
from tests.ui.test_workspaces import NARROW, WIDE, workspace_app

Snap = Callable[..., bool]


async def open_sweep(pilot) -> SweepScreen:  # type: ignore[no-untyped-def]
    await settle(pilot)
    await pilot.press("x")
    for _ in range(100):
        if isinstance(pilot.app.screen, SweepScreen):
            break
        await pilot.pause(0.02)
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, SweepScreen)
    return screen


def test_sweep_preview_with_worktrees(snap_compare: Snap) -> None:
    assert snap_compare(workspace_app(), terminal_size=WIDE, run_before=open_sweep)


def test_sweep_preview_with_worktrees_narrow(snap_compare: Snap) -> None:
    assert snap_compare(workspace_app(), terminal_size=NARROW, run_before=open_sweep)


async def test_x_lists_worktrees_to_remove_and_to_keep_and_y_sweeps() -> None:
    app = workspace_app()
    notes = recording(app)
    async with app.run_test(size=WIDE) as pilot:
        screen = await open_sweep(pilot)
        actions = {i.label: i.action for i in screen.items}
        assert actions["code-review-pr-104"] == "kill"  # stale, as before
        assert actions["code-review-pr-102"] == "keep"  # two commits not merged
        assert "remove" in actions.values()
        body = text_of(screen.query_one("#confirm-body"))
        assert "keep worktree" in body and "remove worktree" in body and "merge or discard it" in body
        kill, remove, _ = sweep_counts(screen.items)
        assert f"Kill {kill} and remove {remove}" in str(screen.query_one("#confirm-ok", Button).label)
        await pilot.press("y")
        for _ in range(100):
            if any(n.startswith("swept:") for n in notes):
                break
            await pilot.pause(0.02)
        assert f"swept: {kill} stale sessions killed, {remove} worktrees removed" in notes
        assert calls(app, "sweep") == [True, False]  # a preview, then the sweep


async def test_x_with_only_kept_worktrees_says_so_and_asks_nothing() -> None:
    app = fake_app(workspaces=True)
    notes = recording(app)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        fake = app.runtime
        kept = SweepItem(key="k", label="a", idle_for=9.0, reason="1 commit", kind="worktree", action="keep")

        async def only_kept(dry_run: bool = False) -> list[SweepItem]:
            return [kept]

        fake.sweep = only_kept  # type: ignore[attr-defined, method-assign]
        await pilot.press("x")
        for _ in range(100):
            if notes:
                break
            await pilot.pause(0.02)
        assert not isinstance(app.screen, SweepScreen)
        assert any("1 worktree of ended sessions hold work not merged" in n for n in notes)


def test_the_title_counts_each_kind() -> None:
    items = [
        SweepItem(key="a", label="a", idle_for=1, reason="r"),
        SweepItem(key="b", label="b", idle_for=1, reason="r", kind="worktree", action="remove"),
        SweepItem(key="c", label="c", idle_for=1, reason="r", kind="worktree", action="keep"),
        SweepItem(key="d", label="d", idle_for=1, reason="r", kind="worktree", action="keep"),
    ]
    assert sweep_title(items) == (
        "Sweep: 1 stale session (no output for too long); 1 worktree to remove (ended; their work merged, or none); "
        "2 worktrees kept (work not merged)"
    )
