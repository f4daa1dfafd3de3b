"""The detail pane says where a session runs and what a listing left out."""

from __future__ import annotations

from textual.app import App, ComposeResult

from crewtui.model import Session, SessionState
from crewtui.ui.widgets.detail import SessionDetail


class One(App[None]):
    def compose(self) -> ComposeResult:
        yield SessionDetail(id="detail")


async def test_the_detail_pane_shows_the_cwd_and_points_to_a_result_a_listing_left_out() -> None:
    s = Session(
        key="s-1",
        label="lint",
        state=SessionState.DONE,
        created_at=1.0,
        updated_at=2.0,
        cwd="/home/me/project",
        result=None,
        result_bytes=5_000_000,
        trimmed=["result"],
    )
    app = One()
    async with app.run_test(size=(100, 30)):
        detail = app.query_one("#detail", SessionDetail)
        detail.show_session(s, 10.0)
        shown = " ".join(detail._shown or ())
        assert "/home/me/project" in shown
        assert "5,000,000 bytes: crewtui ctl result lint" in shown
