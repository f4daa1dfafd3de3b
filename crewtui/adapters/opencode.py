"""OpenCode (`opencode run`): one task per run, JSON events out, continued by resuming its session.

Based on `packages/opencode/src/cli/cmd/run.ts` (anomalyco/opencode, formerly sst/opencode, 2026 sources; not run
here). Run as `opencode run --format json TASK`; each stdout line is `{"type","timestamp","sessionID",…}`:

    step_start  {"part":{"type":"step-start",…}}                 a model call begins
    text        {"part":{"type":"text","text":"…"}}              a finished text part
    reasoning   {"part":{"type":"reasoning","text":"…"}}         (with --thinking only)
    tool_use    {"part":{"type":"tool","tool":"bash","state":{"status":"completed"|"error","input":{…},
                 "output":"…","error":"…","title":"…"}}}         a finished tool call
    step_finish {"part":{"type":"step-finish","reason":"…","cost":0.0012,
                 "tokens":{"input","output","reasoning","cache":{"read","write"}}}}   one model call's usage
    error       {"error":{"name":"…","data":{"message":"…"}}}
    done        {"reason":"idle","rejected":["bash",…]}           the run is over (permissions it refused)

Each step_finish is one model call: its tokens and cost are added. OpenCode's `tokens.input` is already the
uncached input; its `reasoning` tokens are counted apart from `output` and are billed as output, so output =
output + reasoning. Permissions: `allow` → `--auto` (every permission not explicitly denied in its config is
granted); `deny` → the default, under which `opencode run` rejects every permission request by itself (listed
in `done.rejected`). It cannot ask on stdio.

stdin: `opencode run` reads a piped stdin to its end before it starts (and appends it to the message), and the
runtime keeps an agent's stdin open, so the preset runs it with stdin from /dev/null
(`sh -c 'exec "$@" </dev/null' sh opencode run …`).
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
    dumps,
    loads,
    one_line,
    tool_activity,
)
from crewtui.errors import BadInput

NO_STDIN = ["sh", "-c", 'exec "$@" </dev/null', "sh"]
_RATE_WORDS = ("429", "rate limit", "ratelimit", "too many requests", "overloaded", "529")


def _rate_limited(text: str) -> bool:
    low = text.lower()
    return any(w in low for w in _RATE_WORDS)


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
            cost = p.get("cost")
            if isinstance(cost, (int, float)) and not isinstance(cost, bool) and cost >= 0:
                out.append(Cost(float(cost), total=False))
        elif kind == "error":
            text = _error_text(msg.get("error"))
            self._error = text
            if _rate_limited(text):
                rl = RateLimited(status=429)
                out += [rl, Activity(rl.describe())]
            out.append(Said("error", text))
        elif kind == "done":
            self.ended += 1
            rejected = msg.get("rejected")
            if isinstance(rejected, list) and rejected:
                out.append(Said("system", "permissions refused: " + ", ".join(str(r) for r in rejected)))
            error = self._error
            out.append(
                TurnEnded(
                    text=self._last,
                    is_error=error is not None,
                    error=one_line(error, 300) if error else None,
                    rate_limited=error is not None and _rate_limited(error),
                )
            )
            out.append(Activity(f"failed: {one_line(error)}" if error else "idle"))
            self._error = None
        else:
            out.append(Unparsed(line))
        return out

    def _tool(self, p: dict[str, Any]) -> list[AgentEvent]:
        name = str(p.get("tool") or "tool")
        state = p.get("state") if isinstance(p.get("state"), dict) else {}
        assert isinstance(state, dict)
        args = state.get("input")
        out: list[AgentEvent] = [Said("tool", dumps(args), name=name), Activity(tool_activity(name, args))]
        if state.get("status") == "error":
            out.append(Said("error", str(state.get("error") or "error"), name=name))
        else:
            out.append(Said("tool_result", str(state.get("output") or ""), name=name))
        return out


class Opencode(Preset):
    name = "opencode"
    program = "opencode"
    install = "npm install -g opencode-ai"
    steer_mode = "next_turn"
    permissions: ClassVar[tuple[Permissions, ...]] = ("allow", "deny")
    reports_cost = True

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
        return [*NO_STDIN, *self.command(options), *self._flags(options), *options.args, *tail]

    def conversation(self, options: AgentOptions, task: str | None) -> Conversation:
        return OpencodeConversation(options, task)

    def resume_argv(self, options: AgentOptions, agent_session: str, text: str) -> list[str]:
        if not agent_session:
            raise BadInput("opencode: no session id to resume")
        return [
            *NO_STDIN,
            *self.command(options),
            *self._flags(options),
            "--session",
            agent_session,
            *options.args,
            "--",
            text,
        ]
