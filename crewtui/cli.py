"""The `crewtui` command: `crewtui run`, `crewtui ctl ...` (and, with the dashboard, `crewtui` and `crewtui demo`).

Every user error ends as one line on stderr and exit code 2; no traceback reaches a user.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import click

from crewtui.errors import BadInput, CrewError, StoreError
from crewtui.locations import DataDir, default_data_dir
from crewtui.formatting import age, date_time, percent
from crewtui.model import STATE_SYMBOLS, Session, SessionState, SpawnRequest, parse_duration

T = TypeVar("T")

def fail(message: str) -> None:
    click.echo(f"crewtui: {message}", err=True)
    sys.exit(2)


def user_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn a CrewError (and Ctrl-C) into one line on stderr and exit 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except CrewError as exc:
            fail(exc.message)
        except KeyboardInterrupt:
            click.echo("crewtui: interrupted", err=True)
            sys.exit(130)
        raise AssertionError("unreachable")

    return wrapper


def run_async(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def resolve_data_dir(data_dir: str | None) -> DataDir:
    return DataDir(data_dir) if data_dir else DataDir(default_data_dir())


@click.group(invoke_without_command=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Where the store, socket and session output live.")
@click.version_option(package_name="crewtui")
@click.pass_context
def main(ctx: click.Context, data_dir: str | None) -> None:
    """crewtui: run crews of agent sessions and watch them live."""
    ctx.ensure_object(dict)
    ctx.obj["data_dir"] = data_dir
    if ctx.invoked_subcommand is None:
        ctx.invoke(run, crew_file=None, headless=False, data_dir=data_dir, no_mouse=False)


# ------------------------------------------------------------------------------------------ run


def load_crew_or_default(crew_file: str | None) -> Any:
    from crewtui.config import default_crew, load_crew

    return load_crew(crew_file) if crew_file else default_crew()


@main.command()
@click.argument("crew_file", required=False, type=click.Path(dir_okay=False))
@click.option("--headless", is_flag=True, help="Run the runtime without the dashboard (servers, scripts, tests).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--no-mouse", is_flag=True, help="Leave the mouse to the terminal (text selection over ssh).")
@click.pass_context
@user_errors
def run(ctx: click.Context, crew_file: str | None, headless: bool, data_dir: str | None, no_mouse: bool) -> None:
    """Run a crew (CREW_FILE, TOML): the runtime, and the dashboard unless --headless."""
    dd = resolve_data_dir(data_dir or (ctx.obj or {}).get("data_dir"))
    crew = load_crew_or_default(crew_file)  # nothing starts when the crew file is wrong
    if not headless:
        start_dashboard(dd, crew, mouse=not no_mouse)
        return
    run_async(serve_headless(dd, crew))


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Keep the demo's data here (default: a new throwaway dir).")
@click.option("--headless", is_flag=True, help="Run the demo crew without the dashboard.")
@click.option("--no-mouse", is_flag=True, help="Leave the mouse to the terminal (text selection over ssh).")
@user_errors
def demo(data_dir: str | None, headless: bool, no_mouse: bool) -> None:
    """Open the dashboard on the built-in demo crew (about 50 sessions in eight groups)."""
    import tempfile

    from crewtui.config import load_crew
    from crewtui.locations import demo_crew_path

    dd = DataDir(data_dir) if data_dir else DataDir(tempfile.mkdtemp(prefix="crewtui-demo-"))
    crew = load_crew(demo_crew_path())
    click.echo(f"crewtui demo: data dir {dd.root}", err=True)
    if headless:
        run_async(serve_headless(dd, crew))
        return
    start_dashboard(dd, crew, mouse=not no_mouse)


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="The served crew's data dir.")
@click.option("--host", default="localhost", show_default=True,
              help="Address to listen on. textual-serve has no authentication: keep it on localhost (ssh -L).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.pass_context
@user_errors
def serve(ctx: click.Context, data_dir: str | None, host: str, port: int) -> None:
    """Serve attached dashboards in a browser (textual-serve). Each page attaches to the crew's runtime."""
    try:
        import textual_serve.server  # noqa: F401
    except ImportError:
        fail("crewtui serve needs textual-serve: pip install 'crewtui[serve]'")
    from crewtui.ui.served import make_server

    dd = resolve_data_dir(data_dir or (ctx.obj or {}).get("data_dir"))
    from crewtui.runtime.lock import DataDirLock

    if not DataDirLock(dd.lock).held_by_other():
        raise BadInput(f"no runtime serves {dd.root}; start one first: crewtui run CREW.toml --headless --data-dir {dd.root}")
    if host not in ("localhost", "127.0.0.1", "::1"):
        click.echo(f"crewtui serve: WARNING: listening on {host}; textual-serve has no authentication, "
                   "anyone who can reach this port can steer and kill your crew", err=True)
    else:
        click.echo(f"crewtui serve: http://{host}:{port}/ (localhost only: textual-serve has no authentication; "
                   "from another machine use ssh -L)", err=True)
    make_server(serve_command(dd), host=host, port=port, title=f"crewtui · {dd.root.name}").serve()


def serve_command(dd: DataDir) -> str:
    """The shell command textual-serve runs for each page: an attached dashboard on `dd`. `exec`, so the
    dashboard is the server's own child (no shell in between to take a SIGTERM meant for it)."""
    import shlex

    return "exec " + shlex.join([sys.executable, "-m", "crewtui", "--data-dir", str(dd.root)])


def start_dashboard(dd: DataDir, crew: Any, mouse: bool = True) -> None:
    try:
        from crewtui.ui.app import run_dashboard
    except ImportError:
        fail("the dashboard is not available in this build; use --headless")
    run_dashboard(dd, crew, mouse=mouse)


async def serve_headless(dd: DataDir, crew: Any) -> None:
    from crewtui.control.host import RuntimeHost

    host = RuntimeHost(dd, crew)
    orch = await host.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    live = sum(1 for s in orch.sessions.values() if s.state.live)
    click.echo(
        f"crewtui runtime pid {os.getpid()} serving {dd.root} (crew {crew.crew.name}, {live} live sessions); "
        f"socket {dd.socket}. Ctrl-C stops it and leaves sessions running.",
        err=True,
    )
    # A signal, or the host stopping itself (another runtime took the data dir over: fencing).
    waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(host.stopped.wait())}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    await host.stop(kill_sessions=False)
    if host.fenced is not None:
        raise StoreError(f"{host.fenced}; sessions were left to the runtime that now serves {dd.root}")
    click.echo("crewtui runtime stopped; sessions left running for the next start", err=True)


# ------------------------------------------------------------------------------------------ ctl


def remote(ctx: click.Context) -> Any:
    from crewtui.control.client import RemoteRuntime

    obj = ctx.find_root().obj or {}
    sock = obj.get("socket")
    data_dir = obj.get("ctl_data_dir") or obj.get("data_dir")
    if sock is None and data_dir is None and os.environ.get("CREWTUI_SOCKET"):
        sock = os.environ["CREWTUI_SOCKET"]
    if sock is not None:
        return RemoteRuntime(sock)
    dd = resolve_data_dir(data_dir)
    return RemoteRuntime(dd.socket, dd.root)


def echo_json(obj: Any) -> None:
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    elif isinstance(obj, list):
        obj = [o.model_dump(mode="json") if hasattr(o, "model_dump") else o for o in obj]
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def session_line(s: Session, node_width: int = 0) -> str:
    sym = STATE_SYMBOLS[s.state]
    node = f"{(s.node or 'local'):<{node_width}}  " if node_width else ""
    return (f"{s.key}  {s.label:<44} {sym} {s.state.value:<9} {s.attempt:>2}  {age(s.created_at, time.time()):>5}  {node}"
            f"{(s.last_line or '')[:60]}")


@main.group()
@click.option("--data-dir", "ctl_data_dir", type=click.Path(file_okay=False), default=None)
@click.option("--socket", type=click.Path(dir_okay=False), default=None, help="The control socket (default: DATA_DIR/control.sock, or $CREWTUI_SOCKET).")
@click.pass_context
def ctl(ctx: click.Context, ctl_data_dir: str | None, socket: str | None) -> None:
    """Control a running crew over its socket (what scripts and agents use)."""
    root = ctx.find_root()
    root.ensure_object(dict)
    root.obj["socket"] = socket
    if ctl_data_dir:
        root.obj["ctl_data_dir"] = ctl_data_dir


@ctl.command()
@click.option("--label", required=True, help="The session's handle, e.g. blog-publisher-superada-2026-04-02.")
@click.option("--agent", default=None, help="A crew agent to run (see [agents] in the crew file).")
@click.option("--task", default=None, help="The task text, passed to the agent as one argv element.")
@click.option("--domain", default=None, help="An exclusive claim, e.g. article:superada.")
@click.option("--parent", envvar="CREWTUI_SESSION_KEY", default=None, help="Parent session (default: $CREWTUI_SESSION_KEY).")
@click.option("--watchdog", default=None, help="Retry if not done after this long, e.g. 15m.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=1)
@click.option("--json", "as_json", is_flag=True)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
@user_errors
def spawn(ctx: click.Context, label: str, agent: str | None, task: str | None, domain: str | None, parent: str | None,
          watchdog: str | None, max_attempts: int, as_json: bool, argv: tuple[str, ...]) -> None:
    """Start a session: --agent NAME --task TEXT, or -- ARGV..."""
    wd = None
    if watchdog is not None:
        try:
            wd = parse_duration(watchdog)
        except ValueError as exc:
            raise BadInput(f"--watchdog: {exc}") from None
    req = SpawnRequest(label=label, agent=agent, task=task, argv=list(argv) if argv else None, domain=domain,
                       parent=parent, watchdog_after=wd, max_attempts=max_attempts)
    s = run_async(remote(ctx).spawn(req))
    if as_json:
        echo_json(s)
    else:
        click.echo(f"{s.key} {s.label} {s.state.value}")


@ctl.command()
@click.argument("ref")
@click.argument("message")
@click.pass_context
@user_errors
def send(ctx: click.Context, ref: str, message: str) -> None:
    """Steer a session: send MESSAGE as one line to its stdin."""
    s = run_async(remote(ctx).send(ref, message))
    click.echo(f"sent to {s.key} ({s.label})")


@ctl.command("list")
@click.option("--state", default=None, help="Only sessions in this state.")
@click.option("--prefix", default=None, help="Only labels starting with this.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def list_(ctx: click.Context, state: str | None, prefix: str | None, as_json: bool) -> None:
    """List sessions."""
    if state is not None and state not in {s.value for s in SessionState}:
        raise BadInput(f"unknown state {state!r}; states: {', '.join(s.value for s in SessionState)}")
    sessions = run_async(remote(ctx).list(state, prefix))
    if as_json:
        echo_json(sessions)
        return
    if not sessions:
        click.echo("no sessions")
        return
    # Where sessions run on other machines (the Ray backend), say where.
    node_width = max((len(s.node or "local") for s in sessions), default=0) if any(s.node for s in sessions) else 0
    node_head = f"{'NODE':<{node_width}}  " if node_width else ""
    click.echo(f"{'KEY':<28}  {'LABEL':<44}   {'STATE':<9} {'#':>2}  {'AGE':>5}  {node_head}LAST OUTPUT")
    for s in sessions:
        click.echo(session_line(s, node_width))


@ctl.command()
@click.argument("ref")
@click.option("--tail", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def history(ctx: click.Context, ref: str, tail: int, as_json: bool) -> None:
    """Show a session's transcript tail (stdout, then stderr)."""
    h = run_async(remote(ctx).history(ref, tail))
    if as_json:
        echo_json(h)
        return
    click.echo(f"# {h.key} {h.label} ({h.state.value})")
    for line in h.lines:
        click.echo(line)
    if h.stderr:
        click.echo("# stderr")
        for line in h.stderr:
            click.echo(line)


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
            s = run_async(rt.get(ref))  # type: ignore[arg-type]
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
            click.confirm(f"Kill {what}?", abort=True)
    killed = run_async(rt.kill(ref, prefix))
    if as_json:
        echo_json(killed)
        return
    for s in killed:
        click.echo(f"{s.key} {s.label} {s.state.value}")


@ctl.command("yield")
@click.option("--children", "children_opt", multiple=True, help="Children to wait for (default: all live children).")
@click.option("--parent", envvar="CREWTUI_SESSION_KEY", default=None, help="The yielding session (default: $CREWTUI_SESSION_KEY).")
@click.option("--no-wait", is_flag=True, help="Return at once; the results arrive as one JSON line on the parent's stdin.")
@click.argument("children", nargs=-1)
@click.pass_context
@user_errors
def yield_(ctx: click.Context, children_opt: tuple[str, ...], parent: str | None, no_wait: bool, children: tuple[str, ...]) -> None:
    """Wait (no polling) until children end, then print their results as one JSON message."""
    kids = list(children_opt) + list(children)
    out = run_async(remote(ctx).yield_(kids or None, parent, wait=not no_wait))
    if out is None:
        click.echo(json.dumps({"yielded": True, "parent": parent, "children": kids}))
    else:
        click.echo(out.model_dump_json())


@ctl.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def registry(ctx: click.Context, as_json: bool) -> None:
    """Print the crew's registry (written only by the runtime, from session results)."""
    data = run_async(remote(ctx).registry())
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True))


@ctl.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def watch(ctx: click.Context, as_json: bool) -> None:
    """Stream events as they happen (Ctrl-C to stop)."""

    async def go() -> None:
        async for ev in remote(ctx).watch():
            if as_json:
                click.echo(ev.model_dump_json())
            else:
                stamp = time.strftime("%H:%M:%S", time.localtime(ev.ts))
                detail = {k: v for k, v in ev.model_dump(mode="json").items()
                          if k not in {"seq", "ts", "kind", "session", "label"} and v not in (None, [], "")}
                click.echo(f"{stamp} {ev.kind:<22} {ev.label or ev.session or '':<40} {json.dumps(detail, ensure_ascii=False)}")

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
        click.echo(f"{s.key} {s.label} attempt {s.attempt} {s.state.value}")


@ctl.command()
@click.option("--dry-run", is_flag=True, help="Only list what a sweep would kill, and why.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def sweep(ctx: click.Context, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Kill stale sessions (no output for the crew's stale_after)."""
    rt = remote(ctx)
    if not dry_run and not yes:
        preview = run_async(rt.sweep(dry_run=True))
        if not preview:
            click.echo("nothing is stale")
            return
        if not sys.stdin.isatty():
            raise BadInput(f"sweep would kill {len(preview)} stale sessions; add --yes to confirm when not at a terminal")
        for item in preview:
            click.echo(f"{item.key}  {item.label:<44} {item.reason}")
        click.confirm(f"Kill these {len(preview)} stale sessions?", abort=True)
    items = run_async(rt.sweep(dry_run=dry_run))
    if as_json:
        echo_json(items)
        return
    if not items:
        click.echo("nothing is stale")
    for item in items:
        click.echo(f"{'would kill' if dry_run else 'killed'} {item.key}  {item.label:<44} {item.reason}")


@ctl.command()
@click.argument("pool")
@click.pass_context
@user_errors
def acquire(ctx: click.Context, pool: str) -> None:
    """Block until POOL's rate limit grants a permit (agents call this before a model call)."""
    out = run_async(remote(ctx).acquire(pool))
    click.echo(json.dumps(out))


@ctl.group()
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
        click.echo("no cron jobs")
        return
    click.echo(f"{'NAME':<24} {'SCHEDULE':<36} {'PAYLOAD':<7} {'NEXT FIRE':<19}  {'RUNS':>4}  LAST RATE")
    for j in jobs:
        click.echo(f"{j.name:<24} {j.schedule:<36} {j.payload:<7} {date_time(j.next_fire):<19}  {j.runs:>4}  {percent(j.last_rate)}")


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
def cron_add(ctx: click.Context, name: str, every: str | None, expr: str | None, tz: str | None, at: str | None,
             allow_past: bool, agent: str | None, label: str | None, task: str, domain: str | None, items: str | None,
             watchdog: str | None, max_attempts: int | None, misfire: str | None, overlap: str | None,
             deadline: str | None, is_sweep: bool, text: str | None) -> None:
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
    for key, value in (("watchdog_after", watchdog), ("max_attempts", max_attempts), ("misfire", misfire),
                       ("overlap", overlap), ("deadline", deadline)):
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
    click.echo(f"added {info.name}: {info.schedule}; next fire {date_time(info.next_fire)}")


@cron.command("remove")
@click.argument("name")
@click.pass_context
@user_errors
def cron_remove(ctx: click.Context, name: str) -> None:
    """Remove a cron job added with `cron add`."""
    info = run_async(remote(ctx).cron_remove(name))
    click.echo(f"removed {info.name}")


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
        click.echo(f"fired {name}")
    else:
        click.echo(f"fired {name}: run {run.id}, {len(run.sessions)} spawned" + (f", {len(run.refused)} refused" if run.refused else ""))


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
        click.echo("no cron runs yet")
        return
    click.echo(f"{'RUN':<28} {'FIRED':<19}  {'RATE':>5}  {'SPAWNED':>7} {'DONE':>4} {'FAILED':>6} {'T/O':>3} {'KILLED':>6} {'LOST':>4} {'LIVE':>4}  STATE")
    for r in items:
        c = r.counts
        click.echo(f"{r.id:<28} {date_time(r.nominal):<19}  {percent(r.rate):>5}  {c.get('spawned', 0):>7} {c.get('done', 0):>4} "
                   f"{c.get('failed', 0):>6} {c.get('timed_out', 0):>3} {c.get('killed', 0):>6} {c.get('lost', 0):>4} "
                   f"{c.get('running', 0):>4}  {'final' if r.final else 'open'}")


@ctl.command()
@click.pass_context
@user_errors
def info(ctx: click.Context) -> None:
    """Show the runtime serving the data dir."""
    echo_json(run_async(remote(ctx).info()))


if __name__ == "__main__":
    main()
