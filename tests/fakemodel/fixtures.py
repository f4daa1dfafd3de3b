"""The `fake_model` pytest fixture.

In a test module: `from tests.fakemodel import fixtures` and `fake_model = fixtures.fake_model` (a plain import
of the name trips ruff's F811 on every test that takes it), or `pytest_plugins = ["tests.fakemodel.fixtures"]`
in the root conftest.py to offer it to every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakemodel.server import FakeModel


@pytest.fixture
def fake_model() -> Iterator[FakeModel]:
    """A started FakeModel on 127.0.0.1 (its own thread and loop, so sync and async tests can use it)."""
    with FakeModel() as fake:
        yield fake
