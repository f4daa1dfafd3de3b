"""`crewtui ctl ...`: control a running crew over its socket (what scripts and agents use).

With no runtime listening, every verb says so in one line (which data dir it looked in, how to start one) and
exits 2. Verbs that print data take `--json`. What a person reads is cleaned of terminal escapes (`echo`), since it
quotes labels, agents' output and reasons; `--json` escapes them (the raw bytes stay in the session dir).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime

import click

from crewtui.adapters import PRESETS
from crewtui.cli.common import NonEmptyPath, echo, echo_json, echo_json_text, remote, run_async, user_errors
from crewtui.cli.cron import cron
from crewtui.cli.gateway import gateway, resume, usage
from crewtui.cli.printers import (
    event_line,
    node_width,
    run_header,
    run_line,
    session_header,
    session_line,
    sweep_lines,
    sweep_summary,
    turn_line,
)
from crewtui.cli.workspace import diff, discard, merge
from crewtui.errors import BadInput
from crewtui.model import Session, SessionState, SpawnRequest, parse_duration
from crewtui.text import clean


@click.group()
@click.option("--data-dir", "ctl_data_dir", type=NonEmptyPath(file_okay=False), default=None)
@click.option(
    "--socket",
    type=NonEmptyPath(dir_okay=False),
    default=None,
    help="The control socket (default: DATA_DIR/control.sock, or $CREWTUI_SOCKET).",
)
@click.pass_context
def ctl(ctx: click.Context, ctl_data_dir: str | None, socket: str | None) -> None:
    """Control a running crew over its socket (what scripts and agents use)."""
    root = ctx.find_root()
    root.ensure_object(dict)
    root.obj["socket"] = socket
    if ctl_data_dir:
        root.obj["ctl_data_dir"] = ctl_data_dir


ctl.add_command(cron)
ctl.add_command(usage)
ctl.add_command(resume)
ctl.add_command(gateway)
ctl.add_command(diff)
ctl.add_command(merge)
ctl.add_command(discard)


@ctl.command()
@click.option("--label", required=True, help="The session's handle, e.g. blog-publisher-superada-2026-04-02.")
@click.option("--agent", default=None, help="A crew agent to run (see [agents] in the crew file).")
@click.option("--task", default=None, help="The task text, passed to the agent as one argv element.")
@click.option("--domain", default=None, help="An exclusive claim, e.g. article:superada.")
@click.option(
    "--parent", envvar="CREWTUI_SESSION_KEY", default=None, help="Parent session (default: $CREWTUI_SESSION_KEY)."
)
@click.option("--watchdog", default=None, help="Retry if not done after this long, e.g. 15m.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=1)
@click.option(
    "--cwd",
    type=click.Path(file_okay=False),
    default=None,
    help="Run it in this directory (default: where you are; an agent with a `cwd` key runs there).",
)
@click.option(
    "--repo",
    type=click.Path(file_okay=False),
    default=None,
    help="Run it in its own git worktree of this repository, on branch crew/LABEL.",
)
@click.option("--base", default=None, help="With --repo: the branch to start from (default: the one checked out).")
@click.option(
    "--best-of",
    type=click.IntRange(2, 10),
    default=None,
    help="Start the task in N sessions (LABEL-1..N), each in its own worktree; merging one discards the others.",
)
@click.option(
    "--tty", is_flag=True, default=None, help="Run it on a terminal you can attach to (`crewtui attach LABEL`)."
)
@click.option("--json", "as_json", is_flag=True)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
@user_errors
def spawn(
    ctx: click.Context,
    label: str,
    agent: str | None,
    task: str | None,
    domain: str | None,
    parent: str | None,
    watchdog: str | None,
    max_attempts: int,
    cwd: str | None,
    repo: str | None,
    base: str | None,
    best_of: int | None,
    tty: bool | None,
    as_json: bool,
    argv: tuple[str, ...],
) -> None:
    """Start a session: --agent NAME --task TEXT, or -- ARGV..."""
    wd = None
    if watchdog is not None:
        try:
            wd = parse_duration(watchdog)
        except ValueError as exc:
            raise BadInput(f"--watchdog: {exc}") from None
    req = SpawnRequest(
        label=label,
        agent=agent,
        task=task,
        argv=list(argv) if argv else None,
        domain=domain,
        parent=parent,
        watchdog_after=wd,
        max_attempts=max_attempts,
        # Paths in a raw argv mean what they mean where the user stands (`-- ruff check src/`).
        cwd=os.path.abspath(os.path.expanduser(cwd)) if cwd is not None else os.getcwd(),
        repo=os.path.abspath(os.path.expanduser(repo)) if repo is not None else None,
        base=base,
        tty=tty or None,
    )
    reqs = [req] if best_of is None else req.tries(best_of)
    started = [run_async(remote(ctx).spawn(r)) for r in reqs]
    if as_json:
        echo_json(started[0] if best_of is None else started)
    else:
        for s in started:
            echo(f"{s.key} {s.label} {s.state.value}")


@ctl.command()
@click.argument("ref")
@click.argument("message")
@click.pass_context
@user_errors
def send(ctx: click.Context, ref: str, message: str) -> None:
    """Steer a session: send MESSAGE as one line to its stdin."""
    s = run_async(remote(ctx).send(ref, message))
    if s.preset is not None and s.preset in PRESETS and PRESETS[s.preset].steer_mode == "next_turn":
        echo(f"queued for {s.key} ({s.label}): {s.preset} takes it when this run ends, continuing its conversation")
    else:
        echo(f"sent to {s.key} ({s.label})")


def _answered(s: Session, verb: str, as_json: bool) -> None:
    if as_json:
        echo_json(s)
    elif s.needs:
        echo(f"{verb} for {s.key} ({s.label}); it still waits on {s.needs.get('id')}")
    else:
        echo(f"{verb} for {s.key} ({s.label}); it is {s.state.value}")


@ctl.command()
@click.argument("ref")
@click.argument("request", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def approve(ctx: click.Context, ref: str, request: str | None, as_json: bool) -> None:
    """Allow what a waiting session asks (REQUEST: its id, needed only when it waits on several)."""
    s = run_async(remote(ctx).answer(ref, True, request=request))
    _answered(s, "approved", as_json)


@ctl.command()
@click.argument("ref")
@click.argument("request", required=False)
@click.option("--message", default=None, help="Why, or what to do instead: the agent reads it.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def deny(ctx: click.Context, ref: str, request: str | None, message: str | None, as_json: bool) -> None:
    """Refuse what a waiting session asks (REQUEST: its id, needed only when it waits on several)."""
    s = run_async(remote(ctx).answer(ref, False, request=request, message=message))
    _answered(s, "denied", as_json)


@ctl.command("list")
@click.option("--state", default=None, help="Only sessions in this state.")
@click.option("--prefix", default=None, help="Only labels starting with this.")
@click.option("--live", "which", flag_value="live", default=None, help="Only live sessions.")
@click.option("--ended", "which", flag_value="ended", help="Only ended sessions.")
@click.option("--since", default=None, help="Only sessions changed since: a duration ago (1h, 2d) or a date-time.")
@click.option("--before", default=None, help="Only sessions created before this one (a key or label): the next page.")
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True, help="The newest this many.")
@click.option("--all", "everything", is_flag=True, help="Every matching session, however many (paged for you).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def list_(
    ctx: click.Context,
    state: str | None,
    prefix: str | None,
    which: str | None,
    since: str | None,
    before: str | None,
    limit: int,
    everything: bool,
    as_json: bool,
) -> None:
    """List sessions, newest last: the newest 200 unless --limit or --all; older pages with --before."""
    if state is not None and state not in {s.value for s in SessionState}:
        raise BadInput(f"unknown state {state!r}; states: {', '.join(s.value for s in SessionState)}")
    rt = remote(ctx)
    cursor = run_async(rt.get(before)).key if before is not None else None
    sessions = run_async(
        rt.list(
            SessionState(state) if state is not None else None,
            prefix,
            limit=None if everything else limit,
            before=cursor,
            since=_since(since),
            ended=None if which is None else which == "ended",
        )
    )
    if as_json:
        echo_json(sessions)
        return
    if not sessions:
        echo("no sessions")
        return
    width = node_width(sessions)  # where sessions run on other machines (the Ray backend), say where
    echo(session_header(width))
    for s in sessions:
        echo(session_line(s, width))
    if not everything and len(sessions) == limit:
        click.echo(f"(the newest {limit}; older ones: --before {sessions[0].key}, or --all)", err=True)


def _since(text: str | None) -> float | None:
    """`--since`: a duration ago (90m, 2d) or an ISO date-time; one line if it is neither."""
    if text is None:
        return None
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise BadInput(
            f"--since: expected a duration like 2h or a date-time like 2026-04-02T09:00, got {text!r}"
        ) from None


@ctl.command()
@click.argument("ref")
@click.option("--tail", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--raw", is_flag=True, help="An agent's output lines as it printed them, not its conversation.")
@click.pass_context
@user_errors
def history(ctx: click.Context, ref: str, tail: int, as_json: bool, raw: bool) -> None:
    """Show a session's transcript tail (stdout, then stderr); an agent's conversation as turns."""
    h = run_async(remote(ctx).history(ref, tail))
    if as_json:
        echo_json(h)
        return
    echo(f"# {h.key} {h.label} ({h.state.value})")
    if h.turns is not None and not raw:
        # An agent with a preset: its conversation as a person reads it (--raw for the JSON lines it printed).
        for turn in h.turns:
            echo(turn_line(turn))
    else:
        for line in h.lines:
            echo(line)
    if h.stderr:
        echo("# stderr")
        for line in h.stderr:
            echo(line)


@ctl.command()
@click.argument("ref", required=False)
@click.option("--prefix", default=None, help="Kill every live session whose label starts with this.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def kill(ctx: click.Context, ref: str | None, prefix: str | None, yes: bool, as_json: bool) -> None:
    """Kill a session (and its descendants), or every live session with --prefix."""
    if (ref is None) == (prefix is None):
        raise BadInput("give a session KEY|LABEL or --prefix P (one of them)")
    rt = remote(ctx)
    if not yes:
        if prefix is not None:
            targets = [s for s in run_async(rt.list(None, prefix)) if s.state.live]
            what = f"{len(targets)} live sessions with prefix {prefix!r}"
        else:
            assert ref is not None  # exactly one of ref and prefix, checked above
            s = run_async(rt.get(ref))
            kids = [c for c in run_async(rt.list()) if c.parent == s.key and c.state.live]
            targets = [s]
            what = f"{s.label} ({s.key})" + (f" and its {len(kids)} live children" if kids else "")
            if not kids:
                yes = True  # one leaf session: the name on the command line is confirmation enough
        if not yes:
            if not targets:
                raise BadInput(f"no live session has a label starting with {prefix!r}")
            if not sys.stdin.isatty():
                raise BadInput(f"kill would end {what}; add --yes to confirm when not at a terminal")
            click.confirm(clean(f"Kill {what}?"), abort=True)
    killed = run_async(rt.kill(ref, prefix))
    if as_json:
        echo_json(killed)
        return
    for s in killed:
        echo(f"{s.key} {s.label} {s.state.value}")


@ctl.command("yield")
@click.option("--children", "children_opt", multiple=True, help="Children to wait for (default: all live children).")
@click.option(
    "--parent", envvar="CREWTUI_SESSION_KEY", default=None, help="The yielding session (default: $CREWTUI_SESSION_KEY)."
)
@click.option(
    "--no-wait", is_flag=True, help="Return at once; the results arrive as one JSON line on the parent's stdin."
)
@click.argument("children", nargs=-1)
@click.pass_context
@user_errors
def yield_(
    ctx: click.Context, children_opt: tuple[str, ...], parent: str | None, no_wait: bool, children: tuple[str, ...]
) -> None:
    """Wait (no polling) until children end, then print their results as one JSON message."""
    kids = list(children_opt) + list(children)
    out = run_async(remote(ctx).yield_(kids or None, parent, wait=not no_wait))
    if out is None:
        echo_json({"yielded": True, "parent": parent, "children": kids}, indent=None)
    else:
        echo_json_text(out.model_dump_json())


@ctl.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def registry(ctx: click.Context, as_json: bool) -> None:
    """Print the crew's registry (written only by the runtime, from session results)."""
    data = run_async(remote(ctx).registry())
    echo_json(data, sort_keys=True)


@ctl.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def watch(ctx: click.Context, as_json: bool) -> None:
    """Stream events as they happen (Ctrl-C to stop)."""

    def watching() -> None:  # on stderr, so that stdout stays only events; a script can wait for this line
        click.echo("watching (Ctrl-C to stop)", err=True)

    async def go() -> None:
        async for ev in remote(ctx).watch(watching):
            if as_json:
                echo_json_text(ev.model_dump_json())
            else:
                echo(event_line(ev))

    try:
        run_async(go())
    except KeyboardInterrupt:
        pass


@ctl.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def retry(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Start a new attempt of an ended session (same key and label)."""
    s = run_async(remote(ctx).retry(ref))
    if as_json:
        echo_json(s)
    else:
        echo(f"{s.key} {s.label} attempt {s.attempt} {s.state.value}")


@ctl.command()
@click.option("--dry-run", is_flag=True, help="Only list what a sweep would kill or remove, and why.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def sweep(ctx: click.Context, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Kill stale sessions (no output for the crew's stale_after) and remove the worktrees of ended sessions whose
    work is merged; worktrees that hold work not merged are listed and kept."""
    rt = remote(ctx)
    if not dry_run and not yes:
        preview = run_async(rt.sweep(dry_run=True))
        what = sweep_summary(preview)
        if what is None:
            for line in sweep_lines(preview, dry_run=True) or ["nothing is stale"]:
                echo(line)
            return
        if not sys.stdin.isatty():
            raise BadInput(f"sweep would {what}; add --yes to confirm when not at a terminal")
        for line in sweep_lines(preview, dry_run=True):
            echo(line)
        click.confirm(f"{what[0].upper()}{what[1:]}?", abort=True)
    items = run_async(rt.sweep(dry_run=dry_run))
    if as_json:
        echo_json(items)
        return
    for line in sweep_lines(items, dry_run=dry_run) or ["nothing is stale"]:
        echo(line)


@ctl.command()
@click.argument("pool")
@click.pass_context
@user_errors
def acquire(ctx: click.Context, pool: str) -> None:
    """Block until POOL's rate limit grants a permit (agents call this before a model call)."""
    out = run_async(remote(ctx).acquire(pool))
    echo_json(out, indent=None)


@ctl.command()
@click.option("--job", default=None, help="Only this job's runs.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def runs(ctx: click.Context, job: str | None, limit: int, as_json: bool) -> None:
    """Cron runs with their completion rate (done / spawned), newest first."""
    items = run_async(remote(ctx).runs(job, limit))
    if as_json:
        echo_json(items)
        return
    if not items:
        echo("no cron runs yet")
        return
    echo(run_header())
    for r in items:
        echo(run_line(r))


@ctl.command()
@click.argument("ref", required=False)
@click.option("--json", "as_json", is_flag=True, help="(JSON is what it prints.)")
@click.pass_context
@user_errors
def info(ctx: click.Context, ref: str | None, as_json: bool) -> None:
    """Show the runtime serving the data dir, or one session whole (its result and task uncut)."""
    rt = remote(ctx)
    echo_json(run_async(rt.get(ref) if ref is not None else rt.info()))


@ctl.command()
@click.argument("ref")
@click.pass_context
@user_errors
def result(ctx: click.Context, ref: str) -> None:
    """Print a session's whole result as JSON (a listing carries a big one only as its size)."""
    rt = remote(ctx)
    value = run_async(rt.result(ref))
    if value is None:
        s = run_async(rt.get(ref))
        raise BadInput(f"{s.label} ({s.key}) has no result" + (f": {s.reason}" if s.reason else f" ({s.state.value})"))
    echo_json_text(json.dumps(value, indent=2, ensure_ascii=False))
