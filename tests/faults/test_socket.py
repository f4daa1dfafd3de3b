"""The control socket under abuse: garbage, half messages, a 100 MB message, idle connections, a client that
hangs up mid-yield, and clients that hammer a runtime while it is still starting. Each is answered or dropped
cleanly and the runtime goes on."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ECHO_AGENT
from tests.faults.helpers import (
    PY,
    Headless,
    assert_events_contiguous,
    call,
    kill_group,
    read_line,
    rows,
    rss_kb,
    wait_until,
)


@pytest.fixture
def runtime(tmp_path: Path):
    h = Headless(tmp_path / "data")
    yield h
    if h.alive():
        for s in call(h.dd.socket, "list")["result"]:
            if s["state"] in ("running", "pending", "yielded"):
                call(h.dd.socket, "kill", ref=s["key"])
        h.stop()


def raw(sock: Path, payload: bytes, timeout: float = 10.0, hang_up: bool = False) -> dict | None:
    """Send bytes as they are, then end the request (shut down writing); the decoded reply, or None if the
    runtime closed without one. `hang_up`: close the connection at once instead of reading."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(payload)
        if hang_up:
            return None
        s.shutdown(socket.SHUT_WR)
        line = read_line(s)
    return json.loads(line) if line else None


BAD_REQUESTS = [
    (b"\x00\xff\xfe garbage {{{\n", "malformed request"),
    (b"\xc3\x28\xa0\xa1\n", "malformed request"),
    (b"[1, 2]\n", "malformed request"),
    (b'"just a string"\n', "malformed request"),
    (b'{"op": 5}\n', "malformed request"),
    (b'{"op": "list", "args": [1]}\n', "malformed request"),
    (b"[" * 100_000 + b"\n", "malformed request"),  # nesting deeper than the JSON parser's recursion
    (b'{"op": "format_disk"}\n', "unknown op 'format_disk'"),
    (b'{"op": "spawn", "args": {"label": 123, "argv": ["true"]}}\n', "spawn: label"),
    (b'{"op": "spawn", "args": {"label": "x", "argv": "true"}}\n', "spawn: argv"),
    (b'{"op": "spawn", "args": {"label": "x", "argv": ["true"], "evil": 1}}\n', "spawn: evil"),
    (b'{"op": "history", "args": {"ref": "x", "tail": "many"}}\n', "history"),
    (b'{"op": "history", "args": {"ref": "x", "tail": 1e309}}\n', "history"),
    (b'{"op": "kill", "args": {"ref": ["a", "b"]}}\n', "a session key or label is required"),
    (b'{"op": "send", "args": {"ref": "x"}}\n', "send"),
    (b'{"op": "timeline", "args": {"start": "yesterday", "end": 1}}\n', "timeline"),
    (b'{"op": "list", "args": {"state": "sleeping"}}\n', "unknown state 'sleeping'"),
    (b'{"op": "spawn", "args": {"label": "x", "argv": ["true"], "watchdog_after": NaN}}\n', "finite"),
    (b'{"op": "spawn", "args": {"label": "x", "argv": ["true"], "watchdog_after": Infinity}}\n', "finite"),
    # A lone surrogate escape is valid JSON but no text: it could be written neither to the store nor to an agent.
    (b'{"op": "spawn", "args": {"label": "x", "argv": ["echo", "a\\ud800"]}}\n', "spawn: text with a lone surrogate"),
    (b'{"op": "send", "args": {"ref": "x", "text": "\\udfff"}}\n', "send: text with a lone surrogate (\\udfff)"),
    (b'{"op": "spawn", "args": {"label": "x", "argv": ["true"], "env": {"\\ud800": "1"}}}\n', "lone surrogate"),
]


def test_a_lone_surrogate_changes_nothing_and_a_pair_is_text(runtime: Headless) -> None:
    """A spawn whose argv held one was done, then failed: its session could not be stored ("dropped 1 records that
    could not be serialised"), and a steer holding one reached the agent but not the store."""
    reply = raw(runtime.dd.socket, b'{"op": "spawn", "args": {"label": "sur", "argv": ["echo", "\\ud83d"]}}\n')
    assert reply is not None and reply["ok"] is False
    assert raw(runtime.dd.socket, b'{"op": "list", "args": {}}\n') == {"ok": True, "result": []}
    # A surrogate pair (how json.dumps writes an emoji by default) is one character: taken.
    reply = raw(runtime.dd.socket, b'{"op": "spawn", "args": {"label": "pair", "argv": ["echo", "\\ud83d\\ude00"]}}\n')
    assert reply is not None and reply["ok"] is True and reply["result"]["argv"][-1] == "\U0001f600", reply


@pytest.mark.parametrize("payload, needle", BAD_REQUESTS, ids=[f"bad{i}" for i in range(len(BAD_REQUESTS))])
def test_garbage_and_malformed_requests_get_a_one_line_error(runtime: Headless, payload: bytes, needle: str) -> None:
    reply = raw(runtime.dd.socket, payload)
    assert reply is not None and reply["ok"] is False, reply
    assert needle in reply["error"]["message"] and "\n" not in reply["error"]["message"], reply
    assert runtime.ping()


def test_half_messages_connection_bursts_and_100mb_are_handled_cleanly(runtime: Headless) -> None:
    sock = runtime.dd.socket
    # A request cut off mid-way: refused when the client ends it there, dropped when the client is gone.
    for half in (b'{"op": "spawn", "args": {"label": "half", "argv": ["sle', b"{", b"\x00"):
        reply = raw(sock, half, timeout=5)
        assert reply is not None and "malformed request" in reply["error"]["message"]
        assert raw(sock, half, hang_up=True) is None
    # A burst of 500 connects is accepted (asyncio's default backlog of 100 refused most of them with EAGAIN),
    # and clients that connect and never say anything hold up nobody.
    idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(500)]
    for s in idle:
        s.settimeout(5)
        s.connect(str(sock))
    try:
        t = time.monotonic()
        assert runtime.ping() and time.monotonic() - t < 2
    finally:
        for s in idle:
            s.close()

    rss_before = rss_kb(runtime.pid)
    replies: list[object] = []

    def send_100mb(with_newline: bool) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(20)
            s.connect(str(sock))
            block = b'{"op": "ping", "args": {"pad": "' + b"x" * (1 << 20)
            try:
                for _ in range(100):
                    s.sendall(block)
                if with_newline:
                    s.sendall(b'"}}\n')
                s.shutdown(socket.SHUT_WR)
                replies.append(read_line(s))
            except OSError as exc:  # the runtime gave up on it and closed: that is a clean refusal too
                replies.append(exc)

    threads = [threading.Thread(target=send_100mb, args=(nl,)) for nl in (False, True)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert len(replies) == 2
    for r in replies:
        if isinstance(r, bytes) and r:
            reply = json.loads(r)
            assert reply["ok"] is False and "request over 1048576 bytes refused" in reply["error"]["message"]
        else:
            assert isinstance(r, (OSError, bytes)), r
    assert runtime.ping() and runtime.alive()
    assert rss_kb(runtime.pid) - rss_before < 32 * 1024, "the runtime buffered the huge message"
    assert [s["label"] for s in call(sock, "list")["result"]] == []  # the half spawn did nothing


def test_client_hanging_up_mid_yield_returns_the_parent_to_running(runtime: Headless) -> None:
    sock = runtime.dd.socket
    parent = call(sock, "spawn", label="parent", argv=[PY, "-c", ECHO_AGENT])["result"]
    child = call(sock, "spawn", label="child", argv=["sleep", "600"], parent=parent["key"])["result"]
    state = lambda key: call(sock, "get", ref=key)["result"]["state"]  # noqa: E731

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(sock))
    s.sendall(
        (json.dumps({"op": "yield", "args": {"parent": parent["key"], "children": [child["key"]]}}) + "\n").encode()
    )
    wait_until(lambda: state(parent["key"]) == "yielded", 10, "the parent to yield")
    s.close()  # the client goes away while the yield waits
    wait_until(lambda: state(parent["key"]) == "running", 10, "the parent to run again")
    assert state(child["key"]) == "running"

    # The runtime goes on: a yield that stays connected gets the child's end.
    result: list[dict] = []
    waiter = threading.Thread(
        target=lambda: result.append(call(sock, "yield", timeout=30, parent=parent["key"], children=[child["key"]]))
    )
    waiter.start()
    wait_until(lambda: state(parent["key"]) == "yielded", 10, "the second yield")
    assert call(sock, "kill", ref=child["key"])["ok"]
    waiter.join(30)
    assert result and result[0]["ok"], result
    assert [c["state"] for c in result[0]["result"]["children"]] == ["killed"]
    assert state(parent["key"]) == "running"


def test_clients_hammering_a_restarting_runtime_are_served_only_once_it_is_ready(tmp_path: Path) -> None:
    """Agents of the last runtime call the socket the moment it reappears; answering them before the store
    is loaded would reuse event numbers (events lost) and ignore live labels."""
    d = tmp_path / "data"
    db = d / "crewtui.db"
    a = Headless(d)
    live = [call(a.dd.socket, "spawn", label=f"old-{i}", argv=["sleep", "600"])["result"] for i in range(25)]
    a.stop()

    acked: list[dict] = []
    stop = threading.Event()

    def hammer(n: int) -> None:
        i = 0
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                reply = call(d / "control.sock", "spawn", timeout=30, label=f"new-{n}-{i}", argv=["sleep", "600"])
            except (OSError, ValueError):
                time.sleep(0.001)
                continue
            if reply["ok"]:
                acked.append(reply["result"])
            i += 1
            if i >= 3:
                return

    b = None
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(hammer, n) for n in range(6)]
        b = Headless(d, wait=False)
        try:
            for f in futures:
                f.result(timeout=60)
        finally:
            stop.set()
    try:
        b.wait_serving()
        assert len(acked) == 18
        # Also a spawn racing the restart with a live label of the old runtime is refused.
        dup = call(d / "control.sock", "spawn", label="old-0", argv=["true"])
        assert not dup["ok"] and "is held by live session" in dup["error"]["message"]
        listed = {s["key"]: s for s in call(d / "control.sock", "list")["result"]}
        for s in acked + live:
            assert listed[s["key"]]["state"] == "running"
        for s in list(listed.values()):
            call(d / "control.sock", "kill", ref=s["key"])
        b.stop()
        spawned = [
            json.loads(r[0])["session"] for r in rows(db, "SELECT data FROM events WHERE kind = 'session_spawned'")
        ]
        assert sorted(spawned) == sorted(s["key"] for s in acked + live)
        assert_events_contiguous(db)
    finally:
        if b is not None and b.alive():
            b.stop()
        for s in acked + live:
            kill_group(s["shim_pid"])
