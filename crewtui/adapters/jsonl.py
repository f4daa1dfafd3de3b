"""`jsonl`: crewtui's own line protocol, for agents people write themselves (the demo agent speaks it).

The agent prints one JSON object per stdout line with a `type` (any other line is plain output, kept in the
transcript); the task comes in its argv (`{task}` in the crew file's command). crewtui writes to its stdin:
a steer as `{"type":"user","text":...}`, an answer as `{"type":"answer","id":...,"allow":true|false,
"message":...}` (a question's answer in `message`). The agent ends when its work is done, as any program.

    {"type":"activity","text":"Bash: npm test"}          what it does now
    {"type":"session","id":"abc"}                          its own conversation id
    {"type":"usage","input":120,"output":30,"cache_read":0,"cache_write":0,"cost_usd":0.0012}
                                                           MORE tokens/dollars (added; every field optional)
    {"type":"say","text":"..."}                            a turn of the transcript (`role`: assistant by default)
    {"type":"tool","name":"Bash","input":{...}}            a tool call
    {"type":"tool_result","text":"...","is_error":false}   what it gave
    {"type":"needs","kind":"permission","id":"p1","tool":"Bash","input":{...}}
    {"type":"needs","kind":"question","id":"q1","text":"Which branch?"}     waits on a person
    {"type":"rate_limited","attempt":2,"max":10,"retry_in":4,"status":429}
    {"type":"result","result":{...},"text":"...","is_error":false,"error":null}   a turn ends; `result` is the
                                                           session's result (JSON), `text` its readable answer
"""

from __future__ import annotations

from typing import Any

from crewtui.adapters.base import (
    Activity,
    AgentEvent,
    AgentOptions,
    AgentSession,
    Conversation,
    Cost,
    Needs,
    Preset,
    RateLimited,
    Role,
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

_ROLES: tuple[Role, ...] = ("user", "assistant", "system", "error")


class JsonlConversation(Conversation):
    steer_mode = "live"
    closes_stdin = False

    def start(self) -> list[str]:
        self.asked += 1  # the task, in the argv
        return []

    def steer(self, text: str) -> list[str]:
        return [dumps({"type": "user", "text": text})]

    def answer(self, request_id: str | None, allow: bool, message: str | None = None) -> list[str]:
        needs = self.take(request_id)
        reply: dict[str, Any] = {"type": "answer", "id": needs.id, "allow": allow}
        if message is not None:
            reply["message"] = message
        return [dumps(reply)]

    def feed(self, line: str) -> list[AgentEvent]:
        msg = loads(line)
        kind = msg.get("type") if msg is not None else None
        if msg is None or not isinstance(kind, str):
            return []  # plain output: it is in the transcript already
        if kind == "activity":
            return [Activity(one_line(msg.get("text", "")))]
        if kind == "session" and isinstance(msg.get("id"), str):
            return [AgentSession(msg["id"])]
        if kind == "usage":
            out: list[AgentEvent] = [
                Usage(
                    Tokens(
                        as_int(msg.get("input")),
                        as_int(msg.get("output")),
                        as_int(msg.get("cache_read")),
                        as_int(msg.get("cache_write")),
                    )
                )
            ]
            cost = as_num(msg.get("cost_usd"))
            if cost is not None:
                out.append(Cost(cost, total=False))
            return out
        if kind == "say":
            role = msg.get("role")
            return [Said(role if role in _ROLES else "assistant", str(msg.get("text", "")))]
        if kind == "tool":
            name = str(msg.get("name", "tool"))
            return [Said("tool", dumps(msg.get("input")), name=name), Activity(tool_activity(name, msg.get("input")))]
        if kind == "tool_result":
            return [Said("error" if msg.get("is_error") else "tool_result", str(msg.get("text", "")))]
        if kind == "needs" and msg.get("kind") in ("permission", "question") and isinstance(msg.get("id"), str):
            tool, text = (v if isinstance(v, str) else None for v in (msg.get("tool"), msg.get("text")))
            needs = Needs(msg["kind"], msg["id"], tool=tool, input=msg.get("input"), text=text)
            self.pending[needs.id] = needs
            what = tool_activity(needs.tool, needs.input) if needs.tool else one_line(needs.text or "a question")
            return [
                needs,
                Said("permission", what, name=needs.tool, ref=needs.id),
                Activity(one_line(f"waiting: {what}")),
            ]
        if kind == "rate_limited":
            rl = RateLimited(
                as_int(msg.get("attempt")) or None,
                as_int(msg.get("max")) or None,
                as_num(msg.get("retry_in")),
                as_int(msg.get("status")) or None,
            )
            return [rl, Activity(rl.describe())]
        if kind == "result":
            self.ended += 1
            text = msg.get("text") if isinstance(msg.get("text"), str) else None
            is_error = bool(msg.get("is_error"))
            error = one_line(msg.get("error") or text or "error", 300) if is_error else None
            return [TurnEnded(text=text, is_error=is_error, error=error, result=msg.get("result")), Activity("idle")]
        return [Unparsed(line)]


class Jsonl(Preset):
    name = "jsonl"
    program = ""
    install = "write your agent to print crewtui's jsonl protocol (README: The jsonl protocol)"
    conversation_class = JsonlConversation

    def check(self, options: AgentOptions) -> None:
        super().check(options)
        self.command(options)

    def command(self, options: AgentOptions) -> list[str]:
        if not options.command:
            raise BadInput("preset jsonl needs a command (the program that speaks the protocol)")
        return list(options.command)

    def argv(self, options: AgentOptions, task: str | None) -> list[str]:
        return [*self.command(options), *options.args]
