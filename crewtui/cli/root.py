"""The top-level `crewtui` group and the commands that host: the dashboard, `run`, `demo` and `serve`.

How a runtime is hosted (embed or attach, headless, signals, the log file) is `crewtui.launch`'s; the
dashboard is imported only when one is shown, so `crewtui ctl` starts quickly.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
from typing import TYPE_CHECKING

import click

from crewtui.cli.common import NonEmptyPath, fail, resolve_data_dir, run_async, say, user_errors
from crewtui.cli.ctl import ctl
from crewtui.cli.importer import import_group
from crewtui.errors import BadInput
from crewtui.locations import DataDir

if TYPE_CHECKING:
    from crewtui.config import CrewConfig


@click.group(invoke_without_command=True)
@click.option(
    "--data-dir",
    type=NonEmptyPath(file_okay=False),
    default=None,
    help="Where the store, socket and session output live.",
)
@click.version_option(package_name="crewtui")
@click.pass_context
def main(ctx: click.Context, data_dir: str | None) -> None:
    """crewtui: run crews of agent sessions and watch them live."""
    ctx.ensure_object(dict)
    ctx.obj["data_dir"] = data_dir
    if ctx.invoked_subcommand is None:
        ctx.invoke(run, crew_file=None, headless=False, data_dir=data_dir, no_mouse=False)


main.add_command(ctl)
main.add_command(import_group)


def load_crew_or_default(crew_file: str | None) -> CrewConfig:
    from crewtui.config import default_crew, load_crew

    crew = load_crew(crew_file) if crew_file else default_crew()
    for warning in crew.warnings():  # valid, but almost surely not meant: said before anything starts
        click.echo(f"crewtui: warning: {crew_file}: {warning}", err=True)
    return crew


def serve_headless(dd: DataDir, crew: CrewConfig) -> None:
    from crewtui.launch import serve_headless as serve

    run_async(serve(dd, crew, say=say))


def start_dashboard(dd: DataDir, crew: CrewConfig, mouse: bool = True) -> None:
    try:
        from crewtui.cli.dashboard import run_dashboard
    except ImportError:
        fail("the dashboard is not available in this build; use --headless")
    run_dashboard(dd, crew, mouse=mouse)


@main.command()
@click.argument("crew_file", required=False, type=click.Path(dir_okay=False))
@click.option("--headless", is_flag=True, help="Run the runtime without the dashboard (servers, scripts, tests).")
@click.option("--data-dir", type=NonEmptyPath(file_okay=False), default=None)
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
    serve_headless(dd, crew)


@main.command()
@click.option(
    "--data-dir",
    type=NonEmptyPath(file_okay=False),
    default=None,
    help="Keep the demo's data here (default: a new throwaway dir).",
)
@click.option("--headless", is_flag=True, help="Run the demo crew without the dashboard.")
@click.option("--no-mouse", is_flag=True, help="Leave the mouse to the terminal (text selection over ssh).")
@user_errors
def demo(data_dir: str | None, headless: bool, no_mouse: bool) -> None:
    """Open the dashboard on the built-in demo crew (about 50 sessions in seven groups)."""
    from crewtui.config import load_crew
    from crewtui.locations import demo_crew_path

    dd = DataDir(data_dir) if data_dir else DataDir(tempfile.mkdtemp(prefix="crewtui-demo-"))
    crew = load_crew(demo_crew_path())
    say(f"crewtui demo: data dir {dd.root}")
    if headless:
        serve_headless(dd, crew)
        return
    start_dashboard(dd, crew, mouse=not no_mouse)


@main.command()
@click.option("--data-dir", type=NonEmptyPath(file_okay=False), default=None, help="The served crew's data dir.")
@click.option(
    "--host",
    default="localhost",
    show_default=True,
    help="Address to listen on. The page is plain http: keep it on localhost (from elsewhere: ssh -L).",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--token",
    envvar="CREWTUI_SERVE_TOKEN",
    show_envvar=True,
    default=None,
    metavar="SECRET",
    help="The secret the page's URL carries (default: a new random one at each start). For scripts; prefer the "
    "environment variable, since every local user can read a command line.",
)
@click.pass_context
@user_errors
def serve(ctx: click.Context, data_dir: str | None, host: str, port: int, token: str | None) -> None:
    """Serve attached dashboards in a browser (textual-serve). Each page attaches to the crew's runtime.

    Only a page opened with the URL this prints (it carries a secret token) can use a dashboard; requests
    from other web pages (their Origin) or by other names (their Host: DNS rebinding) are refused."""
    try:
        import textual_serve.server  # noqa: F401
    except ImportError:
        fail("crewtui serve needs textual-serve: pip install 'crewtui[serve]'")
    from crewtui.launch import served_by_other
    from crewtui.ui.served import check_token, is_loopback, make_server, new_token, page_url

    token = check_token(token) if token is not None else new_token()
    dd = resolve_data_dir(data_dir or (ctx.obj or {}).get("data_dir"))
    if not served_by_other(dd):
        raise BadInput(
            f"no runtime serves {dd.root}; start one first: crewtui run CREW.toml --headless --data-dir {dd.root}"
        )
    if not is_loopback(host):
        say(
            f"crewtui serve: WARNING: listening on {host}; anyone who can reach this port and learns the token "
            "can steer and kill your crew, and plain http shows the token to anyone on the way: prefer localhost "
            "and ssh -L"
        )
    say(f"crewtui serve: open {page_url(host, port, token)}")
    reach = f" (from another machine: ssh -L {port}:localhost:{port}, then the same URL)" if is_loopback(host) else ""
    say(f"crewtui serve: only a page opened with this URL can use the dashboard{reach}; Ctrl+C stops serving")
    make_server(serve_command(dd), host=host, port=port, title=f"crewtui · {dd.root.name}", token=token).serve()


def serve_command(dd: DataDir) -> str:
    """The shell command textual-serve runs for each page: an attached dashboard on `dd`. `exec`, so the
    dashboard is the server's own child (no shell in between to take a SIGTERM meant for it)."""
    return "exec " + shlex.join([sys.executable, "-m", "crewtui", "--data-dir", str(dd.root)])


@main.command()
@click.argument("label")
@click.option("--data-dir", type=NonEmptyPath(file_okay=False), default=None, help="The crew's data dir.")
@click.pass_context
@user_errors
def attach(ctx: click.Context, label: str, data_dir: str | None) -> None:
    """Hand this terminal to a terminal session (tty = true) until Ctrl-\\ gives it back; the session runs on."""
    import os

    from crewtui.attaching import DETACH_WORDS, attach_command
    from crewtui.cli.common import remote

    if data_dir is not None:
        ctx.find_root().obj["ctl_data_dir"] = data_dir
    s = run_async(remote(ctx).get(label))
    argv, where = attach_command(s)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise BadInput("attach needs a terminal (run it in one, not from a script or a pipe)")
    say(f"attaching to {s.label}; detach with {DETACH_WORDS} (it keeps running)")
    os.chdir(where)
    os.execv(argv[0], argv)
