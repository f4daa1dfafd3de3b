from __future__ import annotations

import json

import pytest

from crewtui.adapters.base import (
    Activity,
    AgentOptions,
    AgentSession,
    Answered,
    Cost,
    Needs,
    RateLimited,
    Reply,
    Said,
    TurnEnded,
    Unparsed,
)
from crewtui.adapters.claude_code import ClaudeConversation
from crewtui.errors import BadInput
from tests.adapters.helpers import STREAMS, feed_all, of, recorded, served_tokens


def conv(task: str | None = "hi") -> ClaudeConversation:
    c = ClaudeConversation(AgentOptions(), task)
    c.start()
    return c


def test_start_writes_the_task_as_a_user_message() -> None:
    c = ClaudeConversation(AgentOptions(), "hi")
    assert c.start() == ['{"type":"user","message":{"role":"user","content":"hi"}}']
    assert c.asked == 1


@pytest.mark.parametrize("scenario", ["claude-hi", "claude-tool-permission-allow", "claude-two-turns-stdin"])
def test_recorded_tokens_match_what_was_served(scenario: str) -> None:
    lines = recorded(scenario)
    c = conv()
    c.asked = 2 if "two-turns" in scenario else 1
    events, totals = feed_all(c, lines)
    assert totals.tokens == served_tokens(scenario)
    assert totals.unparsed == 0
    assert of(events, AgentSession)
    assert totals.turns == len(of(events, TurnEnded)) >= 1


def test_recorded_permission_allow_and_deny_exact_answers() -> None:
    for scenario, allow in (("claude-tool-permission-allow", True), ("claude-permission-deny", False)):
        lines = recorded(scenario)
        sent = (STREAMS / f"{scenario}.sent.jsonl").read_text().splitlines()
        c = conv()
        answers: list[str] = []
        for line in lines:
            for ev in c.feed(line):
                if isinstance(ev, Needs):
                    assert ev.kind == "permission" and ev.tool == "Bash"
                    msg = None if allow else "The operator denied this command."
                    answers += c.answer(ev.id, allow, msg)
        assert len(answers) == 1
        # The exact line the recording wrote (and Claude Code accepted), key for key.
        assert json.loads(answers[0]) == json.loads(sent[-1])


def test_control_request_answer_shapes() -> None:
    c = conv()
    req = {"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "ls"}, "tool_use_id": "t1"}
    evs = c.feed(json.dumps({"type": "control_request", "request_id": "r1", "request": req}))
    assert evs[0] == Needs("permission", "r1", tool="Bash", input={"command": "ls"})
    assert Activity("waiting: may it run Bash: ls?") in evs
    assert not c.finished
    with pytest.raises(BadInput):
        c.answer("r2", True)
    assert c.answer("r1", True) == [
        '{"type":"control_response","response":{"subtype":"success","request_id":"r1",'
        '"response":{"behavior":"allow","updatedInput":{"command":"ls"}}}}'
    ]
    c.feed(json.dumps({"type": "control_request", "request_id": "r3", "request": req}))
    assert c.answer(None, False) == [
        '{"type":"control_response","response":{"subtype":"success","request_id":"r3",'
        '"response":{"behavior":"deny","message":"denied by the person supervising this session"}}}'
    ]
    # A request crewtui does not serve is refused at once.
    evs = c.feed(json.dumps({"type": "control_request", "request_id": "h1", "request": {"subtype": "hook_callback"}}))
    assert evs == [
        Reply(
            '{"type":"control_response","response":{"subtype":"error","request_id":"h1","error":"not supported by crewtui"}}'
        )
    ]
    c.feed(json.dumps({"type": "control_request", "request_id": "r4", "request": req}))
    assert c.feed(json.dumps({"type": "control_cancel_request", "request_id": "r4"})) == [Answered("r4")]
    assert not c.pending


def test_api_retry_is_rate_limited() -> None:
    c = conv()
    line = {"type": "system", "subtype": "api_retry", "attempt": 2, "max_retries": 10, "retry_delay_ms": 1000}
    line |= {"error_status": 429, "error": "rate_limit"}
    assert c.feed(json.dumps(line)) == [RateLimited(2, 10, 1.0, 429), Activity("rate limited, retry 2/10 in 1s")]


def test_recorded_429_exhausted_and_then_ok() -> None:
    c = conv()
    events, totals = feed_all(c, recorded("claude-429-exhausted"))
    ended = of(events, TurnEnded)
    assert len(ended) == 1 and ended[0].is_error and ended[0].rate_limited
    assert totals.rate_limited == len(of(events, RateLimited)) == 2
    assert c.finished

    c = conv()
    events, totals = feed_all(c, recorded("claude-429-then-ok"))
    ended = of(events, TurnEnded)
    assert len(ended) == 1 and not ended[0].is_error and not ended[0].rate_limited
    assert totals.rate_limited == 2 and totals.tokens == served_tokens("claude-429-then-ok")


def test_result_usage_and_cost() -> None:
    c = conv()
    usage = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7}
    line = {"type": "result", "subtype": "success", "is_error": False, "result": "done", "usage": usage}
    events, totals = feed_all(c, [json.dumps(line | {"total_cost_usd": 0.25})])
    assert of(events, Cost) == [Cost(0.25, total=True)]
    assert totals.tokens.as_dict() == {"input": 10, "output": 5, "cache_read": 100, "cache_write": 7}
    assert of(events, TurnEnded) == [TurnEnded(text="done")]


def test_replayed_user_lines_and_unparsed() -> None:
    c = conv()
    replay = {"type": "user", "message": {"role": "user", "content": "steer: also say Y"}, "isReplay": True}
    assert c.feed(json.dumps(replay)) == [Said("user", "steer: also say Y")]
    assert c.feed("not json at all") == [Unparsed("not json at all")]
    assert c.feed('{"type":"brand_new_kind"}') == [Unparsed('{"type":"brand_new_kind"}')]
    assert c.feed('{"type":"keep_alive"}') == []


def test_turns_asked_are_counted_from_the_echoed_messages_when_the_output_is_read_again() -> None:
    """A restarted runtime reads a session's output again: the task and a steer it sent were echoed back
    (--replay-user-messages), so one result is not yet the end and stdin stays open for the steer's turn."""

    def user(text: str) -> str:
        return json.dumps({"type": "user", "message": {"role": "user", "content": text}, "isReplay": True})

    result = json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "one", "usage": {}})
    again = conv("the task")  # a fresh conversation, as after a restart: it knows of the task only
    for line in (user("the task"), result, user("a steer")):
        again.feed(line)
    assert not again.finished
    again.feed(result)
    assert again.finished
    live = conv("the task")  # live, the echo of what was just sent changes nothing
    live.steer("a steer")
    for line in (user("the task"), result, user("a steer"), result):
        live.feed(line)
    assert live.asked == 2 and live.finished
