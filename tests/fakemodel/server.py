"""A scripted fake model server speaking Anthropic Messages, OpenAI Responses and the Gemini API, for driving real
agent CLIs.

The server (aiohttp) listens on 127.0.0.1 on a free port and runs in a thread of its own with its own event loop,
so sync tests, async tests and plain scripts can all use it::

    with FakeModel() as fake:
        fake.script(text("hello", usage=Usage(input=100, output=7)), run_command("echo hi"))
        ...  # point a CLI at fake.anthropic_base_url or fake.openai_base_url
        assert fake.model_requests()[1].body ...

The script is ONE shared FIFO of replies: each model request (`POST /v1/messages`, `POST /v1/responses`,
`POST /v1beta/models/{model}:streamGenerateContent` or `:generateContent`) takes the next reply, whichever API
asked, and the reply is written in that API's shape. When the script is empty the server answers
`default_reply` (text "ok"). `HEAD /`, `GET /`, `POST /v1/messages/count_tokens` and
`POST /v1beta/models/{model}:countTokens` take no reply. Every request (model or not, even unknown paths, which get 404) is recorded in `fake.requests`.

Usage numbers are explicit per reply (`Usage(input, output, cache_read, cache_write, reasoning)`), with
`input` meaning the uncached input tokens (Anthropic's `input_tokens`). On the wire:

- Anthropic: `input_tokens=input`, `cache_read_input_tokens=cache_read`,
  `cache_creation_input_tokens=cache_write`, `output_tokens=output` (message_start carries output_tokens 1, as
  the real API does; message_delta carries the final counts).
- Responses: `input_tokens=input+cache_read+cache_write` (OpenAI counts cached tokens inside input),
  `input_tokens_details.cached_tokens=cache_read`, `input_tokens_details.cache_write_tokens=cache_write`,
  `output_tokens=output`, `output_tokens_details.reasoning_tokens=reasoning`, `total_tokens=input+output`
  (wire values).
- Gemini: `usageMetadata` on the last chunk only: `promptTokenCount=input+cache_read+cache_write` (Gemini counts
  cached tokens inside the prompt), `cachedContentTokenCount=cache_read`, `candidatesTokenCount=output`,
  `thoughtsTokenCount=reasoning` (only when non-zero), `totalTokenCount` = their sum (prompt+candidates+thoughts).
  Streaming (`:streamGenerateContent?alt=sse`) sends `data: {GenerateContentResponse}` chunks: the text in
  pieces, then any `functionCall` part, the last chunk with `finishReason: STOP` and the usage. A "run this
  command" call is `run_shell_command` `{command, description}` (gemini-cli's shell tool). Errors are
  `{"error": {"code", "message", "status"}}` (429: `RESOURCE_EXHAUSTED`).

`fake.served` lists what each model request got, in the order the replies finished (`completed` is False when
the client hung up mid-stream, e.g. codex steered during a model call: it drops that stream and asks again) (`Served.wire_usage` is the usage object exactly as sent), so a
test can compare a CLI's reported tokens with what the fake served, token for token. `Served.request_headers` holds
the request's (lower-cased) headers, so a test can sum what was served per API key.

An optional upstream rate limit, enforced like a real provider, lets a test put a rate-limiting gateway in front
of the fake: `FakeModel(limit=Limit(requests=50, per=60.0, concurrent=4, headers=True))`, or
`fake.set_limit(Limit(...) | None)` at any time (from any thread). It applies to model requests only. A model
request is refused at once with HTTP 429, without taking a scripted reply, when `concurrent` accepted model
requests are already in flight (from arrival until the response is fully written or the client hung up), or
when `requests` were accepted within the last `per` seconds (a sliding window of acceptance times). The 429
carries `retry-after` in whole seconds (at least 1: the time until the oldest accepted request leaves the window;
1 for a concurrency refusal) and the API's error body (Anthropic `rate_limit_error`, Responses
`rate_limit_exceeded`, Gemini `RESOURCE_EXHAUSTED` with a RetryInfo). Refused requests are still recorded in
`fake.requests`, not in `fake.served`, but in `fake.refused` (`Refusal(at, reason, headers)`, `at` on the
`time.monotonic()` clock). With `headers=True` (and `requests` set), Anthropic answers carry
`anthropic-ratelimit-requests-{limit,remaining,reset}` (reset: RFC 3339 UTC, whole seconds rounded up, when the
oldest slot frees) and Responses answers `x-ratelimit-{limit,remaining,reset}-requests` (reset like "1.5s"), on
streams too. Whatever the limit, `fake.accepted_times` (time.monotonic() of each accepted model request) and
`fake.max_in_flight` (the most accepted model requests in flight at once) show the upstream's view; `reset()`
clears them with the rest.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

__all__ = [
    "ANTHROPIC",
    "GEMINI",
    "RESPONSES",
    "ErrorReply",
    "FakeModel",
    "Limit",
    "RecordedRequest",
    "Refusal",
    "Served",
    "TextReply",
    "ToolUseReply",
    "Usage",
    "error",
    "run_command",
    "slow",
    "text",
    "tool_use",
]

ANTHROPIC = "anthropic"
RESPONSES = "responses"
GEMINI = "gemini"
_GEMINI_PATH = re.compile(r"^/v1(?:beta|alpha)?/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$")


@dataclass(frozen=True)
class Usage:
    """Token counts for one model reply. `input` is uncached input; see the module docstring for the wire shapes."""

    input: int = 100
    output: int = 10
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0

    def anthropic(self) -> dict[str, int]:
        return {
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": self.output,
        }

    def responses(self) -> dict[str, Any]:
        total_input = self.input + self.cache_read + self.cache_write
        return {
            "input_tokens": total_input,
            "input_tokens_details": {"cached_tokens": self.cache_read, "cache_write_tokens": self.cache_write},
            "output_tokens": self.output,
            "output_tokens_details": {"reasoning_tokens": self.reasoning},
            "total_tokens": total_input + self.output,
        }

    def gemini(self) -> dict[str, int]:
        prompt = self.input + self.cache_read + self.cache_write
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": self.output,
            "cachedContentTokenCount": self.cache_read,
            "totalTokenCount": prompt + self.output + self.reasoning,
        }
        if self.reasoning:
            usage["thoughtsTokenCount"] = self.reasoning
        return usage


DEFAULT_USAGE = Usage()


@dataclass(frozen=True)
class TextReply:
    text: str
    usage: Usage = DEFAULT_USAGE
    delay: float = 0.0  # seconds between streamed chunks


@dataclass(frozen=True)
class ToolUseReply:
    """A tool call. `name`/`input` are used as given, unless `command` is set: then the call is "run this shell
    command" in whatever tool the client offers (Claude: Bash; Codex: exec_command / shell / shell_command)."""

    name: str = ""
    input: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    preamble: str | None = None  # text sent before the call in the same message
    usage: Usage = DEFAULT_USAGE
    delay: float = 0.0


@dataclass(frozen=True)
class ErrorReply:
    status: int = 429
    retry_after: float | None = None  # seconds, sent as the retry-after header when set
    message: str | None = None


Reply = TextReply | ToolUseReply | ErrorReply


def text(value: str, usage: Usage = DEFAULT_USAGE, delay: float = 0.0) -> TextReply:
    return TextReply(value, usage, delay)


def tool_use(
    name: str, input: dict[str, Any], usage: Usage = DEFAULT_USAGE, preamble: str | None = None
) -> ToolUseReply:
    return ToolUseReply(name=name, input=dict(input), usage=usage, preamble=preamble)


def run_command(command: str, usage: Usage = DEFAULT_USAGE, preamble: str | None = None) -> ToolUseReply:
    return ToolUseReply(command=command, usage=usage, preamble=preamble)


def error(status: int = 429, retry_after: float | None = None, message: str | None = None) -> ErrorReply:
    return ErrorReply(status, retry_after, message)


def slow(reply: TextReply | ToolUseReply, delay: float) -> TextReply | ToolUseReply:
    """The same reply, streamed with `delay` seconds between chunks."""
    if isinstance(reply, TextReply):
        return TextReply(reply.text, reply.usage, delay)
    return ToolUseReply(reply.name, reply.input, reply.command, reply.preamble, reply.usage, delay)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or the raw text when it is not JSON, or None when empty
    at: float

    @property
    def api(self) -> str | None:
        if self.method == "POST" and self.path == "/v1/messages":
            return ANTHROPIC
        if self.method == "POST" and self.path == "/v1/responses":
            return RESPONSES
        if self.method == "POST" and self.gemini_method() in ("generateContent", "streamGenerateContent"):
            return GEMINI
        return None

    def gemini_method(self) -> str | None:
        """`generateContent`, `streamGenerateContent`, `countTokens`… for a Gemini API path, else None."""
        m = _GEMINI_PATH.match(self.path)
        return m.group("method") if m else None

    def text(self) -> str:
        """The body as JSON text, for substring checks ("did the steer text reach the model?")."""
        return self.body if isinstance(self.body, str) else json.dumps(self.body)

    def tool_names(self) -> list[str]:
        tools = self.body.get("tools", []) if isinstance(self.body, dict) else []
        names: list[str] = []
        for t in tools:
            if not isinstance(t, dict):
                continue
            if isinstance(t.get("functionDeclarations"), list):  # Gemini: [{functionDeclarations: [{name}]}]
                names += [d.get("name", "") for d in t["functionDeclarations"] if isinstance(d, dict)]
            else:
                names.append(t.get("name") or t.get("function", {}).get("name", ""))
        return names


@dataclass(frozen=True)
class Served:
    api: str
    reply: Reply
    status: int
    wire_usage: dict[str, Any] | None  # the usage object exactly as sent (None for errors)
    tool_call: dict[str, Any] | None = None  # {"name", "input"/"arguments"/"args", "id"} as sent, for tool replies
    completed: bool = True  # False when the client hung up mid-stream (codex does so when steered mid-request)
    request_headers: dict[str, str] | None = None  # the model request's headers, lower-cased names


@dataclass(frozen=True)
class Limit:
    """An upstream rate limit on model requests: at most `requests` accepted within any `per` seconds (sliding
    window) and at most `concurrent` in flight at once (None: no such limit). `headers`: send the provider's
    rate-limit headers (Anthropic, Responses) on accepted answers and refusals, when `requests` is set."""

    requests: int | None = None
    per: float = 60.0
    concurrent: int | None = None
    headers: bool = False

    def __post_init__(self) -> None:
        if self.per <= 0:
            raise ValueError(f"Limit.per must be positive, not {self.per}")
        if (self.requests is not None and self.requests < 0) or (self.concurrent is not None and self.concurrent < 0):
            raise ValueError(f"Limit counts must not be negative: {self}")


@dataclass(frozen=True)
class Refusal:
    """A model request refused with 429 by the fake's own `Limit` (no scripted reply was taken)."""

    at: float  # time.monotonic()
    reason: Literal["concurrency", "rate"]
    headers: dict[str, str]  # the request's headers, lower-cased names


_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_fake_{next(_ids):04d}{uuid.uuid4().hex[:8]}"


def _lower(request: web.Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


def _chunks(value: str, parts: int = 3) -> list[str]:
    if not value:
        return [""]
    size = max(1, -(-len(value) // parts))
    return [value[i : i + size] for i in range(0, len(value), size)]


class FakeModel:
    """The fake server. Use as a context manager, or `start()` / `stop()`."""

    def __init__(
        self, model: str = "fake-model", default_reply: Reply | None = None, limit: Limit | None = None
    ) -> None:
        self.model = model
        self.default_reply: Reply = default_reply or text("ok")
        self.requests: list[RecordedRequest] = []
        self.served: list[Served] = []
        self.limit: Limit | None = limit  # change it with set_limit()
        self.refused: list[Refusal] = []
        self.accepted_times: list[float] = []  # time.monotonic() of each accepted model request, ascending
        self.max_in_flight = 0
        self._in_flight = 0
        self._script: deque[Reply] = deque()
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> FakeModel:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # pragma: no cover - reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-model", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError(f"fake model server did not start: {failure[0] if failure else 'timeout'}")
        return self

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FakeModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def anthropic_base_url(self) -> str:
        return self.url  # the client appends /v1/messages

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"  # the client appends /responses

    @property
    def gemini_base_url(self) -> str:
        return self.url  # the client appends /v1beta/models/{model}:streamGenerateContent

    # -- script --------------------------------------------------------------------------------------------------

    def script(self, *replies: Reply) -> FakeModel:
        """Append replies to the shared FIFO (one is taken per model request)."""
        with self._cond:
            self._script.extend(replies)
        return self

    def pending(self) -> int:
        with self._cond:
            return len(self._script)

    def _next_reply(self) -> Reply:
        with self._cond:
            return self._script.popleft() if self._script else self.default_reply

    # -- what happened -------------------------------------------------------------------------------------------

    def model_requests(self, api: str | None = None) -> list[RecordedRequest]:
        with self._cond:
            return [r for r in self.requests if r.api and (api is None or r.api == api)]

    def served_ok(self) -> list[Served]:
        with self._cond:
            return [s for s in self.served if s.status == 200 and s.completed]

    def total_usage(self) -> Usage:
        """The sum of the usage of every successful reply served so far."""
        total = Usage(0, 0, 0, 0, 0)
        for s in self.served_ok():
            u = s.reply.usage if not isinstance(s.reply, ErrorReply) else Usage(0, 0)
            total = Usage(
                total.input + u.input,
                total.output + u.output,
                total.cache_read + u.cache_read,
                total.cache_write + u.cache_write,
                total.reasoning + u.reasoning,
            )
        return total

    def wait_for_requests(self, count: int, timeout: float = 10.0, api: str | None = None) -> list[RecordedRequest]:
        """Block until `count` model requests (of `api`, if given) have been received; raise on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self.requests if r.api and (api is None or r.api == api)]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"fake model: {len(got)} of {count} model requests after {timeout}s")
                self._cond.wait(left)

    def reset(self) -> None:
        with self._cond:
            self.requests.clear()
            self.served.clear()
            self._script.clear()
            self.refused.clear()
            self.accepted_times.clear()
            self.max_in_flight = 0  # requests still in flight count again when the next one arrives

    # -- rate limit ----------------------------------------------------------------------------------------------

    def set_limit(self, limit: Limit | None) -> FakeModel:
        """Enforce `limit` on the model requests from now on (None: no limit). Safe from any thread."""
        with self._cond:
            self.limit = limit
        return self

    def in_flight(self) -> int:
        """How many accepted model requests are in flight now."""
        with self._cond:
            return self._in_flight

    def _window(self, now: float, per: float) -> list[float]:
        """The acceptance times within the last `per` seconds, oldest first (under self._cond)."""
        return self.accepted_times[bisect.bisect_right(self.accepted_times, now - per) :]

    def _admit(self, rec: RecordedRequest, now: float) -> tuple[ErrorReply | None, dict[str, str]]:
        """Accept a model request (counting it in flight) or refuse it; with the rate-limit headers to send.
        Called under self._cond, in the same step that records the request."""
        limit = self.limit
        refusal: ErrorReply | None = None
        if limit is not None and limit.concurrent is not None and self._in_flight >= limit.concurrent:
            message = f"fake: {self._in_flight} requests already in flight (concurrency limit {limit.concurrent})"
            refusal = ErrorReply(429, 1, message)
            self.refused.append(Refusal(now, "concurrency", dict(rec.headers)))
        elif limit is not None and limit.requests is not None:
            window = self._window(now, limit.per)
            if len(window) >= limit.requests:
                wait = window[0] + limit.per - now if window else limit.per
                message = f"fake: rate limit of {limit.requests} requests per {limit.per:g}s exceeded"
                refusal = ErrorReply(429, max(1, math.ceil(wait)), message)
                self.refused.append(Refusal(now, "rate", dict(rec.headers)))
        if refusal is None:
            self.accepted_times.append(now)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        return refusal, self._limit_headers(rec.api, now)

    def _limit_headers(self, api: str | None, now: float) -> dict[str, str]:
        limit = self.limit
        if limit is None or not limit.headers or limit.requests is None or api not in (ANTHROPIC, RESPONSES):
            return {}
        window = self._window(now, limit.per)
        remaining = max(0, limit.requests - len(window))
        reset_in = max(0.0, window[0] + limit.per - now) if window else 0.0
        if api == ANTHROPIC:
            reset_at = datetime.fromtimestamp(math.ceil(time.time() + reset_in), UTC)
            return {
                "anthropic-ratelimit-requests-limit": str(limit.requests),
                "anthropic-ratelimit-requests-remaining": str(remaining),
                "anthropic-ratelimit-requests-reset": reset_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        return {
            "x-ratelimit-limit-requests": str(limit.requests),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": f"{reset_in:.3f}".rstrip("0").rstrip(".") + "s",
        }

    # -- HTTP ----------------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.text() if request.body_exists else ""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=_lower(request),
            body=body,
            at=time.time(),
        )
        refusal: ErrorReply | None = None
        limit_headers: dict[str, str] = {}
        with self._cond:
            self.requests.append(rec)
            if rec.api is not None:
                refusal, limit_headers = self._admit(rec, time.monotonic())
            self._cond.notify_all()
        if request.method in ("HEAD", "GET") and request.path == "/":
            return web.Response(text="fake model server\n")
        if request.method == "POST" and request.path == "/v1/messages/count_tokens":
            return web.json_response({"input_tokens": max(1, len(raw) // 4)})
        if request.method == "POST" and rec.gemini_method() == "countTokens":
            return web.json_response({"totalTokens": max(1, len(raw) // 4)})
        if rec.api is None:
            return web.json_response(
                {"type": "error", "error": {"type": "not_found_error", "message": f"fake: no {request.path}"}},
                status=404,
            )
        if refusal is not None:  # refused by the limit: no scripted reply taken, never in flight
            return self._error(rec.api, refusal, limit_headers)
        try:
            return await self._reply(request, rec, body if isinstance(body, dict) else {}, limit_headers)
        finally:
            with self._cond:
                self._in_flight -= 1

    async def _reply(
        self, request: web.Request, rec: RecordedRequest, body: dict[str, Any], limit_headers: dict[str, str]
    ) -> web.StreamResponse:
        """Answer an accepted model request with the next scripted reply, the response written in full."""
        assert rec.api is not None
        reply = self._next_reply()
        try:
            if isinstance(reply, ErrorReply):
                self._record_served(Served(rec.api, reply, reply.status, None), request)
                resp: web.StreamResponse = self._error(rec.api, reply, limit_headers)
            elif rec.api == ANTHROPIC:
                resp = await self._anthropic(request, body, reply, limit_headers)
            elif rec.api == GEMINI:
                resp = await self._gemini(request, rec, body, reply)
            else:
                resp = await self._responses(request, body, reply, limit_headers)
        except ConnectionResetError:  # the client hung up mid-stream: its reply was consumed but not completed
            self._record_served(Served(rec.api, reply, 200, None, None, completed=False), request)
            return web.Response(status=499)
        if not resp.prepared:  # write a plain (not streamed) response here, so it counts in flight until written
            try:
                await resp.prepare(request)
                await resp.write_eof()
            except ConnectionResetError:  # the client is gone; what it was served is recorded already
                pass
        return resp

    def _record_served(self, served: Served, request: web.Request | None = None) -> None:
        if request is not None:
            served = replace(served, request_headers=_lower(request))
        with self._cond:
            self.served.append(served)
            self._cond.notify_all()

    def _error(self, api: str, reply: ErrorReply, extra_headers: dict[str, str] | None = None) -> web.Response:
        headers = {"request-id": _id("req"), "x-request-id": _id("req"), **(extra_headers or {})}
        if reply.retry_after is not None:
            headers["retry-after"] = f"{reply.retry_after:g}"
        if api == ANTHROPIC:
            kind = {429: "rate_limit_error", 529: "overloaded_error", 500: "api_error"}.get(reply.status, "api_error")
            message = reply.message or f"fake {kind}"
            payload: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        elif api == GEMINI:
            kind = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 529: "UNAVAILABLE"}.get(
                reply.status, "UNKNOWN"
            )
            message = reply.message or (
                "Resource has been exhausted (e.g. check quota)." if reply.status == 429 else f"fake {kind}"
            )
            payload = {"error": {"code": reply.status, "message": message, "status": kind}}
            if reply.retry_after is not None:  # google.rpc.RetryInfo, which Google's clients read for the delay
                retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{reply.retry_after:g}s"}
                payload["error"]["details"] = [retry]
        else:
            kind = {429: "rate_limit_exceeded", 500: "server_error", 529: "server_error"}.get(reply.status, "error")
            message = reply.message or f"fake {kind}"
            payload = {"error": {"type": kind, "code": kind, "message": message, "param": None}}
        return web.json_response(payload, status=reply.status, headers=headers)

    # -- Anthropic Messages --------------------------------------------------------------------------------------

    def _anthropic_blocks(
        self, body: dict[str, Any], reply: TextReply | ToolUseReply
    ) -> tuple[list[dict], str, dict | None]:
        if isinstance(reply, TextReply):
            return [{"type": "text", "text": reply.text}], "end_turn", None
        blocks: list[dict[str, Any]] = []
        if reply.preamble:
            blocks.append({"type": "text", "text": reply.preamble})
        if reply.command is not None:
            names = RecordedRequest("POST", "", {}, {}, body, 0).tool_names()
            name = "bash" if "bash" in names and "Bash" not in names else "Bash"  # OpenCode: bash; Claude: Bash
            args = {"command": reply.command, "description": "Run the scripted command"}
        else:
            name, args = reply.name, reply.input
        call = {"type": "tool_use", "id": _id("toolu"), "name": name, "input": args}
        blocks.append(call)
        return blocks, "tool_use", {"name": name, "input": args, "id": call["id"]}

    async def _anthropic(
        self,
        request: web.Request,
        body: dict[str, Any],
        reply: TextReply | ToolUseReply,
        limit_headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        blocks, stop_reason, call = self._anthropic_blocks(body, reply)
        usage = reply.usage.anthropic()
        model = body.get("model") or self.model
        msg_id = _id("msg")
        headers = {"request-id": _id("req"), **(limit_headers or {})}
        if not body.get("stream"):
            self._record_served(Served(ANTHROPIC, reply, 200, usage, call), request)
            message = {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": blocks,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": usage,
            }
            return web.json_response(message, headers=headers)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache", **headers})
        await resp.prepare(request)

        async def send(event: str, data: dict[str, Any]) -> None:
            await resp.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

        start_usage = {**usage, "output_tokens": 1}
        await send(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        )
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                await send(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
                )
                for piece in _chunks(block["text"]):
                    await self._sleep(reply.delay)
                    await send(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}},
                    )
            else:
                start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                await send(
                    "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
                )
                for piece in _chunks(json.dumps(block["input"])):
                    await self._sleep(reply.delay)
                    await send(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        },
                    )
            await send("content_block_stop", {"type": "content_block_stop", "index": index})
        await send(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": usage},
        )
        await send("message_stop", {"type": "message_stop"})
        await resp.write_eof()
        self._record_served(Served(ANTHROPIC, reply, 200, usage, call), request)
        return resp

    # -- OpenAI Responses ----------------------------------------------------------------------------------------

    @staticmethod
    def _command_call(tool_names: Iterable[str], command: str) -> tuple[str, dict[str, Any]]:
        """The "run this shell command" call in the shape of the shell tool the client offers."""
        names = set(tool_names)
        if "exec_command" in names:  # codex's unified exec (0.171.0 default)
            return "exec_command", {"cmd": command}
        if "shell_command" in names:
            return "shell_command", {"command": command}
        return "shell", {"command": ["bash", "-lc", command]}

    async def _responses(
        self,
        request: web.Request,
        body: dict[str, Any],
        reply: TextReply | ToolUseReply,
        limit_headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        usage = reply.usage.responses()
        model = body.get("model") or self.model
        resp_id = _id("resp")
        items: list[dict[str, Any]] = []
        call: dict[str, Any] | None = None
        if isinstance(reply, TextReply) or reply.preamble:
            value = reply.text if isinstance(reply, TextReply) else reply.preamble or ""
            items.append(
                {
                    "type": "message",
                    "id": _id("msg"),
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": value, "annotations": []}],
                }
            )
        if isinstance(reply, ToolUseReply):
            tool_names = RecordedRequest("POST", "", {}, {}, body, 0).tool_names()
            if reply.command is not None:
                name, args = self._command_call(tool_names, reply.command)
            else:
                name, args = reply.name, reply.input
            call_id = _id("call")
            items.append(
                {
                    "type": "function_call",
                    "id": _id("fc"),
                    "status": "completed",
                    "call_id": call_id,
                    "name": name,
                    "arguments": json.dumps(args),
                }
            )
            call = {"name": name, "arguments": args, "id": call_id}
        headers = {"content-type": "text/event-stream", "x-request-id": _id("req"), **(limit_headers or {})}
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        seq = itertools.count()

        async def send(data: dict[str, Any]) -> None:
            data = {**data, "sequence_number": next(seq)}
            await resp.write(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())

        base = {"id": resp_id, "object": "response", "created_at": int(time.time()), "model": model}
        await send({"type": "response.created", "response": {**base, "status": "in_progress", "output": []}})
        await send({"type": "response.in_progress", "response": {**base, "status": "in_progress", "output": []}})
        for index, item in enumerate(items):
            if item["type"] == "message":
                value = item["content"][0]["text"]
                await send(
                    {
                        "type": "response.output_item.added",
                        "output_index": index,
                        "item": {**item, "status": "in_progress", "content": []},
                    }
                )
                part = {"type": "output_text", "text": "", "annotations": []}
                await send(
                    {
                        "type": "response.content_part.added",
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "part": part,
                    }
                )
                for piece in _chunks(value):
                    await self._sleep(reply.delay)
                    await send(
                        {
                            "type": "response.output_text.delta",
                            "item_id": item["id"],
                            "output_index": index,
                            "content_index": 0,
                            "delta": piece,
                        }
                    )
                await send(
                    {
                        "type": "response.output_text.done",
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "text": value,
                    }
                )
                await send(
                    {
                        "type": "response.content_part.done",
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "part": {**part, "text": value},
                    }
                )
            else:
                await send(
                    {
                        "type": "response.output_item.added",
                        "output_index": index,
                        "item": {**item, "status": "in_progress", "arguments": ""},
                    }
                )
                for piece in _chunks(item["arguments"]):
                    await self._sleep(reply.delay)
                    await send(
                        {
                            "type": "response.function_call_arguments.delta",
                            "item_id": item["id"],
                            "output_index": index,
                            "delta": piece,
                        }
                    )
                await send(
                    {
                        "type": "response.function_call_arguments.done",
                        "item_id": item["id"],
                        "output_index": index,
                        "arguments": item["arguments"],
                    }
                )
            await send({"type": "response.output_item.done", "output_index": index, "item": item})
        await send(
            {"type": "response.completed", "response": {**base, "status": "completed", "output": items, "usage": usage}}
        )
        await resp.write_eof()
        self._record_served(Served(RESPONSES, reply, 200, usage, call), request)
        return resp

    # -- Gemini API ----------------------------------------------------------------------------------------------

    async def _gemini(
        self, request: web.Request, rec: RecordedRequest, body: dict[str, Any], reply: TextReply | ToolUseReply
    ) -> web.StreamResponse:
        usage = reply.usage.gemini()
        model = _GEMINI_PATH.match(rec.path)
        version = model.group("model") if model else self.model
        value = reply.text if isinstance(reply, TextReply) else reply.preamble or ""
        call: dict[str, Any] | None = None
        if isinstance(reply, ToolUseReply):
            if reply.command is not None:
                name, args = "run_shell_command", {"command": reply.command, "description": "Run the scripted command"}
            else:
                name, args = reply.name, reply.input
            call = {"name": name, "args": args}  # the real API sends no id: the client makes its own
        response_id = _id("resp")

        def chunk(parts: list[dict[str, Any]], last: bool) -> dict[str, Any]:
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
            out: dict[str, Any] = {"candidates": [candidate], "modelVersion": version, "responseId": response_id}
            if last:
                candidate["finishReason"] = "STOP"
                out["usageMetadata"] = usage
            return out

        pieces: list[list[dict[str, Any]]] = [[{"text": p}] for p in _chunks(value)] if value else []
        if call is not None:
            pieces.append([{"functionCall": call}])
        if not pieces:
            pieces = [[{"text": ""}]]
        served = Served(GEMINI, reply, 200, usage, call)
        if rec.gemini_method() == "generateContent":
            parts = [p for piece in pieces for p in piece]
            merged = [{"text": value}] if value else []
            merged += [p for p in parts if "functionCall" in p]
            self._record_served(served, request)
            return web.json_response(chunk(merged or [{"text": ""}], last=True))
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for index, parts in enumerate(pieces):
            if index:
                await self._sleep(reply.delay)
            data = chunk(parts, last=index == len(pieces) - 1)
            await resp.write(f"data: {json.dumps(data)}\r\n\r\n".encode())
        await resp.write_eof()
        self._record_served(served, request)
        return resp

    # -- pacing --------------------------------------------------------------------------------------------------

    @staticmethod
    async def _sleep(delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
