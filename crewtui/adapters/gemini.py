"""Gemini CLI (`gemini`): one task per run, stream-json out, continued by resuming its session.

Checked against gemini-cli 0.61.0 run against the project's fake model server (Gemini API on 127.0.0.1; the
streams in tests/fixtures/agent-streams/gemini-*.jsonl, recorded by scripts/record-agent-streams.py --others).
Run as `gemini -p TASK -o stream-json`; one JSON object per stdout line:

    {"type":"init","timestamp":…,"session_id":"…","model":"…"}
    {"type":"message","role":"user"|"assistant","content":"…","delta":true}   assistant text comes in deltas
    {"type":"tool_use","tool_name":"run_shell_command","tool_id":"…","parameters":{…}}
    {"type":"tool_result","tool_id":"…","status":"success"|"error","output":"…","error":{"type","message"}}
    {"type":"error","severity":"warning"|"error","message":"…"}
    {"type":"result","status":"success"|"error","error":{"type","message"},"stats":{"total_tokens",
     "input_tokens","output_tokens","cached","input","duration_ms","tool_calls","models":{MODEL:{…}}}}

`stats` are the run's totals over every model: `input_tokens` is the prompt INCLUDING the cached part, `cached`
that part, `input` the rest (uncached), so Tokens(input=input, cache_read=cached, output=output_tokens + thinking).
The thinking tokens (the API's `thoughtsTokenCount`, billed as output) are in `total_tokens` but not in
`output_tokens`: thinking = total_tokens - input_tokens - output_tokens. Gemini reports no cost. It cannot be
steered while it runs: a steer resumes the session (`-r SESSION`) once the run has ended.

Rate limits: gemini retries a 429 by itself (settings `general.maxAttempts`, default 10, with a backoff
from 5 s) and says so on stderr only; an exhausted one is a `result` with status error and the API's message
("Resource has been exhausted …"), exit code 173.

Permissions: `allow` → `--approval-mode yolo`; `deny` → the default, under which headless gemini does not even
offer the model the tools that need approval (a call to one comes back as a tool_result error
`tool_not_registered`). It cannot ask on stdio. (On a piped stdin gemini waits up to 500 ms for piped input
before it starts; the task goes in the argv.)
"""

from __future__ import annotations

from typing import Any, ClassVar

from crewtui.adapters.base import (
    Activity,
    AgentEvent,
    AgentOptions,
    AgentSession,
    Conversation,
    Permissions,
    Preset,
    RateLimited,
    Said,
    Tokens,
    TurnEnded,
    Unparsed,
    Usage,
    as_int,
    dumps,
    loads,
    one_line,
    tool_activity,
)
from crewtui.errors import BadInput

_RATE_WORDS = (
    "429",
    "resource_exhausted",
    "resource has been exhausted",
    "rate limit",
    "ratelimit",
    "too many requests",
    "quota",
)


def _rate_limited(text: str) -> bool:
    low = text.lower()
    return any(w in low for w in _RATE_WORDS)


class GeminiConversation(Conversation):
    steer_mode = "next_turn"
    closes_stdin = False

    def __init__(self, options: AgentOptions, task: str | None) -> None:
        super().__init__(options, task)
        self._text: list[str] = []  # assistant deltas not yet shown
        self._last: str | None = None  # the last assistant message: the answer

    def start(self) -> list[str]:
        self.asked += 1  # the task, in the argv
        return []

    def _flush(self) -> list[AgentEvent]:
        if not self._text:
            return []
        text = "".join(self._text)
        self._text = []
        self._last = text
        return [Said("assistant", text)]

    def feed(self, line: str) -> list[AgentEvent]:
        msg = loads(line)
        if msg is None:
            return [Unparsed(line)] if line.strip() else []
        kind = msg.get("type")
        if kind == "message":
            content = str(msg.get("content") or "")
            if msg.get("role") == "user":
                return [*self._flush(), Said("user", content)]
            if not content:
                return []
            first = not self._text
            self._text.append(content)
            if not msg.get("delta"):
                return self._flush()
            return [Activity("writing")] if first else []
        if kind == "tool_use":
            name = str(msg.get("tool_name") or "tool")
            args = msg.get("parameters")
            return [*self._flush(), Said("tool", dumps(args), name=name), Activity(tool_activity(name, args))]
        if kind == "tool_result":
            error = msg.get("error")
            if msg.get("status") == "error":
                text = error.get("message") if isinstance(error, dict) else None
                return [Said("error", str(text or msg.get("output") or "error")), Activity("thinking")]
            return [Said("tool_result", str(msg.get("output") or "")), Activity("thinking")]
        if kind == "init":
            sid = msg.get("session_id")
            out: list[AgentEvent] = [AgentSession(sid)] if isinstance(sid, str) and sid else []
            return [*out, Activity("thinking")]
        if kind == "error":
            text = str(msg.get("message") or "error")
            if _rate_limited(text):
                rl = RateLimited(status=429)
                return [rl, Activity(rl.describe())]
            return [Said("error" if msg.get("severity") != "warning" else "system", text)]
        if kind == "result":
            return self._result(msg)
        return [Unparsed(line)]

    def _result(self, msg: dict[str, Any]) -> list[AgentEvent]:
        out = self._flush()
        self.ended += 1
        stats = msg.get("stats")
        if isinstance(stats, dict):
            cached = as_int(stats.get("cached"))
            uncached = stats.get("input")
            prompt, output = as_int(stats.get("input_tokens")), as_int(stats.get("output_tokens"))
            # total_tokens also holds the thinking tokens, which output_tokens leaves out: billed as output.
            thoughts = max(0, as_int(stats.get("total_tokens")) - prompt - output) if "total_tokens" in stats else 0
            tokens = Tokens(
                input=as_int(uncached) if uncached is not None else max(0, prompt - cached),
                output=output + thoughts,
                cache_read=cached,
            )
            out.append(Usage(tokens))
        ok = msg.get("status") == "success"
        error = msg.get("error")
        message = None
        if not ok:
            message = one_line(error.get("message") if isinstance(error, dict) else msg.get("status") or "error", 300)
        out.append(
            TurnEnded(
                text=self._last,
                is_error=not ok,
                error=message,
                rate_limited=not ok and _rate_limited(message or ""),
            )
        )
        out.append(Activity("idle" if ok else f"failed: {message}"))
        return out


class Gemini(Preset):
    name = "gemini"
    program = "gemini"
    install = "npm install -g @google/gemini-cli"
    conversation_class = GeminiConversation
    reads_stdin = False  # its task is in its argv
    permissions: ClassVar[tuple[Permissions, ...]] = ("allow", "deny")
    reports_cost = False

    def _flags(self, options: AgentOptions) -> list[str]:
        return [
            "-o",
            "stream-json",
            *(["--approval-mode", "yolo"] if options.permissions == "allow" else []),
            *(["-m", options.model] if options.model else []),
        ]

    def argv(self, options: AgentOptions, task: str | None) -> list[str]:
        return [
            *self.command(options),
            *(["-p", task] if task is not None else []),
            *self._flags(options),
            *options.args,
        ]

    def resume_argv(self, options: AgentOptions, agent_session: str, text: str) -> list[str]:
        if not agent_session:
            raise BadInput("gemini: no session id to resume")
        return [*self.command(options), "-r", agent_session, "-p", text, *self._flags(options), *options.args]
