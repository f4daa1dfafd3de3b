"""`crewtui import ...`: make a crew file from another tool's scheduled jobs (today: OpenClaw's).

The conversion is `crewtui.config.openclaw`'s; this prints or writes its text and says on stderr what it could
not carry over. Nothing is written unless the whole input converts: bad input is one line and exit 2.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import click

from crewtui.cli.common import say, user_errors
from crewtui.errors import BadInput


@click.group("import")
def import_group() -> None:
    """Make a crew file from another tool's scheduled jobs."""


@import_group.command("openclaw")
@click.argument("file", type=click.Path(dir_okay=True, allow_dash=False))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), default=None, help="Write the crew file here.")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@user_errors
def openclaw(file: str, out: str | None, force: bool) -> None:
    """Turn OpenClaw cron jobs into a crew file (TOML, on stdout unless -o OUT).

    FILE is OpenClaw's ~/.openclaw/cron/jobs.json or the output of `openclaw automations list --all --json`.
    What crewtui cannot express (delivery channels, heartbeat wake-ups, other schedule or payload kinds) is
    listed on stderr, one "skipped: JOB: REASON" line each, and kept as comments in the file.
    """
    from crewtui.config.openclaw import convert_openclaw, read_export

    target = Path(out).expanduser() if out else None
    if target is not None and target.exists() and not force:  # checked first: nothing is read for nothing
        raise BadInput(f"{out}: already exists; use --force to overwrite it")
    conversion = convert_openclaw(read_export(file), source=Path(file).name)
    if target is None:
        click.echo(conversion.toml, nl=False)
    else:
        _write(target, conversion.toml)
    for item in conversion.unmapped:
        say(item.line())
    say(conversion.summary() + (f"; wrote {out}" if out else ""))


def _write(target: Path, text: str) -> None:
    """Write atomically (a temporary file in the same directory, then rename): never a half-written crew file."""
    if target.is_dir():
        raise BadInput(f"{target}: expected a file to write, got a directory")
    directory = target.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except FileNotFoundError:
        raise BadInput(f"{target}: no such directory {directory}") from None
    except OSError as exc:
        raise BadInput(f"{target}: cannot write here ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        mask = os.umask(0)  # mkstemp makes the file 0600; give it the mode an ordinary new file would get
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise BadInput(f"{target}: cannot write the file ({exc.strerror or exc})") from None
