"""Hosting a crew's runtime in this process, for the CLI and the dashboard alike.

- embed or attach: `open_runtime(dd, crew)` starts the data dir's runtime here (a `RuntimeHost`: lock, store,
  orchestrator and control socket) when nobody serves it, or connects to the process that does (a
  `RemoteRuntime` over its socket), like `tmux attach`;
- headless: `serve_headless(dd, crew)` is `crewtui run --headless`: the runtime alone until a signal;
- signals: `call_on_signals(callback, signals)` turns SIGHUP/SIGTERM/SIGINT into a call on the event loop;
- the log file: `log_to_file(dd)` while a dashboard owns the terminal;
- fencing: `fenced_error(...)` is what a runtime that another one took over says as it ends.

This module never imports the UI: whoever runs the dashboard composes it with `make_app`. The runtime's
modules are imported when a runtime is opened, so `crewtui ctl` (which only talks to a socket) starts quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from crewtui.errors import RuntimeUnavailable, StoreError
from crewtui.locations import DataDir, make_private

if TYPE_CHECKING:
    from crewtui.api import RuntimeAPI
    from crewtui.config import CrewConfig
    from crewtui.control.host import RuntimeHost

log = logging.getLogger("crewtui.launch")

# The terminal went away (ssh dropped) or we were asked to stop: a dashboard leaves, sessions keep running.
HANGUP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGHUP, signal.SIGTERM)
# A headless runtime stops on any of these (Ctrl-C included), leaving its sessions running.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- signals


@contextlib.contextmanager
def call_on_signals(callback: Callable[[], object], signals: Iterable[signal.Signals]) -> Iterator[None]:
    """While inside, each of `signals` calls `callback` on the running event loop (not in a signal frame, so
    it may touch the loop's objects); where a signal cannot be handled (not the main thread) it is left alone."""
    loop = asyncio.get_running_loop()
    added: list[signal.Signals] = []
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, callback)
            added.append(sig)
    try:
        yield
    finally:
        for sig in added:
            loop.remove_signal_handler(sig)


# ---------------------------------------------------------------------------------------------- log file


def log_to_file(dd: DataDir) -> None:
    """While the dashboard owns the terminal, log lines would scribble over it: send them to a file (owner-only,
    like everything the runtime writes: it names tasks and sessions)."""
    make_private()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
    handler = logging.FileHandler(dd.log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


# ---------------------------------------------------------------------------------------------- fencing


def fenced_error(fenced: str, dd: DataDir) -> StoreError:
    """The error a runtime ends with when it may not write its store any more: another runtime took its data dir
    over (the store's lease fenced it), or the store file was deleted or replaced under it."""
    if "took over" in fenced:
        return StoreError(f"{fenced}; its sessions were left to the runtime that now serves {dd.root}")
    return StoreError(f"{fenced}; its sessions were left running (a runtime on a new store leaves them alone)")


# ---------------------------------------------------------------------------------------------- embed or attach


def served_by_other(dd: DataDir) -> bool:
    """Another live process holds the data dir's lock: a runtime serves it, and we attach rather than start."""
    from crewtui.runtime.lock import DataDirLock

    return DataDirLock(dd.lock).held_by_other()


class OpenRuntime:
    """A data dir's runtime as this process sees it: embedded (`host` is ours) or attached over the socket."""

    def __init__(self, runtime: RuntimeAPI, host: RuntimeHost | None = None) -> None:
        self.runtime = runtime
        self.host = host

    @property
    def attached(self) -> bool:
        return self.host is None

    async def stop(self, kill_sessions: bool) -> None:
        """Stop an embedded runtime (killing its sessions, or leaving them for the next start); attached, a
        no-op: the runtime belongs to another process."""
        if self.host is not None:
            await self.host.stop(kill_sessions=kill_sessions)

    @contextlib.contextmanager
    def call_when_stopped(self, callback: Callable[[], object]) -> Iterator[None]:
        """While inside, `callback` runs if the embedded runtime stops on its own (another runtime took the data
        dir over), so whatever shows it can end with it."""
        if self.host is None:
            yield
            return
        stopped = self.host.stopped

        async def watch() -> None:
            await stopped.wait()
            callback()

        watcher = asyncio.ensure_future(watch())
        try:
            yield
        finally:
            watcher.cancel()


@contextlib.asynccontextmanager
async def open_runtime(dd: DataDir, crew: CrewConfig) -> AsyncIterator[OpenRuntime]:
    """The runtime of `dd`: attached when another process serves it, else started here with `crew` and stopped
    on the way out (its sessions left running unless `stop(kill_sessions=True)` ran first). A runtime fenced
    off meanwhile ends this with `fenced_error`."""
    dd.ensure()
    if served_by_other(dd):
        from crewtui.control.client import RemoteRuntime

        remote = RemoteRuntime(dd.socket, dd.root)
        if not await remote.ping():
            raise RuntimeUnavailable(
                f"a crewtui runtime holds {dd.root} but does not answer on {dd.socket}; try again in a moment"
            )
        yield OpenRuntime(remote)
        return
    from crewtui.control.host import RuntimeHost

    host = RuntimeHost(dd, crew)
    orch = await host.start()
    try:
        yield OpenRuntime(orch, host)
    finally:
        await host.stop(kill_sessions=False)  # a no-op when the runtime was already stopped
    if host.fenced is not None:
        raise fenced_error(host.fenced, dd)


# ---------------------------------------------------------------------------------------------- headless


async def serve_headless(dd: DataDir, crew: CrewConfig, *, say: Callable[[str], None] = _stderr) -> None:
    """`crewtui run --headless`: serve the data dir until a signal (or until fenced), then stop and leave the
    sessions running for the next start. `say` gets the lines meant for the person who started it."""
    from crewtui.control.host import RuntimeHost

    host = RuntimeHost(dd, crew)
    orch = await host.start()
    stop = asyncio.Event()
    with call_on_signals(stop.set, STOP_SIGNALS):
        live = sum(1 for s in orch.sessions.values() if s.state.live)
        say(
            f"crewtui runtime pid {os.getpid()} serving {dd.root} (crew {crew.crew.name}, {live} live sessions); "
            f"socket {dd.socket}. Ctrl-C stops it and leaves sessions running."
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
        raise fenced_error(host.fenced, dd)
    say("crewtui runtime stopped; sessions left running for the next start")
