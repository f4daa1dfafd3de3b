"""Calling the runtime from the dashboard: a failed call is one line for the user and `FAILED` for the caller.

No traceback reaches a user: a `CrewError` is shown as its own message, a verb the runtime lacks as "not
available", anything else (a bug, a broken connection) as one line, with the trace in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from crewtui.api import RuntimeAPI
from crewtui.errors import CrewError

log = logging.getLogger("crewtui.ui")

FAILED: Any = object()  # what `call_runtime` returns when the call failed (and the user was told)

Notify = Callable[..., None]  # App.notify / Widget.notify: (message, *, severity=..., timeout=...)


async def call_runtime(
    runtime: RuntimeAPI, notify: Notify, name: str, *args: Any, what: str = "", quiet: bool = False, **kwargs: Any
) -> Any:
    """Call the RuntimeAPI method `name`; on failure tell the user in one line (unless `quiet`) and return
    FAILED. `what` names the call for the user when its method name would not."""
    try:
        return await getattr(runtime, name)(*args, **kwargs)
    except CrewError as exc:
        if not quiet:
            notify(exc.message, severity="error", timeout=8)
    except (NotImplementedError, AttributeError) as exc:
        log.info("runtime lacks %s: %s", name, exc)
        if not quiet:
            notify(f"{what or name} is not available in this runtime yet", severity="warning")
    except Exception as exc:  # a bug or a broken connection: one line for the user, the trace in the log
        log.exception("runtime call %s failed", name)
        if not quiet:
            notify(f"{what or name} failed: {why_failed(exc)}", severity="error", timeout=8)
    return FAILED


def why_failed(exc: BaseException) -> str:
    """An unexpected failure in a few words: its message, or (a timeout, a reset connection: no message at all)
    what it was, so a line never ends on a colon."""
    return str(exc) or ("timed out" if isinstance(exc, TimeoutError) else type(exc).__name__)


class Failures:
    """A `notify` for a loop of calls (kill, steer or retry every marked session): it keeps the lines
    `call_runtime` would show, and `say` shows them as one, so a runtime gone away is not a toast per session."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, message: str, **_: Any) -> None:
        self.lines.append(message)

    def say(self, notify: Notify) -> None:
        """The first failure, and how many more there were; nothing when every call went through."""
        if self.lines:
            more = f" (and {len(self.lines) - 1} more failed)" if len(self.lines) > 1 else ""
            notify(self.lines[0] + more, severity="error", timeout=8)
