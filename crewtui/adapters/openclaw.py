"""OpenClaw (`openclaw agent exec`): one turn per run, one JSON result at the end.

Run as `openclaw agent exec TASK --json`. Its result (from crewtui's notes on the CLI,
/work/shared/reference/agent-clis.md, openclaw's npm package needing node >= 24.16; the CLI was not run here):

    {"ok":true,"status":"completed","final":"the answer","usage":{"input":1200,"output":300,"total":1500},
     "costUsd":0.0042,"sessionId":"…"}

It prints nothing else on stdout while it works, so crewtui shows "working" until the result. The JSON may be
printed pretty (several lines): lines are gathered from a line starting with "{" until they parse, tried at
each line that ends with "}" (at most `MAX_GATHER` lines and `MAX_GATHER_CHARS` characters; then they come back
as Unparsed). Usage and cost are added (one run = one turn).
The model is OpenClaw's own setting (pass flags in `args`). Permissions: only `allow`: OpenClaw
runs its tools under its own configured policy and cannot ask on stdio.
"""

from __future__ import annotations

import json
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
    Said,
    Tokens,
    TurnEnded,
    Unparsed,
    Usage,
    as_int,
    as_num,
    loads,
    one_line,
    parse_json,
)

MAX_GATHER = 2000
MAX_GATHER_CHARS = 4 << 20  # as much as one agent line may hold
_RATE_WORDS = ("429", "rate limit", "ratelimit", "too many requests", "overloaded")


class OpenclawConversation(Conversation):
    steer_mode = "next_turn"
    closes_stdin = False

    def __init__(self, options: AgentOptions, task: str | None) -> None:
        super().__init__(options, task)
        self._gather: list[str] = []
        self._gathered = 0  # characters in _gather

    def start(self) -> list[str]:
        self.asked += 1  # the task, in the argv
        return []

    def feed(self, line: str) -> list[AgentEvent]:
        if self._gather:
            self._gather.append(line)
            self._gathered += len(line) + 1
            value = parse_json("\n".join(self._gather)) if line.rstrip().endswith("}") else None
            if value is None:
                if len(self._gather) < MAX_GATHER and self._gathered <= MAX_GATHER_CHARS:
                    return []
                lines, self._gather = self._gather, []
                return [Unparsed(x) for x in lines]
            self._gather = []
            return self._result(value) if isinstance(value, dict) else [Unparsed(line)]
        msg = loads(line)
        if msg is None:
            if line.strip() == "{" or (line.lstrip().startswith("{") and not line.rstrip().endswith("}")):
                self._gather, self._gathered = [line], len(line)
                return []
            return [Unparsed(line)] if line.strip() else []
        return self._result(msg)

    def _result(self, msg: dict[str, Any]) -> list[AgentEvent]:
        if "ok" not in msg and "final" not in msg and "status" not in msg:
            return [Unparsed(json.dumps(msg))]
        out: list[AgentEvent] = []
        sid = msg.get("sessionId")
        if isinstance(sid, str) and sid:
            out.append(AgentSession(sid))
        usage = msg.get("usage")
        if isinstance(usage, dict):
            out.append(Usage(Tokens(input=as_int(usage.get("input")), output=as_int(usage.get("output")))))
        cost = as_num(msg.get("costUsd"))
        if cost is not None:
            out.append(Cost(cost, total=False))
        final = msg.get("final") if isinstance(msg.get("final"), str) else None
        ok = msg.get("ok") is True
        error = None
        if not ok:
            err = msg.get("error")
            error = one_line(err.get("message") if isinstance(err, dict) else err or msg.get("status") or "failed", 300)
        if final:
            out.append(Said("assistant", final))
        self.ended += 1
        out.append(
            TurnEnded(
                text=final,
                is_error=not ok,
                error=error,
                rate_limited=bool(error) and any(w in (error or "").lower() for w in _RATE_WORDS),
            )
        )
        out.append(Activity("idle" if ok else f"failed: {error}"))
        return out


class Openclaw(Preset):
    name = "openclaw"
    program = "openclaw"
    install = "npm install -g openclaw  (needs node >= 24.16)"
    conversation_class = OpenclawConversation
    reads_stdin = False  # its task is in its argv
    permissions: ClassVar[tuple[Permissions, ...]] = ("allow",)
    reports_cost = True

    def argv(self, options: AgentOptions, task: str | None) -> list[str]:
        return [
            *self.command(options),
            "agent",
            "exec",
            *([task] if task is not None else []),
            "--json",
            *options.args,
        ]
