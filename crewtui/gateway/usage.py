"""Token usage of model API responses, measured as they stream through the gateway.

The gateway forwards every chunk of every model response untouched and feeds a copy to a `UsageMeter`, which
knows the usage so far: what a session spent is what the upstream reported, not what the agent says it spent.
Three APIs are read (`api_of` tells them by request path): Anthropic Messages, OpenAI Responses and OpenAI Chat
Completions, streamed (Server-Sent Events) or not (one JSON body). Their counts are normalised Anthropic-style in
`Measured`: `input` is the uncached input, with cache reads and writes apart (OpenAI counts cached tokens inside
its input; they are taken out).

The meter is on the hot path and is fed whatever arrives, so it is cheap and never raises:

- SSE is cut into lines (LF, CRLF or CR, split anywhere between chunks) and only `data:` lines are kept. An
  event's data is json-decoded only when it can matter: it names `"usage"` with something other than null, or
  the model is still unknown and it names `"model"`. Text deltas, the bulk of a stream, are never decoded.
- A line over 1 MiB, or an event's data over 1 MiB, is dropped rather than held: memory stays bounded whatever
  the upstream sends. A JSON body is held up to 8 MiB and parsed when asked; a larger one is not measured.
- Garbage (not JSON, not SSE, not the expected shapes) leaves the usage unknown (`Measured.known` False).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Literal

Api = Literal["anthropic", "responses", "chat"]

_MAX_LINE = 1 << 20
_MAX_JSON = 8 << 20
_PATHS: dict[str, Api] = {"/messages": "anthropic", "/responses": "responses", "/chat/completions": "chat"}
# Where an event nests the object carrying `model` and `usage` (message_start's `message`, response.completed's
# `response`); the top level is looked at too, which is where non-streamed bodies and the other events carry it.
_NESTED: dict[Api, str | None] = {"anthropic": "message", "responses": "response", "chat": None}
# The usage fields of each API: (input, output, details object or None, cache read, cache write). For the
# OpenAI APIs input includes the cached tokens and the cache counts sit in the details object.
_FIELDS: dict[Api, tuple[str, str, str | None, str, str]] = {
    "anthropic": ("input_tokens", "output_tokens", None, "cache_read_input_tokens", "cache_creation_input_tokens"),
    "responses": ("input_tokens", "output_tokens", "input_tokens_details", "cached_tokens", "cache_write_tokens"),
    "chat": ("prompt_tokens", "completion_tokens", "prompt_tokens_details", "cached_tokens", "cache_write_tokens"),
}
_USAGE = b'"usage"'
_NULL_USAGE = (b'"usage":null', b'"usage": null')


def api_of(path: str) -> Api | None:
    """Which model API a request path (after the gateway's /s/<token> prefix, e.g. "/v1/messages", "/v1/responses",
    "/v1/chat/completions", also without "/v1" prefix like "/responses", "/chat/completions") is; None for anything else
    (count_tokens, models list, ... : forwarded but not metered). "/v1/messages/count_tokens" -> None."""
    # Claude Code asks for /v1/messages?beta=true: the query says nothing about the API.
    path = path.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    if path.startswith("/v1/"):
        path = path[3:]
    return _PATHS.get(path)


def estimate_input_tokens(body: bytes) -> int:
    """A pre-request estimate of input tokens from the request body size (~4 bytes a token, at least 1)."""
    return max(1, (len(body) + 3) // 4)


@dataclass
class Measured:
    """Usage of one response, normalised Anthropic-style: `input` is UNCACHED input tokens."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    model: str | None = None
    known: bool = False  # a usage object was seen (False: garbage, an error body, or cut off before any usage)

    @property
    def total(self) -> int:
        """Every token the response was charged for: uncached input, cache reads and writes, output."""
        return self.input + self.output + self.cache_read + self.cache_write


def _count(value: object) -> int | None:
    # bool is an int to Python but never a count on the wire
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


@dataclass
class _Counts:
    """What the response has said so far, as sent: each field is the last value seen (the APIs send running or
    final totals, never increments), so taking an event twice changes nothing."""

    api: Api
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    model: str | None = None
    known: bool = False

    def take(self, obj: dict[str, Any]) -> None:
        nested = _NESTED[self.api]
        inner = obj.get(nested) if nested else None
        for place in (inner, obj) if isinstance(inner, dict) else (obj,):
            model = place.get("model")
            if self.model is None and isinstance(model, str) and model:
                self.model = model
            usage = place.get("usage")
            if isinstance(usage, dict):
                self._take_usage(usage)

    def _take_usage(self, usage: dict[str, Any]) -> None:
        input_key, output_key, details_key, read_key, write_key = _FIELDS[self.api]
        details = usage.get(details_key) if details_key else usage
        if not isinstance(details, dict):
            details = {}
        for name, value in (
            ("input", usage.get(input_key)),
            ("output", usage.get(output_key)),
            ("cache_read", details.get(read_key)),
            ("cache_write", details.get(write_key)),
        ):
            count = _count(value)
            if count is not None:
                setattr(self, name, count)
                self.known = True

    def measured(self) -> Measured:
        uncached = self.input
        if self.api != "anthropic":  # OpenAI's input includes the cached tokens
            uncached = max(0, self.input - self.cache_read - self.cache_write)
        return Measured(uncached, self.output, self.cache_read, self.cache_write, self.model, self.known)


def _decode(payload: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, absurdly nested or huge numbers
        return None
    return obj if isinstance(obj, dict) else None


class UsageMeter:
    """Fed the response body in chunks as they pass (split anywhere, even inside a UTF-8 char or line); knows the
    usage so far."""

    def __init__(self, api: Api, content_type: str) -> None:
        self._api: Api = api
        self._sse = content_type.strip().lower().startswith("text/event-stream")
        self._counts = _Counts(api)
        # SSE: the unfinished line, the data lines of the unfinished event
        self._partial = bytearray()
        self._skip_line = False  # the rest of an over-long line is coming: drop it
        self._skip_lf = False  # the last chunk ended in CR: a LF opening the next one ends no new line
        self._data: list[bytes] = []
        self._data_size = 0
        self._skip_event = False  # the event's data went over the cap: drop it
        # JSON: the body so far, and its parse (None: not parsed since the last chunk)
        self._body = bytearray()
        self._too_big = False
        self._parsed: Measured | None = None

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._sse:
            self._feed_sse(chunk)
        elif not self._too_big:
            self._parsed = None
            if len(self._body) + len(chunk) > _MAX_JSON:
                self._too_big = True
                self._body = bytearray()
            else:
                self._body += chunk

    def result(self) -> Measured:
        if not self._sse:
            return replace(self._parse_json())
        if not self._data or self._skip_event:
            return self._counts.measured()
        # An event whose data lines have all arrived but whose closing blank line has not (the client hung up, or
        # it is simply in the next chunk) counts as far as it goes; taken on a copy, as it is taken again later.
        counts = replace(self._counts)
        self._take_payload(b"\n".join(self._data), counts)
        return counts.measured()

    # -- JSON ----------------------------------------------------------------------------------------------------

    def _parse_json(self) -> Measured:
        if self._parsed is None:
            counts = _Counts(self._api)
            obj = None if self._too_big else _decode(bytes(self._body))
            if obj is not None:
                counts.take(obj)
            self._parsed = counts.measured()
        return self._parsed

    # -- SSE -----------------------------------------------------------------------------------------------------

    def _feed_sse(self, chunk: bytes) -> None:
        if (
            not (self._skip_lf or self._partial or self._data or self._skip_line or self._skip_event)
            and chunk.endswith(b"\n\n")
            and b'"usage"' not in chunk
            and (self._counts.model is not None or b'"model"' not in chunk)
        ):
            return  # whole events with nothing to take (text deltas, pings): most chunks of a stream
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        cut = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
        if cut < 0:
            self._hold(chunk)
            return
        done, rest = chunk[: cut + 1], chunk[cut + 1 :]
        self._skip_lf = done[-1:] == b"\r"
        if self._partial:
            done = bytes(self._partial) + done
            self._partial.clear()
        lines = done.splitlines()  # bytes split only at LF, CR and CRLF
        if self._skip_line:
            self._skip_line = False
            lines = lines[1:]
        for line in lines:
            self._line(line)
        if rest:
            self._hold(rest)

    def _hold(self, piece: bytes) -> None:
        if self._skip_line:
            return
        self._partial += piece
        if len(self._partial) > _MAX_LINE:
            self._partial = bytearray()
            self._skip_line = True

    def _line(self, line: bytes) -> None:
        if not line:
            if self._data and not self._skip_event:
                data = self._data
                self._take_payload(data[0] if len(data) == 1 else b"\n".join(data), self._counts)
            self._data = []
            self._data_size = 0
            self._skip_event = False
        elif line.startswith(b"data"):
            value = line[4:]
            if value[:1] == b":":
                value = value[2:] if value[1:2] == b" " else value[1:]
            elif value:  # "database: ..." is some other field
                return
            if self._skip_event:
                return
            self._data_size += len(value) + 1
            if self._data_size > _MAX_LINE:
                self._data = []
                self._skip_event = True
            else:
                self._data.append(value)
        # event:, id:, retry:, comments and stray lines say nothing of usage

    def _take_payload(self, payload: bytes, counts: _Counts) -> None:
        if self._worth_decoding(payload, counts):
            obj = _decode(payload)
            if obj is not None:
                counts.take(obj)

    @staticmethod
    def _worth_decoding(payload: bytes, counts: _Counts) -> bool:
        if counts.model is None and b'"model"' in payload:
            return True
        seen = payload.count(_USAGE)
        # Chat streams with include_usage send "usage": null in every chunk but the last.
        return seen > 0 and seen > sum(payload.count(null) for null in _NULL_USAGE)
