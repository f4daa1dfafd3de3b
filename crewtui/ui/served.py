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

textual-serve itself answers anyone: any web page the user visits (or another local user) could open its
websocket and type into a dashboard. `make_server` puts a `Gate` in front of it: a request must name this
machine (Host, against DNS rebinding), come from the server's own page (Origin) and carry the token that
`crewtui serve` prints in its URL; anything else gets a one-line 403 and starts no dashboard.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from textual.drivers.web_driver import WebDriver

from crewtui.errors import BadInput, CrewError

if TYPE_CHECKING:
    from aiohttp import web

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

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


# --- who may use a served dashboard -----------------------------------------------------------------------

TOKEN_BYTES = 32  # secrets.token_urlsafe: 43 characters
MIN_TOKEN = 16
URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")  # unreserved in a URL: the printed URL pastes as it is
WILDCARDS = ("", "0.0.0.0", "::")
PUBLIC = "/static/"  # textual-serve's own scripts, styles and fonts: the same for everyone, no token needed


def new_token() -> str:
    """The secret of one `crewtui serve`: the pages and the websocket answer only a request that carries it."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def check_token(token: str) -> str:
    """A token chosen by the user (`--token`, for scripts): long enough to guess never, and pasteable as it is."""
    if len(token) < MIN_TOKEN or not URL_SAFE.fullmatch(token):
        raise BadInput(
            f"the serve token must be at least {MIN_TOKEN} characters of A-Z a-z 0-9 . _ ~ - "
            "(leave out --token and CREWTUI_SERVE_TOKEN for a random one)"
        )
    return token


def is_loopback(host: str) -> bool:
    """Whether listening on `host` keeps the server to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def page_url(host: str, port: int, token: str) -> str:
    """The URL a person opens: the dashboard's page with the token (a wildcard address names this machine)."""
    name = socket.gethostname() if host in WILDCARDS else host
    if ":" in name:
        name = f"[{name}]"
    return f"http://{name}:{port}/?token={token}"


def _authority(text: str) -> tuple[str, int | None] | None:
    """`name[:port]` of a Host header as (lowercased name without brackets, port); None when it is not one."""
    try:
        parts = urlsplit("//" + text)
        name, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not name or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return name, port


class Gate:
    """Who may use `crewtui serve`: a request by one of this machine's names, from this server's own page (or
    from no page at all: a script), carrying the token. Pure: the server's middleware asks it about each
    request.

    - Host: a DNS-rebinding page (its name, made to resolve to 127.0.0.1) reaches the server with its own name as
      Host, so only `localhost`, an IP address, and for another `--host` that name and this machine's name pass
      (an IP address cannot be rebound). The port is not checked: `ssh -L 9000:localhost:8000` must work.
    - Origin: a browser names the page behind every websocket (and every cross-origin request); only a page of
      this very scheme, host and port passes: another site, another port of localhost, `null` (a sandboxed
      frame, a file) do not.
    - the token: a page of another origin can neither read the printed URL nor the page that holds it.
    """

    def __init__(self, token: str, host: str) -> None:
        self.token = token
        self._secret = token.encode()
        self.names = {"localhost"}
        if not is_loopback(host):
            self.names |= {host.lower().strip("[]"), socket.gethostname().lower()} - {""}

    def _known(self, name: str) -> bool:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return name in self.names
        return True

    def refusal(
        self, *, host: str | None, origin: str | None, token: str | None, scheme: str = "http", needs_token: bool = True
    ) -> str | None:
        """Why this request is refused (one line, never the token), or None when it may go on."""
        if not host:
            return "it names no Host"
        own = _authority(host)
        if own is None:
            return f"its Host {host!r} is not an address of this server"
        default = 443 if scheme == "https" else 80
        name, port = own[0], own[1] or default
        if not self._known(name):
            return f"its Host {host!r} is not a name of this server (a page whose DNS name now points here?)"
        if origin is not None:
            try:
                page = urlsplit(origin)
                same = (page.scheme, page.hostname, page.port or default) == (scheme, name, port)
            except ValueError:
                same = False
            if not same:
                return f"it comes from a page of {origin!r}, not from this server's own page"
        if needs_token:
            if not token:
                return "it carries no token: open the URL `crewtui serve` printed (it ends in /?token=...)"
            if not hmac.compare_digest(token.encode(errors="replace"), self._secret):
                return "its token is wrong: open the URL `crewtui serve` printed (it ends in /?token=...)"
        return None

    def redact(self, text: str) -> str:
        return text.replace(self.token, "<token>")


class _Redact(logging.Filter):
    """Keeps the token out of aiohttp's access log (the websocket's path carries it)."""

    def __init__(self, gate: Gate) -> None:
        super().__init__()
        self.gate = gate

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.gate.redact(record.getMessage()), ()
        return True


def make_server(command: str, *, host: str, port: int, title: str, token: str) -> Any:
    """textual-serve's `Server` for `crewtui serve`: it answers only its own page (see `Gate`), and ends its pages'
    dashboards as soon as it is stopped.

    The gate is a middleware, first in line, so nothing of textual-serve's runs for a refused request (no
    dashboard is started). The page's websocket URL carries the token in its path (`/ws/TOKEN`: textual's script
    appends `?width=..` to it); scripts may also use `/ws?token=TOKEN&width=..`.

    On SIGTERM or Ctrl-C textual-serve stops listening, then waits for every open page's websocket handler to
    time out (about 25 s with a page open) before it tells that page's dashboard to quit. Here shutdown cancels
    those handlers at once: each sends its dashboard the "quit" packet on the way out and waits for it to end.
    """
    import asyncio

    import aiohttp_jinja2
    from aiohttp import web
    from textual_serve.server import Server, to_int

    gate = Gate(token, host)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        reason = gate.refusal(
            host=request.headers.get("Host"),
            origin=request.headers.get("Origin"),
            token=request.match_info.get("token") or request.query.get("token"),
            scheme=request.scheme,
            needs_token=not request.path.startswith(PUBLIC),
        )
        if reason is not None:
            log.warning("refused %s %s from %s: %s", request.method, gate.redact(request.path), request.remote, reason)
            return web.Response(status=403, text=f"crewtui serve refused this request: {reason}\n")
        response = await handler(request)
        if not response.prepared:  # a websocket is already under way; every other answer is not sent yet
            response.headers.setdefault("Referrer-Policy", "no-referrer")  # the page's URL holds the token
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    class CrewServer(Server):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: set[asyncio.Task[Any]] = set()

        def initialize_logging(self) -> None:
            super().initialize_logging()
            logging.getLogger("aiohttp.access").addFilter(_Redact(gate))

        async def _make_app(self) -> web.Application:
            app: web.Application = await super()._make_app()
            app.middlewares.insert(0, guard)
            app.router.add_get("/ws/{token}", self.handle_websocket, name="websocket-token")
            return app

        async def on_startup(self, app: web.Application) -> None:
            # Fail closed should a textual-serve release build its app some other way. textual-serve's banner is
            # not shown: the URL it names lacks the token (the command printed the one to open).
            if guard not in app.middlewares:
                raise CrewError("serve: this textual-serve bypasses the token check; not serving")

        async def handle_index(self, request: web.Request) -> web.StreamResponse:
            # textual-serve's page and context, with its URLs on the Host the page was asked by (checked by the
            # gate: 127.0.0.1 or an ssh -L port work as well as the printed URL) and the token in the websocket's.
            base = request.headers["Host"]
            context = {
                "font_size": to_int(request.query.get("fontsize", "16"), 16),
                "app_websocket_url": f"{'wss' if request.secure else 'ws'}://{base}/ws/{gate.token}",
                "config": {"static": {"url": f"{request.scheme}://{base}{PUBLIC}"}},
                "application": {"name": self.title},
            }
            response = aiohttp_jinja2.render_template("app_index.html", request, context)
            response.headers["Cache-Control"] = "no-store"
            return response

        async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
            task = asyncio.current_task()
            if task is not None:
                self._pages.add(task)
            try:
                return await super().handle_websocket(request)
            finally:
                if task is not None:
                    self._pages.discard(task)

        async def on_shutdown(self, app: web.Application) -> None:
            await super().on_shutdown(app)
            for task in list(self._pages):
                task.cancel()

    return CrewServer(command, host=host, port=port, title=title)
