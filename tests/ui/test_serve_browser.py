"""`crewtui serve` in a real browser: Debian's headless Chromium, driven by Playwright, shows the session list.

A headless runtime with a few sessions, `crewtui serve` on a free localhost port, and Chromium on its page:
the page's terminal must show the sessions grouped by label. Then the ways a page's dashboard ends: the page
closes, its server is stopped (SIGTERM), or its server is killed (kill -9). Afterwards no process that the
test started is left (runtime, servers, dashboards, sessions, Chromium, Playwright's driver).

textual-serve draws with xterm.js, which paints on a canvas (WebGL, or 2D without a GPU) that has no text to
read. An init script makes canvases unavailable to the page, so xterm.js falls back to its DOM renderer, whose
rows (`.xterm-rows`) hold the screen as text.

Skipped, saying why, only when /usr/bin/chromium (`scripts/install-debian.sh`) or the `playwright` package
(the `browser` extra, part of `test`) is missing. Set CREWTUI_SCREENSHOT_DIR to keep a PNG of the page.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.conftest import SLEEPER
from tests.faults.helpers import ENV, PY, Headless, proc_alive, wait_until

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # the `browser` extra is not installed
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: scripts/install-debian.sh installs Debian's chromium"
    ),
    pytest.mark.skipif(
        sync_playwright is None, reason="the playwright package is missing: pip install -e '.[browser]' (or '.[test]')"
    ),
]

# What works for Debian's chromium here, as root, with no network but localhost. Playwright adds --headless and
# the profile (--user-data-dir, a fresh one under the test's tmp dir).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# No canvas for the page: xterm.js's WebGL and canvas renderers fail (it catches that) and its DOM renderer,
# which writes the screen into `.xterm-rows` as text, takes over.
DOM_RENDERER = """(() => {
  const original = HTMLCanvasElement.prototype.getContext;
  HTMLCanvasElement.prototype.getContext = function (type, ...rest) {
    if (type === "webgl2" || type === "webgl" || type === "2d") return null;
    return original.call(this, type, ...rest);
  };
})();"""

SHOWS_ALL = """names => {
  const rows = document.querySelector(".xterm-rows");
  return !!rows && names.every(name => rows.innerText.includes(name));
}"""

LABELS = ["browser-scout-alpha", "browser-scout-beta", "solo-writer-gamma"]
# The session tree groups the first two under `browser-scout` (rows `alpha`, `beta`); the third stands alone.
SHOWN = ["Sessions 3", "browser-scout", "alpha", "beta", "solo-writer-gamma", "attached to pid"]


def ctl(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "crewtui", "ctl", "--data-dir", str(data), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cmdlines() -> Iterator[tuple[int, list[str]]]:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if raw and proc_alive(int(entry)):
            yield int(entry), raw.decode(errors="replace").split("\0")[:-1]


def dashboards(data: Path) -> list[int]:
    """The attached dashboards textual-serve started for pages: `python -m crewtui --data-dir DATA`."""
    return [pid for pid, argv in cmdlines() if argv[1:] == ["-m", "crewtui", "--data-dir", str(data)]]


def started_under(root: Path) -> list[tuple[int, list[str]]]:
    """Live processes naming `root` on their command line: runtime, server, dashboards, session shims, Chromium."""
    return [(pid, argv) for pid, argv in cmdlines() if any(str(root) in arg for arg in argv)]


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rpartition(b") ")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out and proc_alive(child):
                out.add(child)
                todo.append(child)
    return out


def wait_serving(url: str, serve: subprocess.Popen[Any], timeout: float = 30) -> None:
    def up() -> bool:
        assert serve.poll() is None, f"crewtui serve exited {serve.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    wait_until(up, timeout, f"crewtui serve to answer on {url}", interval=0.1)


def open_dashboard(context: Any, url: str, shown: list[str] = SHOWN) -> Any:
    """A page on `url`, past textual-serve's splash (its Start button, when it shows one), showing `shown`."""
    page = context.new_page()
    page.add_init_script(DOM_RENDERER)
    page.goto(url)
    page.wait_for_function(
        "() => document.body.classList.contains('-first-byte') || "
        "getComputedStyle(document.querySelector('#start')).display !== 'none'",
        timeout=30_000,
    )
    start = page.locator("#start")
    if start.is_visible():
        start.click()
    page.wait_for_function(SHOWS_ALL, arg=shown, timeout=30_000)
    return page


def printed_url(log: Path, port: int) -> str | None:
    """The URL `crewtui serve` printed for a person to open (the last one naming `port`), if it did yet."""
    found = re.findall(rf"http://[^\s]*:{port}/[^\s]*", log.read_text(errors="replace"))
    return found[-1] if found else None


def start_serve(data: Path, log: Path, *args: str, env: dict[str, str] = ENV) -> tuple[subprocess.Popen[bytes], str]:
    """`crewtui serve` on a free localhost port, and the URL it printed (the one a person pastes)."""
    port = free_port()
    with open(log, "ab") as out:
        serve = subprocess.Popen(
            [PY, "-m", "crewtui", "serve", "--port", str(port), "--data-dir", str(data), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def url() -> str | None:
        assert serve.poll() is None, f"crewtui serve exited {serve.returncode}: {log.read_text(errors='replace')}"
        return printed_url(log, port)

    printed: str = wait_until(url, 30, "crewtui serve to print its URL", interval=0.1)
    wait_serving(printed, serve)
    return serve, printed


def launch_chromium(pw: Any, tmp_path: Path) -> Any:
    """Debian's chromium, headless, on a fresh profile, reaching nothing but this machine."""
    context = pw.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 800},
    )
    # Only this machine: the page also names a web font, which must not be fetched from anywhere.
    context.route(
        "**/*",
        lambda route: (
            route.continue_()
            if urlparse(route.request.url).hostname in ("localhost", "127.0.0.1", "::1")
            else route.abort()
        ),
    )
    return context


def test_crewtui_serve_shows_the_session_list_in_headless_chromium_and_leaves_no_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    before = descendants(os.getpid())
    rt = Headless(data)
    servers: list[subprocess.Popen[bytes]] = []
    agents: list[int] = []
    try:
        for label in LABELS:
            p = ctl(data, "spawn", "--label", label, "--json", "--", PY, "-c", SLEEPER)
            assert p.returncode == 0, p.stderr
        wait_until(
            lambda: all(
                s["state"] == "running" and s["agent_pid"] for s in json.loads(ctl(data, "list", "--json").stdout)
            ),
            30,
            "the sessions to run",
        )
        agents = [s["agent_pid"] for s in json.loads(ctl(data, "list", "--json").stdout)]

        assert sync_playwright is not None
        with sync_playwright() as pw:
            context = launch_chromium(pw, tmp_path)
            try:
                serve, url = start_serve(data, tmp_path / "serve.log")
                servers.append(serve)
                page = open_dashboard(context, url)
                text = page.inner_text(".xterm-rows")
                for name in SHOWN:
                    assert name in text, (name, text)
                if os.environ.get("CREWTUI_SCREENSHOT_DIR"):
                    page.screenshot(path=str(Path(os.environ["CREWTUI_SCREENSHOT_DIR"]) / "serve-browser.png"))
                wait_until(lambda: len(dashboards(data)) == 1, 10, "one dashboard for the page")
                first = dashboards(data)[0]

                # A second page gets a dashboard of its own; closing the first page ends the first one.
                open_dashboard(context, url)
                wait_until(lambda: len(dashboards(data)) == 2, 10, "a second dashboard for the second page")
                page.close()
                wait_until(
                    lambda: dashboards(data) and first not in dashboards(data),
                    15,
                    "the closed page's dashboard to exit",
                )

                # SIGTERM to the server with a page open: the page's dashboard ends, then the server.
                serve.send_signal(signal.SIGTERM)
                wait_until(lambda: not dashboards(data), 10, "the dashboard of a page whose server was stopped to exit")
                assert serve.wait(timeout=15) == 0

                # kill -9 of a server under a connected page: its dashboard must not outlive it.
                serve, url = start_serve(data, tmp_path / "serve.log")
                servers.append(serve)
                open_dashboard(context, url)
                wait_until(lambda: len(dashboards(data)) == 1, 10, "a dashboard for the page of the second server")
                serve.send_signal(signal.SIGKILL)
                serve.wait(timeout=10)
                wait_until(lambda: not dashboards(data), 10, "the dashboard of a page whose server was killed to exit")
            finally:
                context.close()

        # The crew never noticed: every session still runs.
        sessions = json.loads(ctl(data, "list", "--json").stdout)
        assert sorted(s["label"] for s in sessions if s["state"] == "running") == sorted(LABELS)
    finally:
        for serve in servers:
            if serve.poll() is None:
                serve.kill()
                serve.wait(timeout=10)
        for pid in dashboards(data):
            os.kill(pid, signal.SIGKILL)
        for s in json.loads(ctl(data, "list", "--json").stdout or "[]"):
            if s["state"] in ("running", "pending", "yielded"):
                ctl(data, "kill", s["key"], "--yes")
        rt.stop()

    # Nothing the test started is left: no process naming its tmp dir (runtime, servers, dashboards, session
    # shims, Chromium and its helpers), no session agent, no child of this process (Playwright's driver).
    wait_until(lambda: not started_under(tmp_path), 15, "every process naming the test's tmp dir to end")
    wait_until(lambda: not any(proc_alive(pid) for pid in agents), 15, "the session agents to end")
    wait_until(lambda: not (descendants(os.getpid()) - before), 15, "this test's child processes to end")


# A page of another origin (another port on 127.0.0.1: another user's server, or any page the user visits)
# opens the dashboard's websocket and types into it. `opened` means the attack reached a dashboard.
DRIVE_FROM_ELSEWHERE = """async ([urls, keys]) => {
  const attempt = url => new Promise(resolve => {
    let opened = false;
    const ws = new WebSocket(url);
    ws.onopen = () => {
      opened = true;
      for (const key of keys) ws.send(JSON.stringify(["stdin", key]));
    };
    ws.onclose = () => resolve(opened ? "opened" : "refused");
    setTimeout(() => resolve(opened ? "opened" : "no answer"), 15000);
  });
  const out = [];
  for (const url of urls) out.push(await attempt(url));
  return out;
}"""


class ElsewherePage(http.server.BaseHTTPRequestHandler):
    """A tiny web server on another port of 127.0.0.1 with one harmless-looking page."""

    def do_GET(self) -> None:
        body = b"<!DOCTYPE html><html><body><p>nothing to see here</p></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_page_from_another_origin_cannot_drive_the_dashboard(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rt = Headless(data)
    elsewhere = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ElsewherePage)
    threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
    serve: subprocess.Popen[bytes] | None = None
    try:
        p = ctl(data, "spawn", "--label", "victim", "--json", "--", PY, "-c", SLEEPER)
        assert p.returncode == 0, p.stderr
        wait_until(
            lambda: [s["state"] for s in json.loads(ctl(data, "list", "--json").stdout)] == ["running"],
            30,
            "the session to run",
        )
        assert sync_playwright is not None
        with sync_playwright() as pw:
            context = launch_chromium(pw, tmp_path)
            try:
                serve, url = start_serve(data, tmp_path / "serve.log")
                port = urlparse(url).port
                # The user's own page, from the printed URL, works; its websocket URL is what a thief would want.
                own = open_dashboard(context, url, ["victim", "attached to pid"])
                own_ws = own.eval_on_selector("#terminal", "e => e.dataset.sessionWebsocketUrl")
                wait_until(lambda: len(dashboards(data)) == 1, 10, "one dashboard for the user's page")
                token = parse_qs(urlparse(url).query).get("token", [""])[0]

                page = context.new_page()
                page.goto(f"http://127.0.0.1:{elsewhere.server_address[1]}/")
                size = "width=80&height=24"
                urls = [
                    f"ws://localhost:{port}/ws?{size}",  # knows only the port
                    f"ws://127.0.0.1:{port}/ws?{size}",
                    f"ws://localhost:{port}/ws?token={token}&{size}",  # even with the token, had it leaked
                    f"{own_ws}?{size}",
                ]
                # Keys that would ask to kill the selected session and confirm it.
                outcome = page.evaluate(DRIVE_FROM_ELSEWHERE, [urls, ["k", "\r", "y"]])
                assert outcome == ["refused"] * len(urls), dict(zip(urls, outcome))
                assert len(dashboards(data)) == 1, "a dashboard was started for the other origin's page"
                page.close()
                own.close()
            finally:
                context.close()
        sessions = json.loads(ctl(data, "list", "--json").stdout)
        assert [(s["label"], s["state"]) for s in sessions] == [("victim", "running")], sessions
    finally:
        elsewhere.shutdown()
        elsewhere.server_close()
        if serve is not None and serve.poll() is None:
            serve.terminate()
            try:
                serve.wait(timeout=15)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()
        for pid in dashboards(data):
            os.kill(pid, signal.SIGKILL)
        for s in json.loads(ctl(data, "list", "--json").stdout or "[]"):
            if s["state"] in ("running", "pending", "yielded"):
                ctl(data, "kill", s["key"], "--yes")
        rt.stop()
