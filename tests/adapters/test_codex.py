from __future__ import annotations

import json

import pytest

from crewtui.adapters import get_preset
from crewtui.adapters.base import (
    Activity,
    AgentEvent,
    AgentOptions,
    AgentSession,
    Answered,
    Needs,
    RateLimited,
    Reply,
    Said,
    Tokens,
    Totals,
    TurnEnded,
    Unparsed,
    Usage,
)
from crewtui.adapters.codex import CodexConversation
from crewtui.errors import BadInput
from tests.adapters.helpers import feed_all, hand, of, recorded, served_tokens

SCENARIO = "codex-app-server-turn"
THREAD = "01a22b50-89da-7541-ae50-6383c7ad0f98"
TURN = "01a22b50-89f6-7141-aef2-999a8a7123ba"


def conv(task: str | None = "touch approved.txt", **kw: object) -> CodexConversation:
    return CodexConversation(AgentOptions(**kw), task)  # type: ignore[arg-type]


def line_of(**value: object) -> str:
    return json.dumps(value)


def test_argv_and_preset() -> None:
    preset = get_preset("codex")
    assert preset.argv(AgentOptions(args=("-c", "model_reasoning_effort=low")), "t") == [
        "codex",
        "app-server",
        "-c",
        "model_reasoning_effort=low",
    ]
    assert preset.reports_cost is False
    assert preset.steer_mode == "live"


@pytest.mark.parametrize(
    ("permissions", "policy", "sandbox"),
    [("ask", "untrusted", "workspace-write"), ("allow", "never", "danger-full-access"), ("deny", "never", "read-only")],
)
def test_handshake_lines(permissions: str, policy: str, sandbox: str) -> None:
    c = conv(permissions=permissions)
    assert c.start() == [
        '{"id":1,"method":"initialize","params":{"clientInfo":{"name":"crewtui","version":"1"}}}',
        '{"method":"initialized"}',
        '{"id":2,"method":"thread/start","params":{"approvalPolicy":"POLICY","sandbox":"SANDBOX"}}'.replace(
            "POLICY", policy
        ).replace("SANDBOX", sandbox),
    ]
    assert c.asked == 1 and not c.finished


def test_model_goes_in_thread_start() -> None:
    lines = conv(model="gpt-5-codex").start()
    assert json.loads(lines[2])["params"]["model"] == "gpt-5-codex"


def test_recorded_turn_replies_approval_steer_and_tokens() -> None:
    lines = recorded(SCENARIO)
    c = conv()
    c.start()
    events: list[AgentEvent] = []
    replies: list[str] = []
    steer_lines: list[str] = []
    answer_lines: list[str] = []
    totals = Totals()
    for line in lines:
        evs = c.feed(line)
        for ev in evs:
            totals.apply(ev)
            if isinstance(ev, Reply):
                replies.append(ev.line)
            if isinstance(ev, Needs):
                answer_lines = c.answer(ev.id, True)
        events += evs
        if c.turn_id == TURN and not steer_lines:
            steer_lines = c.steer("steer: also say Y")
    # After thread/start's response: the task as the first turn, on that thread.
    assert replies == [
        '{"id":3,"method":"turn/start","params":{"threadId":"THREAD",'
        '"input":[{"type":"text","text":"touch approved.txt"}]}}'.replace("THREAD", THREAD)
    ]
    # A steer while the turn runs joins it: turn/steer with the running turn's id, no new turn.
    assert steer_lines == [
        '{"id":4,"method":"turn/steer","params":{"threadId":"THREAD","expectedTurnId":"TURN",'
        '"input":[{"type":"text","text":"steer: also say Y"}]}}'.replace("THREAD", THREAD).replace("TURN", TURN)
    ]
    needs = of(events, Needs)
    assert len(needs) == 1 and needs[0].kind == "permission" and needs[0].tool == "Bash" and needs[0].id == "0"
    assert "touch approved.txt" in needs[0].input["command"]
    assert answer_lines == ['{"id":0,"result":{"decision":"accept"}}']  # the id echoed as codex sent it: an int
    assert of(events, Answered) == [Answered("0")]
    assert of(events, AgentSession) == [AgentSession(THREAD)]
    ended = of(events, TurnEnded)
    assert len(ended) == 1 and not ended[0].is_error and ended[0].text
    # Tokens: exactly what the fake served (input uncached: codex's inputTokens minus the cached ones).
    assert totals.tokens == served_tokens(SCENARIO)
    assert totals.turns == 1 and totals.unparsed == 0 and totals.cost_usd is None
    assert c.asked == 1 and c.ended == 1 and c.finished
    assert any(isinstance(e, Said) and e.role == "tool" and e.name == "Bash" for e in events)
    assert any(isinstance(e, Activity) and e.text.startswith("waiting: may it run Bash:") for e in events)


def test_token_accounting_subtracts_cached_and_written() -> None:
    c = conv()
    usage = {"totalTokens": 227, "inputTokens": 207, "cachedInputTokens": 50, "cacheWriteInputTokens": 7}
    usage |= {"outputTokens": 20, "reasoningOutputTokens": 3}
    line = line_of(method="thread/tokenUsage/updated", params={"tokenUsage": {"total": usage, "last": usage}})
    assert c.feed(line) == [Usage(Tokens(input=150, output=20, cache_read=50, cache_write=7), total=True)]


def started(c: CodexConversation, thread: str = "T1", turn: str = "U1") -> None:
    c.start()
    c.feed(line_of(id=2, result={"thread": {"id": thread}}))
    c.feed(line_of(id=3, result={"turn": {"id": turn, "status": "inProgress"}}))


def test_answer_deny_and_stale_id() -> None:
    c = conv()
    started(c)
    params = {"threadId": "T1", "turnId": "U1", "itemId": "call_1", "command": "/bin/bash -lc 'rm -rf x'"}
    evs = c.feed(line_of(method="item/commandExecution/requestApproval", id=7, params=params))
    assert isinstance(evs[0], Needs) and evs[0].input["command"] == "/bin/bash -lc 'rm -rf x'"
    assert not c.finished
    with pytest.raises(BadInput) as err:
        c.answer("8", True)
    assert "\n" not in str(err.value) and "'8'" in str(err.value)
    assert c.answer(None, False, "no") == ['{"id":7,"result":{"decision":"decline"}}']
    with pytest.raises(BadInput):
        c.answer("7", True)  # answered already


def test_file_change_approval_names_the_paths() -> None:
    c = conv()
    started(c)
    item = {
        "type": "fileChange",
        "id": "call_p",
        "status": "inProgress",
        "changes": [{"path": "src/a.py", "kind": "add", "diff": ""}],
    }
    evs = c.feed(line_of(method="item/started", params={"threadId": "T1", "item": item}))
    assert Activity("editing src/a.py") in evs
    evs = c.feed(line_of(method="item/fileChange/requestApproval", id=1, params={"threadId": "T1", "itemId": "call_p"}))
    assert isinstance(evs[0], Needs) and evs[0].input == {"paths": ["src/a.py"]}
    assert Activity("waiting: may it run editing src/a.py?") in evs
    assert c.answer("1", True) == ['{"id":1,"result":{"decision":"accept"}}']


def test_question_and_unknown_server_request() -> None:
    c = conv()
    started(c)
    q = {"id": "branch", "header": "Branch", "question": "Which branch?"}
    evs = c.feed(line_of(method="item/tool/requestUserInput", id=3, params={"threadId": "T1", "questions": [q]}))
    assert isinstance(evs[0], Needs) and evs[0].kind == "question" and evs[0].text == "Which branch?"
    assert c.answer("3", True, "main") == ['{"id":3,"result":{"answers":{"branch":{"answers":["main"]}}}}']
    # A request crewtui does not serve gets a JSON-RPC error at once: codex never waits on it.
    evs = c.feed(line_of(method="mcpServer/elicitation/request", id=4, params={"threadId": "T1"}))
    assert evs == [
        Reply('{"id":4,"error":{"code":-32601,"message":"crewtui does not handle mcpServer/elicitation/request"}}')
    ]
    assert not c.pending


def test_steer_between_turns_starts_a_new_turn() -> None:
    c = conv()
    started(c)
    c.feed(line_of(method="turn/completed", params={"threadId": "T1", "turn": {"id": "U1", "status": "completed"}}))
    assert c.finished
    lines = c.steer("and now this")
    assert lines == [
        '{"id":4,"method":"turn/start","params":{"threadId":"T1","input":[{"type":"text","text":"and now this"}]}}'
    ]
    assert c.asked == 2 and not c.finished


def test_steer_before_the_turn_has_an_id_waits_for_it() -> None:
    c = conv()
    c.start()
    assert c.steer("early") == []  # the task's turn is starting: it joins that turn once codex names it
    c.feed(line_of(id=2, result={"thread": {"id": "T1"}}))
    evs = c.feed(line_of(id=3, result={"turn": {"id": "U1"}}))
    assert [e.line for e in of(evs, Reply)] == [
        '{"id":4,"method":"turn/steer","params":{"threadId":"T1","expectedTurnId":"U1","input":[{"type":"text","text":"early"}]}}'
    ]
    assert c.asked == 1


def test_a_steer_that_missed_the_turn_becomes_the_next_turn() -> None:
    c = conv()
    started(c)
    c.steer("late")
    c.feed(line_of(method="turn/completed", params={"threadId": "T1", "turn": {"id": "U1", "status": "completed"}}))
    assert not c.finished  # the steer's answer is still to come
    evs = c.feed(line_of(id=4, error={"code": -32600, "message": "no active turn"}))
    assert [e.line for e in of(evs, Reply)] == [
        '{"id":5,"method":"turn/start","params":{"threadId":"T1","input":[{"type":"text","text":"late"}]}}'
    ]
    assert c.asked == 2


def test_rate_limit_retries_and_exhausted() -> None:
    c = conv()
    c.start()
    events, totals = feed_all(c, hand("codex-app-server-exhausted.jsonl"))
    ended = of(events, TurnEnded)
    assert len(ended) == 1 and ended[0].is_error and ended[0].rate_limited
    assert "429 Too Many Requests" in (ended[0].error or "")
    assert c.finished and totals.turns == 1

    c = conv()
    started(c, thread="01a22b4e-1247-7ac1-b85e-a39a5a466cb0", turn="01a22b4e-125d-7413-a1f3-a5231749256f")
    events, totals = feed_all(c, hand("codex-app-server-retry.jsonl"))
    assert of(events, RateLimited) == [RateLimited(1, 5, None, 429), RateLimited(2, 5, None, 429)]
    assert Activity("rate limited, retry 2/5") in events
    assert any(isinstance(e, Activity) and e.text.startswith("reconnecting: Reconnecting... 3/5") for e in events)
    assert totals.rate_limited == 2


def test_not_json_is_unparsed_and_the_parser_goes_on() -> None:
    c = conv()
    c.start()
    assert c.feed("WARNING: proceeding, even though we could not create PATH aliases") == [
        Unparsed("WARNING: proceeding, even though we could not create PATH aliases")
    ]
    assert c.feed("") == []
    assert c.feed('{"neither":"method nor id"}') == [Unparsed('{"neither":"method nor id"}')]
    evs = c.feed(line_of(id=2, result={"thread": {"id": "T9"}}))
    assert AgentSession("T9") in evs and len(of(evs, Reply)) == 1


def test_unknown_notifications_are_ignored_and_other_threads_too() -> None:
    c = conv()
    started(c)
    assert c.feed(line_of(method="thread/someNewThing", params={"threadId": "T1"})) == []
    other = {"threadId": "SUB", "turn": {"id": "X", "status": "completed"}}
    assert c.feed(line_of(method="turn/completed", params=other)) == []
    assert c.ended == 0


def test_thread_start_failure_ends_the_task() -> None:
    c = conv()
    c.start()
    evs = c.feed(line_of(id=2, error={"code": -32600, "message": "invalid model"}))
    ended = of(evs, TurnEnded)
    assert ended and ended[0].is_error and ended[0].error == "invalid model"
    assert c.finished
