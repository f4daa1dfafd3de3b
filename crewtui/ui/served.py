"""The dashboard served in a browser: Textual's web driver, made to end when its server goes away.

`crewtui serve` (textual-serve) runs each page's dashboard with Textual's `WebDriver`, which speaks a packet
protocol over the process's stdin and stdout pipes. Two things in it leave a dashboard running for good:

- it writes every frame with a blocking `os.write` on the event loop's thread. When the server stops reading
  (its reader task ended with the websocket, or the server itself hangs while shutting down), the pipe fills
  and the whole event loop sleeps in `write(2)`. asyncio handles SIGTERM and SIGHUP *on the loop*, and the
  kernel restarts the write after the signal, so they are never acted on: only SIGKILL ends the process;
- when the server dies, stdin reaches EOF and the input thread just returns: nothing tells the app.

`ServedDriver` writes from a thread of its own (the loop never blocks on the pipe, so signals work), treats
EOF on stdin, a broken pipe, or a server that has not read anything for `STALL` seconds as "the viewer is
gone", and then leaves the way a dropped ssh connection does: the dashboard exits, the crew keeps running.
`CrewApp.get_driver_class` swaps it in wherever Textual would use its `WebDriver`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from textual.drivers.web_driver import WebDriver

log = logging.getLogger("crewtui.ui.served")

STALL = 30.0  # the server has not taken a byte for this long: nobody is watching any more
MAX_BACKLOG = 32 * 1024 * 1024  # frames waiting for a server that does not read (about 200 full screens)
FLUSH_AT_EXIT = 2.0  # at exit, this long for the last frames and the "exit" packet to reach the server


class PipeWriter(threading.Thread):
    """Writes packets to a file descriptor in order, off the event loop; says once when the reader is gone."""

    def __init__(self, fd: int, on_gone: Callable[[str], None]) -> None:
        super().__init__(name="crewtui-web-writer", daemon=True)  # never keeps a finished process alive
        self.fd = fd
        self.on_gone = on_gone
        self._queue: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._backlog = 0
        self._busy_since: float | None = None  # when the write in progress started (None: idle)
        self._closed = False
        self._gone = False

    def put(self, data: bytes) -> None:
        reason = None
        with self._cond:
            if self._closed or self._gone:
                return
            self._queue.append(data)
            self._backlog += len(data)
            self._cond.notify()
            if self._backlog > MAX_BACKLOG:
                reason = f"the server left {self._backlog} bytes unread"
            elif self._busy_since is not None and time.monotonic() - self._busy_since > STALL:
                reason = f"the server has read nothing for {STALL:g}s"
        if reason is not None:
            self._give_up(reason)

    def _give_up(self, reason: str) -> None:
        with self._cond:
            if self._gone:
                return
            self._gone = True
            self._queue.clear()
            self._backlog = 0
            self._cond.notify_all()
        self.on_gone(reason)

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed and not self._gone:
                    self._cond.wait()
                if self._gone or not self._queue:
                    return
                data = self._queue.popleft()
                self._busy_since = time.monotonic()
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view) :]
            except OSError as exc:  # EPIPE: the server is gone
                self._give_up(f"writing to the server failed: {exc.strerror or exc}")
                return
            with self._cond:
                self._busy_since = None
                self._backlog -= len(data)
                self._cond.notify_all()

    def close(self, timeout: float) -> bool:
        """No more packets; wait at most `timeout` for the queued ones. True when all were written."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            while (self._queue or self._busy_since is not None) and not self._gone:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return not self._gone


class ServedDriver(WebDriver):
    """Textual's web driver that never blocks the event loop on its pipe and ends when the server goes."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._writer = PipeWriter(self.fileno, self._viewer_gone)
        # WebDriver sends every packet through self._write (typed as its own partial of os.write).
        self._write = self._writer.put  # type: ignore[assignment]
        self._leaving = False

    def start_application_mode(self) -> None:
        self._writer.start()
        super().start_application_mode()
        # WebDriver's own SIGTERM handler exits without saying how; ours leaves the sessions running, as a
        # dashboard in a terminal does (the handlers run on the loop, which no longer blocks on the pipe).
        leave = getattr(self._app, "leave", None)
        if leave is not None:
            for sig in (signal.SIGTERM, signal.SIGHUP):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    self._loop.add_signal_handler(sig, leave)

    def stop_application_mode(self) -> None:
        super().stop_application_mode()  # queues the "exit" packet that tells the server we are done
        if not self._writer.close(FLUSH_AT_EXIT):
            log.info("the server did not take the last frames; leaving without them")

    def run_input_thread(self) -> None:
        super().run_input_thread()
        if not self.exit_event.is_set():  # the input ended and nobody asked us to stop: stdin is closed
            self._viewer_gone("the server closed our input")

    def _viewer_gone(self, reason: str) -> None:
        """From any thread: the browser page and its server are gone, so is the reason to run."""
        if self._leaving:
            return
        self._leaving = True
        log.info("leaving: %s", reason)
        app = self._app
        leave = getattr(app, "leave", None)
        try:
            self._loop.call_soon_threadsafe(leave if leave is not None else app.exit)
        except RuntimeError:  # the loop is closed: the app has already ended
            pass


def make_server(command: str, *, host: str, port: int, title: str) -> Any:
    """textual-serve's `Server` for `crewtui serve`, ending its pages' dashboards as soon as it is stopped.

    On SIGTERM or Ctrl-C textual-serve stops listening, then waits for every open page's websocket handler to
    time out (about 25 s with a page open) before it tells that page's dashboard to quit. Here shutdown cancels
    those handlers at once: each sends its dashboard the "quit" packet on the way out and waits for it to end.
    """
    import asyncio

    from textual_serve.server import Server

    class CrewServer(Server):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: set[asyncio.Task[Any]] = set()

        async def handle_websocket(self, request: Any) -> Any:
            task = asyncio.current_task()
            if task is not None:
                self._pages.add(task)
            try:
                return await super().handle_websocket(request)
            finally:
                if task is not None:
                    self._pages.discard(task)

        async def on_shutdown(self, app: Any) -> None:
            await super().on_shutdown(app)
            for task in list(self._pages):
                task.cancel()

    return CrewServer(command, host=host, port=port, title=title)
