"""The fake model server, and the real agent CLIs (Claude Code, Codex) driven against it, offline.

The first tests check the fake itself over HTTP (always run). The others run the real `claude` and `codex`
installed by `bash scripts/install-agents.sh` into `.agents/` and are skipped, saying so, when they are missing.
Every CLI gets a HOME (and CODEX_HOME) in tmp_path, talks only to the fake on 127.0.0.1, and is killed (its
process group) if the test fails.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.agentcli import (
    AgentProcess,
    claude_bin,
    claude_env,
    codex_bin,
    codex_env,
    run_agent,
)
from tests.fakemodel import FakeModel, Limit, Usage, error, fixtures, run_command, slow, text, tool_use

fake_model = fixtures.fake_model  # the fixture, for this module

CLAUDE_PRINT = ["-p", "--output-format", "stream-json", "--verbose"]
CLAUDE_STDIN = ["-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose"]
CODEX_EXEC = ["exec", "--json", "--skip-git-repo-check"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


def post(
    fake: FakeModel, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    req = urllib.request.Request(
        fake.url + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode()


def sse(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


# -- the fake on its own -------------------------------------------------------------------------------------------


def test_anthropic_stream_carries_text_tool_use_and_exact_usage(fake_model: FakeModel) -> None:
    fake_model.script(
        text("hello world", usage=Usage(input=11, output=7, cache_read=5, cache_write=3)),
        tool_use("Read", {"file_path": "/x"}, usage=Usage(input=2, output=4), preamble="reading"),
    )
    status, _, raw = post(fake_model, "/v1/messages?beta=true", {"model": "m", "stream": True, "messages": []})
    assert status == 200
    events = sse(raw)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert events[0][1]["message"]["usage"] == {
        "input_tokens": 11,
        "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 5,
        "output_tokens": 1,
    }
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == "hello world"
    assert events[-2][1]["usage"]["output_tokens"] == 7 and events[-2][1]["delta"]["stop_reason"] == "end_turn"

    status, _, raw = post(fake_model, "/v1/messages", {"model": "m", "stream": True, "messages": []})
    events = sse(raw)
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["text", "tool_use"] and starts[1]["name"] == "Read"
    partial = "".join(d["delta"].get("partial_json", "") for n, d in events if n == "content_block_delta")
    assert json.loads(partial) == {"file_path": "/x"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    served_after(fake_model, 2)  # the second reply is recorded just after its last byte
    assert fake_model.total_usage() == Usage(input=13, output=11, cache_read=5, cache_write=3)


def test_anthropic_non_streaming_errors_count_tokens_and_default_reply(fake_model: FakeModel) -> None:
    fake_model.script(error(429, retry_after=0), error(529), text("plain", usage=Usage(input=1, output=2)))
    status, headers, raw = post(fake_model, "/v1/messages", {"model": "m", "messages": []})
    assert status == 429 and headers["retry-after"] == "0"
    assert json.loads(raw)["error"]["type"] == "rate_limit_error"
    status, headers, raw = post(fake_model, "/v1/messages", {"model": "m", "messages": []})
    assert status == 529 and "retry-after" not in headers and json.loads(raw)["error"]["type"] == "overloaded_error"
    status, _, raw = post(fake_model, "/v1/messages", {"model": "m", "stream": False, "messages": []})
    message = json.loads(raw)
    assert message["content"] == [{"type": "text", "text": "plain"}] and message["usage"]["output_tokens"] == 2
    status, _, raw = post(fake_model, "/v1/messages/count_tokens", {"messages": [{"role": "user", "content": "x"}]})
    assert status == 200 and json.loads(raw)["input_tokens"] > 0
    _, _, raw = post(fake_model, "/v1/messages", {"model": "m", "messages": []})
    assert json.loads(raw)["content"][0]["text"] == "ok"  # the script is empty: the default reply
    assert [r.path for r in fake_model.requests].count("/v1/messages") == 4
    assert fake_model.requests[-1].body == {"model": "m", "messages": []}


def test_responses_stream_text_and_command_call_in_the_offered_tool_shape(fake_model: FakeModel) -> None:
    fake_model.script(
        text("hi there", usage=Usage(input=10, output=4, cache_read=6, reasoning=2)),
        run_command("echo hi"),
        run_command("echo hi"),
    )
    _, _, raw = post(fake_model, "/v1/responses", {"model": "m", "stream": True, "input": []})
    events = sse(raw)
    types = [d["type"] for _, d in events]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert types[-1] == "response.completed"
    assert "".join(d["delta"] for _, d in events if d["type"] == "response.output_text.delta") == "hi there"
    assert events[-1][1]["response"]["usage"] == {
        "input_tokens": 16,
        "input_tokens_details": {"cached_tokens": 6, "cache_write_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 20,
    }
    tools = [{"type": "function", "name": "exec_command"}]
    _, _, raw = post(fake_model, "/v1/responses", {"model": "m", "stream": True, "input": [], "tools": tools})
    done = [d["item"] for _, d in sse(raw) if d["type"] == "response.output_item.done"]
    assert done[0]["type"] == "function_call" and done[0]["name"] == "exec_command"
    assert json.loads(done[0]["arguments"]) == {"cmd": "echo hi"}
    _, _, raw = post(fake_model, "/v1/responses", {"model": "m", "stream": True, "input": [], "tools": []})
    done = [d["item"] for _, d in sse(raw) if d["type"] == "response.output_item.done"]
    assert done[0]["name"] == "shell" and json.loads(done[0]["arguments"]) == {"command": ["bash", "-lc", "echo hi"]}


def served_after(fake: FakeModel, count: int) -> list[Any]:
    """fake.served once it holds `count` entries (a reply is recorded just after its last byte is sent)."""
    deadline = time.monotonic() + 5
    while len(fake.served) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return list(fake.served)


def gemini_sse(raw: str) -> list[dict[str, Any]]:
    """The `data:` chunks of a Gemini API SSE stream (no `event:` lines; blocks end with CRLF CRLF)."""
    chunks = []
    for block in raw.replace("\r\n", "\n").strip().split("\n\n"):
        assert block.startswith("data: ")
        chunks.append(json.loads(block[len("data: ") :]))
    return chunks


def test_gemini_stream_text_then_function_call_with_exact_usage(fake_model: FakeModel) -> None:
    fake_model.script(
        text("hello gemini", usage=Usage(input=11, output=7, cache_read=5, reasoning=2)),
        run_command("echo hi", usage=Usage(input=20, output=3), preamble="running"),
    )
    path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    tools = [{"functionDeclarations": [{"name": "run_shell_command"}, {"name": "read_file"}]}]
    status, headers, raw = post(fake_model, path, {"contents": [], "tools": tools})
    assert status == 200 and {k.lower(): v for k, v in headers.items()}["content-type"].startswith("text/event-stream")
    chunks = gemini_sse(raw)
    text_parts = [p["text"] for c in chunks for p in c["candidates"][0]["content"]["parts"]]
    assert "".join(text_parts) == "hello gemini" and len(chunks) > 1
    assert all(c["modelVersion"] == "gemini-2.5-flash" for c in chunks)
    assert [c["candidates"][0].get("finishReason") for c in chunks][-1] == "STOP"
    assert [("usageMetadata" in c) for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1]["usageMetadata"] == {
        "promptTokenCount": 16,  # cached tokens are inside the prompt count
        "candidatesTokenCount": 7,
        "cachedContentTokenCount": 5,
        "thoughtsTokenCount": 2,
        "totalTokenCount": 25,
    }
    _, _, raw = post(fake_model, path, {"contents": [], "tools": tools})
    parts = [p for c in gemini_sse(raw) for p in c["candidates"][0]["content"]["parts"]]
    assert "".join(p.get("text", "") for p in parts) == "running"
    calls = [p["functionCall"] for p in parts if "functionCall" in p]
    assert calls == [
        {"name": "run_shell_command", "args": {"command": "echo hi", "description": "Run the scripted command"}}
    ]
    served = served_after(fake_model, 2)
    assert served[1].tool_call == calls[0] and served[1].api == "gemini"
    assert fake_model.model_requests()[1].tool_names() == ["run_shell_command", "read_file"]
    served_after(fake_model, 2)
    assert fake_model.total_usage() == Usage(input=31, output=10, cache_read=5, reasoning=2)


def test_gemini_generate_content_count_tokens_and_429(fake_model: FakeModel) -> None:
    fake_model.script(error(429, retry_after=0), text("plain", usage=Usage(input=4, output=2)))
    status, _, raw = post(fake_model, "/v1beta/models/m:countTokens", {"contents": [{"parts": [{"text": "x"}]}]})
    assert status == 200 and json.loads(raw)["totalTokens"] > 0 and fake_model.pending() == 2  # took no reply
    status, _, raw = post(fake_model, "/v1beta/models/m:streamGenerateContent?alt=sse", {"contents": []})
    assert status == 429
    err = json.loads(raw)["error"]
    assert (err["code"], err["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert err["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0s"}]
    status, _, raw = post(fake_model, "/v1beta/models/m:generateContent", {"contents": []})
    body = json.loads(raw)
    assert status == 200 and body["candidates"][0]["content"]["parts"] == [{"text": "plain"}]
    assert body["usageMetadata"]["candidatesTokenCount"] == 2 and body["candidates"][0]["finishReason"] == "STOP"
    assert [s.status for s in served_after(fake_model, 2)] == [429, 200]
    assert [r.api for r in fake_model.requests] == [None, "gemini", "gemini"]


def test_anthropic_command_call_uses_the_offered_shell_tool_name(fake_model: FakeModel) -> None:
    fake_model.script(run_command("echo a"), run_command("echo b"))
    for offered, wanted in (([{"name": "bash"}, {"name": "read"}], "bash"), ([{"name": "Bash"}], "Bash")):
        _, _, raw = post(fake_model, "/v1/messages", {"model": "m", "stream": True, "messages": [], "tools": offered})
        starts = [d["content_block"] for n, d in sse(raw) if n == "content_block_start"]
        assert starts[-1]["name"] == wanted  # OpenCode offers `bash`, Claude Code `Bash`
    assert [s.tool_call["name"] for s in served_after(fake_model, 2) if s.tool_call] == ["bash", "Bash"]


def test_unknown_paths_are_recorded_and_refused(fake_model: FakeModel) -> None:
    status, _, _ = post(fake_model, "/v1/chat/completions", {"x": 1})
    assert status == 404
    assert fake_model.requests[0].path == "/v1/chat/completions" and fake_model.model_requests() == []
    assert fake_model.pending() == 0 and fake_model.served == []


def test_concurrency_limit_refuses_at_once_without_taking_a_reply(fake_model: FakeModel) -> None:
    fake_model.set_limit(Limit(concurrent=3))
    fake_model.script(*[slow(text("abc"), 0.2) for _ in range(3)], text("fourth"))
    body = {"model": "m", "stream": True, "messages": []}
    with ThreadPoolExecutor(3) as pool:
        slow_posts = [pool.submit(post, fake_model, "/v1/messages", body) for _ in range(3)]
        fake_model.wait_for_requests(3)
        assert fake_model.in_flight() == 3 and fake_model.pending() == 1
        status, headers, raw = post(fake_model, "/v1/messages", body, {"x-api-key": "key-4"})
        assert status == 429 and headers["retry-after"] == "1"
        assert json.loads(raw)["error"]["type"] == "rate_limit_error"
        assert fake_model.pending() == 1  # the refusal took no scripted reply
        assert [f.result()[0] for f in slow_posts] == [200, 200, 200]
    assert [(r.reason, r.headers["x-api-key"]) for r in fake_model.refused] == [("concurrency", "key-4")]
    assert fake_model.max_in_flight == 3 and len(fake_model.accepted_times) == 3
    assert len(served_after(fake_model, 3)) == 3
    deadline = time.monotonic() + 2
    while fake_model.in_flight() and time.monotonic() < deadline:  # out of flight just after the last byte
        time.sleep(0.01)
    assert fake_model.in_flight() == 0
    _, _, raw = post(fake_model, "/v1/messages", {"model": "m", "messages": []})  # free again: the next reply
    assert json.loads(raw)["content"][0]["text"] == "fourth" and fake_model.max_in_flight == 3


def test_rate_limit_sliding_window_refuses_then_accepts_again(fake_model: FakeModel) -> None:
    fake_model.set_limit(Limit(requests=2, per=1.0))
    fake_model.script(text("one"), text("two"), text("three"))
    body = {"model": "m", "stream": True, "input": []}
    assert [post(fake_model, "/v1/responses", body)[0] for _ in range(2)] == [200, 200]
    status, headers, raw = post(fake_model, "/v1/responses", body)
    assert status == 429 and headers["retry-after"] == "1"
    assert json.loads(raw)["error"] | {"message": ""} == {
        "type": "rate_limit_exceeded",
        "code": "rate_limit_exceeded",
        "message": "",
        "param": None,
    }
    assert fake_model.pending() == 1 and [r.reason for r in fake_model.refused] == ["rate"]
    time.sleep(max(0.0, fake_model.accepted_times[0] + 1.0 - time.monotonic()) + 0.02)
    status, _, raw = post(fake_model, "/v1/responses", body)  # the oldest left the window
    assert status == 200 and "three" in raw and fake_model.pending() == 0
    fake_model.set_limit(Limit(requests=0, per=5.0))  # nothing allowed: wait until the oldest leaves the window
    status, headers, raw = post(fake_model, "/v1beta/models/m:generateContent", {"contents": []})
    err = json.loads(raw)["error"]
    assert status == 429 and (err["code"], err["status"]) == (429, "RESOURCE_EXHAUSTED")
    wait = math.ceil(fake_model.accepted_times[0] + 5.0 - fake_model.refused[-1].at)
    assert wait == 4 and headers["retry-after"] == "4" and err["details"][0]["retryDelay"] == "4s"
    assert len(fake_model.accepted_times) == 3 and len(fake_model.refused) == 2
    fake_model.set_limit(None)
    assert post(fake_model, "/v1/messages", {"model": "m", "messages": []})[0] == 200  # no limit any more
    fake_model.reset()
    assert (fake_model.refused, fake_model.accepted_times, fake_model.max_in_flight) == ([], [], 0)


def test_rate_limit_headers_when_enabled_streaming_too() -> None:
    with FakeModel(limit=Limit(requests=5, per=60.0, headers=True)) as fake:
        before = datetime.now(UTC)
        status, headers, _ = post(fake, "/v1/messages", {"model": "m", "messages": []})
        assert status == 200 and headers["anthropic-ratelimit-requests-limit"] == "5"
        assert headers["anthropic-ratelimit-requests-remaining"] == "4"
        reset = datetime.strptime(headers["anthropic-ratelimit-requests-reset"], "%Y-%m-%dT%H:%M:%SZ")
        assert 58 <= (reset.replace(tzinfo=UTC) - before).total_seconds() <= 62
        status, headers, raw = post(fake, "/v1/messages", {"model": "m", "stream": True, "messages": []})
        assert status == 200 and sse(raw)[-1][0] == "message_stop"
        assert headers["anthropic-ratelimit-requests-remaining"] == "3"
        status, headers, _ = post(fake, "/v1/responses", {"model": "m", "stream": True, "input": []})
        assert status == 200 and headers["x-ratelimit-limit-requests"] == "5"
        assert headers["x-ratelimit-remaining-requests"] == "2"
        reset_in = headers["x-ratelimit-reset-requests"]
        assert reset_in.endswith("s") and 59 <= float(reset_in[:-1]) <= 60
        assert not any(k.startswith("anthropic-ratelimit") for k in headers)
        fake.set_limit(Limit(requests=5, per=60.0))  # headers off
        _, headers, _ = post(fake, "/v1/messages", {"model": "m", "messages": []})
        assert not any("ratelimit" in k for k in headers)


def test_refusals_and_served_replies_carry_the_request_headers(fake_model: FakeModel) -> None:
    fake_model.set_limit(Limit(requests=2, per=60.0))
    fake_model.script(text("a", usage=Usage(input=5, output=1)), text("b", usage=Usage(input=7, output=2)))
    body = {"model": "m", "messages": []}
    for key in ("key-a", "key-b", "key-a", "key-b", "key-b"):
        post(fake_model, "/v1/messages", body, {"X-Api-Key": key})
    served = served_after(fake_model, 2)
    assert [(s.request_headers or {})["x-api-key"] for s in served] == ["key-a", "key-b"]
    assert served[0].request_headers["content-type"] == "application/json"
    by_key: dict[str, int] = {}
    for s in fake_model.served_ok():
        key = (s.request_headers or {})["x-api-key"]
        by_key[key] = by_key.get(key, 0) + s.wire_usage["input_tokens"]
    assert by_key == {"key-a": 5, "key-b": 7}
    assert [r.headers["x-api-key"] for r in fake_model.refused] == ["key-a", "key-b", "key-b"]
    assert all(r.reason == "rate" for r in fake_model.refused)
    assert len(fake_model.model_requests()) == 5  # refused requests are recorded too


# -- Claude Code ---------------------------------------------------------------------------------------------------


def served_anthropic_usage(fake: FakeModel) -> dict[str, int]:
    total = fake.total_usage()
    return {
        "input_tokens": total.input,
        "output_tokens": total.output,
        "cache_read_input_tokens": total.cache_read,
        "cache_creation_input_tokens": total.cache_write,
    }


def test_claude_print_result_usage_equals_what_the_fake_served(
    fake_model: FakeModel, home: Path, project: Path
) -> None:
    claude = claude_bin()
    fake_model.script(text("Hello from the fake", usage=Usage(input=123, output=45, cache_read=67, cache_write=8)))
    agent = run_agent([claude, *CLAUDE_PRINT, "say hi"], claude_env(fake_model, home), project)
    assert agent.proc.returncode == 0, agent.stderr
    result = [e for e in agent.events() if e.get("type") == "result"]
    assert len(result) == 1 and result[0]["result"] == "Hello from the fake" and result[0]["is_error"] is False
    usage = result[0]["usage"]
    assert {k: usage[k] for k in served_anthropic_usage(fake_model)} == served_anthropic_usage(fake_model)
    assert "say hi" in fake_model.model_requests()[0].text()


def test_claude_stdio_permission_allow_runs_the_tool_and_its_result_reaches_the_model(
    fake_model: FakeModel, home: Path, project: Path
) -> None:
    claude = claude_bin()
    fake_model.script(
        run_command("echo allowed > marker.txt && echo tool-output-42", usage=Usage(input=100, output=20)),
        text("finished", usage=Usage(input=150, output=5)),
    )
    argv = [claude, *CLAUDE_STDIN, "--permission-prompt-tool", "stdio"]
    with AgentProcess(argv, claude_env(fake_model, home), project) as agent:
        agent.send({"type": "user", "message": {"role": "user", "content": "run the command"}})
        ask = agent.wait_for(lambda e: e.get("type") == "control_request")
        assert ask["request"]["subtype"] == "can_use_tool" and ask["request"]["tool_name"] == "Bash"
        assert not (project / "marker.txt").exists()  # it waits for the answer
        allow = {"behavior": "allow", "updatedInput": ask["request"]["input"]}
        response = {"subtype": "success", "request_id": ask["request_id"], "response": allow}
        agent.send({"type": "control_response", "response": response})
        result = agent.wait_for(lambda e: e.get("type") == "result")
        agent.close_stdin()
        assert agent.wait_exit() == 0
    assert (project / "marker.txt").read_text() == "allowed\n"
    assert result["result"] == "finished" and result["num_turns"] == 2
    assert result["usage"]["input_tokens"] == 250 and result["usage"]["output_tokens"] == 25
    second = fake_model.model_requests()[1].body
    results = [
        b for m in second["messages"] for b in m["content"] if isinstance(b, dict) and b["type"] == "tool_result"
    ]
    assert [r["tool_use_id"] for r in results] == [fake_model.served[0].tool_call["id"]]
    assert "tool-output-42" in json.dumps(results[0]["content"]) and not results[0].get("is_error")


def test_claude_retries_a_429_with_api_retry_then_succeeds(fake_model: FakeModel, home: Path, project: Path) -> None:
    claude = claude_bin()
    fake_model.script(error(429, retry_after=0), text("after the retry", usage=Usage(input=9, output=3)))
    agent = run_agent([claude, *CLAUDE_PRINT, "hi"], claude_env(fake_model, home, max_retries=2), project)
    assert agent.proc.returncode == 0, agent.stderr
    retries = [e for e in agent.events() if e.get("type") == "system" and e.get("subtype") == "api_retry"]
    assert [(r["attempt"], r["max_retries"], r["error_status"], r["error"]) for r in retries] == [
        (1, 2, 429, "rate_limit")
    ]
    result = agent.events()[-1]
    assert (
        result["type"] == "result" and result["result"] == "after the retry" and result["usage"]["output_tokens"] == 3
    )
    assert len(fake_model.model_requests()) == 2


# -- Codex ---------------------------------------------------------------------------------------------------------


def test_codex_exec_turn_completed_usage_equals_what_the_fake_served(
    fake_model: FakeModel, home: Path, project: Path
) -> None:
    codex = codex_bin()
    fake_model.script(text("Hi from responses", usage=Usage(input=201, output=21, cache_read=50, reasoning=3)))
    agent = run_agent([codex, *CODEX_EXEC, "say hi"], codex_env(fake_model, home), project)
    assert agent.proc.returncode == 0, agent.stderr
    events = agent.events()
    messages = [e["item"]["text"] for e in events if e.get("item", {}).get("type") == "agent_message"]
    assert messages == ["Hi from responses"]
    wire = fake_model.served_ok()[0].wire_usage
    assert events[-1] == {
        "type": "turn.completed",
        "usage": {
            "input_tokens": wire["input_tokens"],
            "cached_input_tokens": wire["input_tokens_details"]["cached_tokens"],
            "cache_write_input_tokens": 0,
            "output_tokens": wire["output_tokens"],
            "reasoning_output_tokens": wire["output_tokens_details"]["reasoning_tokens"],
        },
    }
    assert wire["input_tokens"] == 251
    assert "say hi" in fake_model.model_requests()[0].text()


def test_codex_exec_runs_the_scripted_command(fake_model: FakeModel, home: Path, project: Path) -> None:
    codex = codex_bin()
    fake_model.script(run_command("echo from-codex > made.txt && echo printed-77"), text("done"))
    agent = run_agent([codex, *CODEX_EXEC, "run it"], codex_env(fake_model, home), project)
    assert agent.proc.returncode == 0, agent.stderr
    assert (project / "made.txt").read_text() == "from-codex\n"
    done = [e["item"] for e in agent.events() if e["type"] == "item.completed"]
    command = [i for i in done if i["type"] == "command_execution"]
    assert len(command) == 1 and command[0]["exit_code"] == 0 and "printed-77" in command[0]["aggregated_output"]
    call = fake_model.served[0].tool_call
    outputs = [i for i in fake_model.model_requests()[1].body["input"] if i.get("type") == "function_call_output"]
    assert call["name"] == "exec_command" and [o["call_id"] for o in outputs] == [call["id"]]
    assert "printed-77" in outputs[0]["output"]


def test_codex_app_server_turn_with_command_approval_and_steer(
    fake_model: FakeModel, home: Path, project: Path
) -> None:
    codex = codex_bin()
    fake_model.script(run_command("touch approved.txt", preamble="touching"), text("all done"))
    with AgentProcess([codex, "app-server"], codex_env(fake_model, home), project) as agent:
        agent.send(
            {"id": 1, "method": "initialize", "params": {"clientInfo": {"name": "crewtui-test", "version": "0"}}}
        )
        assert "userAgent" in agent.wait_for(lambda e: e.get("id") == 1)["result"]
        agent.send({"method": "initialized"})
        start = {"cwd": str(project), "approvalPolicy": "untrusted", "sandbox": "danger-full-access"}
        agent.send({"id": 2, "method": "thread/start", "params": start})
        thread_id = agent.wait_for(lambda e: e.get("id") == 2)["result"]["thread"]["id"]
        first = [{"type": "text", "text": "touch the file", "text_elements": []}]
        agent.send({"id": 3, "method": "turn/start", "params": {"threadId": thread_id, "input": first}})
        turn_id = agent.wait_for(lambda e: e.get("id") == 3)["result"]["turn"]["id"]
        ask = agent.wait_for(lambda e: e.get("method") == "item/commandExecution/requestApproval")
        assert ask["params"]["threadId"] == thread_id and ask["params"]["turnId"] == turn_id
        assert "touch approved.txt" in ask["params"]["command"] and not (project / "approved.txt").exists()
        steer = [{"type": "text", "text": "steer: also say Y", "text_elements": []}]
        agent.send(
            {
                "id": 4,
                "method": "turn/steer",
                "params": {"threadId": thread_id, "expectedTurnId": turn_id, "input": steer},
            }
        )
        assert agent.wait_for(lambda e: e.get("id") == 4)["result"] == {"turnId": turn_id}
        agent.send({"id": ask["id"], "result": {"decision": "accept"}})
        done = agent.wait_for(lambda e: e.get("method") == "turn/completed")
        agent.close_stdin()
        assert agent.wait_exit() == 0
    assert done["params"]["turn"]["status"] == "completed"
    assert (project / "approved.txt").exists()
    second = fake_model.model_requests()[1]
    assert "steer: also say Y" in second.text() and "function_call_output" in second.text()
