"""Claude Code (`claude`): stream-json in and out, permissions asked on stdio, steered live.

Run as `claude -p --input-format stream-json --output-format stream-json --verbose`: the task and every steer
are user messages on stdin (a steer during a tool loop joins the running turn; during one model call it
queues as the next turn); each turn ends with a `result` line. With `permissions = "ask"` it also gets
`--permission-prompt-tool stdio` and asks with a `control_request` (can_use_tool), blocking until a
`control_response` comes back. Tokens come from each turn's `result.usage` (the `assistant` lines carry the
message-start count, which is not the usage); the cost is `total_cost_usd`, the process's running total.
"""

from __future__ import annotations

from typing import Any, ClassVar

from crewtui.adapters.base import (
    Activity,
    AgentEvent,
    AgentOptions,
    AgentSession,
    Answered,
    Conversation,
    Cost,
    Needs,
    Preset,
    RateLimited,
    Reply,
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


def user_message(text: str) -> str:
    return dumps({"type": "user", "message": {"role": "user", "content": text}})


def _content(msg: dict[str, Any]) -> Any:
    message = msg.get("message")
    return message.get("content") if isinstance(message, dict) else None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


class ClaudeConversation(Conversation):
    steer_mode = "live"

    def __init__(self, options: AgentOptions, task: str | None) -> None:
        super().__init__(options, task)
        self.echoed = 0  # user messages it echoed back

    def start(self) -> list[str]:
        if self.task is None:
            return []
        self.asked += 1
        return [user_message(self.task)]

    def steer(self, text: str) -> list[str]:
        self.asked += 1
        return [user_message(text)]

    def answer(self, request_id: str | None, allow: bool, message: str | None = None) -> list[str]:
        needs = self.take(request_id)
        if allow:
            inner: dict[str, Any] = {
                "behavior": "allow",
                "updatedInput": needs.input if needs.input is not None else {},
            }
        else:
            inner = {"behavior": "deny", "message": message or "denied by the person supervising this session"}
        return [
            dumps(
                {
                    "type": "control_response",
                    "response": {"subtype": "success", "request_id": needs.id, "response": inner},
                }
            )
        ]

    def feed(self, line: str) -> list[AgentEvent]:
        msg = loads(line)
        if msg is None:
            return [Unparsed(line)] if line.strip() else []
        kind = msg.get("type")
        if kind == "system":
            return self._system(msg)
        if kind == "assistant":
            return self._assistant(msg)
        if kind == "user":
            return self._user(msg)
        if kind == "result":
            return self._result(msg)
        if kind == "control_request":
            return self._control(msg)
        if kind == "control_cancel_request":
            rid = str(msg.get("request_id", ""))
            self.pending.pop(rid, None)
            return [Answered(rid)]
        if kind in ("stream_event", "control_response", "keep_alive", "rate_limit_event"):
            return []
        return [Unparsed(line)]

    def _system(self, msg: dict[str, Any]) -> list[AgentEvent]:
        sub = msg.get("subtype")
        out: list[AgentEvent] = []
        if sub == "init":
            sid = msg.get("session_id")
            if isinstance(sid, str) and sid:
                out.append(AgentSession(sid))
            out.append(Activity("thinking"))
        elif sub == "api_retry":
            delay_ms = as_num(msg.get("retry_delay_ms"))
            rl = RateLimited(
                attempt=as_int(msg.get("attempt")) or None,
                max=as_int(msg.get("max_retries")) or None,
                delay=delay_ms / 1000 if delay_ms is not None else None,
                status=as_int(msg.get("error_status")) or None,
            )
            out += [rl, Activity(rl.describe())]
        return out

    def _assistant(self, msg: dict[str, Any]) -> list[AgentEvent]:
        out: list[AgentEvent] = []
        content = _content(msg)
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and block.get("text"):
                out += [Said("assistant", str(block["text"])), Activity("writing")]
            elif block.get("type") == "tool_use":
                name = str(block.get("name", "tool"))
                out += [
                    Said("tool", dumps(block.get("input")), name=name),
                    Activity(tool_activity(name, block.get("input"))),
                ]
            elif block.get("type") == "thinking":
                out.append(Activity("thinking"))
        return out

    def _user(self, msg: dict[str, Any]) -> list[AgentEvent]:
        content = _content(msg)
        if msg.get("isReplay"):
            # Our own message (the task, a steer) echoed back (--replay-user-messages): a runtime that reads the
            # output again after a restart counts the turns it asked from these.
            self.echoed += 1
            self.asked = max(self.asked, self.echoed)
        if isinstance(content, str):
            return [Said("user", content)]
        out: list[AgentEvent] = []
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                text = _text_of(block.get("content"))
                out.append(Said("error" if block.get("is_error") else "tool_result", text))
            elif isinstance(block, dict) and block.get("type") == "text":
                out.append(Said("user", str(block.get("text", ""))))
        if out:
            out.append(Activity("thinking"))
        return out

    def _result(self, msg: dict[str, Any]) -> list[AgentEvent]:
        self.ended += 1
        usage = msg.get("usage") if isinstance(msg.get("usage"), dict) else {}
        assert isinstance(usage, dict)
        tokens = Tokens(
            input=as_int(usage.get("input_tokens")),
            output=as_int(usage.get("output_tokens")),
            cache_read=as_int(usage.get("cache_read_input_tokens")),
            cache_write=as_int(usage.get("cache_creation_input_tokens")),
        )
        out: list[AgentEvent] = [Usage(tokens)]
        cost = as_num(msg.get("total_cost_usd"))
        if cost is not None:
            out.append(Cost(cost, total=True))
        text = msg.get("result") if isinstance(msg.get("result"), str) else None
        is_error = bool(msg.get("is_error")) or msg.get("subtype") not in (None, "success")
        status = msg.get("api_error_status")
        rate_limited = is_error and status in (429, 529)
        error = None
        if is_error:
            error = one_line(text or msg.get("subtype") or "error", 300)
        out.append(TurnEnded(text=text, is_error=is_error, error=error, rate_limited=rate_limited))
        out.append(Activity("failed: " + (error or "") if is_error else "idle"))
        return out

    def _control(self, msg: dict[str, Any]) -> list[AgentEvent]:
        req = msg.get("request") if isinstance(msg.get("request"), dict) else {}
        assert isinstance(req, dict)
        rid = str(msg.get("request_id", ""))
        if req.get("subtype") != "can_use_tool" or not rid:
            # A request we do not serve (hooks, MCP): say so, or the agent waits forever.
            return [
                Reply(
                    dumps(
                        {
                            "type": "control_response",
                            "response": {"subtype": "error", "request_id": rid, "error": "not supported by crewtui"},
                        }
                    )
                )
            ]
        tool = str(req.get("tool_name", "tool"))
        needs = Needs("permission", rid, tool=tool, input=req.get("input"), text=req.get("description") or None)
        self.pending[rid] = needs
        return [
            needs,
            Said("permission", tool_activity(tool, req.get("input")), name=tool, ref=rid),
            Activity(one_line(f"waiting: may it run {tool_activity(tool, req.get('input'))}?")),
        ]


class ClaudeCode(Preset):
    name = "claude-code"
    program = "claude"
    install = "npm install -g @anthropic-ai/claude-code"
    task_on_stdin = True
    conversation_class = ClaudeConversation
    reports_cost = True
    permission_flags: ClassVar[dict[str, list[str]]] = {
        "ask": ["--permission-prompt-tool", "stdio"],
        "allow": ["--permission-mode", "bypassPermissions"],
        "deny": [],  # headless Claude Code denies what needs approval (listed in `permission_denials`)
    }

    def argv(self, options: AgentOptions, task: str | None) -> list[str]:
        return [
            *self.command(options),
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--replay-user-messages",  # the task and steers come back on stdout: the transcript shows them
            *self.permission_flags[options.permissions],
            *(["--model", options.model] if options.model else []),
            *options.args,
        ]

    def resume_argv(self, options: AgentOptions, agent_session: str, text: str) -> list[str]:
        if not agent_session:
            raise BadInput("claude-code: no session id to resume")
        return [*self.argv(options, None), "--resume", agent_session]
