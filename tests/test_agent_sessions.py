"""Sessions of preset agents in a real runtime: their output read into activity, tokens, cost, `waiting` and the
answer, steering in the agent's protocol, and stdin closed once every turn asked has ended.

The agents here are small Python programs speaking each protocol (crewtui's `jsonl`, Claude Code's stream-json),
so these run everywhere; tests/test_real_agents.py runs the real CLIs.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from pathlib import Path

import pytest

from crewtui.errors import BadInput, Conflict
from crewtui.model import SessionState, SpawnRequest
from tests.conftest import crew_from, wait_for

PY = sys.executable

# A jsonl agent: says who it is, spends tokens, asks to run a tool and waits for the answer on stdin, then ends.
JSONL_AGENT = textwrap.dedent(
    """
    import json, sys
    def say(**kw): print(json.dumps(kw), flush=True)
    say(type="session", id="conv-1")
    say(type="activity", text="thinking")
    say(type="usage", input=100, output=20, cache_read=50)
    say(type="tool", name="Bash", input={"command": "rm -rf build"})
    say(type="needs", kind="permission", id="p1", tool="Bash", input={"command": "rm -rf build"})
    print("plain output is kept too", flush=True)
    answer = json.loads(sys.stdin.readline())
    say(type="usage", input=10, output=5)
    if answer.get("allow"):
        say(type="tool_result", text="removed")
        say(type="result", result={"ok": True, "task": sys.argv[1]}, text="cleaned")
    else:
        say(type="result", is_error=True, error="not allowed: " + str(answer.get("message")), text="gave up")
    """
)

# Claude Code's stream-json, as far as these tests need it: a result per user message on stdin, exit at end of
# input (the real CLI behaves so; tests/test_real_agents.py checks it).
FAKE_CLAUDE = textwrap.dedent(
    """
    import json, sys
    def say(**kw): print(json.dumps(kw), flush=True)
    say(type="system", subtype="init", session_id="sess-42", model="fake")
    print("Warning: not JSON, as CLIs sometimes print", flush=True)
    turns = 0
    cost = 0.0
    for line in sys.stdin:
        msg = json.loads(line)
        text = msg["message"]["content"]
        if text.startswith("slow"):
            import time; time.sleep(1.5)
        turns += 1
        cost += 0.01
        say(type="assistant", message={"content": [{"type": "tool_use", "name": "Bash", "id": "t1", "input": {"command": "echo " + text}}]})
        say(type="user", message={"content": [{"type": "tool_result", "tool_use_id": "t1", "content": text}]})
        say(type="result", subtype="success", is_error=False, result="did: " + text, num_turns=1, session_id="sess-42",
            total_cost_usd=cost, usage={"input_tokens": 100, "output_tokens": 10, "cache_read_input_tokens": 7,
                                        "cache_creation_input_tokens": 3})
    print(json.dumps({"type": "note", "stdin": "closed", "turns": turns}), file=sys.stderr, flush=True)
    """
)


# Claude Code when the model's rate limit outlasts its retries (the real stream: tests/fixtures/agent-streams), on a
# first try; a later try (the runtime moved the first one's files to tries/1) gets through.
RATE_LIMITED_CLAUDE = textwrap.dedent(
    """
    import json, os, sys
    def say(**kw): print(json.dumps(kw), flush=True)
    first = not os.path.isdir(os.path.join(os.environ["CREWTUI_OUTPUT_DIR"], "tries"))
    say(type="system", subtype="init", session_id="s-rl", model="fake")
    for line in sys.stdin:
        if first:
            say(type="system", subtype="api_retry", attempt=1, max_retries=1, retry_delay_ms=10, error_status=429,
                error="rate_limit")
            say(type="result", subtype="success", is_error=True, api_error_status=429, num_turns=1,
                result="API Error: Request rejected (429)", total_cost_usd=0, usage={})
        else:
            say(type="result", subtype="success", is_error=False, result="through", num_turns=1, total_cost_usd=0.5,
                usage={"input_tokens": 10, "output_tokens": 1})
    sys.exit(1 if first else 0)
    """
)


def write(tmp_path: Path, name: str, code: str) -> str:
    path = tmp_path / name
    path.write_text(code)
    return str(path)


def crew(tmp_path: Path) -> str:
    jsonl = write(tmp_path, "jsonl_agent.py", JSONL_AGENT)
    claude = write(tmp_path, "fake_claude.py", FAKE_CLAUDE)
    return f"""
        [crew]
        name = "t"

        [agents.mine]
        preset = "jsonl"
        command = ["{PY}", "{jsonl}", "{{task}}"]
        price = {{ input = 3.0, output = 15.0, cache_read = 0.3 }}

        [agents.coder]
        preset = "claude-code"
        command = ["{PY}", "{claude}"]

        [agents.limited]
        preset = "claude-code"
        command = ["{PY}", "{write(tmp_path, "rl_claude.py", RATE_LIMITED_CLAUDE)}"]
        pool = "model"

        [pools.model]
        backoff = {{ base = "10ms", max = "20ms" }}

        [agents.missing]
        preset = "claude-code"
        command = ["claude-not-installed-here"]
        """


async def test_a_jsonl_agent_waits_for_a_person_and_goes_on_when_approved(make_orch, tmp_path: Path) -> None:
    orch = await make_orch(crew_from(crew(tmp_path)))
    s = await orch.spawn(SpawnRequest(label="clean-1", agent="mine", task="clean up"))
    await wait_for(lambda: orch.table.sessions[s.key].state == SessionState.WAITING, what="waiting")
    live = orch.table.sessions[s.key]
    assert live.needs == {"kind": "permission", "id": "p1", "tool": "Bash", "input": {"command": "rm -rf build"}}
    assert live.activity == "waiting: Bash: rm -rf build"
    assert live.agent_session == "conv-1"
    assert live.tokens is not None and (live.tokens.input, live.tokens.output, live.tokens.cache_read) == (100, 20, 50)
    # Priced by the crew file: $3/M input, $15/M output, $0.3/M cache reads.
    assert live.cost_usd == pytest.approx((100 * 3 + 20 * 15 + 50 * 0.3) / 1e6)

    with pytest.raises(BadInput, match="no pending request 'p9'"):
        await orch.answer("clean-1", True, request="p9")
    assert orch.table.sessions[s.key].state == SessionState.WAITING  # a stale id changes nothing

    await orch.answer("clean-1", True)
    await wait_for(lambda: orch.table.sessions[s.key].state == SessionState.DONE, what="done")
    done = orch.table.sessions[s.key]
    assert done.result == {"ok": True, "task": "clean up"}
    assert done.needs is None and done.turns == 1
    assert done.tokens is not None and (done.tokens.input, done.tokens.output) == (110, 25)
    kinds = [e.kind for e in await orch.events()]
    assert "session_answered" in kinds and "session_agent" in kinds
    history = await orch.history("clean-1")
    assert history.turns is not None
    assert [(t.role, t.text) for t in history.turns] == [
        ("tool", '{"command":"rm -rf build"}'),
        ("permission", "Bash: rm -rf build"),
        ("answer", "approved"),  # from the runtime's events: the agent's output does not hold what it was told
        ("tool_result", "removed"),
    ]


async def test_a_denied_request_fails_the_session_with_the_agents_reason(make_orch, tmp_path: Path) -> None:
    orch = await make_orch(crew_from(crew(tmp_path)))
    s = await orch.spawn(SpawnRequest(label="clean-2", agent="mine", task="x"))
    await wait_for(lambda: orch.table.sessions[s.key].state == SessionState.WAITING, what="waiting")
    await orch.answer("clean-2", False, message="not today")
    await wait_for(lambda: orch.table.sessions[s.key].state.terminal, what="the end")
    end = orch.table.sessions[s.key]
    assert end.state == SessionState.FAILED
    assert end.reason == "not allowed: not today"
    turns = (await orch.history("clean-2")).turns or []
    assert ("answer", "denied: not today", "p1") in [(t.role, t.text, t.ref) for t in turns]


async def test_answering_a_session_that_does_not_wait_is_refused(make_orch, tmp_path: Path) -> None:
    orch = await make_orch(crew_from(crew(tmp_path)))
    s = await orch.spawn(SpawnRequest(label="plain", argv=["sleep", "30"]))
    with pytest.raises(Conflict, match="is running, not waiting for an answer"):
        await orch.answer("plain", True)
    assert orch.table.sessions[s.key].state == SessionState.RUNNING


async def test_a_claude_session_takes_its_task_and_steers_on_stdin_and_ends_when_its_turns_are_done(
    make_orch, tmp_path: Path
) -> None:
    orch = await make_orch(crew_from(crew(tmp_path)))
    s = await orch.spawn(SpawnRequest(label="code-1", agent="coder", task="slow start"))
    await wait_for(lambda: orch.table.sessions[s.key].agent_session == "sess-42", what="its session id")
    # Steered while its first turn runs: a second turn in the same process, then its stdin is closed and it exits.
    await orch.send("code-1", "also this")
    await wait_for(lambda: orch.table.sessions[s.key].state.terminal, what="the end")
    end = orch.table.sessions[s.key]
    assert end.state == SessionState.DONE, end.reason
    assert end.result == "did: also this"
    assert end.turns == 2 and end.agent_session == "sess-42"
    assert end.tokens is not None and end.tokens.model_dump() == {
        "input": 200,
        "output": 20,
        "cache_read": 14,
        "cache_write": 6,
    }
    assert end.cost_usd == pytest.approx(0.02)  # its own running total, not priced by crewtui
    assert end.unparsed == 1  # the line that was not JSON: counted, kept in the transcript, and the session went on
    assert "Warning: not JSON, as CLIs sometimes print" in (await orch.history("code-1")).lines
    with pytest.raises(Conflict, match="has ended"):
        await orch.send("code-1", "too late")
    note = json.loads((Path(end.output_dir or "") / "stderr.log").read_text().splitlines()[-1])
    assert note == {"type": "note", "stdin": "closed", "turns": 2}


async def test_an_agent_cli_that_is_not_installed_fails_at_once_saying_how_to_install_it(
    make_orch, tmp_path: Path
) -> None:
    orch = await make_orch(crew_from(crew(tmp_path)))
    s = await orch.spawn(SpawnRequest(label="nope", agent="missing", task="x"))
    await wait_for(lambda: orch.table.sessions[s.key].state.terminal, what="the end")
    end = orch.table.sessions[s.key]
    assert end.state == SessionState.FAILED
    assert end.reason == (
        "could not start: claude-not-installed-here not found on PATH; install: npm install -g @anthropic-ai/claude-code"
    )


async def test_a_turn_that_ran_out_of_rate_limit_retries_is_retried_by_the_pools_backoff(
    make_orch, tmp_path: Path
) -> None:
    orch = await make_orch(crew_from(crew(tmp_path)))
    s = await orch.spawn(SpawnRequest(label="limited-1", agent="limited", task="x"))
    await wait_for(lambda: orch.table.sessions[s.key].state.terminal, timeout=20, what="the end")
    end = orch.table.sessions[s.key]
    assert end.state == SessionState.DONE, end.reason
    assert end.result == "through" and end.rate_limited == 1
    # The agent's own retry, in the pool's figures (`ctl info`).
    assert (await orch.info()).pools["model"] == {"running": 0, "rate_limit_retries": 1}
    retried = [e for e in await orch.events() if e.kind == "session_retried"]
    assert [(e.cause, e.attempt) for e in retried] == [("rate_limit", 1)]


async def test_a_waiting_session_outlives_its_runtime_and_is_answered_by_the_next(make_orch, tmp_path: Path) -> None:
    crew_text = crew(tmp_path)
    first = await make_orch(crew_from(crew_text))
    s = await first.spawn(SpawnRequest(label="clean-3", agent="mine", task="keep going"))
    await wait_for(lambda: first.table.sessions[s.key].state == SessionState.WAITING, what="waiting")
    await first.flush()
    await first.stop(kill_sessions=False)

    second = await make_orch(crew_from(crew_text))
    again = second.table.sessions[s.key]
    assert again.state == SessionState.WAITING and again.needs is not None and again.needs["id"] == "p1"
    await second.answer("clean-3", True)
    await wait_for(lambda: second.table.sessions[s.key].state == SessionState.DONE, what="done")
    done = second.table.sessions[s.key]
    assert done.result == {"ok": True, "task": "keep going"}
    # What it said before the restart is counted once, not again when the new runtime read it back.
    assert done.tokens is not None and (done.tokens.input, done.tokens.output, done.tokens.cache_read) == (110, 25, 50)
    assert done.turns == 1


# Gemini CLI's stream-json, as far as this needs it: `-p TEXT` runs one turn, `-r ID -p TEXT` continues session ID.
FAKE_GEMINI = textwrap.dedent(
    """
    import json, sys, time
    def say(**kw): print(json.dumps(kw), flush=True)
    args = sys.argv[1:]
    text = args[args.index("-p") + 1]
    session = args[args.index("-r") + 1] if "-r" in args else "gem-7"
    say(type="init", session_id=session, model="fake")
    if text == "take your time":
        time.sleep(1.5)
    if text == "take a long time":
        time.sleep(4)
    say(type="message", role="assistant", content="re: " + text, delta=True)
    say(type="result", status="success", stats={"input_tokens": 40, "output_tokens": 4, "input": 40, "cached": 0})
    """
)


async def test_an_agent_that_cannot_be_steered_live_continues_its_conversation_with_the_steer(
    make_orch, tmp_path: Path
) -> None:
    gemini = write(tmp_path, "fake_gemini.py", FAKE_GEMINI)
    orch = await make_orch(
        crew_from(
            f"""
            [crew]
            name = "t"

            [agents.g]
            preset = "gemini"
            command = ["{PY}", "{gemini}"]
            """
        )
    )
    s = await orch.spawn(SpawnRequest(label="gem-1", agent="g", task="take your time"))
    await wait_for(lambda: orch.table.sessions[s.key].agent_session == "gem-7", what="its session id")
    await orch.send("gem-1", "and one more thing")  # queued: it takes it on its next run
    await wait_for(lambda: orch.table.sessions[s.key].state.terminal, timeout=20, what="the end")
    end = orch.table.sessions[s.key]
    assert end.state == SessionState.DONE, end.reason
    assert end.result == "re: and one more thing"
    at = end.argv.index("-r")
    assert end.argv[at : at + 4] == ["-r", "gem-7", "-p", "and one more thing"]  # the same conversation, continued
    assert end.turns == 2 and end.tokens is not None and end.tokens.input == 80  # both runs counted
    retried = [e for e in await orch.events() if e.kind == "session_retried"]
    assert [e.cause for e in retried] == ["steer"]


async def test_a_steer_for_an_agent_that_cannot_continue_is_refused_in_one_line(make_orch, tmp_path: Path) -> None:
    orch = await make_orch(
        crew_from(
            f"""
            [crew]
            name = "t"

            [agents.a]
            preset = "aider"
            command = ["{PY}", "-c", "import time; time.sleep(30)"]
            """
        )
    )
    s = await orch.spawn(SpawnRequest(label="aid-1", agent="a", task="x"))
    with pytest.raises(BadInput, match="aider cannot continue a conversation"):
        await orch.send("aid-1", "more")
    assert orch.table.sessions[s.key].state == SessionState.RUNNING


# OpenCode's `run --format json`, as far as this needs it: it reads a piped stdin to its end before it starts.
FAKE_OPENCODE = textwrap.dedent(
    """
    import json, os, sys
    stdin = sys.stdin.read()  # never ends unless the runtime closes it
    def say(**kw): print(json.dumps(dict(kw, sessionID="ses_1")), flush=True)
    say(type="step_start", part={"type": "step-start"})
    text = f"permission={os.environ.get('OPENCODE_PERMISSION')} stdin={stdin!r}"
    say(type="text", part={"type": "text", "text": text})
    say(type="step_finish", part={"type": "step-finish", "reason": "stop", "cost": 0.001,
                                   "tokens": {"input": 10, "output": 2, "reasoning": 0, "cache": {"read": 0, "write": 0}}})
    """
)


async def test_an_agent_that_takes_nothing_on_stdin_gets_it_closed_and_its_presets_environment(
    make_orch, tmp_path: Path
) -> None:
    opencode = write(tmp_path, "fake_opencode.py", FAKE_OPENCODE)
    orch = await make_orch(
        crew_from(
            f"""
            [crew]
            name = "t"

            [agents.oc]
            preset = "opencode"
            command = ["{PY}", "{opencode}"]
            permissions = "deny"
            """
        )
    )
    s = await orch.spawn(SpawnRequest(label="oc-1", agent="oc", task="x"))
    await wait_for(lambda: orch.table.sessions[s.key].state.terminal, timeout=20, what="the end")
    end = orch.table.sessions[s.key]
    assert end.state == SessionState.DONE, end.reason
    permission = '{"bash":"ask","edit":"ask","webfetch":"ask"}'
    assert end.result == f"permission={permission} stdin=''"
    assert end.cost_usd == pytest.approx(0.001)


async def test_a_watchdog_never_kills_a_session_that_waits_on_a_person(make_orch, tmp_path: Path) -> None:
    orch = await make_orch(crew_from(crew(tmp_path)))
    s = await orch.spawn(SpawnRequest(label="clean-4", agent="mine", task="x", watchdog_after=0.3, max_attempts=3))
    await wait_for(lambda: orch.table.sessions[s.key].state == SessionState.WAITING, what="waiting")

    async def fired() -> list[str]:
        return [e.reason or "" for e in await orch.events() if e.kind == "watchdog_fired"]

    deadline = asyncio.get_running_loop().time() + 10
    while len(await fired()) < 2:  # it fired, looked again, and fired again
        assert asyncio.get_running_loop().time() < deadline, await fired()
        await asyncio.sleep(0.05)
    assert all(r == "waiting on a person; looked at again in 0.3s" for r in await fired())
    waiting = orch.table.sessions[s.key]
    assert waiting.state == SessionState.WAITING and waiting.attempt == 1  # never killed, never retried
    await orch.answer("clean-4", True)
    await wait_for(lambda: orch.table.sessions[s.key].state == SessionState.DONE, what="done")


async def test_a_steer_queued_for_the_next_run_outlives_a_restart_of_the_runtime(make_orch, tmp_path: Path) -> None:
    gemini = write(tmp_path, "fake_gemini.py", FAKE_GEMINI)
    text = f"""
        [crew]
        name = "t"

        [agents.g]
        preset = "gemini"
        command = ["{PY}", "{gemini}"]
        """
    first = await make_orch(crew_from(text))
    s = await first.spawn(SpawnRequest(label="gem-2", agent="g", task="take a long time"))
    await wait_for(lambda: first.table.sessions[s.key].agent_session == "gem-7", what="its session id")
    await first.send("gem-2", "then this")
    await first.flush()
    await first.stop(kill_sessions=False)

    second = await make_orch(crew_from(text))
    await wait_for(lambda: second.table.sessions[s.key].state.terminal, timeout=20, what="the end")
    end = second.table.sessions[s.key]
    assert end.state == SessionState.DONE, end.reason
    assert end.result == "re: then this" and end.queued_steers == []


async def test_a_task_too_long_for_the_agents_stdin_is_refused_at_spawn(make_orch, tmp_path: Path) -> None:
    orch = await make_orch(crew_from(crew(tmp_path)))
    with pytest.raises(BadInput, match=r"the task is 70000 bytes; claude-code takes it on stdin, at most 61440"):
        await orch.spawn(SpawnRequest(label="big-1", agent="coder", task="x" * 70_000))
    assert orch.table.sessions == {} or all(s.label != "big-1" for s in orch.table.sessions.values())
    ok = await orch.spawn(SpawnRequest(label="big-2", agent="mine", task="x" * 70_000))  # jsonl: in its argv
    assert ok.label == "big-2"
