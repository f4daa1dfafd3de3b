"""What an attacker or a careless task could reach, and what stops them.

- Tasks, steers and labels: text is data, never code or a path (argv elements, stdin lines, generated keys).
- Files and sockets: owner-only, whatever the umask; the socket's short twin dir cannot be taken over.
- `crewtui serve`: only its own page, opened with the URL it printed, can drive a dashboard (forged clients
  with aiohttp, as a hostile web page, another local user or a DNS-rebinding page would send them; nothing
  leaves 127.0.0.1).
- Agent and user text is shown, never interpreted: no terminal escape from an agent reaches the user's terminal
  (the dashboard and `crewtui ctl`), no label, pattern or name is read as markup, and no filter can freeze the UI.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from textual.widgets import Input, Static

from crewtui.control.client import RemoteRuntime
from crewtui.errors import BadInput, ConfigError, NotFound
from crewtui.locations import DataDir, socket_connect_path
from crewtui.model import SessionState, SpawnRequest
from crewtui.runtime.orchestrator import Orchestrator
from crewtui.ui.app import CrewApp, make_app
from crewtui.ui.screens.spawn import SpawnScreen
from tests.conftest import ECHO_AGENT, PY, SLEEPER, crew_from, py, wait_for
from tests.faults.helpers import (
    ENV,
    Dashboard,
    Headless,
    await_until,
    call,
    kill_leftover_sessions,
    proc_alive,
    run_as_nobody,
    wait_until,
)
from tests.test_ctl import Runtime
from tests.ui.conftest import recording
from tests.ui.test_keys import SIZE, ready, select
from tests.ui.test_serve_browser import descendants, start_serve

# An agent that reports exactly the argv it received, and nothing else.
SHOW_ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"


def hostile(canary: Path) -> list[str]:
    """Texts a shell would act on; each must arrive as data, and `canary` must never be created."""
    c = str(canary)
    return [
        f"$(touch {c})",
        f"`touch {c}`",
        f"; touch {c}",
        f"x && touch {c} || touch {c}",
        f"| touch {c} > {c} < /dev/null &",
        f"'$(touch {c})' \"`touch {c}`\" \\ \\\\",
        f"line one\ntouch {c}\nline three",
        f"*?[a-z] ~root {{a,b}} $HOME ${{IFS}}touch${{IFS}}{c} %s %n",
        "--help",
        "-c",
        "=x",
        "",
        "é ✓ \u202e right-to-left \x1b[2J \t tabs",
    ]


async def test_the_task_reaches_the_agent_verbatim_as_one_argv_element(make_orch, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    agent = json.dumps([PY, "-c", SHOW_ARGV, "--task", "{task}", "--label", "{label}"])
    orch = await make_orch(crew_from(f"[crew]\nname = 'sec'\n[agents.show]\ncommand = {agent}\n"))
    with pytest.raises(BadInput, match="NUL"):
        await orch.spawn(SpawnRequest(label="nul", agent="show", task="a\0b"))
    for i, task in enumerate(hostile(canary)):
        s = await orch.spawn(SpawnRequest(label=f"task-{i}", agent="show", task=task))
        done = await orch.wait_ended(s.key, timeout=20)
        assert done.state == SessionState.DONE, (task, done.reason)
        assert done.result == ["--task", task, "--label", f"task-{i}"], task
        # A raw argv is passed as is too, every element in its own slot.
        raw = await orch.spawn(SpawnRequest(label=f"argv-{i}", argv=[PY, "-c", SHOW_ARGV, task, task]))
        assert (await orch.wait_ended(raw.key, timeout=20)).result == [task, task]
    assert not canary.exists()


def test_ctl_and_crew_agents_pass_the_task_through_the_cli_and_socket_unchanged(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    crew = tmp_path / "crew.toml"
    crew.write_text(f"[crew]\nname = 'sec'\n[agents.show]\ncommand = {json.dumps([PY, '-c', SHOW_ARGV, '{task}'])}\n")
    d = tmp_path / "data"
    h = Headless(d, crew)
    try:
        tasks = [t for t in hostile(canary) if t and not t.startswith("-")]
        keys = []
        for i, task in enumerate(tasks):
            p = subprocess.run(
                [
                    PY,
                    "-m",
                    "crewtui",
                    "ctl",
                    "--data-dir",
                    str(d),
                    "spawn",
                    "--label",
                    f"cli-{i}",
                    "--agent",
                    "show",
                    "--task",
                    task,
                    "--json",
                ],
                capture_output=True,
                text=True,
                env=ENV,
                timeout=60,
            )
            assert p.returncode == 0, p.stderr
            keys.append(json.loads(p.stdout)["key"])
        for key, task in zip(keys, tasks):
            out = d / "sessions" / key / "stdout.log"
            deadline_ok = _wait_file_line(out)
            assert deadline_ok and json.loads(out.read_text().splitlines()[0]) == [task], (task, out.read_text())
        assert not canary.exists()
    finally:
        h.stop()


def _wait_file_line(path: Path, timeout: float = 20.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return True
        time.sleep(0.02)
    return False


def _cmdline(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


async def test_steer_text_only_ever_arrives_on_stdin(make_orch, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    orch = await make_orch()
    s = await orch.spawn(SpawnRequest(label="steered", argv=[PY, "-c", ECHO_AGENT]))
    # Once it speaks the agent is itself (the shim starts it through `env`, which execs it a moment later).
    await wait_for(lambda: orch.sessions[s.key].last_line == "ready", what="the agent")
    argv_before = _cmdline(s.agent_pid)  # type: ignore[arg-type]
    sent = [t for t in hostile(canary) if t and "\n" not in t and "\0" not in t]
    for text in sent:
        await orch.send(s.key, text)
    # Text that would add a line (a forged second message) or a NUL is refused whole, nothing is written.
    for bad in (f"ok\ntouch {canary}", "ok\r\nmore", "nul\0byte", "x" * (64 * 1024 + 1)):
        with pytest.raises(BadInput) as info:
            await orch.send(s.key, bad)
        assert "\n" not in str(info.value)
    await orch.send(s.key, "quit")
    done = await orch.wait_ended(s.key, timeout=20)
    assert done.result == {"steered": sent}
    assert argv_before == [PY.encode(), b"-c", ECHO_AGENT.encode(), b""]
    assert not canary.exists()


# ------------------------------------------------------------------------------------------ paths


ESCAPES = [
    "../x",
    "../../etc/passwd",
    "a/b",
    "/abs",
    "..",
    ".",
    ".hidden",
    "x/../../y",
    "a\\b",
    "a\0b",
    "~root",
    "A",
    "x" * 129,
    "",
]


@pytest.mark.parametrize("label", ESCAPES)
async def test_labels_that_could_be_paths_are_refused(orch, label: str) -> None:
    with pytest.raises(BadInput, match="invalid label"):
        await orch.spawn(SpawnRequest(label=label, argv=["true"]))
    assert orch.sessions == {}
    assert list(orch.data_dir.sessions_root.iterdir()) == []


async def test_output_dirs_are_generated_keys_inside_the_data_dir(orch) -> None:
    s = await orch.spawn(SpawnRequest(label="plain", argv=["true"]))
    d = Path(s.output_dir)  # type: ignore[arg-type]
    assert d.parent == orch.data_dir.sessions_root and d.name == s.key
    assert s.key.startswith("s-") and s.key[2:].isalnum() and s.key.islower()
    # A client cannot choose the key (or anything not in the request model) ...
    with pytest.raises(ValueError, match="key"):
        SpawnRequest.model_validate({"label": "k", "argv": ["true"], "key": "../../escape"})
    # ... and references that look like paths are just unknown names.
    for ref in ("../../etc/passwd", "/etc/passwd", ".."):
        with pytest.raises(NotFound):
            await orch.history(ref)


def test_cron_items_cannot_smuggle_paths_into_labels() -> None:
    text = textwrap.dedent(
        """
        [agents.w]
        command = ["true"]
        [[cron]]
        name = "j"
        schedule = { kind = "every", every = "1h" }
        spawn = { agent = "w", label = "job-{item}", items = ["ok", "../../etc"] }
        """
    )
    with pytest.raises(ConfigError, match=r"cron\[0\]\.spawn\.label: .*renders to 'job-\.\./\.\./etc'"):
        crew_from(text)


# ------------------------------------------------------------------------------------------ permissions


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_socket_store_lock_and_dirs_are_owner_only(tmp_path: Path) -> None:
    d = tmp_path / "fresh" / "data"
    h = Headless(d)
    try:
        s = call(h.dd.socket, "spawn", label="perm", argv=[PY, "-c", ECHO_AGENT])["result"]
        dd = DataDir(d)
        assert mode(d) == 0o700 and mode(dd.sessions_root) == 0o700
        assert mode(Path(socket_connect_path(dd.socket))) == 0o600
        assert mode(dd.store) == 0o600 and mode(dd.lock) == 0o600
        for side in ("-wal", "-shm"):  # SQLite gives its side files the database file's mode
            p = dd.store.with_name(dd.store.name + side)
            if p.exists():
                assert mode(p) & 0o077 == 0, (p, oct(mode(p)))
        sd = dd.session_dir(s["key"])
        assert mode(sd) == 0o700 and mode(sd / "stdin.fifo") == 0o600
    finally:
        call(h.dd.socket, "kill", ref="perm")
        h.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
@pytest.mark.parametrize("open_dir", [False, True], ids=["private-dir", "world-readable-dir"])
def test_another_user_cannot_use_the_control_socket(tmp_path: Path, open_dir: bool) -> None:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="crewtui-sec-"))
    base.chmod(0o755)
    d = base / "data"
    h = Headless(d)
    try:
        if open_dir:
            d.chmod(0o755)  # even when the dir can be entered, the socket's own mode (0600) keeps others out
        sock = Path(socket_connect_path(DataDir(d).socket))

        def raw_connect() -> int:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(sock))
            except PermissionError:
                print("refused")
                return 0
            s.sendall(b'{"op": "list"}\n')
            print("connected:", s.recv(100))
            return 1

        code, out = run_as_nobody(raw_connect)
        assert (code, out.strip()) == (0, "refused")

        def via_client() -> int:
            import asyncio

            try:
                asyncio.run(RemoteRuntime(DataDir(d).socket, d).list())
            except Exception as exc:
                print(f"{type(exc).__name__}: {exc}")
                return 0
            return 1

        code, out = run_as_nobody(via_client)
        assert code == 0 and out.strip().startswith("RuntimeUnavailable: "), out
        assert "\n" not in out.strip()
        assert h.ping()
    finally:
        h.stop()
        import shutil

        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------------------------------ the socket's short twin


def _deep_data_dir(base: Path) -> Path:
    """A data dir whose control.sock path is too long for a Unix socket: the socket must get a short twin."""
    d = base / ("d" * 60) / ("e" * 60)
    assert len(str(DataDir(d).socket)) > 108
    return d


def _twin_env(tmpdir: Path) -> dict[str, str]:
    env = {k: v for k, v in ENV.items() if k != "XDG_RUNTIME_DIR"}
    env["TMPDIR"] = str(tmpdir)
    return env


def _start_fails(d: Path, env: dict[str, str]) -> str:
    p = subprocess.run(
        [PY, "-m", "crewtui", "run", "--headless", "--data-dir", str(d)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    return p.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory as another user")
@pytest.mark.parametrize("taken", ["other-owner", "open-mode", "symlink"])
def test_a_socket_twin_dir_made_first_by_someone_else_is_refused_never_used(tmp_path: Path, taken: str) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    twin = tmpdir / f"crewtui-{os.getuid()}"
    if taken == "other-owner":
        twin.mkdir(mode=0o777)
        os.chown(twin, 65534, 65534)  # another user got there first
        why = "belongs to uid 65534"
    elif taken == "open-mode":
        twin.mkdir()
        twin.chmod(0o777)
        why = "open to other users"
    else:
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        twin.symlink_to(tmp_path / "elsewhere")
        why = "not a plain directory"
    out = _start_fails(_deep_data_dir(tmp_path), _twin_env(tmpdir))
    assert "refusing the socket directory" in out and why in out
    assert not any(p.name.endswith(".sock") for p in tmp_path.rglob("*")), "a socket was bound there"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory as another user")
def test_a_client_refuses_a_twin_link_into_a_directory_another_user_controls(tmp_path: Path) -> None:
    d = _deep_data_dir(tmp_path)
    DataDir(d).ensure()
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o777)
    os.chown(foreign, 65534, 65534)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # the forger's socket, waiting for our requests
    listener.bind(str(foreign / "x.sock"))
    listener.listen(1)
    listener.settimeout(0.5)
    try:
        os.symlink(foreign / "x.sock", DataDir(d).socket)
        p = subprocess.run(
            [PY, "-m", "crewtui", "ctl", "--data-dir", str(d), "list"],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert p.returncode == 2 and "refusing the socket directory" in p.stderr and "Traceback" not in p.stderr
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing ever connected: the request (and its task text) never reached it
    finally:
        listener.close()


def test_a_deep_data_dir_serves_through_a_private_twin(tmp_path: Path) -> None:
    # A short TMPDIR of its own: tmp_path itself may be too deep for a socket (under pytest-xdist it is).
    tmpdir = Path(tempfile.mkdtemp(prefix="twin-", dir="/tmp"))
    d = _deep_data_dir(tmp_path)
    h = Headless(d, env=_twin_env(tmpdir))
    try:
        twin = Path(socket_connect_path(DataDir(d).socket)).parent
        assert twin == tmpdir / f"crewtui-{os.getuid()}" and mode(twin) == 0o700
        assert call(h.dd.socket, "ping")["result"] == "pong"
    finally:
        h.stop()
        shutil.rmtree(tmpdir, ignore_errors=True)


# ------------------------------------------------------------------------------------------ file modes


def test_every_file_the_runtime_writes_is_owner_only_whatever_the_umask_and_dir_mode(tmp_path: Path) -> None:
    base = tmp_path / "mine"
    base.mkdir()
    d = base / "data"
    d.mkdir(mode=0o755)  # a data dir the user made, readable by others
    d.chmod(0o755)
    crew = tmp_path / "crew.toml"
    made = tmp_path / "made-by-agent"
    agent = f"import json, pathlib; pathlib.Path({str(made)!r}).write_text('x'); print(json.dumps(dict(ok=1)))"
    crew.write_text(
        textwrap.dedent(
            f"""
            [crew]
            name = "modes"
            registry = "registry.json"
            [agents.w]
            command = [{json.dumps(PY)}, "-c", {json.dumps(agent)}]
            """
        )
    )
    h = Headless(d, crew, umask=0o022)
    try:
        key = call(h.dd.socket, "spawn", label="modes-1", agent="w")["result"]["key"]
        wait_until(lambda: (d / "registry.json").exists(), 20, "the registry")
        # A retry moves the first attempt's files to tries/1: those must stay private too.
        call(h.dd.socket, "spawn", label="modes-2", argv=[PY, "-c", "import sys; sys.exit(3)"])
        wait_until(lambda: call(h.dd.socket, "get", ref="modes-2")["result"]["state"] == "failed", 20, "a failure")
        call(h.dd.socket, "retry", ref="modes-2")
        wait_until(lambda: call(h.dd.socket, "get", ref="modes-2")["result"]["state"] == "failed", 20, "the retry")
    finally:
        h.stop()
    # The dashboard's log file, written by a process with the same umask.
    subprocess.run(
        [
            PY,
            "-c",
            f"import logging; from crewtui.launch import log_to_file; from crewtui.locations import DataDir; "
            f"log_to_file(DataDir({str(d)!r})); logging.info('hello')",
        ],
        env=ENV,
        check=True,
        umask=0o022,
        timeout=30,
    )
    written = [p for p in d.rglob("*") if p.is_file() or p.is_fifo()]
    names = {p.name for p in written}
    assert {
        "crewtui.db",
        "runtime.lock",
        "registry.json",
        "crewtui.log",
        "stdout.log",
        "pid.json",
        "exit.json",
    } <= names
    assert any("tries" in p.parts for p in written)
    assert {str(p.relative_to(d)): oct(mode(p)) for p in written if mode(p) & 0o077} == {}
    assert all(mode(p) & 0o077 == 0 for p in d.rglob("*") if p.is_dir())
    # ... while what the agent writes in the user's tree keeps the user's umask.
    assert key and mode(made) == 0o644


# ------------------------------------------------------------------------------------------ crewtui serve


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


@pytest.mark.timeout(180)
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


@pytest.mark.timeout(180)
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


@pytest.mark.timeout(180)
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


@pytest.mark.timeout(180)
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


@pytest.mark.timeout(180)
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


# ------------------------------------------------------------------------------------------ shown, never interpreted

# What hostile agents print: a window title (OSC 0), a clipboard write (OSC 52, ended by ST), a screen wipe (CSI),
# the same wipe as an 8-bit C1 CSI, a full reset (ESC c), a right-to-left override and a lone ESC.
HOSTILE = (
    "title\x1b]0;PWNED-TITLE\x07 clip\x1b]52;c;UFdORUQ=\x1b\\ wipe\x1b[2J\x1b[H c1\x9b2J reset\x1bc"
    " bidi\u202eevil end lone\x1b"
)
# Bytes none of which crewtui itself ever writes: any of them in the output came from an agent.
DANGEROUS = re.compile(r"\x1b\]|\x1bP|\x1b\[2J|\x1bc|[\x07\x80-\x9f\u202a-\u202e\u2066-\u2069]")

AGENT = textwrap.dedent(
    f"""
    import sys
    hostile = {HOSTILE!r}
    print("out " + hostile, flush=True)
    print("err " + hostile, file=sys.stderr, flush=True)
    for line in sys.stdin:
        print("steered: " + line.rstrip("\\n"), flush=True)
    """
)
ENDED_AGENT = textwrap.dedent(
    f"""
    import json, sys
    hostile = {HOSTILE!r}
    print(json.dumps({{"said": hostile}}, ensure_ascii=False), flush=True)
    print("fatal " + hostile, file=sys.stderr, flush=True)
    sys.exit(1)
    """
)


def terminal_bytes(app: CrewApp) -> str:
    """What the dashboard writes to its terminal for a full repaint of what it shows now."""
    return app.screen._compositor.render_update(full=True).render_segments(app.console)


def dangerous(out: str) -> list[str]:
    return sorted({m.group() for m in DANGEROUS.finditer(out)})


# ------------------------------------------------------------------------------------------------ the sanitizer


def test_clean_removes_escape_sequences_and_shows_every_other_control_character() -> None:
    from crewtui.text import clean, json_safe

    assert clean("plain text, tabs\tkept") == "plain text, tabs\tkept"
    assert clean("a\x1b]0;title\x07b\x1b]52;c;eA==\x1b\\c\x1b[2J\x1b[31md\x1b[0m") == "abcd"
    assert clean("\x1bP1$r0m\x1b\\dcs\x1b_apc\x1b\\\x1bcreset\x1b(Bset") == "dcsresetset"
    assert clean("c1 \x9b2J\x9d0;t\x9cok") == "c1 ok"
    assert clean("lone\x1b") == "lone␛"
    assert clean("\x1b]0;never ended") == "␛]0;never ended"
    assert clean("nul\x00 bel\x07 bs\x08 cr\r del\x7f nel\x85") == "nul␀ bel␇ bs␈ cr␍ del␡ nel\\x85"
    assert clean("bidi\u202eevil\u2066x\u2069 ls\u2028") == "bidi\\u202eevil\\u2066x\\u2069 ls\\u2028"
    assert clean("two\nlines") == "two␊lines"
    assert clean("two\nlines", newlines=True) == "two\nlines"
    assert clean(clean(HOSTILE)) == clean(HOSTILE)
    assert not dangerous(clean(HOSTILE))
    raw = json.dumps({"x": HOSTILE}, ensure_ascii=False)
    assert json.loads(json_safe(raw)) == {"x": HOSTILE}
    assert not dangerous(json_safe(raw))


# ------------------------------------------------------------------------------------------------ the dashboard


async def test_agent_escapes_never_reach_the_dashboards_terminal(make_orch: Any) -> None:
    orch: Orchestrator = await make_orch()
    live = (await orch.spawn(SpawnRequest(label="hostile-live", argv=py(AGENT)))).key
    ended = (await orch.spawn(SpawnRequest(label="hostile-ended", argv=py(ENDED_AGENT)))).key
    await orch.wait_ended(ended, timeout=10)
    assert orch.sessions[ended].state == SessionState.FAILED
    await wait_for(lambda: orch.sessions[live].last_output_at is not None, what="the first output")
    app = make_app(orch)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(app, pilot)
        await select(app, pilot, live)
        await orch.send(live, "steer \x1b]0;PWNED-STEER\x07 \x9b2J")
        transcript = app.main_screen.transcript
        await wait_for(
            lambda: sum("steer" in line.text for line in transcript.lines) >= 2, what="steer echo and answer"
        )
        await pilot.pause()
        out = terminal_bytes(app)
        assert dangerous(out) == []
        # Shown (the words around the sequences, a lone ESC as ␛), never acted on.
        assert "out title clip wipe" in out and "err title" in out and "lone␛" in out

        await select(app, pilot, ended)
        await wait_for(lambda: any("fatal" in line.text for line in transcript.lines), what="the ended transcript")
        await pilot.pause()
        out = terminal_bytes(app)
        assert dangerous(out) == []
        assert "fatal title" in out


# ------------------------------------------------------------------------------------------------ markup


CREW_WITH_AGENT = f"""
[crew]
name = "markup [/x] [b]bold"

[agents.sleepy]
command = [{json.dumps(PY)}, "-c", {json.dumps(SLEEPER)}]
"""


async def test_markup_in_labels_patterns_domains_and_messages_is_shown_not_read(make_orch: Any) -> None:
    orch: Orchestrator = await make_orch(crew_from(CREW_WITH_AGENT))
    # A domain is free text: a killed session holds "[/x]", a live one took it over, so a retry is refused with
    # a message (a notification) that quotes it.
    first = (await orch.spawn(SpawnRequest(label="first-holder", argv=py(SLEEPER), domain="[/x] [b]"))).key
    await orch.kill(first)
    second = (await orch.spawn(SpawnRequest(label="second-holder", argv=py(SLEEPER), domain="[/x] [b]"))).key
    app = make_app(orch)
    notes = recording(app)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(app, pilot)
        # The detail pane shows the domain as typed.
        await select(app, pilot, second)
        await pilot.pause()
        assert "domain [/x] [b]" in terminal_bytes(app)
        # The runtime's refusal, quoting the domain, as a notification.
        await select(app, pilot, first)
        await pilot.press("r")
        await wait_for(lambda: any("is now held by" in n for n in notes), what="the refusal")
        await pilot.pause(0.3)
        assert "domain '[/x] [b]' is now held" in terminal_bytes(app)
        # A label the form refuses: the form's message quotes it.
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, SpawnScreen)
        form.query_one("#spawn-label", Input).value = "[/x]"
        form.query_one("#spawn-label", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        assert "invalid label '[/x]'" in str(form.query_one("#spawn-label-error", Static).render())
        await pilot.press("escape")
        await pilot.pause()
        # A filter the engine refuses: the message quotes it.
        await pilot.press("slash")
        app.query_one("#filter", Input).value = "(?P<[/x]>a)"
        await pilot.pause()
        assert "[/x]" in str(app.query_one("#filter-error", Static).render())
        assert orch.sessions[second].state == SessionState.RUNNING
    assert app.crashed is None and app.return_code in (None, 0)


# ------------------------------------------------------------------------------------------------ runaway regex


def test_a_runaway_filter_cannot_freeze_the_dashboard(tmp_path: Path) -> None:
    """`(a+)+$` backtracks for ages on a label of many a's that does not end in one: typed into the filter of a
    real dashboard, the dashboard must still take the next keys (enter, q, l) and leave."""
    crew = tmp_path / "crew.toml"
    crew.write_text('[crew]\nname = "runaway"\n')
    dash = Dashboard(tmp_path / "data", crew)
    try:
        for n in range(3):
            spawn = ["ctl", "--data-dir", str(tmp_path / "data"), "spawn", "--label", "a" * 60 + f"-{n}", "--json"]
            out = subprocess.run(
                [PY, "-m", "crewtui", *spawn, "--", "sleep", "600"],
                capture_output=True,
                text=True,
                timeout=30,
                env=ENV,
                check=True,
            ).stdout
            assert json.loads(out)["state"] == "running"
        wait_until(lambda: "aaaaaaaaaaaaaaaa" in dash.screen_text(), 20, "the dashboard to show the sessions")
        for key in ("/", *"(a+)+$"):
            os.write(dash._master, key.encode())
            time.sleep(0.05)
        os.write(dash._master, b"\r")  # enter: keep the filter, back to the sessions
        time.sleep(0.3)
        os.write(dash._master, b"q")
        time.sleep(0.5)
        os.write(dash._master, b"l")  # leave the sessions running
        wait_until(lambda: dash.proc.poll() is not None, 20, "the dashboard to take q and leave")
        assert dash.proc.returncode == 0, dash.screen_text()[-2000:]
    finally:
        if dash.alive():
            dash.kill9()
        kill_leftover_sessions(tmp_path / "data")


# ------------------------------------------------------------------------------------------------ ctl


def at_terminal(*args: str) -> tuple[int, str]:
    """Run `crewtui ARGS` with its stdout and stderr on a pseudo-terminal (where click strips nothing); return its
    exit code and everything it wrote there."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([PY, "-m", "crewtui", *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=ENV)
    os.close(slave)
    out = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=60), out.decode("utf-8", errors="replace")


def test_ctl_output_at_a_terminal_carries_no_escapes(tmp_path: Path) -> None:
    rt = Runtime(tmp_path / "data")
    d = str(rt.data_dir)
    ctl = ("ctl", "--data-dir", d)
    master, slave = pty.openpty()
    watch = subprocess.Popen([PY, "-m", "crewtui", *ctl, "watch"], stdout=slave, stderr=slave, env=ENV)
    os.close(slave)
    watched = bytearray()
    reader = threading.Thread(target=drain, args=(master, watched), daemon=True)
    reader.start()
    try:
        wait_until(lambda: b"watching (Ctrl-C to stop)" in watched, 30, "the watcher to subscribe")
        spawned = subprocess.run(
            [PY, "-m", "crewtui", *ctl, "spawn", "--label", "hostile-live", "--json", "--", PY, "-c", AGENT],
            capture_output=True,
            text=True,
            timeout=30,
            env=ENV,
            check=True,
        )
        assert json.loads(spawned.stdout)["state"] == "running"
        subprocess.run(
            [PY, "-m", "crewtui", *ctl, "spawn", "--label", "hostile-ended", "--", PY, "-c", ENDED_AGENT],
            capture_output=True,
            timeout=30,
            env=ENV,
            check=True,
        )
        code, out = at_terminal(*ctl, "send", "hostile-live", "steer \x1b]0;PWNED-STEER\x07 \x9b2J")
        assert code == 0, out

        def history_has(ref: str, needle: str) -> bool:
            return needle in at_terminal(*ctl, "history", ref)[1]

        wait_until(lambda: history_has("hostile-live", "steered: steer"), 15, "the steer's echo")
        wait_until(lambda: history_has("hostile-ended", "fatal title"), 15, "the ended session's output")

        outputs = {
            "list": at_terminal(*ctl, "list"),
            "history": at_terminal(*ctl, "history", "hostile-live"),
            "history of the ended": at_terminal(*ctl, "history", "hostile-ended"),
            "list --json": at_terminal(*ctl, "list", "--json"),
            "history --json": at_terminal(*ctl, "history", "hostile-ended", "--json"),
            "info": at_terminal(*ctl, "info"),
            "an error quoting the input": at_terminal(*ctl, "send", "no-such\x1b]0;PWNED\x07", "hi"),
        }
        wait_until(lambda: b"session_steered" in watched and b"hostile-ended" in watched, 15, "the events")
        outputs["watch"] = (0, watched.decode("utf-8", errors="replace"))
        for what, (_, out) in outputs.items():
            assert dangerous(out) == [], (what, out)
        assert "out title clip wipe" in outputs["history"][1] and "lone␛" in outputs["history"][1]
        assert "fatal title clip" in outputs["history of the ended"][1]
        assert "hostile-live" in outputs["list"][1] and "steered: steer" in outputs["list"][1]
        assert outputs["an error quoting the input"][0] == 2
        # --json keeps what the agent printed, escaped: a script decodes exactly the original text.
        ended = json.loads(outputs["history --json"][1])
        assert "fatal " + HOSTILE in ended["stderr"]
    finally:
        watch.terminate()
        watch.wait(timeout=10)
        reader.join(timeout=10)
        rt.stop()
        kill_leftover_sessions(rt.data_dir)


def drain(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        into += chunk
    os.close(fd)
