"""OpenCode (`opencode run`): one task per run, JSON events out, continued by resuming its session.

Checked against opencode-ai 1.18.33 run against the project's fake model server (the streams in
tests/fixtures/agent-streams/opencode-*.jsonl, recorded by scripts/record-agent-streams.py --others). Run as
`opencode run --format json TASK`; each stdout line is `{"type","timestamp","sessionID",…}`:

    step_start  {"part":{"type":"step-start",…}}                 a model call begins
    text        {"part":{"type":"text","text":"…"}}              a finished text part
    reasoning   {"part":{"type":"reasoning","text":"…"}}         (with --thinking only)
    tool_use    {"part":{"type":"tool","tool":"bash","state":{"status":"completed"|"error","input":{…},
                 "output":"…","error":"…","title":"…"}}}         a finished tool call
    step_finish {"part":{"type":"step-finish","reason":"stop"|"tool-calls"|…,"cost":0.0012,
                 "tokens":{"total","input","output","reasoning","cache":{"read","write"}}}}   one model call's usage
    error       {"error":{"name":"APIError","data":{"message":"…","statusCode":429,"isRetryable":true,…}}}
    done        {"reason":"idle","rejected":["bash",…]}           (older sources; 1.18.33 prints no end line)

Each step_finish is one model call: its tokens and cost are added (the cost is the model's price in opencode's
config times the tokens; 0 for a model without one). OpenCode's `tokens.input` is already the uncached input;
its `reasoning` tokens are counted apart from `output` and are billed as output, so output = output + reasoning.
A session title is asked of the model in a call of its own that prints nothing (its tokens are not reported).

The end of the run: 1.18.33 prints no end line, so the turn ends at the step_finish whose reason is not
`tool-calls` (opencode's loop stops there), at the step_finish after a tool call whose permission was refused
(opencode stops after a refusal), at an `error` (the session goes idle after it; the exit code is 1), or at a
`done` line if one comes. Rate limits: opencode retries a 429 / 5xx by itself (1.18.33: five retries, honouring
retry-after) and prints nothing while it does; only the final `error` (statusCode 429) says so.

Permissions: `allow` → `--auto` (every permission not explicitly denied in its config is granted). `deny` →
OPENCODE_PERMISSION={"bash":"ask","edit":"ask","webfetch":"ask"} (in its environment): `opencode run`
rejects every permission that asks, and bash/edit/webfetch are `allow` in its defaults, so without this it
would run them. It cannot ask on stdio.

stdin: `opencode run` reads a piped stdin to its end before it starts (and appends it to the message), so the
runtime closes its stdin at once (`reads_stdin = False`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from crewtui.adapters.base import (
    Activity,
    AgentEvent,
    AgentOptions,
    AgentSession,
    Conversation,
    Cost,
    Permissions,
    Preset,
    RateLimited,
    Said,
    Tokens,
    TurnEnded,
    Unparsed,
    Usage,
    as_int,
    as_num,
    dumps,
    loads,
    one_line,
    tool_activity,
)
from crewtui.errors import BadInput

# `deny`: the permissions that would otherwise be granted ask, and `opencode run` refuses whatever asks.
DENY_PERMISSION = '{"bash":"ask","edit":"ask","webfetch":"ask"}'
_RATE_WORDS = ("429", "rate limit", "rate_limit", "ratelimit", "too many requests", "overloaded", "529")
_RATE_STATUS = (429, 529)
_REFUSED = "rejected permission"  # PermissionRejectedError: "The user rejected permission to use this …"
_GOES_ON = ("tool-calls", "unknown")  # step_finish reasons after which opencode asks the model again


def _rate_limited(text: str) -> bool:
    low = text.lower()
    return any(w in low for w in _RATE_WORDS)


def _error_status(error: Any) -> int | None:
    data = error.get("data") if isinstance(error, dict) else None
    status = data.get("statusCode") if isinstance(data, dict) else None
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        data = error.get("data")
        if isinstance(data, dict) and data.get("message"):
            return str(data["message"])
        return str(error.get("message") or error.get("name") or "error")
    return str(error or "error")


class OpencodeConversation(Conversation):
    steer_mode = "next_turn"
    closes_stdin = False

    def __init__(self, options: AgentOptions, task: str | None) -> None:
        super().__init__(options, task)
        self._session = False
        self._last: str | None = None
        self._error: str | None = None
        self._rate_limited = False
        self._refused: list[str] = []  # tools whose permission was refused in this run
        self._over = False  # this run's turn has ended

    def start(self) -> list[str]:
        self.asked += 1  # the task, in the argv
        return []

    def feed(self, line: str) -> list[AgentEvent]:
        msg = loads(line)
        if msg is None:
            return [Unparsed(line)] if line.strip() else []
        kind = msg.get("type")
        out: list[AgentEvent] = []
        sid = msg.get("sessionID")
        if not self._session and isinstance(sid, str) and sid:
            self._session = True
            out.append(AgentSession(sid))
        part = msg.get("part")
        p: dict[str, Any] = part if isinstance(part, dict) else {}
        if kind == "step_start":
            self._over = False
            out.append(Activity("thinking"))
        elif kind == "text":
            text = str(p.get("text") or "")
            if text:
                self._last = text
                out += [Said("assistant", text), Activity("writing")]
        elif kind == "reasoning":
            out.append(Activity("thinking"))
        elif kind == "tool_use":
            out += self._tool(p)
        elif kind == "step_finish":
            tokens = p.get("tokens") if isinstance(p.get("tokens"), dict) else {}
            assert isinstance(tokens, dict)
            cache = tokens.get("cache") if isinstance(tokens.get("cache"), dict) else {}
            assert isinstance(cache, dict)
            out.append(
                Usage(
                    Tokens(
                        input=as_int(tokens.get("input")),
                        output=as_int(tokens.get("output")) + as_int(tokens.get("reasoning")),
                        cache_read=as_int(cache.get("read")),
                        cache_write=as_int(cache.get("write")),
                    )
                )
            )
            cost = as_num(p.get("cost"))
            if cost is not None:
                out.append(Cost(cost, total=False))
            if p.get("reason") not in _GOES_ON or self._refused:
                out += self._end()
        elif kind == "error":
            error = msg.get("error")
            text = _error_text(error)
            self._error = text
            out.append(Said("error", text))
            if _error_status(error) in _RATE_STATUS or _rate_limited(text):
                self._rate_limited = True
                rl = RateLimited(status=_error_status(error) or 429)
                out += [rl, Activity(rl.describe())]
            out += self._end()
        elif kind == "done":
            rejected = msg.get("rejected")
            if isinstance(rejected, list):
                self._refused += [str(r) for r in rejected if str(r) not in self._refused]
            out += self._end()
        else:
            out.append(Unparsed(line))
        return out

    def _end(self) -> list[AgentEvent]:
        """The run's turn ends (once)."""
        if self._over:
            return []
        self._over = True
        self.ended += 1
        out: list[AgentEvent] = []
        if self._refused:
            out.append(Said("system", "permissions refused: " + ", ".join(self._refused)))
        error = self._error
        out.append(
            TurnEnded(
                text=self._last,
                is_error=error is not None,
                error=one_line(error, 300) if error else None,
                rate_limited=error is not None and self._rate_limited,
            )
        )
        out.append(Activity(f"failed: {one_line(error)}" if error else "idle"))
        self._error = None
        self._rate_limited = False
        self._refused = []
        return out

    def _tool(self, p: dict[str, Any]) -> list[AgentEvent]:
        name = str(p.get("tool") or "tool")
        state = p.get("state") if isinstance(p.get("state"), dict) else {}
        assert isinstance(state, dict)
        args = state.get("input")
        out: list[AgentEvent] = [Said("tool", dumps(args), name=name), Activity(tool_activity(name, args))]
        if state.get("status") == "error":
            error = str(state.get("error") or "error")
            if _REFUSED in error and name not in self._refused:
                self._refused.append(name)
            out.append(Said("error", error, name=name))
        else:
            out.append(Said("tool_result", str(state.get("output") or ""), name=name))
        return out


class Opencode(Preset):
    name = "opencode"
    program = "opencode"
    install = "npm install -g opencode-ai"
    conversation_class = OpencodeConversation
    permissions: ClassVar[tuple[Permissions, ...]] = ("allow", "deny")
    reports_cost = True
    reads_stdin = False

    def _flags(self, options: AgentOptions) -> list[str]:
        return [
            "run",
            "--format",
            "json",
            *(["--auto"] if options.permissions == "allow" else []),
            *(["-m", options.model] if options.model else []),
        ]

    def argv(self, options: AgentOptions, task: str | None) -> list[str]:
        tail = ["--", task] if task is not None else []
        return [*self.command(options), *self._flags(options), *options.args, *tail]

    def env(self, options: AgentOptions) -> dict[str, str]:
        return {"OPENCODE_PERMISSION": DENY_PERMISSION} if options.permissions == "deny" else {}

    def resume_argv(self, options: AgentOptions, agent_session: str, text: str) -> list[str]:
        if not agent_session:
            raise BadInput("opencode: no session id to resume")
        return [
            *self.command(options),
            *self._flags(options),
            "--session",
            agent_session,
            *options.args,
            "--",
            text,
        ]
