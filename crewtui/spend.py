"""What the model gateway measures and shows: use per request group (session, pool, day), the gateway's pools now.

Kept apart from model.py (sessions and events), which carries `UsageTotals` on each session.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

UsageBy = Literal["session", "group", "run", "pool", "day"]


class TokenCounts(BaseModel):
    """Tokens a session's agent used, as it reported them (or the gateway measured them)."""

    model_config = ConfigDict(extra="forbid")

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write


class UsageTotals(BaseModel):
    """Model requests and what they used, as the gateway measured them (one pool and day, or any grouping)."""

    model_config = ConfigDict(extra="forbid")

    requests: int = 0
    tokens: TokenCounts = Field(default_factory=TokenCounts)
    cost_usd: float = 0.0
    unknown: int = 0  # responses whose usage could not be read (garbage, cut before any usage): not in tokens
    absorbed: int = 0  # upstream refusals (429/529) the gateway retried, unseen by the agent
    passed: int = 0  # refusals the agent saw (the gateway's retries ran out)
    errors: int = 0  # upstream unreachable, or broke off mid-response

    def add(self, other: UsageTotals) -> None:
        self.requests += other.requests
        self.tokens = TokenCounts(
            input=self.tokens.input + other.tokens.input,
            output=self.tokens.output + other.tokens.output,
            cache_read=self.tokens.cache_read + other.tokens.cache_read,
            cache_write=self.tokens.cache_write + other.tokens.cache_write,
        )
        self.cost_usd += other.cost_usd
        self.unknown += other.unknown
        self.absorbed += other.absorbed
        self.passed += other.passed
        self.errors += other.errors


class GatewayPoolInfo(BaseModel):
    """One gateway pool now: its limits, its line, its pause, and today's use against its budget."""

    model_config = ConfigDict(extra="forbid")

    name: str
    provider: str
    upstream: str
    in_flight: int = 0
    cap: int | None = None  # concurrent requests allowed now (configured, or lower: learned from a 429)
    learned_cap: int | None = None
    queue: int = 0  # requests waiting in the gateway
    oldest_wait: float = 0.0  # seconds the head of the line has waited
    paused_for: float = 0.0  # seconds left of an upstream pause
    pause_reason: str | None = None
    held: str | None = None  # the line is held: why (its daily budget is spent)
    requests_last_minute: int = 0
    tokens_last_minute: int = 0
    requests_limit: float | None = None  # per minute
    input_tokens_limit: float | None = None  # per minute
    output_tokens_limit: float | None = None  # per minute
    requests_series: list[int] = Field(default_factory=list)  # per 10 s, oldest first (ten minutes)
    tokens_series: list[int] = Field(default_factory=list)
    today: UsageTotals = Field(default_factory=UsageTotals)
    budget_per_day: float | None = None  # today's cap in dollars (raised by `ctl resume --pool`)
    last_error: str | None = None


class GatewayInfo(BaseModel):
    """The model gateway: where it listens (loopback only) and its pools."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None  # http://127.0.0.1:PORT (sessions add /s/<their token>); None: no gateway pool
    port_changed_from: int | None = None  # the port it had before a restart, when that one was taken
    forbidden: int = 0  # requests with an unknown or revoked session token
    pools: list[GatewayPoolInfo] = Field(default_factory=list)


class UsageRow(BaseModel):
    """One line of `ctl usage`: a session, group, cron run, pool or day, and what it used."""

    model_config = ConfigDict(extra="forbid")

    by: str
    name: str
    usage: UsageTotals = Field(default_factory=UsageTotals)
    reported: UsageTotals | None = None  # what the agents themselves reported (sessions with an adapter)
