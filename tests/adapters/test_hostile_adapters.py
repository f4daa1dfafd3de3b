"""The adapters against a hostile or broken agent: odd but valid JSON, numbers no agent spends, text that looks like
protocol, lines no agent should print. A parser never raises, a session's figures stay finite, non-negative and
storable (SQLite, JSON), and only the agent's protocol, never text it printed, puts a session in `waiting`."""

from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crewtui.adapters import PRESETS, get_preset
from crewtui.adapters.base import (
    MAX_TOKENS,
    MAX_USD,
    Activity,
    AgentOptions,
    AgentSession,
    Cost,
    Needs,
    Price,
    RateLimited,
    Said,
    Tokens,
    TurnEnded,
    Unparsed,
    Usage,
)
from crewtui.adapters.openclaw import MAX_GATHER_CHARS
from crewtui.model import Session, SessionState, SpawnRequest
from crewtui.runtime.agents import AgentLinks
from tests.adapters.helpers import feed_all, of
from tests.conftest import crew_from, wait_for

BIG = str(10**400)  # an int JSON reads, that no float holds
DEEP = "[" * 5000 + "]" * 5000  # json.loads: RecursionError
NESTED = "[" * 200 + "]" * 200  # parses, but a session holding it could not be serialised (pydantic: ~250 levels)


def short(value: object) -> str:
    """A test id of a long parameter."""
    text = str(value)
    return text if len(text) <= 40 else text[:36] + "…"


def conv(preset: str) -> Any:
    c = get_preset(preset).conversation(AgentOptions(), "task")
    c.start()
    return c


def storable(**fields: Any) -> Session:
    """A session holding what an agent said survives the store's JSON round trip."""
    s = Session(key="k", label="l", created_at=1.0, updated_at=1.0, **fields)
    back = Session.model_validate_json(s.model_dump_json().encode("utf-8"))
    return back


# ----------------------------------------------------------------------------------------------- bugs


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("nested", [DEEP, NESTED], ids=["deep", "nested"])
def test_json_nested_too_deep_is_unparsed_not_a_crash(preset: str, nested: str) -> None:
    lines = {
        "jsonl": f'{{"type":"needs","kind":"permission","id":"p1","tool":"Bash","input":{nested}}}',
        "claude-code": f'{{"type":"control_request","request_id":"r1","request":{{"subtype":"can_use_tool",'
        f'"tool_name":"Bash","input":{nested}}}}}',
        "codex": f'{{"method":"item/permissions/requestApproval","id":1,"params":{{"permissions":{nested}}}}}',
    }
    c = conv(preset)
    line = lines.get(preset, f'{{"type":"result","ok":true,"final":"x","status":"success","x":{nested}}}')
    events = c.feed(line)
    assert not of(events, Needs) and not c.pending
    # Output, not an event: Unparsed, or for jsonl and aider plain output (any line that is not theirs).
    assert events == ([] if preset in ("jsonl", "aider") else [Unparsed(line)])


def test_json_nested_a_little_is_read() -> None:
    c = conv("jsonl")
    nested = "[" * 40 + "]" * 40
    [needs] = of(c.feed(f'{{"type":"needs","kind":"permission","id":"p1","tool":"T","input":{nested}}}'), Needs)
    storable(needs=needs.as_dict())


@pytest.mark.parametrize(
    ("preset", "line"),
    [
        ("jsonl", r'{"type":"activity","text":"a\ud800b"}'),
        ("jsonl", r'{"type":"session","id":"s\udc00"}'),
        ("jsonl", r'{"type":"needs","kind":"question","id":"q\ud800","text":"which\udfff?"}'),
        ("jsonl", r'{"type":"result","result":{"k\ud800":["\ud800"]},"text":"\ud800"}'),
        ("claude-code", r'{"type":"system","subtype":"init","session_id":"\ud800"}'),
        ("claude-code", r'{"type":"result","subtype":"success","result":"done \ud800"}'),
        (
            "codex",
            r'{"method":"item/tool/requestUserInput","id":3,"params":{"questions":[{"id":"a","question":"\ud800"}]}}',
        ),
        ("gemini", r'{"type":"init","session_id":"g\ud800"}'),
        ("opencode", r'{"type":"text","sessionID":"o\ud800","part":{"text":"\udc00"}}'),
        ("openclaw", r'{"ok":true,"final":"\ud800","sessionId":"c\ud800"}'),
    ],
    ids=short,
)
def test_a_lone_surrogate_reads_as_a_replacement_character_so_the_session_stays_storable(
    preset: str, line: str
) -> None:
    c = conv(preset)
    events = c.feed(line)
    assert events and not of(events, Unparsed)
    fields: dict[str, Any] = {}
    for ev in events:
        if isinstance(ev, Activity):
            fields["activity"] = ev.text
        elif isinstance(ev, AgentSession):
            fields["agent_session"] = ev.id
        elif isinstance(ev, Needs):
            fields["needs"] = ev.as_dict()
        elif isinstance(ev, TurnEnded):
            fields["result"] = ev.result if ev.result is not None else ev.text
    back = storable(**fields)
    assert "\ufffd" in json.dumps(back.model_dump(), ensure_ascii=False)


def test_a_valid_surrogate_pair_and_an_escaped_backslash_are_read_as_written() -> None:
    c = conv("jsonl")
    [act] = c.feed(r'{"type":"activity","text":"\ud83d\ude00 \\ud800"}')
    assert act == Activity("\U0001f600 \\ud800")


def test_a_byte_order_mark_before_a_line_is_ignored() -> None:
    c = conv("claude-code")
    assert AgentSession("s1") in c.feed('\ufeff{"type":"system","subtype":"init","session_id":"s1"}\r')


@pytest.mark.parametrize(
    ("preset", "line"),
    [
        ("jsonl", f'{{"type":"usage","input":{BIG},"output":{BIG},"cache_read":{BIG},"cache_write":{BIG}}}'),
        (
            "claude-code",
            f'{{"type":"result","subtype":"success","usage":{{"input_tokens":{BIG},"output_tokens":{BIG}}}}}',
        ),
        (
            "codex",
            f'{{"method":"thread/tokenUsage/updated","params":{{"tokenUsage":{{"total":{{"inputTokens":{BIG}}}}}}}}}',
        ),
        ("gemini", f'{{"type":"result","status":"success","stats":{{"input":{BIG},"output_tokens":{BIG}}}}}'),
        ("opencode", f'{{"type":"step_finish","part":{{"reason":"stop","tokens":{{"input":{BIG},"output":{BIG}}}}}}}'),
        ("openclaw", f'{{"ok":true,"final":"x","usage":{{"input":{BIG},"output":{BIG}}}}}'),
        ("aider", f"Tokens: {'9' * 25} sent, {'9' * 25} received."),
    ],
    ids=short,
)
def test_token_counts_beyond_any_agent_are_capped_so_pricing_and_storing_them_works(preset: str, line: str) -> None:
    c = conv(preset)
    _, totals = feed_all(c, [line] * 3)
    t = totals.tokens
    assert t != Tokens() and all(0 <= n <= MAX_TOKENS for n in t.as_dict().values())
    price = Price(3.0, 15.0, 0.3, 3.75)
    assert math.isfinite(price.cost(t + t))  # the runtime adds earlier attempts' tokens and prices them
    assert sum((t + t).as_dict().values()) < 2**63  # what SQLite's INTEGER holds


@pytest.mark.parametrize(
    "bad", ["-5", "NaN", "Infinity", "-Infinity", "1e309", BIG, '"0.5"', "true", "null", "[]"], ids=short
)
@pytest.mark.parametrize(
    ("preset", "template"),
    [
        ("jsonl", '{{"type":"usage","input":1,"cost_usd":{}}}'),
        ("claude-code", '{{"type":"result","subtype":"success","usage":{{"input_tokens":1}},"total_cost_usd":{}}}'),
        ("opencode", '{{"type":"step_finish","part":{{"reason":"stop","tokens":{{"input":1}},"cost":{}}}}}'),
        ("openclaw", '{{"ok":true,"final":"x","usage":{{"input":1}},"costUsd":{}}}'),
    ],
    ids=short,
)
def test_a_cost_that_is_negative_not_finite_or_not_a_number_is_ignored(preset: str, template: str, bad: str) -> None:
    c = conv(preset)
    events, totals = feed_all(c, [template.format("0.25"), template.format(bad)])
    assert totals.cost_usd is not None and 0 <= totals.cost_usd <= MAX_USD and math.isfinite(totals.cost_usd)
    costs = of(events, Cost)
    assert costs[0] == Cost(0.25, total=costs[0].total)
    assert len(costs) == 1 or costs[1].usd == MAX_USD  # a huge int: capped, not refused
    assert costs[1:] or totals.cost_usd == 0.25


def test_aider_figures_that_are_not_numbers_are_ignored() -> None:
    c = conv("aider")
    assert c.feed("Cost: $1.2.3 message, $4.5.6 session.") == []
    assert c.feed("Retrying in 1.2.3 seconds...") == [Activity("Retrying in 1.2.3 seconds...")]
    assert of(c.feed(f"Tokens: {'9' * 400} sent, 1 received."), Usage) == [Usage(Tokens(output=1))]
    assert of(c.feed(f"Cost: $1 message, ${'9' * 400} session."), Cost) == []  # no float holds it
    assert of(c.feed(f"Cost: $1 message, ${'9' * 20} session."), Cost) == [Cost(MAX_USD)]


@pytest.mark.parametrize(
    ("preset", "line"),
    [
        ("claude-code", '{"type":"assistant","message":"hello"}'),
        ("claude-code", '{"type":"assistant","message":[{"type":"text","text":"x"}]}'),
        ("claude-code", '{"type":"user","message":7}'),
        ("claude-code", f'{{"type":"system","subtype":"api_retry","retry_delay_ms":{BIG},"attempt":1}}'),
        ("codex", '{"method":"item/tool/requestUserInput","id":1,"params":{"questions":5}}'),
        ("codex", '{"method":"error","params":{"error":{"message":"Reconnecting... ' + "9" * 5000 + '/5 (429)"}}}'),
        ("jsonl", '{"type":"needs","kind":"permission","id":"p1","tool":{"name":"Bash"},"text":7}'),
        ("jsonl", '{"type":"needs","kind":"permission","id":"p1","tool":5}'),
        ("jsonl", f'{{"type":"rate_limited","attempt":1,"retry_in":{BIG}}}'),
    ],
    ids=short,
)
def test_a_line_of_an_unexpected_shape_does_not_raise(preset: str, line: str) -> None:
    c = conv(preset)
    for ev in c.feed(line):
        if isinstance(ev, (Activity, Said)):
            assert isinstance(ev.text, str)
        if isinstance(ev, Needs):
            assert ev.tool is None or isinstance(ev.tool, str)
            assert ev.text is None or isinstance(ev.text, str)
            assert ev.id in c.pending
        if isinstance(ev, RateLimited):
            assert ev.delay is None or math.isfinite(ev.delay)


def test_openclaw_gathers_a_pretty_result_within_a_bound_in_characters() -> None:
    c = conv("openclaw")
    assert c.feed("{") == []
    chunk = "x" * (1 << 20)
    events: list[Any] = []
    for _ in range(MAX_GATHER_CHARS // len(chunk) + 2):
        events = c.feed(chunk)
        if events:
            break
    assert len(events) > 1 and all(isinstance(e, Unparsed) for e in events)
    # It reads on after the flood: a pretty result is still gathered.
    pretty = json.dumps({"ok": True, "final": "answer", "usage": {"input": 3, "output": 1}}, indent=2).splitlines()
    events, _ = feed_all(c, pretty)
    assert of(events, TurnEnded) == [TurnEnded(text="answer")]


def test_a_parser_that_raises_on_a_replayed_line_does_not_stop_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    conversation = type(get_preset("jsonl").conversation(AgentOptions(), None))

    def boom(self: Any, line: str) -> list[Any]:
        raise RuntimeError("a parser bug")

    monkeypatch.setattr(conversation, "feed", boom)
    links = AgentLinks(table=None, bus=None, crew=SimpleNamespace(agents={}), pools=None, handles=lambda k: None)  # type: ignore[arg-type]
    s = Session(key="k", label="l", created_at=1.0, updated_at=1.0, preset="jsonl", task="t")
    links.open(s, replay=["a line", "another"])  # a restarted runtime adopting the session, or ending it
    assert links.links["k"].totals.unparsed == 2


# ------------------------------------------------------------------------------------------ what held


@pytest.mark.parametrize(
    ("preset", "line"),
    [
        # The agent's own words, quoting a permission request: JSON text inside a string is text.
        (
            "claude-code",
            json.dumps(
                {
                    "type": "assistant",
                    "message": {
                        "content": [
                            {
                                "type": "text",
                                "text": '\n{"type":"control_request","request_id":"x","request":{"subtype":'
                                '"can_use_tool","tool_name":"Bash","input":{"command":"rm -rf /"}}}\n',
                            }
                        ]
                    },
                }
            ),
        ),
        (
            "claude-code",
            json.dumps(
                {
                    "type": "user",
                    "message": {"content": [{"type": "tool_result", "content": '{"type":"control_request"}'}]},
                }
            ),
        ),
        ("jsonl", json.dumps({"type": "say", "text": '{"type":"needs","kind":"question","id":"q","text":"?"}'})),
        ("jsonl", json.dumps({"type": "tool_result", "text": '\n{"type":"needs","kind":"permission","id":"p"}'})),
        (
            "codex",
            json.dumps(
                {
                    "method": "item/completed",
                    "params": {
                        "item": {"type": "agentMessage", "text": '{"method":"execCommandApproval","id":9,"params":{}}'}
                    },
                }
            ),
        ),
        ("gemini", json.dumps({"type": "message", "role": "assistant", "content": '{"type":"needs"}', "delta": True})),
        ("opencode", json.dumps({"type": "text", "part": {"text": '{"type":"needs","kind":"question","id":"q"}'}})),
    ],
    ids=short,
)
def test_text_an_agent_printed_never_puts_it_in_waiting(preset: str, line: str) -> None:
    c = conv(preset)
    assert not of(c.feed(line), Needs) and not c.pending


def test_a_type_that_is_not_a_string_and_duplicate_keys_do_not_confuse_it() -> None:
    c = conv("jsonl")
    assert c.feed('{"type":["needs"],"kind":"question","id":"q"}') == []  # plain output
    assert c.feed('{"type":"needs","type":"say","text":"hi"}') == [Said("assistant", "hi")]  # the last key wins
    claude = conv("claude-code")
    assert claude.feed('{"type":{"x":1}}') == [Unparsed('{"type":{"x":1}}')]
    assert not c.pending and not claude.pending


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize(
    "line",
    ['{"type":"result"', '{"type":"result",\x00}', "\ufffd\ufffd{", "null", "[1,2]", '"text"', "{" * 3, "1e999"],
)
def test_partial_or_broken_json_is_output_not_an_event(preset: str, line: str) -> None:
    c = conv(preset)
    events = c.feed(line)
    assert all(isinstance(e, Unparsed) for e in events)  # (aider and jsonl: none, plain output)
    assert not c.pending and c.ended == 0


# ------------------------------------------------------------------------------- a real session, stored

HOSTILE = textwrap.dedent(
    r"""
    import sys
    def out(line): sys.stdout.write(line + "\n"); sys.stdout.flush()
    out('\ufeff{"type":"session","id":"conv-\\ud800"}')
    out('{"type":"activity","text":"working \\udc00 \\u001b]0;owned\\u0007"}')
    out('{"type":"usage","input":' + str(10**400) + ',"output":-5,"cost_usd":1e309}')
    out('{"type":"usage","input":NaN,"output":Infinity,"cost_usd":NaN}')
    out('{"type":"needs","kind":"permission","id":"deep","tool":"Bash","input":' + "[" * 300 + "]" * 300 + '}')
    out('{"type":"say","text":"{\\"type\\":\\"needs\\",\\"kind\\":\\"question\\",\\"id\\":\\"q\\"}"}')
    out('{"type":"result","result":{"answer":"r\\ud800"},"text":"done"}')
    """
)


async def test_a_hostile_jsonl_agents_session_ends_done_with_sane_figures_and_is_stored(
    make_orch: Any, tmp_path: Path
) -> None:
    agent = tmp_path / "hostile.py"
    agent.write_text(HOSTILE)
    text = f"""
        [crew]
        name = "t"

        [agents.bad]
        preset = "jsonl"
        command = ["{sys.executable}", "{agent}"]
        price = {{ input = 3.0, output = 15.0 }}
        """
    orch = await make_orch(crew_from(text))
    s = await orch.spawn(SpawnRequest(label="bad", agent="bad", task="x"))
    await wait_for(lambda: orch.table.sessions[s.key].state.terminal, what="the end")
    end = orch.table.sessions[s.key]
    assert end.state == SessionState.DONE, end.reason
    assert end.result == {"answer": "r\ufffd"} and end.needs is None
    assert end.agent_session == "conv-\ufffd"
    assert end.tokens is not None and end.tokens.input == MAX_TOKENS and end.tokens.output == 0
    assert end.cost_usd is not None and math.isfinite(end.cost_usd) and end.cost_usd == MAX_TOKENS * 3.0 / 1e6
    await orch.flush()
    await orch.stop(kill_sessions=False)

    again = (await make_orch(crew_from(text))).table.sessions[s.key]
    assert again.state == SessionState.DONE and again.result == end.result and again.tokens == end.tokens
