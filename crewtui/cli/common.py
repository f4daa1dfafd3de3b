"""What the `crewtui` commands share: one-line user errors, the data dir, the socket client, JSON output.

What `ctl` prints quotes agents and users (labels, output, reasons, names), so it never carries a terminal
escape: a person's lines go through `crewtui.text.clean` (printers.py), JSON through `json_safe`, which escapes
what JSON itself leaves raw (C1 controls, DEL, bidi overrides).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from crewtui.errors import CrewError
from crewtui.locations import DataDir, default_data_dir
from crewtui.text import clean, json_safe

if TYPE_CHECKING:
    from crewtui.control.client import RemoteRuntime

T = TypeVar("T")


class NonEmptyPath(click.Path):
    """A `click.Path` that refuses "": `--data-dir "$DIR"` with DIR unset must not mean the default data dir (a
    `kill --prefix … --yes` there would end another crew's sessions)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "":
            self.fail("an empty path (an unset shell variable?)", param, ctx)
        return super().convert(value, param, ctx)


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr (cleaned: it may quote what a user typed or an agent wrote), then exit `code`."""
    with contextlib.suppress(OSError):  # the terminal may have gone (a hang-up): the exit code still tells
        click.echo(f"crewtui: {clean(message)}", err=True)
    sys.exit(code)


def user_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn a CrewError (and Ctrl-C) into one line on stderr and its exit code (2) instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except CrewError as exc:
            fail(exc.message, exc.exit_code)
        except KeyboardInterrupt:
            click.echo("crewtui: interrupted", err=True)
            sys.exit(130)

    return wrapper


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def say(message: str) -> None:
    """A line for the person at the terminal, on stderr (stdout is for what a script reads)."""
    click.echo(clean(message), err=True)


def resolve_data_dir(data_dir: str | None) -> DataDir:
    return DataDir(data_dir) if data_dir else DataDir(default_data_dir())


def remote(ctx: click.Context) -> RemoteRuntime:
    """The runtime `ctl` talks to: --socket, else --data-dir, else $CREWTUI_SOCKET (an agent), else the
    default data dir."""
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


def echo_json(obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    elif isinstance(obj, list):
        obj = [o.model_dump(mode="json") if hasattr(o, "model_dump") else o for o in obj]
    echo_json_text(json.dumps(obj, indent=indent, ensure_ascii=False, sort_keys=sort_keys))


def echo_json_text(text: str) -> None:
    """JSON as written (e.g. `model_dump_json()`), with what a terminal would act on escaped (same value)."""
    click.echo(json_safe(text))


def echo(line: str) -> None:
    """A line for a person: agent and user text in it is shown, never acted on by the terminal."""
    click.echo(clean(line))
