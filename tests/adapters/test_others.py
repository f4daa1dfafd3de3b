"""gemini, opencode: parsed from the streams of the real CLIs (gemini-cli 0.61.0, opencode-ai 1.18.33) recorded
against the fake model server by `scripts/record-agent-streams.py --others`, token counts checked against what
the fake served; plus hand-written streams for shapes those runs did not produce. aider, openclaw: hand-written
streams only (they cannot run here). See tests/fixtures/agent-streams/hand/README.txt."""

from __future__ import annotations

import json

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
from tests.adapters.helpers import feed_all, hand, of, recorded, served

ALLOW = AgentOptions(permissions="allow")
DENY = AgentOptions(permissions="deny")


def served_with_reasoning(name: str) -> Tokens:
    """What the fake served, with reasoning (thinking) tokens counted as output, as crewtui counts them."""
    t = served(name)["total"]
    return Tokens(t["input"], t["output"] + t["reasoning"], t["cache_read"], t["cache_write"])


# -- gemini (recorded) ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["gemini-hi", "gemini-tool-yolo", "gemini-tool-deny", "gemini-429-then-ok"])
def test_gemini_recorded_tokens_equal_what_the_fake_served(scenario: str) -> None:
    lines = recorded(scenario)
    c = GeminiConversation(ALLOW, "t")
    c.start()
    events, totals = feed_all(c, lines)
    assert totals.tokens == served_with_reasoning(scenario)
    assert totals.turns == 1 and totals.unparsed == 0 and totals.cost_usd is None and c.finished
    session = json.loads(lines[0])["session_id"]
    assert of(events, AgentSession) == [AgentSession(session)]
    assert served(scenario)["exit_code"] == 0


def test_gemini_recorded_hi() -> None:
    c = GeminiConversation(DENY, "say hi")
    c.start()
    events, _ = feed_all(c, recorded("gemini-hi"))
    assert of(events, Said) == [Said("user", "say hi"), Said("assistant", "Hi from the fake gemini")]  # deltas joined
    assert of(events, TurnEnded) == [TurnEnded(text="Hi from the fake gemini")]
    assert events[-1] == Activity("idle")


def test_gemini_recorded_tool_call_in_yolo_mode() -> None:
    c = GeminiConversation(ALLOW, "run echo hi")
    c.start()
    events, totals = feed_all(c, recorded("gemini-tool-yolo"))
    said = of(events, Said)
    call = served("gemini-tool-yolo")["replies"][0]["tool_call"]
    assert call == {
        "name": "run_shell_command",
        "args": {"command": "echo hi", "description": "Run the scripted command"},
    }
    assert [s.role for s in said] == ["user", "assistant", "tool", "tool_result", "assistant"]
    assert said[1] == Said("assistant", "I'll run the command.")
    assert said[2] == Said(
        "tool", '{"command":"echo hi","description":"Run the scripted command"}', name="run_shell_command"
    )
    assert said[3] == Said("tool_result", "hi")  # the command really ran
    assert Activity("run_shell_command: echo hi") in events
    assert of(events, TurnEnded) == [TurnEnded(text="It printed hi.")]
    # The second reply had 4 thinking tokens: gemini leaves them out of output_tokens, crewtui counts them.
    assert served("gemini-tool-yolo")["total"]["reasoning"] == 4 and totals.tokens.output == 23 + 4


def test_gemini_recorded_deny_does_not_offer_the_shell() -> None:
    c = GeminiConversation(DENY, "run echo hi")
    c.start()
    events, _ = feed_all(c, recorded("gemini-tool-deny"))
    errors = [s for s in of(events, Said) if s.role == "error"]
    assert len(errors) == 1 and errors[0].text.startswith('Tool "run_shell_command" not found')
    assert of(events, TurnEnded) == [TurnEnded(text="I could not run it.")]


def test_gemini_recorded_429_retried_silently_then_exhausted() -> None:
    # A 429 that gemini retried: nothing on stdout says so (its retries go to stderr); the run succeeds.
    assert [r["status"] for r in served("gemini-429-then-ok")["replies"]] == [429, 200]
    c = GeminiConversation(DENY, "say hi")
    c.start()
    events, totals = feed_all(c, recorded("gemini-429-then-ok"))
    assert totals.rate_limited == 0 and of(events, TurnEnded) == [TurnEnded(text="Hi after a retry")]
    # Exhausted (maxAttempts 2): a failed result, exit 173.
    report = served("gemini-429-exhausted")
    assert [r["status"] for r in report["replies"]] == [429, 429] and report["exit_code"] == 173
    c = GeminiConversation(DENY, "say hi")
    c.start()
    events, totals = feed_all(c, recorded("gemini-429-exhausted"))
    ended = of(events, TurnEnded)
    assert len(ended) == 1 and ended[0].is_error and ended[0].rate_limited
    assert ended[0].error is not None and ended[0].error.startswith("[API Error: Resource has been exhausted")
    assert totals.tokens == Tokens() and totals.rate_limited == 0 and totals.unparsed == 0


# -- opencode (recorded) -------------------------------------------------------------------------------------------


def opencode_cost(name: str) -> float:
    """The fake's tokens priced with the price the recording gave opencode ($ per million tokens)."""
    price, t = served(name)["price"], served(name)["total"]
    per = {"input": t["input"], "output": t["output"], "cache_read": t["cache_read"], "cache_write": t["cache_write"]}
    return sum(price[k] * n for k, n in per.items()) / 1e6


@pytest.mark.parametrize(
    "scenario", ["opencode-hi", "opencode-bash-allow", "opencode-bash-deny", "opencode-429-then-ok"]
)
def test_opencode_recorded_tokens_and_cost_equal_what_the_fake_served(scenario: str) -> None:
    lines = recorded(scenario)
    c = OpencodeConversation(ALLOW, "t")
    c.start()
    events, totals = feed_all(c, lines)
    assert totals.tokens == served_with_reasoning(scenario)
    assert totals.cost_usd == pytest.approx(opencode_cost(scenario), rel=1e-9)
    assert totals.turns == 1 and totals.unparsed == 0 and c.finished
    assert of(events, AgentSession) == [AgentSession(json.loads(lines[0])["sessionID"])]
    assert served(scenario)["exit_code"] == 0


def test_opencode_recorded_hi() -> None:
    c = OpencodeConversation(ALLOW, "say hi")
    c.start()
    events, totals = feed_all(c, recorded("opencode-hi"))
    assert of(events, Said) == [Said("assistant", "Hi from the fake model")]
    assert of(events, TurnEnded) == [TurnEnded(text="Hi from the fake model")]  # at step_finish reason "stop"
    assert totals.tokens == Tokens(input=101, output=11, cache_read=20, cache_write=5)
    assert events[-1] == Activity("idle")


def test_opencode_recorded_bash_allowed() -> None:
    c = OpencodeConversation(ALLOW, "run echo hi")
    c.start()
    events, _ = feed_all(c, recorded("opencode-bash-allow"))
    assert served("opencode-bash-allow")["replies"][0]["tool_call"]["name"] == "bash"
    assert Activity("bash: echo hi") in events
    assert Said("tool_result", "hi\n", name="bash") in events
    assert len(of(events, Usage)) == 2  # one per model call (step_finish)
    ended = of(events, TurnEnded)
    assert ended == [TurnEnded(text="It printed hi.")]  # not at the first step_finish (reason "tool-calls")
    assert events.index(ended[0]) > events.index(of(events, Usage)[1])


def test_opencode_recorded_bash_denied() -> None:
    report = served("opencode-bash-deny")
    assert report["file_created"] is False and len(report["replies"]) == 1  # refused, and opencode stopped
    c = OpencodeConversation(DENY, "touch denied.txt")
    c.start()
    events, _ = feed_all(c, recorded("opencode-bash-deny"))
    assert Said("error", "The user rejected permission to use this specific tool call.", name="bash") in events
    assert Said("system", "permissions refused: bash") in events
    # The last line is a step_finish with reason "tool-calls": the refusal ends the turn there.
    assert of(events, TurnEnded) == [TurnEnded(text="I'll run the command.")]


def test_opencode_recorded_429_retried_silently_then_exhausted() -> None:
    assert [r["status"] for r in served("opencode-429-then-ok")["replies"]] == [429, 429, 200]
    c = OpencodeConversation(ALLOW, "say hi")
    c.start()
    events, totals = feed_all(c, recorded("opencode-429-then-ok"))
    assert totals.rate_limited == 0 and of(events, TurnEnded) == [TurnEnded(text="Hi after two retries")]
    report = served("opencode-429-exhausted")
    assert [r["status"] for r in report["replies"]] == [429] * 6 and report["exit_code"] == 1
    c = OpencodeConversation(ALLOW, "say hi")
    c.start()
    events, totals = feed_all(c, recorded("opencode-429-exhausted"))
    # One `error` line: its statusCode says 429 (the message is the API's, "fake rate_limit_error").
    assert of(events, RateLimited) == [RateLimited(status=429)]
    ended = of(events, TurnEnded)
    assert len(ended) == 1 and ended[0].is_error and ended[0].rate_limited
    assert ended[0].error == "fake rate_limit_error"
    assert totals.tokens == Tokens() and totals.unparsed == 0 and c.finished


# -- hand-written: shapes the recorded runs did not produce --------------------------------------------------------


def test_gemini_hand_stream_with_error_event() -> None:
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


def test_gemini_unparsed_line() -> None:
    c = GeminiConversation(ALLOW, "hi")
    c.start()
    events, totals = feed_all(c, ["Loaded cached credentials.", *recorded("gemini-hi")])
    assert events[0] == Unparsed("Loaded cached credentials.") and totals.unparsed == 1


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


def test_opencode_hand_stream_with_reasoning_and_done() -> None:
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
    assert of(events, TurnEnded) == [TurnEnded(text="It printed hi.")]  # once: at step_finish "stop", not at done
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


def test_opencode_deny_makes_what_it_would_allow_ask_through_its_environment() -> None:
    # opencode's defaults allow bash/edit/webfetch: `deny` makes them ask, and `opencode run` refuses what asks.
    # (tests/test_agent_sessions.py runs it in a real runtime: the environment and an empty stdin reach it.)
    preset = get_preset("opencode")
    deny = AgentOptions(permissions="deny")
    assert json.loads(preset.env(deny)["OPENCODE_PERMISSION"]) == {"bash": "ask", "edit": "ask", "webfetch": "ask"}
    assert preset.env(AgentOptions(permissions="allow")) == {}
    assert preset.argv(deny, "do it")[:2] == ["opencode", "run"]  # the program itself, no shell around it
    assert not preset.reads_stdin  # it reads a piped stdin to its end before it starts: the runtime closes it


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
