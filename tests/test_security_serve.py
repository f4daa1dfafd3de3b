"""Security of `crewtui serve`: only its own page, opened with the URL it printed, can drive a dashboard.

A real headless runtime and a real `crewtui serve` on a free localhost port; the clients are forged with
aiohttp, as a hostile web page, another local user or a DNS-rebinding page would send them. Each refused
request must answer 403 with one line, and no dashboard process may start for it. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from tests.faults.helpers import ENV, PY, Headless, await_until, proc_alive
from tests.ui.test_serve_browser import descendants, start_serve

pytestmark = pytest.mark.timeout(180)


class Serving:
    """A running `crewtui serve` and what a forged client needs to know about it."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self.proc = proc
        self.url = url  # as printed: http://localhost:PORT/?token=...
        parts = urlsplit(url)
        self.port = parts.port
        self.netloc = parts.netloc
        self.origin = f"http://{parts.netloc}"
        self.token = parse_qs(parts.query).get("token", [""])[0]

    def dashboards(self) -> set[int]:
        """The processes the server started: one dashboard per accepted websocket."""
        return {pid for pid in descendants(self.proc.pid) if proc_alive(pid)}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    root = tmp_path_factory.mktemp("serve-security")
    rt = Headless(root / "data")
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc, url = start_serve(root / "data", root / "serve.log")
        yield Serving(proc, url)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        rt.stop()


async def refused_websocket(url: str, headers: dict[str, str] | None = None, origin: str | None = None) -> int:
    """Open a websocket as a hostile page would, type into it if it opens; the handshake's HTTP status."""
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(url, origin=origin, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=5))
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        # It opened: the attack works. Show it (a key the dashboard acts on), then report the 101.
        await ws.send_str(json.dumps(["stdin", "?"]))
        await ws.close()
        return 101


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers, allow_redirects=False) as reply:
        return reply.status, await reply.text()


def one_line(body: str) -> str:
    lines = body.strip().splitlines()
    assert len(lines) == 1, body
    return lines[0]


async def assert_no_dashboard(served: Serving) -> None:
    # A dashboard, were one started, appears within a few hundred ms of the handshake; give it a second.
    await asyncio.sleep(1.0)
    assert served.dashboards() == set(), "the server started a dashboard for a refused request"


def ws_url(served: Serving, *, token: str | None) -> str:
    base = f"ws://{served.netloc}/ws?width=80&height=24"
    return base if token is None else f"{base}&token={token}"


async def test_a_websocket_from_another_origin_is_refused_even_with_the_token(served: Serving) -> None:
    assert served.token, f"the printed URL carries no token: {served.url}"
    for origin in (
        "http://evil.example",  # a page on the web the user visits
        "http://localhost:1",  # another local server (another user's, or a hostile one) on another port
        "http://127.0.0.1:1",
        "null",  # a sandboxed iframe or a file:// page
    ):
        status = await refused_websocket(ws_url(served, token=served.token), origin=origin)
        assert status == 403, (origin, status)
    status, body = await get(served.url, headers={"Origin": "http://evil.example"})
    assert status == 403 and "http://evil.example" in one_line(body), (status, body)
    await assert_no_dashboard(served)


async def test_a_missing_or_wrong_token_is_refused_with_one_line(served: Serving) -> None:
    for token in (None, "", "wrong", served.token[:-1], served.token + "x", "ä" * 43):
        status = await refused_websocket(ws_url(served, token=token), origin=served.origin)
        assert status == 403, (token, status)
    status = await refused_websocket(f"ws://{served.netloc}/ws/wrong?width=80&height=24", origin=served.origin)
    assert status == 403
    # A non-browser client sends no Origin at all: the token still decides.
    assert await refused_websocket(ws_url(served, token=None)) == 403

    for page in (f"http://{served.netloc}/", f"http://{served.netloc}/?token=wrong"):
        status, body = await get(page)
        assert status == 403, (page, status, body)
        assert "token" in one_line(body) and served.token not in body, body
    await assert_no_dashboard(served)


async def test_a_foreign_host_is_refused_against_dns_rebinding(served: Serving) -> None:
    # A rebinding page at http://rebind.example:PORT whose name now resolves to 127.0.0.1: its requests reach the
    # server with its own name as Host and Origin (here even with the token, should it have leaked).
    rebound = f"rebind.example:{served.port}"
    status = await refused_websocket(
        ws_url(served, token=served.token), headers={"Host": rebound}, origin=f"http://{rebound}"
    )
    assert status == 403
    status, body = await get(served.url, headers={"Host": rebound})
    assert status == 403 and "rebind.example" in one_line(body), (status, body)
    await assert_no_dashboard(served)


async def test_the_printed_url_its_page_and_a_script_with_the_token_drive_a_dashboard(served: Serving) -> None:
    assert served.token, f"the printed URL carries no token: {served.url}"
    # The page: from the printed URL, and from the same URL with 127.0.0.1 for localhost.
    status, page = await get(served.url)
    assert status == 200, page
    found = re.search(r'data-session-websocket-url="([^"]+)"', page)
    assert found is not None, page
    ws_from_page = found.group(1)
    assert urlsplit(ws_from_page).netloc == served.netloc, ws_from_page
    status, _ = await get(served.url.replace("localhost", "127.0.0.1"))
    assert status == 200

    # Its websocket, as the page's script opens it (it appends the size), from the page's own origin.
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{ws_from_page}?width=100&height=30", origin=served.origin)
        try:
            message = await asyncio.wait_for(ws.receive(), 30)
            assert message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), message
            await await_until(lambda: len(served.dashboards()) >= 1, 15, "a dashboard for the page")
        finally:
            await ws.close()
    await await_until(lambda: not served.dashboards(), 15, "the page's dashboard to end with its websocket")

    # A script (no browser, so no Origin) with the token in the query.
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(ws_url(served, token=served.token))
        try:
            message = await asyncio.wait_for(ws.receive(), 30)
            assert message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), message
        finally:
            await ws.close()
    await await_until(lambda: not served.dashboards(), 15, "the script's dashboard to end with its websocket")


def test_a_token_chosen_for_scripts_and_a_weak_one(tmp_path: Path) -> None:
    weak = subprocess.run(
        [PY, "-m", "crewtui", "serve", "--data-dir", str(tmp_path / "none"), "--token", "short"],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert weak.returncode == 2, weak
    assert "token" in one_line(weak.stderr) and "Traceback" not in weak.stderr, weak.stderr

    rt = Headless(tmp_path / "data")
    token = "scripted-token-0123456789abcdef"
    proc, url = start_serve(tmp_path / "data", tmp_path / "serve.log", env={**ENV, "CREWTUI_SERVE_TOKEN": token})
    try:
        assert url.endswith(f"/?token={token}"), url
        assert token not in " ".join(Path(f"/proc/{proc.pid}/cmdline").read_text().split("\0"))
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        rt.stop()
