"""The footer at any width: whole keys, the most needed first; `? Help`, `q Quit` and the palette always shown."""

from __future__ import annotations

import pytest

from crewtui.ui.actions import ACTIONS, FOOTER_PRIORITY
from tests.ui.conftest import fake_app, settle

# What each footer entry reads, in the registry's order (the 1-9, 0 state keys are one entry).
ENTRIES: dict[str, str] = {}
for a in ACTIONS:
    if a.show and a.group is None:
        ENTRIES[a.id] = f"{a.key_display or a.key} {a.description}"
    elif a.show:
        ENTRIES.setdefault("state", "1234567890 state")


@pytest.mark.parametrize("width", [60, 72, 80, 96, 110, 124, 160, 180, 200])
async def test_footer_fits_the_width_keeping_the_most_needed_keys(width: int) -> None:
    app = fake_app()
    async with app.run_test(size=(width, 24 if width < 110 else 40)) as pilot:
        await settle(pilot)
        line = app.screen._compositor.render_strips()[-1].text
    assert len(line) == width
    assert line.rstrip().endswith("▏^p palette"), line
    body = " ".join(line.rsplit("▏", 1)[0].split())
    shown = [name for name, text in ENTRIES.items() if text in body]
    assert {"help", "quit"} <= set(shown), line
    # Nothing cut in half: the keys shown, in the registry's order, are the whole footer.
    assert body == " ".join(ENTRIES[name] for name in ENTRIES if name in shown), line
    if width >= 200:  # every key (approve and deny made it longer than 160, the gateway than 180)
        assert set(shown) == set(FOOTER_PRIORITY)
