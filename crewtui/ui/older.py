"""Older history: the ended sessions before the window the dashboard loaded, counted per group, paged in on demand.

A crew that runs for a year has a million ended sessions; the dashboard never lists them all. At start and at
each resync it lists every live session and a window of the most recent ended ones (`fetch_window`). The
oldest ended key that window brought is the horizon: once counted (`RuntimeAPI.older`, after the first paint),
every ended session created before it is either in the book (it was live when listed, or a page brought it)
or behind its group's "N older ended sessions" row, which loads the group's next page when opened
(`fetch_page`). Pure Python: the screen calls the runtime through a function it passes, and the tree draws
the rows from `OlderHistory.left`.

A group here is the top of a label (`Session.prefix`: `blog` for `blog-publisher-x`), as the runtime counts it.
A prefix listing of `blog` also matches `blogger-x` and `blog.x`: a page keeps only the sessions whose prefix
is the group's, and reads on (a few raw pages at most) while another group's sessions fill it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crewtui.model import Session
from crewtui.ui.calls import FAILED

WINDOW = 500  # the ended sessions the dashboard lists at start and at each resync, newest first
PAGE = 200  # the sessions one opening of an "older" row loads
RAW_PAGES = 10  # at most this many listings per opening, when other groups' labels share the prefix

Call = Callable[..., Awaitable[Any]]  # the screen's runtime call: FAILED when the call failed


async def fetch_window(
    call: Call, window: int, *, quiet: bool = False
) -> tuple[list[Session] | None, list[Session] | None]:
    """Every live session, and the `window` most recent ended ones: (live, ended), None for a listing that
    failed. Never all of history: on a year-old crew, that would be minutes and gigabytes."""
    live = await call("list", ended=False, quiet=quiet)
    ended = await call("list", ended=True, limit=window, quiet=quiet)
    return (None if live is FAILED else live), (None if ended is FAILED else ended)


@dataclass
class Page:
    sessions: list[Session]  # the group's sessions found, in key order
    cursor: str  # the next page starts before this key
    exhausted: bool  # nothing of the group is older than what this page brought


async def fetch_page(
    call: Call, prefix: str, before: str, *, page: int = PAGE, raw_pages: int = RAW_PAGES
) -> Page | None:
    """The next page of group `prefix`'s ended sessions created before `before`, newest first; None when the
    runtime could not be asked (the user was told)."""
    found: list[Session] = []
    cursor = before
    for _ in range(raw_pages):
        raw = await call("list", prefix=prefix, ended=True, before=cursor, limit=page)
        if raw is FAILED:
            return None
        found = [s for s in raw if s.prefix == prefix] + found
        if len(raw) < page:
            return Page(found, raw[0].key if raw else cursor, True)
        cursor = raw[0].key  # the oldest this listing read
        if len(found) >= page:
            break
    return Page(found, cursor, False)


@dataclass
class OlderHistory:
    """What the dashboard knows of the ended sessions older than its window."""

    # The oldest ended key the first full window brought; None while not listed, or when it was not full.
    horizon: str | None = None
    # The first window was not full: every ended session was listed, and the events bring the new ones.
    complete: bool = False
    counted: bool = False  # `left` holds the runtime's answer
    asked: bool = False  # the runtime was asked (a failure is said once; a resync asks again, quietly)
    left: dict[str, int] = field(default_factory=dict)  # per group, the older ended sessions not loaded
    cursor: dict[str, str] = field(default_factory=dict)  # per group, where its next page starts
    loading: set[str] = field(default_factory=set)  # groups whose next page is on its way
    groups: set[str] = field(default_factory=set)  # every group that had an older row: the tree keeps it a group
    known: int = 0  # sessions below the horizon the book held when counted, plus those pages brought since

    def window_listed(self, ended: list[Session], window: int) -> bool:
        """Note what a window listing brought; True when there is older history to count. The horizon is set
        once: later windows move up with time, and the events brought what ended meanwhile."""
        if self.horizon is not None or self.complete:
            return False
        if len(ended) < window:
            self.complete = True
            return False
        self.horizon = min(s.key for s in ended)
        return True

    @property
    def pending(self) -> bool:
        """There is older history, not counted yet."""
        return self.horizon is not None and not self.counted

    @property
    def summary(self) -> str:
        """What the title and the header say of it: "998,500 older", "counting older…", or nothing."""
        if self.pending:
            return "older not counted" if self.asked else "counting older…"
        return f"{self.total:,} older" if self.total else ""

    def _below(self, sessions: Mapping[str, Session]) -> dict[str, int]:
        """The ended sessions below the horizon the book holds, per group: the runtime counts them too."""
        out: dict[str, int] = {}
        if self.horizon is None:
            return out
        for s in sessions.values():
            if s.key < self.horizon and s.state.terminal:
                out[s.prefix] = out.get(s.prefix, 0) + 1
        return out

    def needs_count(self, sessions: Mapping[str, Session]) -> bool:
        """Counted long ago and the book moved under the horizon since (an old live session ended, or was
        retried): ask again, so the rows stay right. Cheap: one pass over the book, at a resync."""
        return self.pending or (self.counted and sum(self._below(sessions).values()) != self.known)

    def set_counts(self, counts: Mapping[str, int], sessions: Mapping[str, Session]) -> None:
        """The runtime's count of ended sessions below the horizon, per group, less those the book holds."""
        below = self._below(sessions)
        self.left = {p: n - below.get(p, 0) for p, n in counts.items() if n > below.get(p, 0)}
        self.groups.update(self.left)
        self.known = sum(below.values())
        self.counted = True

    def cursor_of(self, prefix: str) -> str:
        assert self.horizon is not None
        return self.cursor.get(prefix, self.horizon)

    def paged(self, prefix: str, added: list[Session], page: Page) -> None:
        """A page of `prefix` came: `added` are the sessions it brought that the book did not hold."""
        self.cursor[prefix] = page.cursor
        self.known += sum(1 for s in added if self.horizon is not None and s.key < self.horizon and s.state.terminal)
        left = self.left.get(prefix, 0) - len(added)
        if page.exhausted or left <= 0:
            self.left.pop(prefix, None)
        else:
            self.left[prefix] = left

    @property
    def total(self) -> int:
        return sum(self.left.values())
