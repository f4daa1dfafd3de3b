"""Codex (`codex app-server`): JSON-RPC over stdio, approvals asked on stdio, steered live.

Based on the app-server protocol of codex 0.171.0 (`codex app-server generate-json-schema`, i.e.
codex-rs/app-server-protocol/src/protocol/v2.rs) and on streams recorded from that version against a fake model.
One JSON object per line in both directions; no `"jsonrpc"` field (the server neither sends nor needs one).
Requests carry an `id` and a `method`, responses an `id` and a `result` (or `error`), notifications only a
`method`. The server's own requests (approvals) carry an integer `id` that the response must echo as is.

    → {"id":1,"method":"initialize","params":{"clientInfo":{"name":"crewtui","version":"…"}}}
    → {"method":"initialized"}
    → {"id":2,"method":"thread/start","params":{"approvalPolicy":"untrusted","sandbox":"workspace-write"}}
    ← {"id":2,"result":{"thread":{"id":"THREAD",…},…}}
    → {"id":3,"method":"turn/start","params":{"threadId":"THREAD","input":[{"type":"text","text":"TASK"}]}}
    ← {"id":3,"result":{"turn":{"id":"TURN","status":"inProgress",…}}}
    ← item/started, item/completed, thread/tokenUsage/updated, … turn/completed   (notifications)
    ← {"method":"item/commandExecution/requestApproval","id":0,"params":{…}}       (a server request)
    → {"id":0,"result":{"decision":"accept"}}                                       (or "decline")
    → {"id":4,"method":"turn/steer","params":{"threadId":"THREAD","expectedTurnId":"TURN","input":[…]}}

Permissions (thread/start's `approvalPolicy` + `sandbox`): `ask` → "untrusted" + "workspace-write" (it asks
before any command that is not known to be read-only and before every patch; what is approved may write in the
project); `allow` → "never" + "danger-full-access" (it never asks and is not sandboxed: Claude Code's
bypassPermissions); `deny` → "never" + "read-only" (it never asks; what needs more than reading fails and the
model is told so).

Tokens come from `thread/tokenUsage/updated` (`tokenUsage.total`, the thread's running total, so `total=True`).
Codex passes on the Responses API's counts: `inputTokens` INCLUDES the cached (`cachedInputTokens`) and
cache-written (`cacheWriteInputTokens`) tokens, and `outputTokens` includes the reasoning tokens. crewtui's
`Tokens.input` is the uncached input (as Anthropic counts it, and as `Price.input` prices it), so input =
inputTokens - cachedInputTokens - cacheWriteInputTokens (checked against a fake model server: it serves
`input_tokens = input + cache_read + cache_write` and codex reports that sum as inputTokens). Codex reports no cost.
"""

from __future__ import annotations

import re
from typing import Any

from crewtui.adapters.base import (
    Activity,
    AgentEvent,
    AgentOptions,
    AgentSession,
    Answered,
    Conversation,
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
    dumps,
    loads,
    one_line,
    tool_activity,
)

CLIENT_VERSION = "1"
POLICIES: dict[str, tuple[str, str]] = {  # permissions → (approvalPolicy, sandbox)
    "ask": ("untrusted", "workspace-write"),
    "allow": ("never", "danger-full-access"),
    "deny": ("never", "read-only"),
}
# "Reconnecting... 2/5 (exceeded retry limit, last status: 429 Too Many Requests, …)"
_RECONNECT = re.compile(r"\b(\d{1,6})\s*/\s*(\d{1,6})\b")
_STATUS = re.compile(r"\b(429|529|5\d\d)\b")
_RATE_WORDS = ("429", "too many requests", "rate limit", "ratelimit", "overloaded", "529")
_RATE_INFOS = ("rateLimitExceeded", "usageLimitExceeded", "serverOverloaded")


def _text_input(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text}]


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("additionalDetails") or "error")
    return str(error or "error")


def _http_status(error: Any) -> int | None:
    """The HTTP status in a TurnError (`codexErrorInfo: {responseTooManyFailedAttempts: {httpStatusCode: 429}}`)."""
    if not isinstance(error, dict):
        return None
    info = error.get("codexErrorInfo")
    if isinstance(info, dict):
        for value in info.values():
            if isinstance(value, dict) and as_int(value.get("httpStatusCode")):
                return as_int(value.get("httpStatusCode"))
    if info in ("rateLimitExceeded", "usageLimitExceeded"):
        return 429
    if info == "serverOverloaded":
        return 529
    m = _STATUS.search(str(error.get("message", "")))
    return int(m.group(1)) if m else None


def _is_rate_limit(error: Any) -> bool:
    if isinstance(error, dict) and error.get("codexErrorInfo") in _RATE_INFOS:
        return True
    status = _http_status(error)
    if status in (429, 529):
        return True
    text = _error_message(error).lower()
    return any(w in text for w in _RATE_WORDS)


def _command_of(item: dict[str, Any]) -> str:
    """What a commandExecution runs, as a person would type it ("echo hi", not "/bin/bash -lc 'echo hi'")."""
    actions = item.get("commandActions")
    if isinstance(actions, list):
        parts = [str(a["command"]) for a in actions if isinstance(a, dict) and isinstance(a.get("command"), str)]
        if parts:
            return " && ".join(parts)
    return str(item.get("command") or "")


def _paths_of(changes: Any) -> list[str]:
    if not isinstance(changes, list):
        return []
    return [str(c["path"]) for c in changes if isinstance(c, dict) and c.get("path")]


def _editing(paths: list[str]) -> str:
    if not paths:
        return "editing files"
    more = f" (+{len(paths) - 1} more)" if len(paths) > 1 else ""
    return one_line(f"editing {paths[0]}{more}")


class CodexConversation(Conversation):
    steer_mode = "live"

    def __init__(self, options: AgentOptions, task: str | None) -> None:
        super().__init__(options, task)
        self._next_id = 1
        self._calls: dict[int, tuple[str, str | None]] = {}  # our request id → (method, the text it carried)
        self._raw_ids: dict[str, Any] = {}  # a pending server request's id (as str) → its id as sent
        self._kinds: dict[str, str] = {}  # … → its method
        self._questions: dict[str, list[str]] = {}  # … → the question ids of a requestUserInput
        self._granted: dict[str, Any] = {}  # … → the permissions a permissions/requestApproval asked for
        self.thread_id: str | None = None
        self.turn_id: str | None = None  # the running turn, once codex has named it
        self._starting = False  # a turn/start is on its way (or waits for the thread) and has no id yet
        self._first_text: str | None = None  # the text of the turn to start once the thread exists
        self._queued: list[str] = []  # steers that came before the running turn had an id
        self._session_sent = False
        self._last_message: str | None = None
        self._files: dict[str, list[str]] = {}  # fileChange item id → its paths (approvals name only the item)

    # -------------------------------------------------------------------------------------- requests

    def _request(self, method: str, params: dict[str, Any], text: str | None = None) -> str:
        rid = self._next_id
        self._next_id += 1
        self._calls[rid] = (method, text)
        return dumps({"id": rid, "method": method, "params": params})

    def _turn_start(self, text: str) -> str:
        assert self.thread_id is not None
        self._starting = True
        params: dict[str, Any] = {"threadId": self.thread_id, "input": _text_input(text)}
        return self._request("turn/start", params, text)

    def _turn_steer(self, text: str) -> str:
        assert self.thread_id is not None and self.turn_id is not None
        params = {"threadId": self.thread_id, "expectedTurnId": self.turn_id, "input": _text_input(text)}
        return self._request("turn/steer", params, text)

    def start(self) -> list[str]:
        policy, sandbox = POLICIES[self.options.permissions]
        thread: dict[str, Any] = {"approvalPolicy": policy, "sandbox": sandbox}
        if self.options.model:
            thread["model"] = self.options.model
        lines = [
            self._request("initialize", {"clientInfo": {"name": "crewtui", "version": CLIENT_VERSION}}),
            dumps({"method": "initialized"}),
            self._request("thread/start", thread),
        ]
        if self.task is not None:
            self.asked += 1
            self._first_text = self.task
            self._starting = True
        return lines

    def steer(self, text: str) -> list[str]:
        if self.turn_id is not None:
            return [self._turn_steer(text)]  # joins the running turn: no new turn
        if self._starting:
            self._queued.append(text)  # the turn is starting: steer it once codex names it
            return []
        self.asked += 1
        if self.thread_id is None:
            self._first_text = text
            self._starting = True
            return []
        return [self._turn_start(text)]

    @property
    def finished(self) -> bool:
        steering = self._queued or any(m == "turn/steer" for m, _ in self._calls.values())
        return super().finished and not steering and not self._starting

    def answer(self, request_id: str | None, allow: bool, message: str | None = None) -> list[str]:
        needs = self.take(request_id)
        raw = self._raw_ids.pop(needs.id, needs.id)
        kind = self._kinds.pop(needs.id, "")
        result: dict[str, Any]
        if kind == "item/tool/requestUserInput":
            qids = self._questions.pop(needs.id, [])
            answer = [message] if allow and message else []
            result = {"answers": {q: {"answers": answer} for q in qids}}
        elif kind == "item/permissions/requestApproval":
            asked = self._granted.pop(needs.id, None)
            result = {"permissions": asked if allow and isinstance(asked, dict) else {}, "scope": "turn"}
        elif kind in ("execCommandApproval", "applyPatchApproval"):  # the older (v1) approvals
            result = {"decision": "approved" if allow else "denied"}
        else:
            result = {"decision": "accept" if allow else "decline"}
        return [dumps({"id": raw, "result": result})]

    # -------------------------------------------------------------------------------------- reading

    def feed(self, line: str) -> list[AgentEvent]:
        msg = loads(line)
        if msg is None:
            return [Unparsed(line)] if line.strip() else []
        method = msg.get("method")
        if isinstance(method, str):
            if "id" in msg:
                return self._server_request(method, msg["id"], msg.get("params"))
            params = msg.get("params")
            return self._notification(method, params if isinstance(params, dict) else {})
        if "id" in msg and ("result" in msg or "error" in msg):
            return self._response(msg)
        return [Unparsed(line)]

    def _response(self, msg: dict[str, Any]) -> list[AgentEvent]:
        rid = msg.get("id")
        call = self._calls.pop(rid, None) if isinstance(rid, int) else None
        if call is None:
            return []
        method, text = call
        result = msg.get("result")
        result = result if isinstance(result, dict) else {}
        error = msg.get("error")
        if error is not None:
            return self._failed_call(method, text, _error_message(error))
        out: list[AgentEvent] = []
        if method == "thread/start":
            thread = result.get("thread")
            tid = thread.get("id") if isinstance(thread, dict) else None
            if isinstance(tid, str) and tid:
                self.thread_id = tid
                out += self._session(tid)
                if self._first_text is not None:
                    first, self._first_text = self._first_text, None
                    out += [Reply(self._turn_start(first)), Activity("thinking")]
        elif method == "turn/start":
            turn = result.get("turn")
            tid = turn.get("id") if isinstance(turn, dict) else None
            if isinstance(tid, str) and tid and self._starting:
                out += self._turn_known(tid)
        return out

    def _failed_call(self, method: str, text: str | None, error: str) -> list[AgentEvent]:
        out: list[AgentEvent] = [Said("error", one_line(f"{method}: {error}", 300))]
        if method in ("initialize", "thread/start", "turn/start"):
            # No turn will run: end the turns asked so far (so the session can end) with the error.
            self._starting = False
            self._first_text = None
            failed = self.asked - self.ended
            if failed > 0 or method == "turn/start":
                self.ended = self.asked
                out.append(TurnEnded(is_error=True, error=one_line(error, 300), rate_limited=_is_rate_limit(error)))
            out.append(Activity(one_line(f"failed: {error}")))
            self._queued.clear()
        elif method == "turn/steer" and text is not None:
            # The turn ended before the steer reached it: it starts the next turn instead.
            if self.turn_id is None and not self._starting and self.thread_id is not None:
                self.asked += 1
                out.append(Reply(self._turn_start(text)))
            elif self.turn_id is None and self._starting:
                self._queued.append(text)
            elif self.turn_id is not None:
                out.append(Reply(self._turn_steer(text)))
        return out

    def _session(self, tid: str) -> list[AgentEvent]:
        if self._session_sent:
            return []
        self._session_sent = True
        return [AgentSession(tid)]

    def _turn_known(self, turn_id: str) -> list[AgentEvent]:
        self.turn_id = turn_id
        self._starting = False
        self._last_message = None
        queued, self._queued = self._queued, []
        return [Reply(self._turn_steer(t)) for t in queued]

    def _notification(self, method: str, p: dict[str, Any]) -> list[AgentEvent]:
        thread = p.get("threadId")
        if thread is not None and self.thread_id is not None and thread != self.thread_id:
            return []  # another thread's (a sub-agent's): its turns and tokens are not this session's
        if method == "item/started" or method == "item/completed":
            item = p.get("item")
            if not isinstance(item, dict):
                return []
            return self._item_started(item) if method == "item/started" else self._item_completed(item)
        if method == "thread/tokenUsage/updated":
            usage = p.get("tokenUsage")
            total = usage.get("total") if isinstance(usage, dict) else None
            if not isinstance(total, dict):
                return []
            cached = as_int(total.get("cachedInputTokens"))
            written = as_int(total.get("cacheWriteInputTokens"))
            tokens = Tokens(
                input=max(0, as_int(total.get("inputTokens")) - cached - written),
                output=as_int(total.get("outputTokens")),
                cache_read=cached,
                cache_write=written,
            )
            return [Usage(tokens, total=True)]
        if method == "turn/started":
            turn = p.get("turn")
            tid = turn.get("id") if isinstance(turn, dict) else None
            out: list[AgentEvent] = [Activity("thinking")]
            if isinstance(tid, str) and tid and tid != self.turn_id:
                out = [*self._turn_known(tid), *out]
            return out
        if method == "turn/completed":
            return self._turn_completed(p.get("turn"))
        if method == "error":
            return self._error(p)
        if method == "thread/started":
            thread = p.get("thread")
            tid = thread.get("id") if isinstance(thread, dict) else None
            return self._session(tid) if isinstance(tid, str) and tid else []
        if method == "serverRequest/resolved":
            rid = str(p.get("requestId", ""))
            if rid in self.pending:  # withdrawn (the turn was interrupted, or it timed out)
                del self.pending[rid]
                for d in (self._raw_ids, self._kinds, self._questions, self._granted):
                    d.pop(rid, None)
            return [Answered(rid)]
        if method in ("warning", "configWarning", "deprecationNotice"):
            text = p.get("message") or p.get("summary")
            return [Said("system", str(text))] if text else []
        return []  # deltas, status changes, rate-limit snapshots, …: nothing a person needs

    def _item_started(self, item: dict[str, Any]) -> list[AgentEvent]:
        kind = item.get("type")
        if kind == "commandExecution":
            cmd = _command_of(item)
            return [Said("tool", cmd, name="Bash"), Activity(tool_activity("Bash", {"command": cmd}))]
        if kind == "fileChange":
            paths = _paths_of(item.get("changes"))
            if isinstance(item.get("id"), str):
                self._files[item["id"]] = paths
            return [Said("tool", "\n".join(paths), name="apply_patch"), Activity(_editing(paths))]
        if kind == "agentMessage":
            return [Activity("writing")]
        if kind == "reasoning":
            return [Activity("thinking")]
        if kind in ("mcpToolCall", "dynamicToolCall"):
            name = str(item.get("tool") or "tool")
            if item.get("server"):
                name = f"{item['server']}.{name}"
            args = item.get("arguments")
            return [Said("tool", dumps(args), name=name), Activity(tool_activity(name, args))]
        if kind == "webSearch":
            return [Activity(tool_activity("WebSearch", {"query": item.get("query")}))]
        return []

    def _item_completed(self, item: dict[str, Any]) -> list[AgentEvent]:
        kind = item.get("type")
        if kind == "agentMessage":
            text = str(item.get("text") or "")
            self._last_message = text
            return [Said("assistant", text)] if text else []
        if kind == "userMessage":
            content = item.get("content")
            texts = [
                str(c.get("text", ""))
                for c in (content if isinstance(content, list) else [])
                if isinstance(c, dict) and c.get("type") == "text"
            ]
            return [Said("user", "\n".join(texts))] if texts else []
        if kind == "commandExecution":
            status = item.get("status")
            failed = status in ("failed", "declined") or as_int(item.get("exitCode")) != 0
            output = item.get("aggregatedOutput")
            text = str(output) if output is not None else str(status or "")
            return [Said("error" if failed else "tool_result", text, name="Bash"), Activity("thinking")]
        if kind == "fileChange":
            paths = _paths_of(item.get("changes"))
            self._files.pop(str(item.get("id")), None)
            status = str(item.get("status") or "")
            failed = status in ("failed", "declined")
            return [Said("error" if failed else "tool_result", f"{status}: {', '.join(paths)}", name="apply_patch")]
        if kind in ("mcpToolCall", "dynamicToolCall"):
            err = item.get("error")
            result = item.get("result") if item.get("result") is not None else item.get("contentItems")
            return [Said("error" if err else "tool_result", dumps(err or result), name=str(item.get("tool")))]
        return []

    def _turn_completed(self, turn: Any) -> list[AgentEvent]:
        if not isinstance(turn, dict):
            turn = {}
        self.ended += 1
        self.turn_id = None
        self._starting = False
        status = turn.get("status")
        text = self._last_message
        self._last_message = None
        out: list[AgentEvent]
        if status == "completed":
            out = [TurnEnded(text=text), Activity("idle")]
        else:
            error = turn.get("error")
            message = _error_message(error) if error else str(status or "failed")
            rate_limited = status == "failed" and _is_rate_limit(error)
            out = [
                TurnEnded(text=text, is_error=True, error=one_line(message, 300), rate_limited=rate_limited),
                Activity(one_line(f"failed: {message}")),
            ]
        if self._queued and self.thread_id is not None:  # steers that arrived too late for it: the next turn
            queued, self._queued = self._queued, []
            self.asked += 1
            out.append(Reply(self._turn_start("\n\n".join(queued))))
        return out

    def _error(self, p: dict[str, Any]) -> list[AgentEvent]:
        error = p.get("error")
        message = _error_message(error)
        if p.get("willRetry") or message.startswith("Reconnecting"):
            status = _http_status(error) if isinstance(error, dict) else None
            m = _RECONNECT.search(message)
            if _is_rate_limit(error if isinstance(error, dict) else {"message": message}):
                rl = RateLimited(
                    attempt=int(m.group(1)) if m else None,
                    max=int(m.group(2)) if m else None,
                    status=status if status in (429, 529) else 429,
                )
                return [rl, Activity(rl.describe())]
            return [Activity(one_line(f"reconnecting: {message}"))]
        return [Said("error", message)]

    def _server_request(self, method: str, raw_id: Any, params: Any) -> list[AgentEvent]:
        p = params if isinstance(params, dict) else {}
        rid = str(raw_id)
        needs: Needs | None = None
        if method in ("item/commandExecution/requestApproval", "execCommandApproval"):
            cmd = p.get("command")
            if isinstance(cmd, list):  # v1: argv
                cmd = " ".join(str(c) for c in cmd)
            actions = _command_of(p) if p.get("commandActions") else str(cmd or "")
            needs = Needs(
                "permission", rid, tool="Bash", input={"command": actions, "cwd": p.get("cwd")}, text=p.get("reason")
            )
        elif method in ("item/fileChange/requestApproval", "applyPatchApproval"):
            changes = p.get("fileChanges")
            paths = list(changes) if isinstance(changes, dict) else self._files.get(str(p.get("itemId")), [])
            needs = Needs("permission", rid, tool="apply_patch", input={"paths": paths}, text=p.get("reason"))
        elif method == "item/permissions/requestApproval":
            self._granted[rid] = p.get("permissions")
            needs = Needs("permission", rid, tool="permissions", input=p.get("permissions"), text=p.get("reason"))
        elif method == "item/tool/requestUserInput":
            asked = p.get("questions")
            questions = [q for q in asked if isinstance(q, dict)] if isinstance(asked, list) else []
            self._questions[rid] = [str(q.get("id")) for q in questions]
            text = "\n".join(str(q.get("question", "")) for q in questions)
            needs = Needs("question", rid, input=questions, text=text or None)
        elif "requestApproval" in method:
            needs = Needs("permission", rid, tool=method, input=p, text=p.get("reason"))
        if needs is None:
            # A request we do not serve (MCP elicitation, dynamic tools, auth): say so, or codex waits forever.
            error = {"code": -32601, "message": f"crewtui does not handle {method}"}
            return [Reply(dumps({"id": raw_id, "error": error}))]
        self._raw_ids[rid] = raw_id
        self._kinds[rid] = method
        self.pending[rid] = needs
        if needs.kind == "question":
            what = one_line(needs.text or "a question")
            return [needs, Said("permission", what, ref=rid), Activity(one_line(f"waiting: {what}"))]
        what = (
            _editing(needs.input["paths"])
            if needs.tool == "apply_patch"
            else tool_activity(needs.tool or "tool", needs.input)
        )
        return [
            needs,
            Said("permission", what, name=needs.tool, ref=rid),
            Activity(one_line(f"waiting: may it run {what}?")),
        ]


class Codex(Preset):
    name = "codex"
    program = "codex"
    install = "npm install -g @openai/codex"
    task_on_stdin = True
    conversation_class = CodexConversation
    reports_cost = False

    def argv(self, options: AgentOptions, task: str | None) -> list[str]:
        return [*self.command(options), "app-server", *options.args]

    def gateway_args(self, base_url: str) -> list[str]:
        # A provider of its own: the built-in "openai" one tries a WebSocket first (5 reconnects, seconds lost,
        # before it falls back to HTTPS), and a crew's custom one has its own base_url. The key stays the agent's.
        provider = (
            f'model_providers.crewtui={{ name = "crewtui gateway", base_url = "{base_url}/v1", '
            'env_key = "OPENAI_API_KEY", wire_api = "responses" }'
        )
        return ["-c", 'model_provider="crewtui"', "-c", provider]
