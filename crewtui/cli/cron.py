"""`crewtui ctl cron ...`: list, add, remove and fire cron jobs of a running crew."""

from __future__ import annotations

from typing import Any

import click

from crewtui.cli.common import echo, echo_json, remote, run_async, user_errors
from crewtui.cli.printers import job_header, job_line
from crewtui.errors import BadInput
from crewtui.formatting import date_time


@click.group()
def cron() -> None:
    """Cron jobs: list, add, remove, run now."""


@cron.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def cron_list(ctx: click.Context, as_json: bool) -> None:
    """List cron jobs with their next fire and last run's completion rate."""
    jobs = run_async(remote(ctx).cron_list())
    if as_json:
        echo_json(jobs)
        return
    if not jobs:
        echo("no cron jobs")
        return
    echo(job_header())
    for j in jobs:
        echo(job_line(j))


@cron.command("add")
@click.argument("name")
@click.option("--every", default=None, help="An interval, e.g. 15m.")
@click.option("--cron", "expr", default=None, help="A cron expression, e.g. '0 9 * * *'.")
@click.option("--tz", default=None, help="IANA time zone for --cron / --at (default UTC).")
@click.option("--at", default=None, help="One instant, ISO 8601, e.g. 2026-04-02T09:00.")
@click.option("--allow-past", is_flag=True, help="Accept an --at in the past (it fires at once).")
@click.option("--agent", default=None)
@click.option("--label", default=None, help="Label template: {item} {date} {time} {run}.")
@click.option("--task", default="", help="Task template.")
@click.option("--domain", default=None, help="Domain template.")
@click.option("--items", default=None, help="Comma-separated items, one session each.")
@click.option("--watchdog", default=None, help="Retry sessions not done after this long.")
@click.option("--max-attempts", type=int, default=None)
@click.option("--misfire", type=click.Choice(["skip", "run_once", "run_all"]), default=None)
@click.option("--overlap", type=click.Choice(["allow", "forbid", "replace"]), default=None)
@click.option("--deadline", default=None, help="A run is counted at this long after its fire at the latest.")
@click.option("--sweep", "is_sweep", is_flag=True, help="The job sweeps stale sessions.")
@click.option("--system", "text", default=None, help="The job posts this text to the timeline.")
@click.pass_context
@user_errors
def cron_add(
    ctx: click.Context,
    name: str,
    every: str | None,
    expr: str | None,
    tz: str | None,
    at: str | None,
    allow_past: bool,
    agent: str | None,
    label: str | None,
    task: str,
    domain: str | None,
    items: str | None,
    watchdog: str | None,
    max_attempts: int | None,
    misfire: str | None,
    overlap: str | None,
    deadline: str | None,
    is_sweep: bool,
    text: str | None,
) -> None:
    """Add a cron job (kept in the store across restarts)."""
    kinds = [k for k, v in (("every", every), ("cron", expr), ("at", at)) if v is not None]
    if len(kinds) != 1:
        raise BadInput("give exactly one schedule: --every, --cron or --at")
    schedule: dict[str, Any] = {"kind": kinds[0]}
    if every is not None:
        schedule["every"] = every
    if expr is not None:
        schedule["expr"] = expr
    if at is not None:
        schedule["at"] = at
    if tz is not None:
        schedule["tz"] = tz
    job: dict[str, Any] = {"name": name, "schedule": schedule}
    for key, value in (
        ("watchdog_after", watchdog),
        ("max_attempts", max_attempts),
        ("misfire", misfire),
        ("overlap", overlap),
        ("deadline", deadline),
    ):
        if value is not None:
            job[key] = value
    if is_sweep:
        job["action"] = "sweep"
    if text is not None:
        job["text"] = text
    if agent is not None or label is not None:
        if agent is None or label is None:
            raise BadInput("a spawning job needs both --agent and --label")
        spawn: dict[str, Any] = {"agent": agent, "label": label, "task": task}
        if domain is not None:
            spawn["domain"] = domain
        if items is not None:
            spawn["items"] = [i.strip() for i in items.split(",") if i.strip()]
        job["spawn"] = spawn
    info = run_async(remote(ctx).cron_add(job, allow_past))
    echo(f"added {info.name}: {info.schedule}; next fire {date_time(info.next_fire)}")


@cron.command("remove")
@click.argument("name")
@click.pass_context
@user_errors
def cron_remove(ctx: click.Context, name: str) -> None:
    """Remove a cron job added with `cron add`."""
    info = run_async(remote(ctx).cron_remove(name))
    echo(f"removed {info.name}")


@cron.command("run")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def cron_run(ctx: click.Context, name: str, as_json: bool) -> None:
    """Fire a cron job now (its schedule is unchanged)."""
    run = run_async(remote(ctx).cron_trigger(name))
    if as_json:
        echo_json(run)
    elif run is None:
        echo(f"fired {name}")
    else:
        refused = f", {len(run.refused)} refused" if run.refused else ""
        echo(f"fired {name}: run {run.id}, {len(run.sessions)} spawned{refused}")
