"""The notifier on a real event bus and store with a fake clock, webhooks POSTed to a real receiver on 127.0.0.1:
grouping, the rate limit, retries with backoff, each webhook format, the desktop channel, each trigger, and stop."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from crewtui.clock import FakeClock
from crewtui.config import parse_crew
from crewtui.events import NotificationSent, RunClosed, SessionStateChanged, SystemEvent
from crewtui.model import Session, SessionState
from crewtui.runtime.bus import EventBus
from crewtui.runtime.notify import Notifier
from crewtui.runtime.notify_send import Notice, notify_send, webhook_request
from crewtui.store import Store
from tests.faults.helpers import await_until
from tests.notify.receiver import Receiver

NO_DESKTOP = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


class Rig:
    """A bus on a real store, the fake clock, the NotificationSent events, and the sessions the notifier looks up."""

    def __init__(self, store: Store, clock: FakeClock) -> None:
        self.store = store
        self.clock = clock
        self.bus = EventBus(store, clock)
        self.sent: list[NotificationSent] = []
        self.bus.listen(lambda ev: self.sent.append(ev) if isinstance(ev, NotificationSent) else None)
        self.sessions: dict[str, Session] = {}
        self.notifiers: list[Notifier] = []

    def notifier(self, notify: str = "", environ: dict[str, str] | None = None, **kw: Any) -> Notifier:
        crew = parse_crew(f'[crew]\nname = "test"\n[notify]\n{notify}')
        n = Notifier(self.bus, self.clock, crew, self.sessions.get, environ=environ or NO_DESKTOP, **kw)
        n.start(self.store)
        self.notifiers.append(n)
        return n

    def on(self, channel: str) -> list[NotificationSent]:
        return [e for e in self.sent if e.channel == channel]

    def session_event(self, label: str, new: SessionState, reason: str | None = None, **fields: Any) -> None:
        key = f"s-{label}"
        self.sessions[key] = Session(key=key, label=label, state=new, created_at=0, updated_at=0, **fields)
        self.bus.publish(
            SessionStateChanged(session=key, label=label, old=SessionState.RUNNING, new=new, reason=reason)
        )


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def hook(receiver: Receiver, *extra: str, name: str = "ops") -> str:
    return "\n".join(["[[notify.webhooks]]", f'url = "{receiver.url}"', f'name = "{name}"', *extra])


# ------------------------------------------------------------------------------------------ grouping


async def test_twenty_failures_within_a_second_are_one_message(rig: Rig) -> None:
    async with Receiver() as rx:
        rig.notifier(hook(rx))
        for i in range(1, 21):
            rig.session_event(f"batch-{i:02d}", SessionState.FAILED, "exit code 1")
            await rig.clock.advance(0.05)
        await rig.clock.advance(8.9)  # 9.9 s after the first: the group is still open
        await settle()
        assert rig.sent == [] and rx.got == []
        await rig.clock.advance(0.2)
        await await_until(lambda: rig.on("webhook:ops"), 10, "the webhook's outcome")
        assert len(rx.got) == 1
        body = rx.got[0].json()
        assert body["title"] == "20 sessions failed" and body["count"] == 20 and body["trigger"] == "failed"
        assert [s["label"] for s in body["sessions"]] == [f"batch-{i:02d}" for i in range(1, 21)]
        assert body["sessions"][0]["key"] == "s-batch-01" and body["crew"] == "test"
        lines = body["text"].splitlines()
        assert lines[:10] == [f"batch-{i:02d}: exit code 1" for i in range(1, 11)] and lines[10:] == ["+10 more"]
        assert body["ts"] == pytest.approx(rig.clock.now(), abs=1)
        # On the timeline: one per channel, each naming the sessions it was about.
        terminal, webhook = rig.on("terminal"), rig.on("webhook:ops")
        assert len(terminal) == 1 and len(webhook) == 1 and webhook[0].ok and webhook[0].error is None
        assert terminal[0].count == 20 and terminal[0].title == "20 sessions failed"
        assert len(webhook[0].sessions) == 20 and webhook[0].trigger == "failed"


async def test_a_single_happening_names_its_session(rig: Rig) -> None:
    rig.notifier()
    rig.session_event("lonely", SessionState.TIMED_OUT, "watchdog: no progress after 15m")
    await rig.clock.advance(10)
    (ev,) = rig.on("terminal")
    assert (ev.title, ev.text, ev.trigger, ev.count) == (
        "lonely timed out",
        "lonely: watchdog: no progress after 15m",
        "timed_out",
        1,
    )


async def test_each_trigger_is_its_own_group(rig: Rig) -> None:
    rig.notifier('group_for = "5s"')
    rig.session_event("a", SessionState.FAILED, "exit code 1")
    rig.session_event("b", SessionState.TIMED_OUT, "watchdog")
    rig.session_event("c", SessionState.FAILED, "exit code 2")
    await rig.clock.advance(5)
    assert sorted((e.trigger, e.count) for e in rig.on("terminal")) == [("failed", 2), ("timed_out", 1)]


async def test_a_session_that_moved_on_before_the_message_is_not_told_of(rig: Rig) -> None:
    rig.notifier()
    rig.session_event("asks", SessionState.WAITING, needs={"kind": "question", "id": "q1", "text": "deploy?"})
    rig.session_event("retried", SessionState.FAILED, "exit code 1")
    rig.session_event("stays", SessionState.FAILED, "exit code 1")
    rig.sessions["s-asks"].state = SessionState.RUNNING  # answered
    rig.sessions["s-retried"].state = SessionState.PENDING  # a new attempt
    await rig.clock.advance(10)
    assert [(e.trigger, e.title) for e in rig.on("terminal")] == [("failed", "stays failed")]


# ------------------------------------------------------------------------------------------ triggers


async def test_waiting_names_what_the_session_waits_for(rig: Rig) -> None:
    rig.notifier()
    needs = {"kind": "permission", "id": "t1", "tool": "Bash", "input": {"command": "rm -rf build"}}
    rig.session_event("fixer", SessionState.WAITING, "waiting on a person: Bash", needs=needs)
    rig.session_event(
        "asker", SessionState.WAITING, needs={"kind": "question", "id": "q", "text": "which \x1b[2Jbranch?"}
    )
    await rig.clock.advance(10)
    (ev,) = rig.on("terminal")
    assert ev.title == "2 sessions need you" and ev.trigger == "waiting"
    assert ev.text.splitlines() == [
        'fixer: permission for Bash {"command": "rm -rf build"}',
        "asker: asks: which branch?",  # a control sequence an agent wrote is dropped, never passed on
    ]


async def test_a_cron_run_below_the_rate(rig: Rig) -> None:
    rig.notifier("run_below = 0.8")
    counts = {"spawned": 4, "done": 2, "failed": 2, "killed": 0}
    rig.bus.publish(RunClosed(job="blog", run="blog#3", rate=0.5, counts=counts))
    rig.bus.publish(RunClosed(job="blog", run="blog#4", rate=0.8, counts={"spawned": 5, "done": 4}))  # not below
    rig.bus.publish(RunClosed(job="blog", run="blog#5", rate=None))  # nothing spawned: no rate
    await rig.clock.advance(10)
    (ev,) = rig.on("terminal")
    assert (ev.trigger, ev.title, ev.sessions) == ("run_below", "cron run blog#3 below 80%", [])
    assert ev.text == "blog#3: 50% done (spawned 4, done 2, failed 2)"


async def test_a_budget_reached(rig: Rig) -> None:
    rig.notifier()
    rig.bus.publish(SystemEvent(level="warning", topic="budget", text="pool model-a: day budget $25.00 reached"))
    rig.bus.publish(SystemEvent(level="warning", text="something else"))  # no topic: not a notification
    await rig.clock.advance(10)
    (ev,) = rig.on("terminal")
    assert (ev.trigger, ev.title, ev.text) == ("budget", "budget reached", "pool model-a: day budget $25.00 reached")


async def test_on_leaves_out_a_trigger(rig: Rig) -> None:
    async with Receiver() as rx:
        rig.notifier('on = ["waiting", "budget"]\n' + hook(rx))
        for i in range(5):
            rig.session_event(f"f-{i}", SessionState.FAILED, "exit code 1")
        rig.bus.publish(RunClosed(job="j", run="j#1", rate=0.0))
        await rig.clock.advance(30)
        await asyncio.sleep(0.3)
        assert rig.sent == [] and rx.got == []
        rig.session_event("w", SessionState.WAITING)
        await rig.clock.advance(10)
        await await_until(lambda: rig.on("webhook:ops"), 10, "the waiting session's webhook")
        assert [e.trigger for e in rig.sent] == ["waiting", "waiting"] and len(rx.got) == 1


async def test_nothing_to_tell_or_no_way_to_tell_it_listens_to_nothing(rig: Rig) -> None:
    for notify in ("on = []", "terminal = false\ndesktop = false"):
        n = rig.notifier(notify)
        rig.session_event("f", SessionState.FAILED, "exit code 1")
        await rig.clock.advance(10)
        assert rig.sent == [] and n.gates.keys() <= {"terminal"} and n.note not in rig.bus._listeners


# ------------------------------------------------------------------------------------------ rate limit


async def test_beyond_max_per_minute_messages_are_held_and_merged(rig: Rig) -> None:
    rig.notifier('group_for = "1s"\nmax_per_minute = 2')
    rig.session_event("a-1", SessionState.FAILED, "exit code 1")
    await rig.clock.advance(2)
    rig.session_event("a-2", SessionState.FAILED, "exit code 1")
    await rig.clock.advance(2)
    first, second = rig.on("terminal")
    assert [first.title, second.title] == ["a-1 failed", "a-2 failed"]
    # The third, fourth and fifth group of the minute are held...
    rig.session_event("b-1", SessionState.TIMED_OUT, "watchdog")
    await rig.clock.advance(2)
    rig.session_event("c-1", SessionState.FAILED, "exit code 3")
    await rig.clock.advance(2)
    rig.bus.publish(RunClosed(job="j", run="j#1", rate=0.25))
    await rig.clock.advance(2)
    assert len(rig.on("terminal")) == 2
    # ... and go out as one when the first message leaves the window (a minute after it went).
    await rig.clock.advance(first.ts + 60 - rig.clock.now() - 0.1)
    assert len(rig.on("terminal")) == 2
    await rig.clock.advance(0.1)
    merged = rig.on("terminal")[2]
    assert merged.ts == first.ts + 60
    assert merged.count == 3 and merged.trigger == "failed+timed_out+run_below"
    assert merged.title == "c-1 failed; b-1 timed out; cron run j#1 below 80%"
    assert merged.text.split("\n\n") == [
        "c-1 failed:\nc-1: exit code 3",
        "b-1 timed out:\nb-1: watchdog",
        "cron run j#1 below 80%:\nj#1: 25% done",
    ]
    assert merged.sessions == ["s-c-1", "s-b-1"]
    # The window now holds the second and the merged one: a new group waits for the second to leave it.
    rig.session_event("d-1", SessionState.FAILED, "exit code 1")
    await rig.clock.advance(second.ts + 60 - rig.clock.now() - 0.1)
    assert len(rig.on("terminal")) == 3
    await rig.clock.advance(0.1)
    assert [e.title for e in rig.on("terminal")][3:] == ["d-1 failed"]


async def test_held_groups_of_one_trigger_merge_into_one_count(rig: Rig) -> None:
    rig.notifier('group_for = "1s"\nmax_per_minute = 1')
    for i in range(4):
        rig.session_event(f"f-{i}", SessionState.FAILED, "exit code 1")
        await rig.clock.advance(5)
    assert [e.title for e in rig.on("terminal")] == ["f-0 failed"]
    await rig.clock.advance(60)
    assert [e.title for e in rig.on("terminal")] == ["f-0 failed", "3 sessions failed"]


# ------------------------------------------------------------------------------------------ webhooks


async def test_a_webhook_that_fails_is_retried_with_backoff_and_the_failure_recorded(rig: Rig) -> None:
    async with Receiver(status=503) as rx:
        rig.notifier(hook(rx), backoff=1.0)
        rig.session_event("f", SessionState.FAILED, "exit code 1")
        await rig.clock.advance(10)
        await await_until(lambda: len(rx.got) == 1, 10, "the first try")
        await rig.clock.advance(0.9)
        await asyncio.sleep(0.2)
        assert len(rx.got) == 1  # waits a second before the second try
        await rig.clock.advance(0.1)
        await await_until(lambda: len(rx.got) == 2, 10, "the second try")
        await rig.clock.advance(1.9)
        await asyncio.sleep(0.2)
        assert len(rx.got) == 2  # then two seconds
        await rig.clock.advance(0.1)
        await await_until(lambda: rig.on("webhook:ops"), 10, "the failure on the timeline")
        assert len(rx.got) == 3
        (ev,) = rig.on("webhook:ops")
        assert not ev.ok and ev.error == "HTTP 503 (after 3 tries)" and ev.title == "f failed"
        assert rig.on("terminal")[0].ok  # the other channels are not held up by it


async def test_a_slow_webhook_times_out_and_a_refused_one_is_not_retried(rig: Rig) -> None:
    async with Receiver(delay=5) as slow, Receiver(status=404) as wrong:
        rig.notifier(
            hook(slow, 'timeout = "0.2s"', "tries = 2", name="slow") + "\n" + hook(wrong, name="wrong"), backoff=1.0
        )
        rig.session_event("f", SessionState.FAILED, "exit code 1")
        await rig.clock.advance(10)
        await await_until(lambda: rig.on("webhook:wrong"), 10, "the refused webhook's outcome")
        assert rig.on("webhook:wrong")[0].error == "HTTP 404 (after 1 try)" and len(wrong.got) == 1
        await await_until(lambda: len(slow.got) == 1, 10, "the slow webhook's first try")
        await asyncio.sleep(0.3)  # its try timed out: it waits for the backoff
        await rig.clock.advance(1)
        await await_until(lambda: rig.on("webhook:slow"), 10, "the slow webhook's outcome")
        (ev,) = rig.on("webhook:slow")
        assert not ev.ok and ev.error == "no answer within 0.2s (after 2 tries)" and len(slow.got) == 2


async def test_a_webhook_nobody_listens_on(rig: Rig) -> None:
    rx = Receiver()
    await rx.start()
    await rx.stop()  # its port is free now: connections are refused
    rig.notifier(hook(rx, "tries = 1"))
    rig.session_event("f", SessionState.FAILED, "exit code 1")
    await rig.clock.advance(10)
    await await_until(lambda: rig.on("webhook:ops"), 10, "the webhook's outcome")
    (ev,) = rig.on("webhook:ops")
    assert not ev.ok and ev.error is not None and ev.error.startswith("cannot connect") and rx.url not in ev.error


async def test_ntfy_and_slack_bodies(rig: Rig) -> None:
    async with Receiver() as ntfy, Receiver() as slack:
        rig.notifier(
            hook(ntfy, 'format = "ntfy"', 'headers = { Authorization = "Bearer tk_1" }', name="phone")
            + "\n"
            + hook(slack, 'format = "slack"', name="team")
        )
        question = {"kind": "question", "id": "q", "text": "ping <!channel> & <https://x.test|click>?"}
        rig.session_event("asker", SessionState.WAITING, needs=question)
        await rig.clock.advance(10)
        await await_until(lambda: ntfy.got and slack.got, 10, "both webhooks")
        got = ntfy.got[0]
        assert got.path == "/hook" and got.body.decode() == "asker: asks: ping <!channel> & <https://x.test|click>?"
        assert got.headers["Title"] == "asker needs you" and got.headers["Priority"] == "default"
        assert got.headers["Tags"] == "crewtui,waiting" and got.headers["Authorization"] == "Bearer tk_1"
        assert got.headers["Content-Type"].startswith("text/plain")
        assert slack.got[0].json() == {
            "text": "*asker needs you*\nasker: asks: ping &lt;!channel&gt; &amp; &lt;https://x.test|click&gt;?"
        }


def test_an_ntfy_title_out_of_ascii_is_an_encoded_word() -> None:
    crew = parse_crew('[[notify.webhooks]]\nurl = "http://127.0.0.1:1/t"\nformat = "ntfy"')
    notice = Notice(trigger="failed", title="ünïcode failed\nX-Injected: 1", text="t", count=1, ts=0, crew="c")
    _, headers = webhook_request(crew.notify.webhooks[0], notice)
    assert headers["Title"].startswith("=?utf-8?") and "\n" not in headers["Title"]
    assert headers["Priority"] == "high"


# ------------------------------------------------------------------------------------------ desktop


def fake_notify_send(bin_dir: Path, record: Path, code: int = 0, sleep: float = 0) -> None:
    """A `notify-send` that writes its argv (NUL-separated) to `record`."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "notify-send"
    script.write_text(
        "#!/bin/sh\n"
        f"for a in \"$@\"; do printf '%s\\0' \"$a\"; done > '{record}'\n"
        + (f"sleep {sleep}\n" if sleep else "")
        + f"exit {code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


async def test_desktop_runs_notify_send_where_a_desktop_session_exists(rig: Rig, tmp_path: Path) -> None:
    record = tmp_path / "argv"
    fake_notify_send(tmp_path / "bin", record)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "DISPLAY": ":0"}
    n = rig.notifier("terminal = false", environ=env)
    assert list(n.gates) == ["desktop"]
    rig.session_event("-rf", SessionState.FAILED, "exit code 1 <b>bold</b> & more")
    await rig.clock.advance(10)
    await await_until(lambda: rig.on("desktop"), 10, "notify-send")
    assert rig.on("desktop")[0].ok
    argv = record.read_bytes().split(b"\0")[:-1]
    assert [a.decode() for a in argv] == [
        "--app-name=crewtui",
        "--urgency=critical",
        "--",  # a label or title that starts with '-' is never taken for an option
        "-rf failed",
        "-rf: exit code 1 &lt;b&gt;bold&lt;/b&gt; &amp; more",
    ]


@pytest.mark.parametrize("var", ["WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"])
async def test_auto_desktop_follows_the_session(rig: Rig, tmp_path: Path, var: str) -> None:
    fake_notify_send(tmp_path / "bin", tmp_path / "argv")
    path = f"{tmp_path / 'bin'}:/usr/bin:/bin"
    assert "desktop" not in rig.notifier(environ={"PATH": path}).gates  # no display, no bus: no desktop
    assert "desktop" in rig.notifier(environ={"PATH": path, var: "x"}).gates
    assert "desktop" not in rig.notifier("desktop = false", environ={"PATH": path, var: "x"}).gates
    # auto and no notify-send: quietly off; true and none: each try is a failure on the timeline
    assert "desktop" not in rig.notifier(environ={"PATH": str(tmp_path), var: "x"}).gates
    assert "desktop" in rig.notifier("desktop = true", environ={"PATH": str(tmp_path)}).gates


async def test_notify_send_failing_missing_or_hanging_is_recorded(rig: Rig, tmp_path: Path) -> None:
    fake_notify_send(tmp_path / "bin", tmp_path / "argv", code=3)
    rig.notifier("terminal = false\ndesktop = true", environ={"PATH": str(tmp_path / "nowhere")})
    rig.notifier("terminal = false\ndesktop = true", environ={"PATH": str(tmp_path / "bin")})
    rig.session_event("f", SessionState.FAILED, "exit code 1")
    await rig.clock.advance(10)
    await await_until(lambda: len(rig.on("desktop")) == 2, 10, "both notify-sends")
    errors = sorted(e.error or "" for e in rig.on("desktop"))
    assert errors == ["notify-send exited 3", "notify-send not found on PATH (install libnotify-bin)"]
    fake_notify_send(tmp_path / "bin", tmp_path / "argv", sleep=30)
    notice = Notice(trigger="failed", title="t", text="x", count=1, ts=0, crew="c")
    t0 = time.monotonic()
    error = await notify_send(notice, {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}, timeout=0.3)
    assert error == "notify-send did not finish within 0.3s" and time.monotonic() - t0 < 5


# ------------------------------------------------------------------------------------------ the store's troubles


async def test_fenced_is_told_at_once_and_whoever_else_listens_still_hears(rig: Rig) -> None:
    told: list[str] = []
    rig.store.on_fenced = told.append
    async with Receiver() as rx:
        rig.notifier(hook(rx))
        rig.store.on_fenced("store x: another runtime took over this data dir")  # as the store's fence does
        assert told == ["store x: another runtime took over this data dir"]
        await await_until(lambda: rx.got, 10, "the fenced webhook, with no grouping wait")
        body = rx.got[0].json()
        assert body["trigger"] == "fenced" and body["title"].startswith("runtime fenced")
        assert "another runtime took over" in body["text"]


async def test_a_store_that_cannot_write_is_told_once_until_it_writes_again(rig: Rig, monkeypatch: Any) -> None:
    rig.notifier('group_for = "1s"\nmax_per_minute = 60')
    real = rig.store.writer.write_batch
    full = True

    async def write_batch(*args: Any) -> None:
        if full:
            raise sqlite3.OperationalError("database or disk is full")
        await real(*args)

    monkeypatch.setattr(rig.store.writer, "write_batch", write_batch)
    rig.bus.publish(SystemEvent(text="one"))
    await await_until(lambda: rig.store.writer.last_error, 10, "a failed batch")
    await asyncio.sleep(1.5)  # the writer retries (and fails again) after 0.5 s, then 1 s
    await rig.clock.advance(1)
    (ev,) = rig.on("terminal")
    assert ev.trigger == "store_full" and ev.title.startswith("store failing")
    assert "database or disk is full" in ev.text
    full = False
    await rig.store.flush()
    full = True
    rig.bus.publish(SystemEvent(text="two"))
    await await_until(lambda: rig.store.writer.last_error, 10, "a failed batch again")
    await rig.clock.advance(1)
    assert [e.trigger for e in rig.on("terminal")] == ["store_full", "store_full"]
    full = False


# ------------------------------------------------------------------------------------------ stop


async def test_stop_sends_what_is_grouped_and_cancels_what_cannot_finish(rig: Rig) -> None:
    async with Receiver(delay=30) as rx:
        n = rig.notifier(hook(rx, 'timeout = "60s"'), stop_grace=0.5)
        rig.session_event("f", SessionState.FAILED, "exit code 1")
        await rig.clock.advance(3)  # the group is still open
        t0 = time.monotonic()
        stopping = asyncio.ensure_future(n.stop())
        await await_until(lambda: rx.got, 10, "the grouped message sent at stop")
        await stopping
        assert time.monotonic() - t0 < 5
        assert [e.ok for e in rig.on("terminal")] == [True]
        (ev,) = rig.on("webhook:ops")
        assert not ev.ok and ev.error == "not sent: the runtime stopped first"
        assert not n._sends and not n._timers
        rig.session_event("late", SessionState.FAILED, "exit code 1")
        await rig.clock.advance(60)
        assert len(rig.sent) == 2  # a stopped notifier tells nothing more
