"""Fixtures of the notification tests: a notifier rig on a real store and a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crewtui.clock import FakeClock
from crewtui.store import Store
from tests.notify.test_notifier import Rig


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = await Store.open(tmp_path / "crewtui.db")
    r = Rig(store, FakeClock())
    yield r
    for n in r.notifiers:
        await n.stop()
    await store.close()
