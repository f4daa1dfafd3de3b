"""Hostile tests of the notifications: floods, agent text that is huge or hostile, webhooks that hang, redirect or
answer huge bodies, and messages held by the rate limit while their sessions move on."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from crewtui.config import parse_crew
from crewtui.errors import ConfigError
from crewtui.events import SessionStateChanged
from crewtui.model import SessionState
from crewtui.runtime.notify import KEPT, LISTED
from crewtui.runtime.notify_send import Notice, webhook_request
from tests.faults.helpers import await_until
from tests.notify.receiver import Receiver
from tests.notify.test_notifier import Rig, hook, settle

# ------------------------------------------------------------------------------------------ held messages


async def test_a_held_message_leaves_out_sessions_that_moved_on_while_it_was_held(rig: Rig) -> None:
    """README: "A session that moved on before the message left (answered, retried) is left out of it"; a message
    held by the rate limit has not left yet."""
    rig.notifier('group_for = "1s"\nmax_per_minute = 1')
    rig.session_event("first", SessionState.FAILED, "exit code 1")
    await rig.clock.advance(2)
    assert [e.title for e in rig.on("terminal")] == ["first failed"]
    rig.session_event("asks", SessionState.WAITING, needs={"kind": "question", "id": "q", "text": "deploy?"})
    rig.session_event("stays", SessionState.FAILED, "exit code 2")
    await rig.clock.advance(2)  # both groups closed, and held: the minute has no room
    assert len(rig.on("terminal")) == 1
    rig.sessions["s-asks"].state = SessionState.RUNNING  # answered while held
    await rig.clock.advance(60)
    assert [e.title for e in rig.on("terminal")] == ["first failed", "stays failed"]


async def test_a_held_message_whose_sessions_all_moved_on_is_not_sent(rig: Rig) -> None:
    rig.notifier('group_for = "1s"\nmax_per_minute = 1')
    rig.session_event("first", SessionState.FAILED, "exit code 1")
    await rig.clock.advance(2)
    rig.session_event("asks", SessionState.WAITING, needs={"kind": "question", "id": "q", "text": "deploy?"})
    await rig.clock.advance(2)
    rig.sessions["s-asks"].state = SessionState.RUNNING
    await rig.clock.advance(60)
    assert [e.title for e in rig.on("terminal")] == ["first failed"]
    # Nothing went out for it, so the minute still has room for the next one at once.
    rig.session_event("next", SessionState.FAILED, "exit code 1")
    await rig.clock.advance(1)
    assert [e.title for e in rig.on("terminal")] == ["first failed", "next failed"]


async def test_what_is_held_stays_bounded_however_many_groups_come(rig: Rig) -> None:
    """One session flapping between waiting and running makes a group per loop turn with group_for = 0; the held
    messages of one channel must not grow with each (a minute of flapping is unbounded memory)."""
    n = rig.notifier('group_for = "0s"\nmax_per_minute = 1')
    rig.session_event("first", SessionState.FAILED, "exit code 1")
    await settle()
    assert len(rig.on("terminal")) == 1
    for i in range(1500):
        rig.session_event(f"w-{i % 3}", SessionState.WAITING)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    await settle()
    held = n.gates["terminal"].held
    assert sum(len(g.items) for g in held) <= 3 and len(held) <= 1
    await rig.clock.advance(60)
    last = rig.on("terminal")[-1]
    assert last.count == 3 and last.title == "3 sessions need you"


# ------------------------------------------------------------------------------------------ counting


async def test_a_session_beyond_the_listed_ones_is_counted_once(rig: Rig) -> None:
    rig.notifier()
    for _round in range(2):  # every session fails, is retried, and fails again within the window
        for i in range(KEPT + 50):
            rig.session_event(f"f-{i}", SessionState.FAILED, "exit code 1")
    await rig.clock.advance(10)
    (ev,) = rig.on("terminal")
    assert ev.count == KEPT + 50 and ev.title == f"{KEPT + 50} sessions failed"
    assert ev.text.splitlines()[-1] == f"+{KEPT + 50 - LISTED} more"


async def test_a_session_beyond_the_listed_ones_that_moved_on_is_not_counted(rig: Rig) -> None:
    rig.notifier()
    for i in range(KEPT + 50):
        rig.session_event(f"f-{i}", SessionState.FAILED, "exit code 1")
    for i in range(KEPT, KEPT + 50):
        rig.sessions[f"s-f-{i}"].state = SessionState.PENDING  # retried before the message left
    await rig.clock.advance(10)
    (ev,) = rig.on("terminal")
    assert ev.count == KEPT and ev.title == f"{KEPT} sessions failed"


async def test_a_thousand_failures_at_once_are_one_bounded_message(rig: Rig) -> None:
    async with Receiver() as rx:
        n = rig.notifier(hook(rx))
        t0 = time.monotonic()
        for i in range(1000):
            rig.session_event(f"f-{i}", SessionState.FAILED, "exit code 1")
        assert time.monotonic() - t0 < 5
        assert len(n.groups["failed"].items) <= KEPT
        await rig.clock.advance(10)
        await await_until(lambda: rig.on("webhook:ops"), 10, "the webhook")
        (body,) = [r.json() for r in rx.got]
        assert body["count"] == 1000 and body["title"] == "1000 sessions failed" and len(body["sessions"]) == 100
        (ev,) = rig.on("terminal")
        assert len(ev.sessions) == 50 and len(ev.text.splitlines()) == LISTED + 1


# ------------------------------------------------------------------------------------------ agent text


async def test_megabytes_of_agent_text_are_not_kept_whole(rig: Rig) -> None:
    """A question or a tool input of megabytes: the listener keeps a line of it, not all of it (200 kept per group
    per trigger), and every channel's message is small."""
    n = rig.notifier()
    huge = "which \x1b[31mbranch\n" * 400_000  # ~7 MB
    rig.session_event("asker", SessionState.WAITING, needs={"kind": "question", "id": "q", "text": huge})
    big_input = {"command": "x" * 5_000_000}
    needs = {"kind": "permission", "id": "t", "tool": "Bash", "input": big_input}
    rig.session_event("perm", SessionState.WAITING, needs=needs)
    rig.bus.publish(
        SessionStateChanged(session="s-f", label="f", old=SessionState.RUNNING, new=SessionState.FAILED, reason=huge)
    )
    kept = [h.detail or "" for g in n.groups.values() for h in g.items]
    assert len(kept) == 3 and max(len(d) for d in kept) <= 1000
    await rig.clock.advance(10)
    told = rig.on("terminal")
    assert sorted(e.trigger for e in told) == ["failed", "waiting"]
    for ev in told:
        lines = ev.text.splitlines()
        assert len(lines) == ev.count and all(len(line) <= 220 and "\x1b" not in line for line in lines)


def test_a_long_title_out_of_ascii_is_one_header_line() -> None:
    crew = parse_crew('[[notify.webhooks]]\nurl = "http://127.0.0.1:1/t"\nformat = "ntfy"')
    notice = Notice(trigger="failed", title="ünïcödé " * 30, text="t", count=1, ts=0, crew="c")
    _, headers = webhook_request(crew.notify.webhooks[0], notice)
    assert "\n" not in headers["Title"] and "\r" not in headers["Title"]
    from email.header import decode_header, make_header

    assert str(make_header(decode_header(headers["Title"]))) == ("ünïcödé " * 30).strip()


async def test_a_long_title_out_of_ascii_reaches_an_ntfy_webhook(rig: Rig) -> None:
    async with Receiver() as rx:
        n = rig.notifier(hook(rx, 'format = "ntfy"'))
        await asyncio.sleep(0)
        notice = Notice(trigger="failed", title="ünï " * 40, text="body", count=1, ts=0, crew="c")
        await n._send("webhook:ops", notice)
        (ev,) = rig.on("webhook:ops")
        assert ev.ok, ev.error
        assert rx.got[0].body == b"body"


# ------------------------------------------------------------------------------------------ hostile webhooks


class Hostile:
    """A receiver on 127.0.0.1 that redirects, or answers a huge body, counting the requests."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.hits = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if self.mode == "redirect":
            raise web.HTTPFound("http://127.0.0.1:1/elsewhere")
        resp = web.StreamResponse(status=200)
        await resp.prepare(request)
        for _ in range(2000):  # up to 2 GB, in 1 MB pieces, unless the client hangs up
            await resp.write(b"x" * 1_000_000)
        return resp

    async def __aenter__(self) -> Hostile:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def test_a_redirect_is_not_followed_and_not_taken_for_success(rig: Rig) -> None:
    async with Hostile("redirect") as rx:
        rig.notifier(f'[[notify.webhooks]]\nurl = "{rx.url}"\nname = "ops"\ntries = 3')
        rig.session_event("f", SessionState.FAILED, "exit code 1")
        await rig.clock.advance(10)
        await await_until(lambda: rig.on("webhook:ops"), 10, "the webhook's outcome")
        (ev,) = rig.on("webhook:ops")
        # Not tried again either: the same URL will redirect again.
        assert not ev.ok and rx.hits == 1
        assert ev.error == "HTTP 302: a redirect, not followed (set the webhook's url to where it points) (after 1 try)"


async def test_a_huge_answer_is_not_read(rig: Rig) -> None:
    async with Hostile("huge") as rx:
        rig.notifier(f'[[notify.webhooks]]\nurl = "{rx.url}"\nname = "ops"')
        rig.session_event("f", SessionState.FAILED, "exit code 1")
        t0 = time.monotonic()
        await rig.clock.advance(10)
        await await_until(lambda: rig.on("webhook:ops"), 10, "the webhook's outcome")
        assert rig.on("webhook:ops")[0].ok and time.monotonic() - t0 < 5


async def test_stop_with_a_webhook_that_never_answers_is_bounded(rig: Rig) -> None:
    async with Receiver(delay=60) as rx:
        n = rig.notifier(hook(rx, 'timeout = "1h"', "tries = 10"), stop_grace=0.3)
        for i in range(20):
            rig.session_event(f"f-{i}", SessionState.FAILED, "exit code 1")
            await rig.clock.advance(11)  # twenty messages, six of them sent, the rest held
        await await_until(lambda: len(rx.got) >= 6, 10, "the sends under way")
        t0 = time.monotonic()
        await n.stop()
        assert time.monotonic() - t0 < 3
        outcomes = rig.on("webhook:ops")
        assert outcomes and all(e.error == "not sent: the runtime stopped first" for e in outcomes)
        assert sum(e.count for e in outcomes) == 20  # every failure accounted for on the timeline


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('url = "http://h/x"\nheaders = { "X-A" = "a\\r\\nX-Injected: 1" }', "notify.webhooks[0].headers.X-A"),
        ('url = "http://h/x"\nheaders = { "X-A\\nB" = "a" }', "notify.webhooks[0].headers"),
        ('url = "file:///etc/passwd"', "notify.webhooks[0].url"),
        ('url = "javascript:alert(1)"', "notify.webhooks[0].url"),
        ('url = "http://h/x\\ny"', "notify.webhooks[0].url"),
        ('url = "http://h/x"\ntries = 0', "notify.webhooks[0].tries"),
        ('url = "http://a..b/x"', "notify.webhooks[0].url"),  # aiohttp: UnicodeError on every message
        (f'url = "http://{"a" * 64}.test/x"', "notify.webhooks[0].url"),
        ('url = "http://\u00ad.test/x"', "notify.webhooks[0].url"),
        ('url = "http://h/x"\ntimeout = "inf"', "notify.webhooks[0].timeout"),
    ],
)
def test_a_bad_webhook_is_one_line_naming_its_key(table: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_crew(f"[[notify.webhooks]]\n{table}")
    message = str(err.value)
    assert "\n" not in message and key in message and "Traceback" not in message


def test_credentials_in_a_url_are_not_in_the_channel_name() -> None:
    crew = parse_crew('[[notify.webhooks]]\nurl = "https://user:s3cret@hooks.test/T0/B0/XXXX"')
    assert crew.notify.webhooks[0].channel_name == "hooks.test"  # the timeline's `webhook:NAME` and the logs


def test_credentials_in_the_url_and_an_authorization_header_is_one_line() -> None:
    """aiohttp refuses to send both, with a ValueError on every message: the crew file is the place to say so."""
    with pytest.raises(ConfigError) as err:
        parse_crew('[[notify.webhooks]]\nurl = "https://u:p@hooks.test/x"\nheaders = { authorization = "Bearer t" }')
    message = str(err.value)
    assert "\n" not in message and "notify.webhooks[0].headers.authorization" in message and "not both" in message
    hook = parse_crew('[[notify.webhooks]]\nurl = "https://hooks.test/x"\nheaders = { Authorization = "Bearer t" }')
    assert hook.notify.webhooks[0].headers == {"Authorization": "Bearer t"}
