"""`[pools.NAME]`: a rate-limit pool shared by sessions, and with `provider` a provider budget of the gateway."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from crewtui.config.fields import Duration, _Strict
from crewtui.config.pricing import PriceConfig
from crewtui.config.problems import describe, fail
from crewtui.model import parse_duration


class Backoff(_Strict):
    """Exponential backoff with full jitter between rate-limited retries."""

    base: Duration = 2.0
    max: Duration = 300.0

    @model_validator(mode="after")
    def _ordered(self) -> Backoff:
        if self.max < self.base:
            raise fail(f"expected a duration of at least base ({self.base:g}s), got {self.max:g}s", "max")
        return self


_RATE_UNITS = {
    "s": 1.0, "sec": 1.0, "second": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0,
    "h": 3600.0, "hour": 3600.0,
    "d": 86400.0, "day": 86400.0,
}  # fmt: skip


class Rate(BaseModel):
    """A token-bucket start rate: `count` starts per `per` seconds ("30/min", "5/s", "10/15m")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(ge=1, strict=True)
    per: float = Field(gt=0)

    @property
    def per_second(self) -> float:
        return self.count / self.per

    def __str__(self) -> str:
        return f"{self.count}/{self.per:g}s"


def _rate(value: Any) -> Any:
    if value is None or isinstance(value, (dict, Rate)):
        return value
    expected = "expected a rate like '30/min', '5/s', '100/h' or '10/15m'"
    if not isinstance(value, str) or value.count("/") != 1:
        raise fail(f"{expected}, got {describe(value)}")
    count_text, per_text = (part.strip().lower() for part in value.split("/"))
    if not count_text.isdigit() or int(count_text) < 1:
        raise fail(f"{expected} (a whole number of at least 1 before the '/'), got {describe(value)}")
    per = _RATE_UNITS.get(per_text.removesuffix("s") if len(per_text) > 3 else per_text)
    if per is None:
        try:
            per = parse_duration(per_text)
        except ValueError:
            raise fail(f"{expected}, got {describe(value)}") from None
    if per <= 0:
        raise fail(f"{expected} (a period greater than zero), got {describe(value)}")
    return {"count": int(count_text), "per": per}


# Where a gateway pool forwards when the crew file names no `upstream`.
PROVIDER_UPSTREAMS = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com"}
Provider = Literal["anthropic", "openai"]


class BudgetConfig(_Strict):
    """`budget_usd = { per_day = 25.0, per_session = 2.0 }`: dollars a gateway pool may spend."""

    per_day: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    per_session: float | None = Field(default=None, gt=0, allow_inf_nan=False)


def _upstream(value: Any) -> Any:
    expected = "expected an http(s) URL like 'https://api.anthropic.com'"
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
        raise fail(f"{expected}, got {describe(value)}")
    return value.rstrip("/")


class PoolConfig(_Strict):
    """`[pools.NAME]`: a concurrency cap and start rate shared by every session that names the pool.

    With `provider`, the pool is also a provider budget served by the model gateway (crewtui/gateway): the
    sessions of its agents reach the model through the runtime, which paces their requests and meters them."""

    max_concurrent: int | None = Field(default=None, ge=1, strict=True)
    rate: Annotated[Rate | None, BeforeValidator(_rate)] = None
    retry_on_exit: list[Annotated[int, Field(ge=0, le=255, strict=True)]] = Field(default_factory=lambda: [75])
    retry_on_stderr: str | None = None
    backoff: Backoff = Field(default_factory=Backoff)
    # The gateway (a pool with a provider).
    provider: Provider | None = None
    upstream: Annotated[str | None, BeforeValidator(_upstream)] = None
    max_concurrent_requests: int | None = Field(default=None, ge=1, strict=True)
    requests: Annotated[Rate | None, BeforeValidator(_rate)] = None
    input_tokens: Annotated[Rate | None, BeforeValidator(_rate)] = None
    output_tokens: Annotated[Rate | None, BeforeValidator(_rate)] = None
    budget_usd: BudgetConfig | None = None
    on_budget: Literal["pause", "kill"] = "pause"
    price: PriceConfig | None = None  # dollars per million tokens of the pool's model (an agent's own price wins)
    max_retries: int = Field(default=8, ge=0, le=100, strict=True)  # 429/529 retried by the gateway

    @model_validator(mode="after")
    def _gateway(self) -> PoolConfig:
        if self.provider is None:
            for key in _GATEWAY_KEYS:
                if getattr(self, key) != type(self).model_fields[key].default:  # (a dumped crew sets every key)
                    raise fail(f'{key} applies only to a gateway pool (set provider = "anthropic" or "openai")', key)
        return self

    @property
    def gateway(self) -> bool:
        """Whether the model gateway serves this pool's sessions."""
        return self.provider is not None

    @property
    def upstream_url(self) -> str:
        """Where its requests go: `upstream`, else the provider's public API."""
        return self.upstream or PROVIDER_UPSTREAMS[self.provider or "anthropic"]

    @field_validator("retry_on_stderr")
    @classmethod
    def _regex(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise fail(f"expected a regular expression (Python re), got {describe(pattern)} ({exc})") from None
        return pattern


_GATEWAY_KEYS = (
    "upstream", "max_concurrent_requests", "requests", "input_tokens", "output_tokens", "budget_usd", "on_budget",
    "price", "max_retries",
)  # fmt: skip
