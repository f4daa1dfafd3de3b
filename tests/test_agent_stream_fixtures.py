"""The recorded agent streams (tests/fixtures/agent-streams/, made by scripts/record-agent-streams.py) agree with
what the fake served: the token counts the CLIs report are the served ones, so parser tests may rely on them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

STREAMS = Path(__file__).parent / "fixtures" / "agent-streams"
SCENARIOS = sorted(p.name.removesuffix(".served.json") for p in STREAMS.glob("*.served.json"))


def load(name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    events = [json.loads(line) for line in (STREAMS / f"{name}.jsonl").read_text().splitlines()]
    return events, json.loads((STREAMS / f"{name}.served.json").read_text())


def test_every_scenario_the_brief_names_is_recorded() -> None:
    assert set(SCENARIOS) >= {
        "claude-hi", "claude-tool-permission-allow", "claude-permission-deny", "claude-two-turns-stdin",
        "claude-429-then-ok", "claude-429-exhausted", "codex-exec-hi", "codex-exec-command",
        "codex-exec-429-then-ok", "codex-exec-429-exhausted", "codex-app-server-turn",
    }  # fmt: skip


@pytest.mark.parametrize("name", [s for s in SCENARIOS if s.startswith("claude-")])
def test_claude_result_usage_per_turn_is_what_was_served(name: str) -> None:
    events, served = load(name)
    results = [e for e in events if e.get("type") == "result"]
    got = [{k: r["usage"][k] for k in served["turns_wire"][i]} for i, r in enumerate(results)]
    assert got == served["turns_wire"] and len(results) == len(served["turns"])
    assert all(e["cwd"] == "/home/user/project" for e in events if e.get("subtype") == "init")


@pytest.mark.parametrize("name", [s for s in SCENARIOS if s.startswith("codex-exec-")])
def test_codex_exec_turn_usage_is_what_was_served(name: str) -> None:
    events, served = load(name)
    end = events[-1]
    if served["exit_code"] == 0:
        wire = served["turns_wire"][0]
        assert end["type"] == "turn.completed"
        assert (end["usage"]["input_tokens"], end["usage"]["cached_input_tokens"], end["usage"]["output_tokens"]) == (
            wire["input_tokens"],
            wire["cached_tokens"],
            wire["output_tokens"],
        )
    else:
        assert end["type"] == "turn.failed" and "429" in end["error"]["message"]


def test_codex_app_server_token_usage_total_is_what_was_served() -> None:
    events, served = load("codex-app-server-turn")
    total = [e for e in events if e.get("method") == "thread/tokenUsage/updated"][-1]["params"]["tokenUsage"]["total"]
    wire = served["total_wire"]
    assert (total["inputTokens"], total["cachedInputTokens"], total["outputTokens"], total["totalTokens"]) == (
        wire["input_tokens"],
        wire["cached_tokens"],
        wire["output_tokens"],
        wire["total_tokens"],
    )
    sent = [json.loads(line) for line in (STREAMS / "codex-app-server-turn.sent.jsonl").read_text().splitlines()]
    assert [m.get("method") for m in sent][:5] == [
        "initialize",
        "initialized",
        "thread/start",
        "turn/start",
        "turn/steer",
    ]
