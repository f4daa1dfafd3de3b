"""Notifications from a real headless runtime (`crewtui run --headless`) to a real HTTP receiver on 127.0.0.1:
20 sessions that fail within moments of each other are one grouped webhook, and a webhook that does not answer
is retried with backoff while the runtime goes on serving, its failure on the timeline."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.faults.helpers import ENV, Headless, call, kill_leftover_sessions, wait_until
from tests.notify.receiver import ThreadedReceiver

# No desktop session for the runtime under test, whatever the machine running the tests has.
QUIET_ENV = {k: v for k, v in ENV.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS")}


def crew(tmp_path: Path, url: str, *webhook: str, group_for: str = "3s") -> Path:
    path = tmp_path / "crew.toml"
    path.write_text(
        "\n".join(
            [
                "[crew]",
                'name = "alerts"',
                "[notify]",
                f'group_for = "{group_for}"',
                "desktop = false",
                "[[notify.webhooks]]",
                f"url = {json.dumps(url)}",
                'name = "ops"',
                *webhook,
            ]
        )
        + "\n"
    )
    return path


def notifications(h: Headless) -> list[dict[str, Any]]:
    return [e for e in call(h.dd.socket, "events", timeout=30)["result"] if e["kind"] == "notification"]


def test_twenty_sessions_failing_within_a_second_are_one_grouped_webhook(tmp_path: Path) -> None:
    with ThreadedReceiver() as rx:
        h = Headless(tmp_path / "data", crew(tmp_path, rx.url), env=QUIET_ENV)
        try:
            labels = [f"nightly-{i:02d}" for i in range(1, 21)]
            for label in labels:
                reply = call(h.dd.socket, "spawn", label=label, argv=["sh", "-c", "exit 1"])
                assert reply["ok"], reply

            def all_failed() -> bool:
                listed = call(h.dd.socket, "list", prefix="nightly-")["result"]
                return len(listed) == 20 and all(s["state"] == "failed" for s in listed)

            wait_until(all_failed, 30, "the 20 sessions to fail")
            events = call(h.dd.socket, "events", timeout=30)["result"]
            failed_at = [e["ts"] for e in events if e["kind"] == "session_state_changed" and e["new"] == "failed"]
            assert len(failed_at) == 20 and max(failed_at) - min(failed_at) < 3  # all within one group window

            wait_until(lambda: rx.got, 30, "the grouped webhook")
            time.sleep(4)  # longer than group_for: a second message would have come by now
            assert len(rx.got) == 1
            body = rx.got[0].json()
            assert body["count"] == 20 and body["trigger"] == "failed" and body["title"] == "20 sessions failed"
            assert sorted(s["label"] for s in body["sessions"]) == labels
            assert body["crew"] == "alerts" and body["text"].splitlines()[-1] == "+10 more"

            # Every notification sent is on the timeline: one per channel, with the sessions it told of.
            sent = notifications(h)
            assert sorted(e["channel"] for e in sent) == ["terminal", "webhook:ops"]
            for e in sent:
                assert e["ok"] and e["count"] == 20 and e["trigger"] == "failed" and len(e["sessions"]) == 20
            keys = {s["key"] for s in body["sessions"]}
            assert set(sent[0]["sessions"]) == keys
        finally:
            h.stop()
            kill_leftover_sessions(tmp_path / "data")


def test_a_webhook_that_does_not_answer_is_retried_and_never_holds_up_the_runtime(tmp_path: Path) -> None:
    with ThreadedReceiver(delay=30) as rx:
        h = Headless(
            tmp_path / "data", crew(tmp_path, rx.url, 'timeout = "1s"', "tries = 3", group_for="1s"), env=QUIET_ENV
        )
        try:
            assert call(h.dd.socket, "spawn", label="broken", argv=["sh", "-c", "exit 2"])["ok"]
            wait_until(lambda: rx.got, 30, "the webhook's first try")
            # The webhook hangs: spawns, lists and sessions go on as ever.
            t0 = time.monotonic()
            reply = call(h.dd.socket, "spawn", label="during", argv=["sh", "-c", "echo fine"])
            assert reply["ok"] and time.monotonic() - t0 < 2
            wait_until(
                lambda: call(h.dd.socket, "get", ref="during")["result"]["state"] == "done", 10, "the session to end"
            )
            assert time.monotonic() - t0 < 5

            def failure() -> list[dict[str, Any]]:
                return [e for e in notifications(h) if e["channel"] == "webhook:ops"]

            (ev,) = wait_until(failure, 30, "the webhook's failure on the timeline")
            assert not ev["ok"] and ev["error"] == "no answer within 1s (after 3 tries)"
            assert ev["title"] == "broken failed"
            # Three tries, with one second and then two between the end of a try and the next.
            assert len(rx.got) == 3
            gaps = [b.at - a.at for a, b in zip(rx.got, rx.got[1:], strict=False)]
            assert 1.9 <= gaps[0] < 4 and 2.9 <= gaps[1] < 6, gaps
            assert [e["ok"] for e in notifications(h) if e["channel"] == "terminal"] == [True]
        finally:
            h.stop()
            kill_leftover_sessions(tmp_path / "data")
