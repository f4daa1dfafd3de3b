"""The real agent CLIs, run by crewtui: a headless runtime (a real process) with a crew file naming the preset,
the real `claude` / `codex` from npm (scripts/install-agents.sh) talking to the fake model server on 127.0.0.1,
and `crewtui ctl` for what a person does. Skipped, saying why, where the CLIs are not installed.

Each test checks what crewtui makes of the agent: the task's answer as the result, tokens equal to what the fake
served (to the token), the cost, a steer that reaches the model, a permission asked, approved with
`crewtui ctl approve`, and the tool then run; a 429 seen as rate limited.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agentcli import claude_bin, claude_env, codex_bin, codex_env
from tests.fakemodel import fixtures
from tests.fakemodel.server import FakeModel, Usage, error, run_command, slow, text
from tests.faults.helpers import Headless, call, ctl, kill_leftover_sessions, toml_table, wait_until

fake_model = fixtures.fake_model

# Claude Code prices the model it runs (its default here is an Opus model) at $5 / $25 per million input / output
# tokens, $0.50 for cache reads and $6.25 for cache writes: what it reports as total_cost_usd.
CLAUDE_RATES = {"input": 5.0, "output": 25.0, "cache_read": 0.5, "cache_write": 6.25}


def stop(h: Headless) -> None:
    """Kill what the runtime still runs, then stop it."""
    if h.alive():
        for s in call(h.dd.socket, "list")["result"]:
            if s["state"] in ("running", "waiting", "pending", "yielded"):
                call(h.dd.socket, "kill", ref=s["key"])
        h.stop()


def session(data_dir: Path, label: str) -> dict[str, Any]:
    p = ctl(data_dir, "info", label, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def run_crew(tmp_path: Path, preset: str, program: Path, env: dict[str, str], extra: str = "") -> Iterator[Headless]:
    """A headless runtime whose crew has `coder`, an agent of `preset` (permissions: ask) in tmp_path/project, with
    the environment that points it at the fake model (but the machine's PATH); its sessions are ended after."""
    env = {k: v for k, v in env.items() if k not in ("PATH", "TERM", "LANG", "TMPDIR")}
    crew = tmp_path / "crew.toml"
    crew.write_text(
        f"""
[crew]
name = "real"

[agents.coder]
preset = "{preset}"
command = [{json.dumps(str(program))}]
permissions = "ask"
cwd = {json.dumps(str(tmp_path / "project"))}
env = {toml_table(env)}
{extra}
"""
    )
    data = tmp_path / "data"
    h = Headless(data, crew)
    try:
        yield h
    finally:
        stop(h)
        kill_leftover_sessions(data)


@pytest.fixture
def claude_crew(tmp_path: Path, fake_model: FakeModel) -> Iterator[tuple[Headless, Path]]:
    """A headless runtime with `coder`, a claude-code agent, in tmp_path/project."""
    claude = claude_bin()
    (tmp_path / "project").mkdir()
    env = claude_env(fake_model, tmp_path / "home", max_retries=2)
    for h in run_crew(tmp_path, "claude-code", claude, env):
        yield h, tmp_path / "project"


def served_tokens(fake: FakeModel) -> dict[str, int]:
    u = fake.total_usage()
    return {"input": u.input, "output": u.output, "cache_read": u.cache_read, "cache_write": u.cache_write}


def test_claude_code_task_to_result_with_the_tokens_and_cost_the_model_served(
    claude_crew: tuple[Headless, Path], fake_model: FakeModel
) -> None:
    h, _ = claude_crew
    fake_model.script(text("The answer is 42.", usage=Usage(input=1200, output=340, cache_read=5000, cache_write=700)))
    p = ctl(h.data_dir, "spawn", "--label", "ask-1", "--agent", "coder", "--task", "what is six times seven?")
    assert p.returncode == 0, p.stderr
    wait_until(lambda: session(h.data_dir, "ask-1")["state"] in ("done", "failed"), 60, "the session to end")
    s = session(h.data_dir, "ask-1")
    assert s["state"] == "done", s["reason"]
    assert s["result"] == "The answer is 42."
    assert (
        s["tokens"]
        == served_tokens(fake_model)
        == {
            "input": 1200,
            "output": 340,
            "cache_read": 5000,
            "cache_write": 700,
        }
    )
    expected = sum(s["tokens"][k] * rate for k, rate in CLAUDE_RATES.items()) / 1e6
    assert s["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert s["turns"] == 1 and s["agent_session"] and s["exit_code"] == 0
    assert "what is six times seven?" in fake_model.model_requests()[0].text()
    # ctl list shows what it did and what it cost, not the raw JSON it printed.
    listing = ctl(h.data_dir, "list").stdout
    line = next(line for line in listing.splitlines() if "ask-1" in line)
    assert "$0.0" in line and "idle" in line and "{" not in line


def test_claude_code_asks_approval_through_ctl_runs_the_tool(
    claude_crew: tuple[Headless, Path], fake_model: FakeModel
) -> None:
    h, project = claude_crew
    fake_model.script(
        run_command("echo approved > marker.txt", usage=Usage(input=300, output=40)),
        text("Made the marker.", usage=Usage(input=350, output=12)),
    )
    assert ctl(h.data_dir, "spawn", "--label", "tool-1", "--agent", "coder", "--task", "make a marker").returncode == 0
    wait_until(lambda: session(h.data_dir, "tool-1")["state"] == "waiting", 60, "the permission request")
    s = session(h.data_dir, "tool-1")
    assert s["needs"]["kind"] == "permission" and s["needs"]["tool"] == "Bash"
    assert s["needs"]["input"]["command"] == "echo approved > marker.txt"
    assert s["activity"].startswith("waiting: ")
    assert not (project / "marker.txt").exists()  # it waits for a person
    # A session that is not waiting, and a stale request id, are refused in one line and change nothing.
    stale = ctl(h.data_dir, "approve", "tool-1", "not-an-id")
    assert stale.returncode == 2 and "no pending request 'not-an-id'" in stale.stderr
    assert len(stale.stderr.strip().splitlines()) == 1

    ok = ctl(h.data_dir, "approve", "tool-1")
    assert ok.returncode == 0, ok.stderr
    wait_until(lambda: session(h.data_dir, "tool-1")["state"] in ("done", "failed"), 60, "the session to end")
    s = session(h.data_dir, "tool-1")
    assert s["state"] == "done", s["reason"]
    assert (project / "marker.txt").read_text() == "approved\n"
    assert s["result"] == "Made the marker."
    assert s["tokens"]["input"] == 650 and s["tokens"]["output"] == 52
    again = ctl(h.data_dir, "approve", "tool-1")
    assert again.returncode == 2 and "not waiting for an answer" in again.stderr
    # The conversation reads as turns: the tool call, the permission, what the tool gave, the answer.
    history = ctl(h.data_dir, "history", "tool-1", "--json")
    turns = json.loads(history.stdout)["turns"]
    roles = [t["role"] for t in turns]
    assert "tool" in roles and "permission" in roles and "assistant" in roles


def test_claude_code_steered_mid_turn_the_steer_reaches_the_model(
    claude_crew: tuple[Headless, Path], fake_model: FakeModel
) -> None:
    h, _ = claude_crew
    fake_model.script(
        slow(text("Working on it.", usage=Usage(input=100, output=10)), 3.0),
        text("Done, with the steer.", usage=Usage(input=120, output=11)),
    )
    assert ctl(h.data_dir, "spawn", "--label", "steer-1", "--agent", "coder", "--task", "start slowly").returncode == 0
    fake_model.wait_for_requests(1, timeout=60)
    p = ctl(h.data_dir, "send", "steer-1", "also mention the weather")
    assert p.returncode == 0, p.stderr
    wait_until(lambda: session(h.data_dir, "steer-1")["state"] in ("done", "failed"), 60, "the session to end")
    s = session(h.data_dir, "steer-1")
    assert s["state"] == "done", s["reason"]
    assert any("also mention the weather" in r.text() for r in fake_model.model_requests()[1:])
    assert s["turns"] == 2 and s["tokens"]["input"] == 220
    turns = json.loads(ctl(h.data_dir, "history", "steer-1", "--json").stdout)["turns"]
    said = [t["text"] for t in turns if t["role"] == "user"]
    assert said == ["start slowly", "also mention the weather"]  # echoed back: the transcript shows both


def test_claude_code_rate_limited_then_through(claude_crew: tuple[Headless, Path], fake_model: FakeModel) -> None:
    h, _ = claude_crew
    fake_model.script(error(429, retry_after=0), text("through", usage=Usage(input=10, output=2)))
    assert ctl(h.data_dir, "spawn", "--label", "rl-1", "--agent", "coder", "--task", "hi").returncode == 0
    wait_until(lambda: session(h.data_dir, "rl-1")["state"] in ("done", "failed"), 60, "the session to end")
    s = session(h.data_dir, "rl-1")
    assert s["state"] == "done" and s["result"] == "through"
    # The retry was seen while it waited: it set the activity (kept in the event log).
    with sqlite3.connect(h.dd.store) as db:
        log = [row[0] for row in db.execute("SELECT data FROM events WHERE kind = 'session_agent'")]
    assert any("rate limited, retry 1/2" in row for row in log), log


def test_claude_code_rate_limit_exhausted_fails_saying_so(
    claude_crew: tuple[Headless, Path], fake_model: FakeModel
) -> None:
    h, _ = claude_crew
    fake_model.script(error(429, retry_after=0), error(429, retry_after=0), error(429, retry_after=0))
    assert ctl(h.data_dir, "spawn", "--label", "rl-2", "--agent", "coder", "--task", "hi").returncode == 0
    wait_until(lambda: session(h.data_dir, "rl-2")["state"] in ("done", "failed"), 60, "the session to end")
    s = session(h.data_dir, "rl-2")
    assert s["state"] == "failed"
    assert "429" in s["reason"], s["reason"]


# -- Codex (its app-server: JSON-RPC on stdio) -------------------------------------------------------------------

CODEX_PRICE = {"input": 1.25, "output": 10.0, "cache_read": 0.125, "cache_write": 0.0}


@pytest.fixture
def codex_crew(tmp_path: Path, fake_model: FakeModel) -> Iterator[tuple[Headless, Path]]:
    """A headless runtime with `coder`, a codex agent priced by the crew file, in tmp_path/project."""
    codex = codex_bin()
    (tmp_path / "project").mkdir()
    env = codex_env(fake_model, tmp_path / "home")
    price = "price = { " + ", ".join(f"{k} = {v}" for k, v in CODEX_PRICE.items()) + " }"
    for h in run_crew(tmp_path, "codex", codex, env, extra=price):
        yield h, tmp_path / "project"


def test_codex_task_to_result_with_the_tokens_served_and_priced(
    codex_crew: tuple[Headless, Path], fake_model: FakeModel
) -> None:
    h, _ = codex_crew
    fake_model.script(text("Forty-two.", usage=Usage(input=900, output=120, cache_read=300, cache_write=0)))
    assert ctl(h.data_dir, "spawn", "--label", "cx-1", "--agent", "coder", "--task", "six times seven?").returncode == 0
    wait_until(lambda: session(h.data_dir, "cx-1")["state"] in ("done", "failed"), 60, "the session to end")
    s = session(h.data_dir, "cx-1")
    assert s["state"] == "done", s["reason"]
    assert s["result"] == "Forty-two."
    assert (
        s["tokens"] == served_tokens(fake_model) == {"input": 900, "output": 120, "cache_read": 300, "cache_write": 0}
    )
    expected = sum(s["tokens"][k] * rate for k, rate in CODEX_PRICE.items()) / 1e6
    assert s["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert s["turns"] == 1 and s["agent_session"] and s["exit_code"] == 0
    assert "six times seven?" in fake_model.model_requests()[0].text()


def test_codex_asks_approval_through_ctl_runs_the_command(
    codex_crew: tuple[Headless, Path], fake_model: FakeModel
) -> None:
    h, project = codex_crew
    fake_model.script(
        run_command("touch approved-marker.txt", usage=Usage(input=200, output=30)),
        text("Touched it.", usage=Usage(input=260, output=8)),
    )
    assert ctl(h.data_dir, "spawn", "--label", "cx-2", "--agent", "coder", "--task", "touch a marker").returncode == 0
    wait_until(lambda: session(h.data_dir, "cx-2")["state"] == "waiting", 60, "the approval request")
    s = session(h.data_dir, "cx-2")
    assert s["needs"]["kind"] == "permission" and "touch approved-marker.txt" in json.dumps(s["needs"])
    assert not (project / "approved-marker.txt").exists()
    ok = ctl(h.data_dir, "approve", "cx-2")
    assert ok.returncode == 0, ok.stderr
    wait_until(lambda: session(h.data_dir, "cx-2")["state"] in ("done", "failed"), 60, "the session to end")
    s = session(h.data_dir, "cx-2")
    assert s["state"] == "done", s["reason"]
    assert (project / "approved-marker.txt").exists()
    assert s["result"] == "Touched it."
    assert s["tokens"]["input"] == 460 and s["tokens"]["output"] == 38


def test_codex_steered_mid_turn_the_steer_reaches_the_model(
    codex_crew: tuple[Headless, Path], fake_model: FakeModel
) -> None:
    h, _ = codex_crew
    fake_model.script(
        run_command("sleep 2; echo slow-done", usage=Usage(input=100, output=10)),
        text("Done, with the steer.", usage=Usage(input=150, output=12)),
    )
    assert ctl(h.data_dir, "spawn", "--label", "cx-3", "--agent", "coder", "--task", "start slowly").returncode == 0
    fake_model.wait_for_requests(1, timeout=60)
    wait_until(lambda: session(h.data_dir, "cx-3")["state"] in ("running", "waiting"), 30, "it to run")
    if session(h.data_dir, "cx-3")["state"] == "waiting":  # `sleep` may need approval under "untrusted"
        assert ctl(h.data_dir, "approve", "cx-3").returncode == 0
    p = ctl(h.data_dir, "send", "cx-3", "also mention the weather")
    assert p.returncode == 0, p.stderr
    wait_until(lambda: session(h.data_dir, "cx-3")["state"] in ("done", "failed"), 60, "the session to end")
    s = session(h.data_dir, "cx-3")
    assert s["state"] == "done", s["reason"]
    assert any("also mention the weather" in r.text() for r in fake_model.model_requests()[1:])


def test_codex_rate_limited_turn_fails_as_rate_limited(
    codex_crew: tuple[Headless, Path], fake_model: FakeModel
) -> None:
    h, _ = codex_crew
    fake_model.script(error(429, retry_after=0), error(429, retry_after=0), error(429, retry_after=0))
    assert ctl(h.data_dir, "spawn", "--label", "cx-4", "--agent", "coder", "--task", "hi").returncode == 0
    wait_until(lambda: session(h.data_dir, "cx-4")["state"] in ("done", "failed"), 60, "the session to end")
    s = session(h.data_dir, "cx-4")
    assert s["state"] == "failed"
    assert "429" in s["reason"] or "rate limit" in s["reason"].lower(), s["reason"]
