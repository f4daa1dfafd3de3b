"""`[notify]`: when the runtime tells people that the crew needs them (a session waits or failed, a cron run fell
below a completion rate, a budget ran out, the runtime was fenced or its store fails) and how: the dashboards'
terminals, `notify-send`, webhooks (crewtui/runtime/notify.py sends them)."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator, model_validator

from crewtui.config.fields import Duration, PositiveDuration, _Strict
from crewtui.config.problems import describe, fail, toml_key

Trigger = Literal["waiting", "failed", "timed_out", "run_below", "budget", "fenced", "store_full"]
TRIGGERS: tuple[Trigger, ...] = get_args(Trigger)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)
_URL_HEAD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?(?:[^/?#@]*@)?(?P<host>[^/?#]*)")


def _shown_url(url: str) -> str:
    """A refused webhook URL as its error shows it: scheme and host only. The path, query and credentials of a
    Slack or ntfy URL are often its secret, and a config error goes to terminals and logs."""
    head = _URL_HEAD.match(url)
    assert head is not None  # every group is optional: it matches any string
    shown = (head["scheme"] or "") + head["host"]
    return describe(shown + ("…" if len(shown) < len(url) else ""))


def _desktop(value: Any) -> Any:
    # Not `Literal["auto"] | bool`: pydantic would read the string "yes" as true.
    if value == "auto" or isinstance(value, bool):
        return value
    raise fail(f'expected "auto", true or false, got {describe(value)}')


def _rate(value: Any) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number or not 0 <= value <= 1:
        raise fail(f"expected a completion rate between 0 and 1 (0.8 = 80%), got {describe(value)}")
    return float(value)


class WebhookConfig(_Strict):
    """`[[notify.webhooks]]`: a POST per notification: a JSON body, or ntfy's or a Slack-compatible one."""

    url: str
    format: Literal["json", "ntfy", "slack"] = "json"
    name: str | None = None  # in the channel name on the timeline (`webhook:NAME`); default: the URL's host
    timeout: PositiveDuration = 5.0  # for one try
    tries: int = Field(default=3, ge=1, le=10, strict=True)  # with exponential backoff between them
    headers: dict[str, str] = Field(default_factory=dict)  # e.g. Authorization for a protected ntfy topic

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        try:
            parts = urlsplit(url)
            host = parts.hostname
            _ = parts.port  # a bad port raises here
        except ValueError:
            raise fail(f"expected an http:// or https:// URL, got {_shown_url(url)}") from None
        if parts.scheme not in ("http", "https"):
            raise fail(f"expected an http:// or https:// URL, got {_shown_url(url)}")
        if not host:
            raise fail(f"expected a URL with a host, got {_shown_url(url)}")
        if any(c.isspace() or ord(c) < 0x20 for c in url):
            raise fail(f"expected a URL without spaces or control characters, got {_shown_url(url)}")
        if ":" not in host:  # not an IPv6 address: a name the HTTP client can encode (aiohttp fails on each send)
            try:
                host.encode("idna")
            except UnicodeError:
                raise fail(f"expected a URL with a valid host name, got {_shown_url(url)}") from None
        return url

    @field_validator("name")
    @classmethod
    def _name(cls, name: str | None) -> str | None:
        if name is not None and not _NAME.fullmatch(name):
            raise fail(f"expected 1-64 characters of A-Z a-z 0-9 . _ : -, got {describe(name)}")
        return name

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for key, value in headers.items():
            if not _HEADER_NAME.fullmatch(key):
                raise fail(f"expected an HTTP header name, got {describe(key)}", toml_key(key))
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
                msg = "expected a header value without control characters (the value is not shown: it may be a secret)"
                raise fail(msg, toml_key(key))
        return headers

    @model_validator(mode="after")
    def _one_authorization(self) -> WebhookConfig:
        # aiohttp refuses to send both (a ValueError on every message): said once, here.
        parts = urlsplit(self.url)
        if parts.username is not None or parts.password is not None:
            for key in self.headers:
                if key.lower() == "authorization":
                    msg = "expected credentials in the URL or an Authorization header, not both"
                    raise fail(msg, f"headers.{toml_key(key)}")
        return self

    @property
    def channel_name(self) -> str:
        """The name given, else the URL's host (with its port when it has one)."""
        if self.name:
            return self.name
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


class NotifyConfig(_Strict):
    """`[notify]`: which happenings are told, grouped how, and through which channels."""

    on: list[Trigger] = Field(default_factory=lambda: list(TRIGGERS))
    run_below: Annotated[float, BeforeValidator(_rate)] = 0.8  # a cron run whose completion rate is below this
    group_for: Duration = 10.0  # happenings of one trigger within this window go out as one message
    max_per_minute: int = Field(default=6, ge=1, strict=True)  # per channel; beyond it, held and merged
    terminal: bool = Field(
        default=True, strict=True
    )  # the dashboards ring the bell and send OSC 9/777 (they do the writing)
    desktop: Annotated[Literal["auto"] | bool, BeforeValidator(_desktop)] = "auto"  # notify-send
    webhooks: list[WebhookConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> NotifyConfig:
        seen: dict[str, int] = {}
        for i, hook in enumerate(self.webhooks):
            name = hook.channel_name
            if name in seen:
                raise fail(
                    f"expected each webhook to have its own name, got {name!r} for webhooks[{seen[name]}] too "
                    f"(set name = ... on one of them)",
                    f"webhooks[{i}].name",
                )
            seen[name] = i
        return self
