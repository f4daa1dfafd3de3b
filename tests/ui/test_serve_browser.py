"""`crewtui serve` in a real browser: Debian's headless Chromium, driven by Playwright, shows the session list.

A headless runtime with a few sessions, `crewtui serve` on a free localhost port, and Chromium on its page:
the page's terminal must show the sessions grouped by label. Then the ways a page's dashboard ends: the page
closes, its server is stopped (SIGTERM), or its server is killed (kill -9). Afterwards no process that the
test started is left (runtime, servers, dashboards, sessions, Chromium, Playwright's driver).

textual-serve draws with xterm.js, which paints on a canvas (WebGL, or 2D without a GPU) that has no text to
read. An init script makes canvases unavailable to the page, so xterm.js falls back to its DOM renderer, whose
rows (`.xterm-rows`) hold the screen as text.

Skipped, saying why, only when /usr/bin/chromium (`scripts/install-browser.sh`) or the `playwright` package
(the `browser` extra, part of `test`) is missing. Set CREWTUI_SCREENSHOT_DIR to keep a PNG of the page.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

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
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: scripts/install-browser.sh installs Debian's chromium"
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


def open_dashboard(context: Any, url: str) -> Any:
    """A page on `url`, past textual-serve's splash (its Start button, when it shows one), showing SHOWN."""
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
    page.wait_for_function(SHOWS_ALL, arg=SHOWN, timeout=30_000)
    return page


def start_serve(data: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://localhost:{port}/"
    with open(log, "ab") as out:
        serve = subprocess.Popen(
            [PY, "-m", "crewtui", "serve", "--port", str(port), "--data-dir", str(data)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ENV,
        )
    wait_serving(url, serve)
    return serve, url


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
            context = pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 800},
            )
            try:
                # Only this machine: the page also names a web font, which must not be fetched from anywhere.
                context.route(
                    "**/*",
                    lambda route: (
                        route.continue_()
                        if urlparse(route.request.url).hostname in ("localhost", "127.0.0.1", "::1")
                        else route.abort()
                    ),
                )
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
