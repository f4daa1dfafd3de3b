"""How one notification leaves the runtime: a webhook's body in each format, its POST with retries and backoff,
and `notify-send`. The grouping, the rate limit and the timeline are notify.py's.

Agent text (labels, what a session waits for, failure reasons) travels as data, never interpreted: JSON strings,
a plain-text body, Slack's three escapes (so `<!channel>` is text, not a mention), notify-send's body markup
escaped, an argv after `--` (never a shell). Control characters are made visible before it gets here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.header import Header
from typing import Any

import aiohttp

from crewtui.clock import ClockLike
from crewtui.config import WebhookConfig
from crewtui.text import clean

log = logging.getLogger("crewtui.notify")

DESKTOP_TIMEOUT = 5.0  # notify-send talks to the session bus; a hung bus must not keep a task forever
BODY_SESSIONS = 100  # sessions listed in a JSON body (`count` says how many there were)
_URGENT = {"failed", "timed_out", "fenced", "store_full"}


@dataclass(frozen=True)
class Notice:
    """One message, as every channel sends it."""

    trigger: str  # one trigger, or several joined by "+" when held messages were merged
    title: str
    text: str
    count: int  # the happenings it tells of
    ts: float
    crew: str
    sessions: tuple[tuple[str, str], ...] = field(default=())  # (key, label) of the sessions it is about

    @property
    def triggers(self) -> list[str]:
        return self.trigger.split("+")

    @property
    def urgent(self) -> bool:
        return bool(_URGENT.intersection(self.triggers))


# ------------------------------------------------------------------------------------------ webhook bodies


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn reads <...> as links and mentions; these three are all it asks to escape.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _header_text(text: str) -> str:
    """A header value: one line, and non-ASCII as RFC 2047 encoded-words (ntfy decodes those). `Header` folds a
    long value over several lines: unfolded here, since a header value with a newline is refused."""
    line = clean(" ".join(text.split()))
    return line if line.isascii() else " ".join(Header(line, "utf-8").encode().split())


def webhook_request(hook: WebhookConfig, notice: Notice) -> tuple[bytes, dict[str, str]]:
    """The body and headers of the POST for `notice` in `hook`'s format."""
    headers: dict[str, str]
    if hook.format == "ntfy":
        # ntfy's publish API: the body is the message, the title, tags and priority are headers.
        body = notice.text.encode()
        headers = {
            "Content-Type": "text/plain; charset=utf-8",
            "Title": _header_text(notice.title),
            "Tags": ",".join(["crewtui", *notice.triggers]),
            "Priority": "high" if notice.urgent else "default",
        }
    elif hook.format == "slack":
        text = f"*{_slack_escape(notice.title)}*\n{_slack_escape(notice.text)}"
        body = json.dumps({"text": text}).encode()
        headers = {"Content-Type": "application/json"}
    else:
        data: dict[str, Any] = {
            "title": notice.title,
            "text": notice.text,
            "trigger": notice.trigger,
            "count": notice.count,
            "sessions": [{"key": key, "label": label} for key, label in notice.sessions[:BODY_SESSIONS]],
            "ts": notice.ts,
            "crew": notice.crew,
        }
        body = json.dumps(data).encode()
        headers = {"Content-Type": "application/json"}
    return body, {**headers, **hook.headers}


def _client_error(exc: BaseException, hook: WebhookConfig) -> str:
    """What went wrong, without the URL (a Slack or ntfy URL is a secret)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {hook.timeout:g}s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ClientError):
        return type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


async def post_webhook(
    http: aiohttp.ClientSession, hook: WebhookConfig, notice: Notice, clock: ClockLike, backoff: float
) -> str | None:
    """POST `notice` to `hook`, up to `hook.tries` times with exponential backoff (`backoff`, twice that, ...);
    None when it was taken (a 2xx answer), else why not."""
    body, headers = webhook_request(hook, notice)
    error = "not tried"
    for attempt in range(hook.tries):
        if attempt:
            await clock.sleep(backoff * 2 ** (attempt - 1))
        try:
            async with http.post(
                hook.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=hook.timeout),
                allow_redirects=False,
            ) as resp:
                if 200 <= resp.status < 300:
                    return None
                error = f"HTTP {resp.status}"
                if 300 <= resp.status < 400:
                    error += ": a redirect, not followed (set the webhook's url to where it points)"
                    break  # never followed (it could lead the POST anywhere), so trying again cannot help
                if 400 <= resp.status < 500 and resp.status not in (408, 425, 429):
                    break  # the request itself is wrong (a bad URL or token): trying again cannot help
        except (TimeoutError, aiohttp.ClientError) as exc:
            error = _client_error(exc, hook)
        log.info("webhook %s: try %d of %d failed: %s", hook.channel_name, attempt + 1, hook.tries, error)
    tries = attempt + 1
    return f"{error} (after {tries} {'try' if tries == 1 else 'tries'})"


# ------------------------------------------------------------------------------------------ desktop


def desktop_session(environ: Mapping[str, str]) -> bool:
    """Whether a desktop session is there to show a notification (an X or Wayland display, or a session bus)."""
    return any(environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"))


def find_notify_send(environ: Mapping[str, str]) -> str | None:
    return shutil.which("notify-send", path=environ.get("PATH"))


def _markup_escape(text: str) -> str:
    # A notification server may read the body as a subset of HTML: what an agent wrote must stay text.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


async def notify_send(notice: Notice, environ: Mapping[str, str], timeout: float = DESKTOP_TIMEOUT) -> str | None:
    """Show `notice` with `notify-send`; None when it did, else why not. Never raises but for cancellation."""
    program = find_notify_send(environ)
    if program is None:
        return "notify-send not found on PATH (install libnotify-bin)"
    argv = [program, "--app-name=crewtui", f"--urgency={'critical' if notice.urgent else 'normal'}", "--"]
    argv += [notice.title, _markup_escape(notice.text)]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=dict(environ),
            start_new_session=True,
        )
    except OSError as exc:
        return f"notify-send could not start: {exc.strerror or exc}"
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: whatever it started goes with it
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        return f"notify-send did not finish within {timeout:g}s"
    if proc.returncode != 0:
        said = clean(err.decode(errors="replace").strip())[-200:]
        return f"notify-send exited {proc.returncode}" + (f": {said}" if said else "")
    return None
