"""gemini, opencode, aider, openclaw: parsed from hand-written streams (the CLIs cannot run here; see
tests/fixtures/agent-streams/hand/README.txt for the sources they were written from)."""

from __future__ import annotations

import pytest

from crewtui.adapters import get_preset
from crewtui.adapters.aider import AiderConversation, count
from crewtui.adapters.base import (
    Activity,
    AgentOptions,
    AgentSession,
    Cost,
    RateLimited,
    Said,
    Tokens,
    TurnEnded,
    Unparsed,
    Usage,
)
from crewtui.adapters.gemini import GeminiConversation
from crewtui.adapters.openclaw import OpenclawConversation
from crewtui.adapters.opencode import OpencodeConversation
from crewtui.errors import BadInput
from tests.adapters.helpers import feed_all, hand, of

ALLOW = AgentOptions(permissions="allow")


def test_gemini_stream() -> None:
    c = GeminiConversation(ALLOW, "run echo hi")
    c.start()
    events, totals = feed_all(c, hand("gemini-tool.jsonl"))
    assert of(events, AgentSession) == [AgentSession("6f1c2e0a-6b7e-4c36-9a43-2f0f0b1f7d10")]
    said = of(events, Said)
    assert Said("assistant", "I'll run the command.") in said  # deltas joined
    assert Said("tool", '{"command":"echo hi","description":"print hi"}', name="run_shell_command") in said
    assert Said("tool_result", "hi") in said
    assert Said("error", "Tool execution denied by policy.") in said
    assert Said("system", "Loop detection: repeated tool call") in said
    assert Activity("run_shell_command: echo hi") in events
    assert of(events, TurnEnded) == [TurnEnded(text="It printed hi.")]
    # stats: input_tokens 1800 includes 600 cached; `input` (1200) is the uncached part.
    assert totals.tokens == Tokens(input=1200, output=90, cache_read=600)
    assert totals.cost_usd is None and totals.turns == 1 and totals.unparsed == 0
    assert c.finished


def test_gemini_rate_limit_exhausted_and_unparsed() -> None:
    c = GeminiConversation(ALLOW, "hi")
    c.start()
    events, totals = feed_all(c, ["Loaded cached credentials.", *hand("gemini-429.jsonl")])
    assert events[0] == Unparsed("Loaded cached credentials.")
    assert totals.rate_limited == 1
    ended = of(events, TurnEnded)
    assert len(ended) == 1 and ended[0].is_error and ended[0].rate_limited


def test_gemini_preset() -> None:
    preset = get_preset("gemini")
    assert preset.argv(ALLOW, "do it") == ["gemini", "-p", "do it", "-o", "stream-json", "--approval-mode", "yolo"]
    assert preset.argv(AgentOptions(permissions="deny", model="gemini-2.5-flash"), "t") == [
        "gemini",
        "-p",
        "t",
        "-o",
        "stream-json",
        "-m",
        "gemini-2.5-flash",
    ]
    assert preset.resume_argv(ALLOW, "S1", "more")[:5] == ["gemini", "-r", "S1", "-p", "more"]
    with pytest.raises(BadInput):
        preset.check(AgentOptions(permissions="ask"))
    assert preset.steer_mode == "next_turn"


def test_opencode_stream() -> None:
    c = OpencodeConversation(ALLOW, "run echo hi")
    c.start()
    events, totals = feed_all(c, hand("opencode-tool.jsonl"))
    assert of(events, AgentSession) == [AgentSession("ses_3b11bfdcdffeITCXse4fCuIRnU")]
    assert Activity("bash: echo hi") in events
    assert Said("tool_result", "hi\n", name="bash") in events
    # Per step, added: reasoning billed as output.
    assert of(events, Usage) == [Usage(Tokens(1200, 50, 300, 50)), Usage(Tokens(80, 12, 1500, 0))]
    assert totals.tokens == Tokens(1280, 62, 1800, 50)
    assert totals.cost_usd == pytest.approx(0.003)
    assert of(events, TurnEnded) == [TurnEnded(text="It printed hi.")]
    assert totals.unparsed == 0 and c.finished


def test_opencode_error_and_rejected_permissions() -> None:
    c = OpencodeConversation(AgentOptions(permissions="deny"), "edit a.py")
    c.start()
    events, totals = feed_all(c, [*hand("opencode-error.jsonl"), "plain noise"])
    assert Said("error", "The user rejected permission to use this specific tool call.", name="edit") in events
    assert Said("system", "permissions refused: edit") in events
    ended = of(events, TurnEnded)
    assert len(ended) == 1 and ended[0].is_error and ended[0].rate_limited
    assert totals.rate_limited == 1 and totals.unparsed == 1


def test_opencode_preset() -> None:
    preset = get_preset("opencode")
    argv = preset.argv(ALLOW, "do it")
    assert argv == [
        "sh",
        "-c",
        'exec "$@" </dev/null',
        "sh",
        "opencode",
        "run",
        "--format",
        "json",
        "--auto",
        "--",
        "do it",
    ]
    assert preset.resume_argv(AgentOptions(permissions="deny"), "ses_1", "more")[-5:] == [
        "json",
        "--session",
        "ses_1",
        "--",
        "more",
    ]
    with pytest.raises(BadInput):
        preset.check(AgentOptions(permissions="ask"))


def test_aider_plain_lines() -> None:
    c = AiderConversation(ALLOW, "add --category")
    c.start()
    events, totals = feed_all(c, hand("aider-edit.txt"))
    assert totals.unparsed == 0  # plain lines are aider's output, not protocol errors
    assert of(events, Usage) == [Usage(Tokens(input=3000, output=42)), Usage(Tokens(2300, 310, 8200, 1500))]
    assert of(events, Cost) == [Cost(0.0063, total=True), Cost(0.03, total=True)]
    assert totals.cost_usd == pytest.approx(0.03)
    assert of(events, RateLimited) == [RateLimited(delay=0.2, status=429)]
    assert Activity("edited cli.py") in events
    assert of(events, TurnEnded) == []  # aider's run ends when it exits


def test_aider_counts_and_preset() -> None:
    assert [count(x) for x in ("950", "1.2k", "12k", "1,234", "2.5M", "")] == [950, 1200, 12000, 1234, 2_500_000, 0]
    preset = get_preset("aider")
    assert preset.argv(AgentOptions(permissions="allow", model="sonnet"), "t") == [
        "aider",
        "--message",
        "t",
        "--yes-always",
        "--no-pretty",
        "--no-fancy-input",
        "--model",
        "sonnet",
    ]
    with pytest.raises(BadInput):
        preset.check(AgentOptions(permissions="ask"))


def test_openclaw_result() -> None:
    c = OpenclawConversation(ALLOW, "make hello.txt")
    c.start()
    events, totals = feed_all(c, ["starting gateway…", *hand("openclaw-result.jsonl")])
    assert events[0] == Unparsed("starting gateway…")
    assert of(events, AgentSession) == [AgentSession("sess_7f3a")]
    assert totals.tokens == Tokens(input=1200, output=300)
    assert totals.cost_usd == pytest.approx(0.0042)
    assert of(events, TurnEnded) == [TurnEnded(text="Done: created hello.txt")]
    assert c.finished


def test_openclaw_pretty_printed_failure() -> None:
    c = OpenclawConversation(ALLOW, "hi")
    c.start()
    events, totals = feed_all(c, hand("openclaw-pretty.jsonl"))
    ended = of(events, TurnEnded)
    assert len(ended) == 1 and ended[0].is_error and ended[0].rate_limited
    assert ended[0].error == "429 Too Many Requests"
    assert totals.unparsed == 0 and totals.tokens == Tokens(input=10)
    assert get_preset("openclaw").argv(ALLOW, "hi") == ["openclaw", "agent", "exec", "hi", "--json"]
