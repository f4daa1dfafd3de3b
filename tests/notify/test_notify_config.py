"""The `[notify]` table: its defaults, a full table, and every mistake as one line naming the key."""

from __future__ import annotations

import pytest

from crewtui.config import TRIGGERS, parse_crew
from crewtui.errors import ConfigError

FULL = """
[notify]
on = ["waiting", "failed", "timed_out", "run_below", "budget", "fenced", "store_full"]
run_below = 0.8
group_for = "10s"
max_per_minute = 6
terminal = true
desktop = "auto"

[[notify.webhooks]]
url = "http://127.0.0.1:9000/hook"
format = "json"
name = "ops"
timeout = "5s"

[[notify.webhooks]]
url = "https://ntfy.sh/crew-alerts"
format = "ntfy"
headers = { Authorization = "Bearer tk_x" }

[[notify.webhooks]]
url = "https://hooks.slack.com/services/T0/B0/XXXX"
format = "slack"
tries = 5
"""


def test_defaults_tell_of_everything_on_the_terminal_and_the_desktop_where_there_is_one() -> None:
    notify = parse_crew("").notify
    assert notify.on == list(TRIGGERS)
    assert (notify.run_below, notify.group_for, notify.max_per_minute) == (0.8, 10.0, 6)
    assert notify.terminal is True and notify.desktop == "auto" and notify.webhooks == []


def test_a_full_table() -> None:
    notify = parse_crew(FULL).notify
    assert notify.on == list(TRIGGERS)
    ops, ntfy, slack = notify.webhooks
    assert (ops.channel_name, ops.format, ops.timeout, ops.tries) == ("ops", "json", 5.0, 3)
    assert (ntfy.channel_name, ntfy.format, ntfy.headers) == ("ntfy.sh", "ntfy", {"Authorization": "Bearer tk_x"})
    assert (slack.channel_name, slack.format, slack.tries) == ("hooks.slack.com", "slack", 5)


def test_a_default_name_keeps_the_port() -> None:
    hook = parse_crew('[[notify.webhooks]]\nurl = "http://127.0.0.1:9000/x"').notify.webhooks[0]
    assert hook.channel_name == "127.0.0.1:9000"


@pytest.mark.parametrize("desktop", ["true", "false", '"auto"'])
def test_desktop_is_auto_true_or_false(desktop: str) -> None:
    assert parse_crew(f"[notify]\ndesktop = {desktop}").notify.desktop == {"true": True, "false": False}.get(
        desktop, "auto"
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            '[[notify.webhooks]]\nurl = "ftp://hooks.example/services/T000/B000/SECRET"',
            "notify.webhooks[0].url: expected an http:// or https:// URL, got 'ftp://hooks.example…'",
        ),
        (
            '[[notify.webhooks]]\nurl = "hooks.example/services/SECRET"',
            "notify.webhooks[0].url: expected an http:// or https:// URL, got 'hooks.example…'",
        ),
        (
            '[[notify.webhooks]]\nurl = "https://user:SECRET@h/a b"',
            "notify.webhooks[0].url: expected a URL without spaces or control characters, got 'https://h…'",
        ),
        (
            '[[notify.webhooks]]\nurl = "http://h/x"\nheaders = { Authorization = "Bearer SECRET\\n" }',
            "notify.webhooks[0].headers.Authorization: expected a header value without control characters (the "
            "value is not shown: it may be a secret)",
        ),
    ],
)
def test_a_refused_webhook_url_or_header_is_not_echoed_whole(text: str, line: str) -> None:
    """A Slack or ntfy URL's path, its credentials and an Authorization header are secrets: a config error (seen
    in terminals and logs) shows only the URL's scheme and host."""
    with pytest.raises(ConfigError) as err:
        parse_crew(text, source="crew.toml")
    assert str(err.value) == f"crew.toml: {line}"
    assert "SECRET" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            '[notify]\non = ["failed", "crashed"]',
            "notify.on[1]: expected 'waiting', 'failed', 'timed_out', 'run_below', 'budget', 'fenced' or "
            "'store_full', got 'crashed'",
        ),
        (
            "[notify]\nrun_below = 1.5",
            "notify.run_below: expected a completion rate between 0 and 1 (0.8 = 80%), got 1.5",
        ),
        ("[notify]\nrun_below = -0.1", "notify.run_below: expected a completion rate between 0 and 1"),
        ('[notify]\nrun_below = "80%"', "notify.run_below: expected a completion rate between 0 and 1"),
        ("[notify]\nrun_below = nan", "notify.run_below: expected a completion rate between 0 and 1"),
        ('[notify]\ngroup_for = "soon"', "notify.group_for: expected a duration like '90s', '15m' or '1h30m'"),
        ("[notify]\nmax_per_minute = 0", "notify.max_per_minute: expected a number >= 1, got 0"),
        ("[notify]\nmax_per_minute = 2.5", "notify.max_per_minute: expected an integer, got 2.5"),
        ('[notify]\ndesktop = "yes"', "notify.desktop: expected \"auto\", true or false, got 'yes'"),
        ("[notify]\nterminal = 1", "notify.terminal: expected true or false, got 1"),
        ("[notify]\nbell = true", "notify.bell: unknown key (known: on, run_below, group_for, max_per_minute,"),
        ('[[notify.webhooks]]\nurl = "ftp://host/x"', "notify.webhooks[0].url: expected an http:// or https:// URL"),
        ('[[notify.webhooks]]\nurl = "hooks.slack.com/x"', "notify.webhooks[0].url: expected an http:// or https://"),
        ('[[notify.webhooks]]\nurl = "http:///x"', "notify.webhooks[0].url: expected a URL with a host"),
        ('[[notify.webhooks]]\nurl = "http://h:99999/x"', "notify.webhooks[0].url: expected an http:// or https://"),
        ('[[notify.webhooks]]\nurl = "http://h/a b"', "notify.webhooks[0].url: expected a URL without spaces"),
        (
            '[[notify.webhooks]]\nurl = "http://h/x"\nformat = "teams"',
            "notify.webhooks[0].format: expected 'json', 'ntfy' or 'slack', got 'teams'",
        ),
        ('[[notify.webhooks]]\nurl = "http://h/x"\ntimeout = "0s"', "notify.webhooks[0].timeout: expected a duration"),
        ('[[notify.webhooks]]\nurl = "http://h/x"\ntries = 0', "notify.webhooks[0].tries: expected a number >= 1"),
        ('[[notify.webhooks]]\nurl = "http://h/x"\nname = "a b"', "notify.webhooks[0].name: expected 1-64 characters"),
        (
            '[[notify.webhooks]]\nurl = "http://h/x"\nheaders = { "X Bad" = "v" }',
            'notify.webhooks[0].headers."X Bad": expected an HTTP header name',
        ),
        (
            '[[notify.webhooks]]\nurl = "http://h/x"\nheaders = { X-Ok = "a\\nb" }',
            "notify.webhooks[0].headers.X-Ok: expected a header value without control characters",
        ),
        (
            '[[notify.webhooks]]\nurl = "http://h/x"\n[[notify.webhooks]]\nurl = "https://h/y"',
            "notify.webhooks[1].name: expected each webhook to have its own name, got 'h' for webhooks[0] too",
        ),
        ('[[notify.webhooks]]\nformat = "json"', "notify.webhooks[0].url: required key is missing"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(text: str, line: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_crew(text, source="crew.toml")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"crew.toml: {line}"), message
