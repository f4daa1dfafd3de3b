"""Field types of the crew file shared by its tables: durations, date-times, and the strict base model."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from crewtui.config.problems import describe, fail
from crewtui.model import parse_duration


def _duration(value: Any) -> float:
    try:
        seconds = parse_duration(value)
    except (ValueError, OverflowError) as exc:
        msg = str(exc) if isinstance(exc, ValueError) else f"expected a duration like '15m', got {describe(value)}"
        raise fail(msg) from None
    # TOML has nan and inf, and 400 nines make an infinite float: a timer at nan or inf never fires (and nan
    # breaks the ordering of the timer heap), so neither is a duration.
    if not math.isfinite(seconds):
        raise fail(f"expected a finite duration like '15m', got {describe(value)}")
    return seconds


def _positive_duration(value: Any) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise fail(f"expected a duration greater than zero like '15m', got {describe(value)}")
    return seconds


def _optional(fn: Callable[[Any], float]) -> Callable[[Any], float | None]:
    def check(value: Any) -> float | None:
        return None if value is None else fn(value)

    return check


Duration = Annotated[float, BeforeValidator(_duration)]
PositiveDuration = Annotated[float, BeforeValidator(_positive_duration)]
OptDuration = Annotated[float | None, BeforeValidator(_optional(_duration))]
OptPositiveDuration = Annotated[float | None, BeforeValidator(_optional(_positive_duration))]


def _datetime(value: Any) -> Any:
    # pydantic would take a number as a Unix timestamp; in a crew file that is surely a mistake.
    if value is None or isinstance(value, (datetime, str)):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    raise fail(f"expected a date-time like 2026-04-02T09:00:00, got {describe(value)}")


OptDateTime = Annotated[datetime | None, BeforeValidator(_datetime)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
