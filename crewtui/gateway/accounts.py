"""What the gateway keeps per session and per pool, what it reports per finished request, and to whom."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal, Protocol

from crewtui.adapters.base import Price
from crewtui.gateway.limits import ProviderLimits
from crewtui.gateway.usage import Api, Measured
from crewtui.spend import TokenCounts, UsageTotals


@dataclass(frozen=True)
class RequestDone:
    """One model request the gateway finished (answered, or failed to reach upstream)."""

    key: str
    pool: str
    api: Api
    status: int  # the status the agent got (0: upstream unreachable, the connection was dropped)
    usage: Measured
    cost_usd: float
    absorbed: int  # upstream refusals retried before this answer
    error: str | None = None
    cut: bool = False  # the agent hung up before the response ended (usage charged as far as it went)

    def totals(self) -> UsageTotals:
        """This request as a count, for the session's and the pool's day's totals alike."""
        m = self.usage
        answered = self.status == 200 or self.cut  # an answer whose usage could not be read is `unknown`
        return UsageTotals(
            requests=1,
            tokens=TokenCounts(input=m.input, output=m.output, cache_read=m.cache_read, cache_write=m.cache_write)
            if m.known
            else TokenCounts(),
            cost_usd=self.cost_usd,
            unknown=1 if answered and not m.known else 0,
            absorbed=self.absorbed,
            passed=1 if self.status in (429, 529) else 0,
            errors=1 if self.error else 0,
        )


class GatewaySink(Protocol):
    """What the gateway tells the runtime. Called on the event loop; must not block."""

    def request_done(self, done: RequestDone) -> None: ...

    def queued(self, key: str, pool: str, position: int | None) -> None:
        """`key`'s request waits in `pool`'s line at `position` (1-based); None: it no longer waits."""

    def over_budget(self, key: str | None, pool: str, action: Literal["pause", "kill"], reason: str) -> None:
        """A session (`key`) or the whole pool (`key` None: its daily budget) went over its budget."""


@dataclass
class Client:
    """A live session as the gateway knows it."""

    key: str
    label: str
    pool: str
    token: str
    price: Price | None
    budget_usd: float | None  # its cap now (the pool's per_session, raised by a resume); None: none
    spent_usd: float = 0.0
    held: str | None = None  # why its requests wait (over its budget); None: they go
    go: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class PoolState:
    limits: ProviderLimits
    day: str
    today: UsageTotals = field(default_factory=UsageTotals)
    day_cap: float | None = None
    last_error: str | None = None
