"""`price = { input = 3.0, output = 15.0, cache_read = 0.3 }` in an agent's table: what its tokens cost."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from crewtui.adapters.base import Price


class PriceConfig(BaseModel):
    """Dollars per million tokens, for agents that report no cost of their own."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    output: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    cache_read: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    cache_write: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    def price(self) -> Price:
        return Price(self.input, self.output, self.cache_read, self.cache_write)
