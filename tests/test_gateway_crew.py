"""The model gateway in a real runtime: twenty agents (plain HTTP clients of the Anthropic API and the real Claude
Code) share one provider that refuses beyond 30 requests a minute and 3 at once, and none of them ever sees it.

The fake upstream (tests/fakemodel, on 127.0.0.1) enforces its limits the way Anthropic does: a 429 with
`retry-after`, and `anthropic-ratelimit-requests-*` headers on every answer. Its window is a real minute (the 52
requests need two, so the test takes about 65 s); the gateway knows neither figure beforehand (its pool allows 8
at once).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from crewtui.model import TERMINAL_STATES
from tests.agentcli import claude_bin, claude_env, codex_bin, codex_env
from tests.fakemodel import FakeModel, Limit, Usage, slow, text
from tests.faults.helpers import PY, Headless, call, ctl, kill_leftover_sessions, toml_table, wait_until

REPO = Path(__file__).resolve().parent.parent
CLIENTS = 16
CLAUDES = 4
CLIENT_REQUESTS = 3


def crew_file(tmp_path: Path, fake: FakeModel, claude: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    parts = [
        f"""
[crew]
name = "gateway"
max_concurrent = 40

[pools.anthropic]
provider = "anthropic"
upstream = "{fake.url}"
max_concurrent_requests = 8
price = {{ input = 3.0, output = 15.0 }}

[agents.client]
command = [{json.dumps(PY)}, "-m", "tests.gateway.anthropic_client", "--requests", "{CLIENT_REQUESTS}"]
pool = "anthropic"
cwd = {json.dumps(str(REPO))}
"""
    ]
    for n in range(1, CLAUDES + 1):
        env = claude_env(fake, tmp_path / f"home-{n}", max_retries=0)  # a 429 it saw would fail it at once
        env = {k: v for k, v in env.items() if k not in ("PATH", "TERM", "LANG", "TMPDIR", "ANTHROPIC_BASE_URL")}
        env["ANTHROPIC_API_KEY"] = f"sk-claude-{n}"
        parts.append(
            f"""
[agents.claude-{n}]
preset = "claude-code"
command = [{json.dumps(str(claude))}]
permissions = "allow"
pool = "anthropic"
cwd = {json.dumps(str(project))}
env = {toml_table(env)}
"""
        )
    path = tmp_path / "crew.toml"
    path.write_text("".join(parts))
    return path


def served_by_key(fake: FakeModel) -> dict[str, dict[str, int]]:
    out: dict[str, Counter[str]] = {}
    for s in fake.served_ok():
        key = (s.request_headers or {}).get("x-api-key", "?")
        u = s.reply.usage  # type: ignore[union-attr]
        c = out.setdefault(key, Counter())
        c.update({"input": u.input, "output": u.output, "cache_read": u.cache_read, "cache_write": u.cache_write})
    return {k: {f: c[f] for f in ("input", "output", "cache_read", "cache_write")} for k, c in out.items()}


def test_twenty_agents_share_a_rate_limited_provider_and_none_sees_a_429(tmp_path: Path) -> None:
    claude = claude_bin()
    limit = Limit(requests=30, per=60.0, concurrent=3, headers=True)
    with FakeModel(limit=limit) as fake:
        # Every answer streams slowly enough that requests overlap, each with its own token counts.
        fake.script(*[slow(text(f"answer {i}", usage=Usage(input=100 + i, output=10 + i)), 0.03) for i in range(400)])
        h = Headless(tmp_path / "data", crew_file(tmp_path, fake, claude))
        try:
            keys: dict[str, str] = {}
            for i in range(1, CLIENTS + 1):
                keys[f"sk-client-{i}"] = call(h.dd.socket, "spawn", label=f"client-{i}", agent="client")["result"][
                    "key"
                ]
            for n in range(1, CLAUDES + 1):
                s = call(h.dd.socket, "spawn", label=f"claude-{n}", agent=f"claude-{n}", task=f"say hello {n}")
                keys[f"sk-claude-{n}"] = s["result"]["key"]

            def sessions() -> list[dict[str, Any]]:
                return [call(h.dd.socket, "get", ref=k)["result"] for k in keys.values()]

            wait_until(
                lambda: all(s["state"] not in ("pending", "running", "waiting") for s in sessions()), 180, "all to end"
            )
            got = {s["label"]: s for s in sessions()}
            assert {label: s["state"] for label, s in got.items() if s["state"] != "done"} == {}, [
                (s["label"], s["reason"]) for s in got.values() if s["state"] != "done"
            ]
            # The upstream refused only a handful: the gateway learned its limits from the first refusals and
            # its headers, and kept to them (3 at once, never over the window).
            assert 0 < len(fake.refused) <= 10, Counter(r.reason for r in fake.refused)
            assert fake.max_in_flight <= 3
            # No agent saw a 429: every client's requests all came back 200, and Claude Code (0 retries of its
            # own) finished its turn; the gateway passed no refusal through and absorbed every one.
            for i in range(1, CLIENTS + 1):
                assert got[f"client-{i}"]["result"] == {"statuses": [200] * CLIENT_REQUESTS}
            info = call(h.dd.socket, "gateway")["result"]
            (pool,) = info["pools"]
            assert pool["today"]["passed"] == 0
            assert pool["today"]["absorbed"] == len(fake.refused)
            # Every request completed, and each session's tokens are what the upstream served to its key.
            served = served_by_key(fake)
            assert pool["today"]["requests"] == len(fake.served_ok())
            for api_key, key in keys.items():
                s = call(h.dd.socket, "get", ref=key)["result"]
                assert s["usage"]["tokens"] == served[api_key], api_key
                assert s["tokens"] == served[api_key]  # the figure of record
                assert s["usage"]["requests"] >= 1
            assert sum(s["usage"]["requests"] for s in got.values()) == len(fake.served_ok())
            # While they waited in the gateway, their rows said where in line.
            holds = {
                e.get("gateway_hold") for e in call(h.dd.socket, "events")["result"] if e["kind"] == "session_agent"
            }
            assert {"queued for anthropic (1st)", "queued for anthropic (2nd)"} <= holds, holds
        finally:
            for k in list(locals().get("keys", {}).values()):
                call(h.dd.socket, "kill", ref=k)
            h.stop()
            kill_leftover_sessions(tmp_path / "data")


def budget_crew(tmp_path: Path, fake: FakeModel, on_budget: str) -> Path:
    path = tmp_path / "crew.toml"
    path.write_text(
        f"""
[crew]
name = "budget"

[pools.anthropic]
provider = "anthropic"
upstream = "{fake.url}"
price = {{ input = 1.0 }}
budget_usd = {{ per_session = 1.0 }}
on_budget = "{on_budget}"

[agents.client]
command = [{json.dumps(PY)}, "-m", "tests.gateway.anthropic_client", "--requests", "3"]
pool = "anthropic"
cwd = {json.dumps(str(REPO))}
"""
    )
    return path


def test_a_session_over_its_budget_is_paused_then_resumed_with_ctl(tmp_path: Path) -> None:
    with FakeModel() as fake:
        # $1 per million input tokens: the first answer spends exactly the session's $1.
        fake.script(text("one", usage=Usage(input=1_000_000, output=0)), text("two", usage=Usage(input=10, output=1)))
        fake.default_reply = text("three", usage=Usage(input=20, output=2))
        data = tmp_path / "data"
        h = Headless(data, budget_crew(tmp_path, fake, "pause"))
        try:
            key = call(h.dd.socket, "spawn", label="spender-1", agent="client")["result"]["key"]

            def get() -> dict[str, Any]:
                return call(h.dd.socket, "get", ref=key)["result"]

            wait_until(lambda: (get()["gateway_hold"] or "").startswith("paused"), 30, "the session to be paused")
            s = get()
            assert s["state"] == "running"  # paused in the gateway, its process alive
            assert "over its budget: spent $1.00 of $1.00" in s["gateway_hold"]
            assert s["cost_usd"] == pytest.approx(1.0)
            time.sleep(0.5)
            assert len(fake.model_requests()) == 1  # its next request waits in the gateway, unsent
            shown = ctl(data, "list").stdout
            assert "paused: over its budget" in shown
            p = ctl(data, "resume", "spender-1")
            assert p.returncode == 0, p.stderr
            assert "spender-1: resumed; spent $1.00, budget $2.00" in p.stdout
            wait_until(lambda: get()["state"] not in ("running", "pending"), 30, "the session to end")
            s = get()
            assert s["state"] == "done" and s["result"] == {"statuses": [200, 200, 200]}
            assert s["usage"]["requests"] == 3 and s["gateway_hold"] is None
            assert s["usage"]["tokens"]["input"] == 1_000_030
            # ctl usage: per session and per pool, as the gateway measured.
            rows = json.loads(ctl(data, "usage", "--by", "session", "--json").stdout)
            assert [(r["name"], r["usage"]["requests"]) for r in rows] == [("spender-1", 3)]
            (pool,) = json.loads(ctl(data, "usage", "--by", "pool", "--json").stdout)
            assert pool["name"] == "anthropic" and pool["usage"]["requests"] == 3
            assert pool["usage"]["cost_usd"] == pytest.approx(1.00003)
            for by, name in (("group", "spender"), ("run", "(no cron run)"), ("day", time.strftime("%Y-%m-%d"))):
                (row,) = json.loads(ctl(data, "usage", "--by", by, "--json").stdout)
                assert (row["name"], row["usage"]["requests"]) == (name, 3), by
            text_out = ctl(data, "usage").stdout
            assert "anthropic" in text_out and "$1.00" in text_out
            # Resuming what is not paused, or what is not there, is one line and exit 2.
            bad = ctl(data, "resume", "spender-1")
            assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
            bad = ctl(data, "resume", "--pool", "nope")
            assert bad.returncode == 2 and "unknown gateway pool 'nope'" in bad.stderr
        finally:
            h.stop()
            kill_leftover_sessions(data)


def test_a_session_over_its_budget_is_killed_when_the_pool_says_kill(tmp_path: Path) -> None:
    with FakeModel() as fake:
        fake.default_reply = text("big", usage=Usage(input=2_000_000, output=0))
        data = tmp_path / "data"
        h = Headless(data, budget_crew(tmp_path, fake, "kill"))
        try:
            key = call(h.dd.socket, "spawn", label="spender-2", agent="client")["result"]["key"]
            wait_until(lambda: call(h.dd.socket, "get", ref=key)["result"]["state"] == "killed", 30, "the kill")
            s = call(h.dd.socket, "get", ref=key)["result"]
            assert "over its budget: spent $2.00 of $1.00" in s["reason"]
            assert s["usage"]["requests"] == 1 and len(fake.model_requests()) == 1
        finally:
            h.stop()
            kill_leftover_sessions(data)


ENDED_NAMES = {state.value for state in TERMINAL_STATES}


def stored_requests(h: Headless, key: str) -> int | None:
    with contextlib.closing(sqlite3.connect(f"file:{h.dd.store}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT data FROM sessions WHERE key = ?", (key,)).fetchone()
    usage = json.loads(row[0])["usage"] if row else None
    return usage["requests"] if usage else None


def test_a_runtime_killed_and_restarted_keeps_its_port_and_its_sessions_tokens(tmp_path: Path) -> None:
    go = tmp_path / "go"  # the agent sends its second request once this exists: after the restart, however slow
    with FakeModel() as fake:
        crew = tmp_path / "crew.toml"
        crew.write_text(
            f"""
[pools.anthropic]
provider = "anthropic"
upstream = "{fake.url}"

[agents.client]
command = [{json.dumps(PY)}, "-m", "tests.gateway.anthropic_client", "--requests", "2", "--go-file", {json.dumps(str(go))}]
pool = "anthropic"
cwd = {json.dumps(str(REPO))}
"""
        )
        data = tmp_path / "data"
        h = Headless(data, crew)
        try:
            key = call(h.dd.socket, "spawn", label="long-1", agent="client")["result"]["key"]
            wait_until(lambda: len(fake.served_ok()) == 1, 30, "the first request")
            # What the gateway measured is in the store within a quarter of a second (a kill -9 loses at most that):
            # read the SQLite file itself, as the next runtime will.
            wait_until(lambda: stored_requests(h, key) == 1, 10, "the first request's usage in the store")
            port = call(h.dd.socket, "gateway")["result"]["url"]
            h.kill9()
            h = Headless(data, crew)  # the session's agent still holds the old base URL, token and all
            assert call(h.dd.socket, "gateway")["result"]["url"] == port
            go.touch()
            wait_until(
                lambda: call(h.dd.socket, "get", ref=key)["result"]["state"] in ENDED_NAMES, 30, "the session to end"
            )
            s = call(h.dd.socket, "get", ref=key)["result"]
            assert s["state"] == "done", s
            assert s["result"] == {"statuses": [200, 200]}
            assert s["usage"]["requests"] == 2  # the one before the restart and the one after
        finally:
            h.stop()
            kill_leftover_sessions(data)


def test_codex_through_the_gateway_keeps_its_key_and_is_measured(tmp_path: Path) -> None:
    codex = codex_bin()
    with FakeModel() as fake:
        fake.script(text("Done through the gateway.", usage=Usage(input=700, output=55, cache_read=300)))
        env = codex_env(fake, tmp_path / "home", OPENAI_API_KEY="sk-codex-own-key")
        env = {k: v for k, v in env.items() if k not in ("PATH", "TERM", "LANG", "TMPDIR")}
        (tmp_path / "project").mkdir()
        crew = tmp_path / "crew.toml"
        crew.write_text(
            f"""
[pools.openai]
provider = "openai"
upstream = "{fake.url}"
price = {{ input = 1.25, output = 10.0, cache_read = 0.125 }}

[agents.codex]
preset = "codex"
command = [{json.dumps(str(codex))}]
permissions = "allow"
pool = "openai"
cwd = {json.dumps(str(tmp_path / "project"))}
env = {toml_table(env)}
"""
        )
        data = tmp_path / "data"
        h = Headless(data, crew)
        try:
            key = call(h.dd.socket, "spawn", label="codex-1", agent="codex", task="say done")["result"]["key"]
            wait_until(
                lambda: call(h.dd.socket, "get", ref=key)["result"]["state"] not in ("pending", "running"),
                60,
                "codex to end",
            )
            s = call(h.dd.socket, "get", ref=key)["result"]
            assert s["state"] == "done", s["reason"]
            (req,) = fake.model_requests()  # HTTPS at once (no WebSocket tried first), through the gateway
            assert req.path == "/v1/responses"
            assert req.headers["authorization"] == "Bearer sk-codex-own-key"
            assert s["usage"]["requests"] == 1
            assert s["tokens"] == {"input": 700, "output": 55, "cache_read": 300, "cache_write": 0}
            assert s["cost_usd"] == pytest.approx((700 * 1.25 + 55 * 10.0 + 300 * 0.125) / 1e6)
            assert s["reported_tokens"]["output"] == 55  # what Codex said, kept beside
        finally:
            h.stop()
            kill_leftover_sessions(data)


def test_a_taken_port_at_restart_gives_another_said_on_the_timeline(tmp_path: Path) -> None:
    with FakeModel() as fake:
        crew = tmp_path / "crew.toml"
        crew.write_text(f'[pools.anthropic]\nprovider = "anthropic"\nupstream = "{fake.url}"\n')
        data = tmp_path / "data"
        h = Headless(data, crew)
        first = call(h.dd.socket, "gateway")["result"]
        assert first["url"].startswith("http://127.0.0.1:")
        port = int(first["url"].rsplit(":", 1)[1])
        h.stop()
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            h = Headless(data, crew)
            try:
                info = call(h.dd.socket, "gateway")["result"]
                assert info["url"] != first["url"] and info["port_changed_from"] == port
                texts = [e.get("text", "") for e in call(h.dd.socket, "events")["result"]]
                assert any(f"gateway: port {port} was taken" in t for t in texts), texts
                p = ctl(data, "acquire", "anthropic")  # a permit from the gateway's line: no rate, at once
                assert p.returncode == 0 and json.loads(p.stdout)["pool"] == "anthropic"
            finally:
                h.stop()
