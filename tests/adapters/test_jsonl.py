from __future__ import annotations

import json

import pytest

from crewtui.adapters import get_preset
from crewtui.adapters.base import (
    Activity,
    AgentOptions,
    AgentSession,
    Cost,
    Needs,
    RateLimited,
    Said,
    Tokens,
    TurnEnded,
)
from crewtui.adapters.jsonl import JsonlConversation
from crewtui.errors import BadInput
from tests.adapters.helpers import feed_all, of

STREAM = [
    '{"type":"session","id":"abc"}',
    '{"type":"activity","text":"Bash: npm test"}',
    "plain output, kept in the transcript",
    '{"type":"usage","input":120,"output":30,"cache_read":5,"cache_write":1,"cost_usd":0.0012}',
    '{"type":"usage","input":10,"output":3,"cost_usd":0.0008}',
    '{"type":"tool","name":"Bash","input":{"command":"npm test"}}',
    '{"type":"tool_result","text":"ok","is_error":false}',
    '{"type":"rate_limited","attempt":2,"max":10,"retry_in":1,"status":429}',
    '{"type":"needs","kind":"question","id":"q1","text":"Which branch?"}',
    '{"type":"result","result":{"pr":12},"text":"opened PR 12","is_error":false,"error":null}',
]


def test_stream_events_and_totals() -> None:
    c = JsonlConversation(AgentOptions(), "task")
    c.start()
    events, totals = feed_all(c, STREAM)
    assert of(events, AgentSession) == [AgentSession("abc")]
    assert totals.tokens == Tokens(130, 33, 5, 1)
    assert totals.cost_usd == pytest.approx(0.002)
    assert of(events, Cost) == [Cost(0.0012, total=False), Cost(0.0008, total=False)]
    assert of(events, RateLimited) == [RateLimited(2, 10, 1.0, 429)]
    assert Activity("rate limited, retry 2/10 in 1s") in events
    assert of(events, Needs) == [Needs("question", "q1", text="Which branch?")]
    assert of(events, TurnEnded) == [TurnEnded(text="opened PR 12", result={"pr": 12})]
    assert Said("tool_result", "ok") in events
    assert totals.unparsed == 0 and totals.turns == 1
    assert c.answer("q1", True, "main") == ['{"type":"answer","id":"q1","allow":true,"message":"main"}']
    with pytest.raises(BadInput):
        c.answer("q1", True)
    assert c.finished


def test_unknown_type_is_unparsed_and_steer_line() -> None:
    c = JsonlConversation(AgentOptions(), "task")
    assert len(c.feed('{"type":"mystery"}')) == 1
    assert c.steer("more") == [json.dumps({"type": "user", "text": "more"}, separators=(",", ":"))]


def test_preset_needs_a_command() -> None:
    with pytest.raises(BadInput):
        get_preset("jsonl").argv(AgentOptions(), "t")
    assert get_preset("jsonl").argv(AgentOptions(command=("./agent", "{task}")), "t") == ["./agent", "{task}"]
