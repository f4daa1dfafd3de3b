"""`crewtui ctl diff | merge | discard`: what a session's branch changed, and what becomes of it (crewtui/workspaces).

A diff is the repository's text: printed as is to a pipe or file, cleaned of terminal escapes at a terminal (as
`echo` does for everything a person reads).
"""

from __future__ import annotations

import sys

import click

from crewtui.cli.common import echo, echo_json, remote, run_async, user_errors
from crewtui.model import Session


def _merge_line(s: Session) -> str:
    note = f": {s.merge_note}" if s.merge_note else ""
    return f"{s.label}: {s.merge or 'none'} ({s.branch}){note}"


@click.command()
@click.argument("ref")
@click.option("--stat", is_flag=True, help="Per file counts, not the whole diff.")
@click.pass_context
@user_errors
def diff(ctx: click.Context, ref: str, stat: bool) -> None:
    """What a session's branch changed against the commit it started from."""
    text = run_async(remote(ctx).diff(ref, stat))
    if sys.stdout.isatty():
        echo(text.rstrip("\n"))
    else:
        click.echo(text, nl=False)


@click.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def merge(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Queue an ended session's branch for merging (the runtime merges one branch at a time per repository)."""
    s = run_async(remote(ctx).merge(ref))
    if as_json:
        echo_json(s)
    else:
        echo(_merge_line(s))


@click.command()
@click.argument("ref")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@user_errors
def discard(ctx: click.Context, ref: str, yes: bool, as_json: bool) -> None:
    """Throw away an ended session's branch and worktree (asks first at a terminal)."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"Discard the work of {ref} (its branch and worktree)?", abort=True)
    s = run_async(remote(ctx).discard(ref))
    if as_json:
        echo_json(s)
    else:
        echo(_merge_line(s))
