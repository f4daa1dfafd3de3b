"""The fake runtime's model gateway: two pools in a fixed, realistic state, and sessions whose requests wait in it.

`anthropic` is busy: near its request limit, its cap learned from a 429, three requests in line, paused by
upstream for a few seconds. `openai` is held: its daily budget is spent, two requests wait for a `ctl resume`.
The series have a visible shape (a ramp, a burst, a lull) so the sparklines show one in a snapshot.
"""

from __future__ import annotations

import math

from crewtui.model import Session
from crewtui.spend import GatewayInfo, GatewayPoolInfo, TokenCounts, UsageRow, UsageTotals

# One bin per 10 s, oldest first: ten minutes.
REQUESTS_A = [max(0, round(5 + 4 * math.sin(i / 6) + (3 if 40 <= i < 46 else 0))) for i in range(60)]
TOKENS_A = [n * 4_300 + (i % 7) * 900 for i, n in enumerate(REQUESTS_A)]
REQUESTS_B = [min(12, i // 3) if i < 42 else 0 for i in range(60)]  # a ramp, then held: nothing goes out
TOKENS_B = [n * 2_100 for n in REQUESTS_B]


def gateway_info() -> GatewayInfo:
    return GatewayInfo(
        url="http://127.0.0.1:8787",
        forbidden=0,
        pools=[
            GatewayPoolInfo(
                name="anthropic",
                provider="anthropic",
                upstream="https://api.anthropic.com",
                in_flight=4,
                cap=4,
                learned_cap=4,
                queue=3,
                oldest_wait=12.4,
                paused_for=18.0,
                pause_reason="upstream said 429 (retry-after 20s)",
                requests_last_minute=46,
                tokens_last_minute=182_400,
                requests_limit=50,
                input_tokens_limit=400_000,
                output_tokens_limit=80_000,
                requests_series=REQUESTS_A,
                tokens_series=TOKENS_A,
                today=UsageTotals(
                    requests=1_204,
                    tokens=TokenCounts(input=1_480_000, output=212_000, cache_read=3_900_000, cache_write=88_000),
                    cost_usd=8.42,
                    unknown=1,
                    absorbed=17,
                    passed=2,
                    errors=0,
                ),
                budget_per_day=10.0,
                last_error="429 Too Many Requests: rate_limit_error (16:59:41)",
            ),
            GatewayPoolInfo(
                name="openai",
                provider="openai",
                upstream="https://api.openai.com/v1",
                in_flight=0,
                cap=8,
                queue=2,
                oldest_wait=95.0,
                held="its daily budget is spent: $25.03 of $25.00",
                requests_last_minute=0,
                tokens_last_minute=0,
                requests_limit=500,
                input_tokens_limit=200_000,
                output_tokens_limit=None,
                requests_series=REQUESTS_B,
                tokens_series=TOKENS_B,
                today=UsageTotals(
                    requests=3_310,
                    tokens=TokenCounts(input=2_950_000, output=410_000),
                    cost_usd=25.03,
                    errors=1,
                ),
                budget_per_day=25.0,
                last_error="upstream unreachable: connection reset by peer",
            ),
        ],
    )


def usage_rows() -> list[UsageRow]:
    return [UsageRow(by="pool", name=p.name, usage=p.today) for p in gateway_info().pools]


QUEUED = "queued for anthropic (3rd)"
PAUSED_LABEL = "blog-publisher-openclaw-guide-2026-04-02-r4"
PAUSED = f"paused: over its budget: spent $2.01 of $2.00 (ctl resume {PAUSED_LABEL})"

# label -> gateway hold: a preset session in line, a plain argv one in line, one paused over its budget.
HOLDS: dict[str, str] = {
    "code-review-pr-108": QUEUED,
    "research-scout-llm-evals-r3": "queued for anthropic (1st)",
    PAUSED_LABEL: PAUSED,
}


def make_holds(sessions: dict[str, Session]) -> None:
    """Put the HOLDS on the fake's sessions (in place), with what the gateway measured of them: the paused one's
    agent reported less than the gateway counted."""
    for s in sessions.values():
        hold = HOLDS.get(s.label)
        if hold is None:
            continue
        s.gateway_hold = hold
        paused = hold == PAUSED
        base = s.tokens or TokenCounts(input=900, output=120)
        if s.preset is not None:  # what its agent reported, kept beside the gateway's measure
            s.reported_tokens = base
            s.reported_cost_usd = 1.8734 if paused else s.cost_usd
        tokens = TokenCounts(input=base.input + 1_200, output=base.output + 300, cache_read=base.cache_read)
        cost = 2.01 if paused else (s.cost_usd or 0.0041)
        s.usage = UsageTotals(requests=37 if paused else 3, tokens=tokens, cost_usd=cost, absorbed=1)
        s.tokens, s.cost_usd = tokens.model_copy(), cost  # of record: the gateway's measure
