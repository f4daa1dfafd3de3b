"""Exclusive claims: live labels and work domains.

Each agent gets an exclusive domain (`article:superada`) and a label unique among live sessions; a second
claim is refused naming the holder, so two agents never write the same thing.
"""

from __future__ import annotations

from crewtui.errors import Conflict


class ClaimTable:
    """A map from a claimed name to the key of the session holding it."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._holders: dict[str, str] = {}

    def holder(self, name: str) -> str | None:
        return self._holders.get(name)

    def check(self, name: str, describe: "callable[[str], str]") -> None:  # type: ignore[valid-type]
        """Raise Conflict naming the holder if `name` is held; `describe(key)` renders the holder."""
        key = self._holders.get(name)
        if key is not None:
            raise Conflict(f"{self._what} {name!r} is held by live session {describe(key)}")

    def claim(self, name: str, key: str) -> None:
        self._holders[name] = key

    def release(self, name: str | None, key: str) -> None:
        # Only the holder can release: a retry or a later session with the same name must not lose its claim.
        if name is not None and self._holders.get(name) == key:
            del self._holders[name]

    def __len__(self) -> int:
        return len(self._holders)
