"""`crewtui ctl usage | resume | gateway`: what the model gateway measured, letting a paused session go on, and
the gateway's pools now."""

from __future__ import annotations

import time

import click

from crewtui.cli.common import echo, echo_json, remote, run_async, user_errors
from crewtui.errors import BadInput
from crewtui.formatting import money, tokens_short
from crewtui.model import parse_duration
from crewtui.spend import GatewayPoolInfo, UsageTotals

_BY = ("session", "group", "run", "pool", "day")


def _usage_cells(u: UsageTotals) -> str:
    t = u.tokens
    return (
        f"{u.requests:>8} {tokens_short(t.input):>8} {tokens_short(t.output):>8} "
        f"{tokens_short(t.cache_read + t.cache_write):>8} {money(u.cost_usd):>10} {u.absorbed:>6} {u.unknown:>7}"
    )


@click.command()
@click.option("--by", type=click.Choice(_BY), default="pool", show_default=True, help="Group by this.")
@click.option("--since", default=None, help="From a duration ago (2h, 7d); default: the start of today.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def usage(ctx: click.Context, by: str, since: str | None, as_json: bool) -> None:
    """What model requests used, as the gateway measured them (the figure of record for tokens and cost)."""
    start = None
    if since is not None:
        try:
            start = time.time() - parse_duration(since)
        except ValueError:
            raise BadInput(f"--since: expected a duration like 2h or 7d, got {since!r}") from None
    rows = run_async(remote(ctx).usage(by, start))  # type: ignore[arg-type]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        echo("no model requests through the gateway in that time")
        return
    width = max(12, *(len(r.name) for r in rows))
    heads = ("REQUESTS", 8), ("INPUT", 8), ("OUTPUT", 8), ("CACHE", 8), ("COST", 10), ("429s", 6), ("UNKNOWN", 7)
    echo(f"{by.upper():<{width}} " + " ".join(f"{h:>{w}}" for h, w in heads))
    for r in rows:
        line = f"{r.name:<{width}} {_usage_cells(r.usage)}"
        if r.reported is not None and r.reported.cost_usd:
            line += f"  (agents said {money(r.reported.cost_usd)})"
        echo(line)


@click.command()
@click.argument("ref", required=False)
@click.option("--pool", default=None, help="Resume a gateway pool held for its daily budget instead.")
@click.option("--budget", type=float, default=None, help="The new budget in dollars (default: one budget more).")
@click.pass_context
@user_errors
def resume(ctx: click.Context, ref: str | None, pool: str | None, budget: float | None) -> None:
    """Let a session (LABEL) or a pool (--pool) paused over its budget go on."""
    echo(run_async(remote(ctx).resume(ref, pool, budget)))


def _pool_lines(p: GatewayPoolInfo) -> list[str]:
    def limit(n: float | None) -> str:
        return "no limit" if n is None else f"{n:g}/min"

    cap = "no cap" if p.cap is None else f"{p.cap}" + (" (learned from a 429)" if p.learned_cap == p.cap else "")
    lines = [
        f"{p.name}  {p.provider} -> {p.upstream}",
        f"  in flight {p.in_flight} of {cap}; queue {p.queue}, oldest waits {p.oldest_wait:.1f}s",
        f"  requests {p.requests_last_minute}/min of {limit(p.requests_limit)}; "
        f"tokens {tokens_short(p.tokens_last_minute)}/min",
        f"  today: {p.today.requests} requests, {money(p.today.cost_usd)} of "
        f"{'no budget' if p.budget_per_day is None else money(p.budget_per_day)}, "
        f"{p.today.absorbed} refusals absorbed, {p.today.passed} passed on, {p.today.errors} errors",
    ]
    if p.paused_for > 0:
        lines.append(f"  paused {p.paused_for:.1f}s more: {p.pause_reason}")
    if p.held:
        lines.append(f"  held: {p.held} (crewtui ctl resume --pool {p.name})")
    if p.last_error:
        lines.append(f"  last error: {p.last_error}")
    return lines


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def gateway(ctx: click.Context, as_json: bool) -> None:
    """The model gateway: where it listens (127.0.0.1 only) and each pool's limits, line, pause and spend."""
    info = run_async(remote(ctx).gateway())
    if as_json:
        echo_json(info)
        return
    if info.url is None:
        echo("no gateway: no pool in the crew file names a provider (see README, Model gateway)")
        return
    echo(f"gateway on {info.url}  ({info.forbidden} requests refused for a bad token)")
    for p in info.pools:
        for line in _pool_lines(p):
            echo(line)
