#!/usr/bin/env python3
"""Record the real stdout streams of Claude Code and Codex (and, opt-in, Gemini CLI and OpenCode), run against the
project's fake model server.

Writes, for each scenario, into tests/fixtures/agent-streams/:

- `<scenario>.jsonl`: the CLI's stdout lines, as printed (only the temporary HOME is replaced by `/home/user`,
  so the working directory reads `/home/user/project`);
- `<scenario>.sent.jsonl`: for scenarios that talk to the CLI on stdin, the lines written to it, in order;
- `<scenario>.served.json`: what the fake served: each model request's reply (status, wire usage exactly as
  sent, tool call) and the token totals of the successful replies, overall and per turn (`turns`: one entry per
  `result` / `turn.completed` / `turn/completed` seen; `total_wire`/`turns_wire`: the same sums in the API's own
  field names, e.g. Responses `input_tokens` including cached ones), so parser tests can assert exact token counts.

Usage (after `bash scripts/install-agents.sh`):
    .venv/bin/python scripts/record-agent-streams.py            # every claude / codex scenario
    .venv/bin/python scripts/record-agent-streams.py claude-hi  # some
    .venv/bin/python scripts/record-agent-streams.py --list

The others (opt-in: CI neither installs nor needs them): `--others` records every gemini-* and opencode-*
scenario (naming one records it too). Their CLIs are installed, pinned (@google/gemini-cli 0.61.0, opencode-ai
1.18.33), into `.agents-record/` (gitignored; not `.agents/`, which CI installs), by `npm install --prefix`
the first time (npm registry only); `$CREWTUI_RECORD_AGENTS_DIR` overrides the directory. Each is run through
its crewtui preset's own argv (`Preset.argv`), with HOME in a temporary directory, and kept offline:

- gemini: `GEMINI_API_KEY` (fake), `GOOGLE_GEMINI_BASE_URL` = the fake (Gemini API), `-m gemini-2.5-flash`
  (the default "auto" model first asks a classifier model, which would take a scripted reply);
  `~/.gemini/settings.json`: usage statistics, telemetry, auto-update and the update nag off,
  `general.maxAttempts` set per scenario;
- opencode: `~/.config/opencode/opencode.json` with one provider "fake" (`@ai-sdk/anthropic`, bundled) at the
  fake's `/v1`, model `fake/fake-model` with a price (so its reported cost is checkable), no share, no
  autoupdate, the title agent disabled (it would ask the model for a title in a call of its own);
  OPENCODE_DISABLE_{MODELS_FETCH,AUTOUPDATE,SHARE,DEFAULT_PLUGINS,LSP_DOWNLOAD,CLAUDE_CODE,EXTERNAL_SKILLS}=1
  and `npm_config_offline=true` (opencode 1.18.33 installs `@opencode-ai/plugin` into its config directory from
  the npm registry on every start; offline, that install fails at once and it goes on).

Checked with `strace -f -e trace=connect`: with these, both connect to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from crewtui.adapters import get_preset  # noqa: E402
from crewtui.adapters.base import AgentOptions, Permissions  # noqa: E402
from tests.agentcli import (  # noqa: E402
    FAKE_KEY,
    AgentProcess,
    _base_env,
    claude_env,
    codex_config,
    codex_env,
    find_agent,
    run_agent,
)
from tests.fakemodel import FakeModel, Usage, error, run_command, text  # noqa: E402

OUT = REPO / "tests" / "fixtures" / "agent-streams"
CLAUDE_PRINT = ["-p", "--output-format", "stream-json", "--verbose"]
CLAUDE_STDIN = ["-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose"]
CODEX_EXEC = ["exec", "--json", "--skip-git-repo-check"]

OTHERS_DIR = Path(os.environ.get("CREWTUI_RECORD_AGENTS_DIR") or REPO / ".agents-record").resolve()
OTHERS_PINS = {"gemini": "@google/gemini-cli@0.61.0", "opencode": "opencode-ai@1.18.33"}
GEMINI_MODEL = "gemini-2.5-flash"
OPENCODE_MODEL = "fake/fake-model"
# $ per million tokens, given to opencode as the fake model's price: it reports the cost of each step from it.
OPENCODE_PRICE = {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}


@dataclass
class Run:
    """What a scenario produced: the CLI's stdout lines, the lines written to its stdin, turn boundaries."""

    lines: list[str]
    sent: list[str] = field(default_factory=list)
    turn_marks: list[int] = field(default_factory=list)  # len(fake.served) at each end of turn
    exit_code: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # more for the .served.json (e.g. the price given)


@dataclass
class Ctx:
    fake: FakeModel
    home: Path
    project: Path


def user(text_: str) -> dict[str, Any]:
    return {"type": "user", "message": {"role": "user", "content": text_}}


def is_result(event: dict[str, Any]) -> bool:
    return event.get("type") == "result"


def claude() -> Path:
    path = find_agent("claude")
    if path is None:
        raise SystemExit("claude not installed: run bash scripts/install-agents.sh")
    return path


def codex() -> Path:
    path = find_agent("codex")
    if path is None:
        raise SystemExit("codex not installed: run bash scripts/install-agents.sh")
    return path


def one_shot(ctx: Ctx, argv: list[Any], env: dict[str, str]) -> Run:
    agent = run_agent(argv, env, ctx.project, timeout=90)
    return Run(agent.lines, [], [len(ctx.fake.served)], agent.proc.returncode)


# -- Claude Code ---------------------------------------------------------------------------------------------------


def claude_hi(ctx: Ctx) -> Run:
    ctx.fake.script(text("Hi from the fake model", usage=Usage(input=101, output=11, cache_read=20, cache_write=5)))
    return one_shot(ctx, [claude(), *CLAUDE_PRINT, "say hi"], claude_env(ctx.fake, ctx.home))


def _claude_permission(ctx: Ctx, allow: bool) -> Run:
    ctx.fake.script(
        run_command(
            "touch created_by_agent.txt && echo touched",
            usage=Usage(input=101, output=12),
            preamble="I'll run a command.",
        ),
        text("The command was handled.", usage=Usage(input=140, output=9, cache_read=100)),
    )
    argv = [claude(), *CLAUDE_STDIN, "--permission-prompt-tool", "stdio"]
    with AgentProcess(argv, claude_env(ctx.fake, ctx.home), ctx.project) as agent:
        agent.send(user("create the file"))
        ask = agent.wait_for(lambda e: e.get("type") == "control_request")
        if allow:
            decision: dict[str, Any] = {"behavior": "allow", "updatedInput": ask["request"]["input"]}
        else:
            decision = {"behavior": "deny", "message": "The operator denied this command."}
        agent.send(
            {
                "type": "control_response",
                "response": {"subtype": "success", "request_id": ask["request_id"], "response": decision},
            }
        )
        agent.wait_for(is_result)
        marks = [len(ctx.fake.served)]
        agent.close_stdin()
        code = agent.wait_exit()
    return Run(agent.lines, agent.written, marks, code)


def claude_tool_permission_allow(ctx: Ctx) -> Run:
    return _claude_permission(ctx, allow=True)


def claude_permission_deny(ctx: Ctx) -> Run:
    return _claude_permission(ctx, allow=False)


def claude_two_turns_stdin(ctx: Ctx) -> Run:
    ctx.fake.script(
        text("First answer.", usage=Usage(input=101, output=7)),
        text("Second answer.", usage=Usage(input=130, output=8, cache_read=90)),
    )
    with AgentProcess([claude(), *CLAUDE_STDIN], claude_env(ctx.fake, ctx.home), ctx.project) as agent:
        agent.send(user("first message"))
        agent.wait_for(is_result)
        marks = [len(ctx.fake.served)]
        time.sleep(1.0)  # stdin stays open: claude waits for the next message
        if agent.proc.poll() is not None:
            raise AssertionError("claude exited after its first result although stdin was open")
        agent.send(user("second message"))
        agent.wait_for(is_result)
        marks.append(len(ctx.fake.served))
        agent.close_stdin()
        code = agent.wait_exit()
    return Run(agent.lines, agent.written, marks, code)


def claude_429_then_ok(ctx: Ctx) -> Run:
    ctx.fake.script(
        error(429, retry_after=0),
        error(429, retry_after=0),
        text("Hi after two retries", usage=Usage(input=103, output=13)),
    )
    return one_shot(ctx, [claude(), *CLAUDE_PRINT, "say hi"], claude_env(ctx.fake, ctx.home, max_retries=3))


def claude_429_exhausted(ctx: Ctx) -> Run:
    ctx.fake.script(error(429, retry_after=0), error(429, retry_after=0), error(429, retry_after=0))
    return one_shot(ctx, [claude(), *CLAUDE_PRINT, "say hi"], claude_env(ctx.fake, ctx.home, max_retries=2))


# -- Codex ---------------------------------------------------------------------------------------------------------


def codex_exec_hi(ctx: Ctx) -> Run:
    ctx.fake.script(
        text("Hi from the fake responses model", usage=Usage(input=151, output=21, cache_read=50, reasoning=3))
    )
    return one_shot(ctx, [codex(), *CODEX_EXEC, "say hi"], codex_env(ctx.fake, ctx.home))


def codex_exec_command(ctx: Ctx) -> Run:
    ctx.fake.script(
        run_command("echo hi", usage=Usage(input=150, output=20, cache_read=50, reasoning=3)),
        text("The command printed hi.", usage=Usage(input=180, output=23, cache_read=100, reasoning=3)),
    )
    return one_shot(ctx, [codex(), *CODEX_EXEC, "run echo hi"], codex_env(ctx.fake, ctx.home))


def codex_exec_429_then_ok(ctx: Ctx) -> Run:
    ctx.fake.script(
        error(429, retry_after=0),
        error(429, retry_after=0),
        text("Hi after two retries", usage=Usage(input=153, output=23, cache_read=50)),
    )
    config = codex_config(ctx.fake, stream_max_retries=5)
    return one_shot(ctx, [codex(), *CODEX_EXEC, "say hi"], codex_env(ctx.fake, ctx.home, config))


def codex_exec_429_exhausted(ctx: Ctx) -> Run:
    ctx.fake.script(error(429, retry_after=0), error(429, retry_after=0), error(429, retry_after=0))
    config = codex_config(ctx.fake, stream_max_retries=1)
    return one_shot(ctx, [codex(), *CODEX_EXEC, "say hi"], codex_env(ctx.fake, ctx.home, config))


def codex_app_server_turn(ctx: Ctx) -> Run:
    """initialize, initialized, thread/start (approvalPolicy untrusted), turn/start; the command asks for approval;
    a turn/steer is sent while the approval is pending; then accept; the turn completes."""
    ctx.fake.script(
        run_command(
            "touch approved.txt && echo hi",
            usage=Usage(input=152, output=22, cache_read=50, reasoning=3),
            preamble="Running it.",
        ),
        text("Done, and Y.", usage=Usage(input=190, output=12, cache_read=100, reasoning=1)),
    )
    with AgentProcess([codex(), "app-server"], codex_env(ctx.fake, ctx.home), ctx.project) as agent:
        agent.send({"id": 1, "method": "initialize", "params": {"clientInfo": {"name": "crewtui", "version": "0.1.0"}}})
        agent.wait_for(lambda e: e.get("id") == 1)
        agent.send({"method": "initialized"})
        start = {"cwd": str(ctx.project), "approvalPolicy": "untrusted", "sandbox": "danger-full-access"}
        agent.send({"id": 2, "method": "thread/start", "params": start})
        thread_id = agent.wait_for(lambda e: e.get("id") == 2)["result"]["thread"]["id"]
        first = [{"type": "text", "text": "touch approved.txt", "text_elements": []}]
        agent.send({"id": 3, "method": "turn/start", "params": {"threadId": thread_id, "input": first}})
        turn_id = agent.wait_for(lambda e: e.get("id") == 3)["result"]["turn"]["id"]
        ask = agent.wait_for(lambda e: e.get("method") == "item/commandExecution/requestApproval")
        steer = [{"type": "text", "text": "steer: also say Y", "text_elements": []}]
        agent.send(
            {
                "id": 4,
                "method": "turn/steer",
                "params": {"threadId": thread_id, "expectedTurnId": turn_id, "input": steer},
            }
        )
        agent.wait_for(lambda e: e.get("id") == 4)
        agent.send({"id": ask["id"], "result": {"decision": "accept"}})
        agent.wait_for(lambda e: e.get("method") == "turn/completed")
        marks = [len(ctx.fake.served)]
        agent.close_stdin()
        code = agent.wait_exit()
    return Run(agent.lines, agent.written, marks, code)


# -- the others (opt-in: --others) ----------------------------------------------------------------------------------


def other(name: str) -> Path:
    """The pinned CLI in .agents-record/, installed there first if it is not."""
    path = OTHERS_DIR / "node_modules" / ".bin" / name
    if not (path.exists() and os.access(path, os.X_OK)):
        OTHERS_DIR.mkdir(parents=True, exist_ok=True)
        print(f"installing {', '.join(OTHERS_PINS.values())} into {OTHERS_DIR}", file=sys.stderr)
        flags = ["--save-exact", "--no-audit", "--no-fund", "--loglevel=error", "--no-update-notifier"]
        subprocess.run(
            ["npm", "install", "--prefix", str(OTHERS_DIR), *flags, *OTHERS_PINS.values()],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return path


def preset_run(ctx: Ctx, preset: str, permissions: Permissions, env: dict[str, str], task: str, **extra: Any) -> Run:
    """Run the CLI with the argv crewtui's preset gives it (the program replaced by its path here)."""
    options = AgentOptions(command=(str(other(preset)),), permissions=permissions, **extra)
    chosen = get_preset(preset)
    return one_shot(ctx, chosen.argv(options, task), {**chosen.env(options), **env})


def gemini_env(ctx: Ctx, max_attempts: int = 2) -> dict[str, str]:
    settings = {
        "general": {"disableAutoUpdate": True, "disableUpdateNag": True, "maxAttempts": max_attempts},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "security": {"auth": {"selectedType": "gemini-api-key"}},
    }
    (ctx.home / ".gemini").mkdir(parents=True, exist_ok=True)
    (ctx.home / ".gemini" / "settings.json").write_text(json.dumps(settings, indent=2))
    env = _base_env(ctx.home)
    env.update(
        {
            "GEMINI_API_KEY": FAKE_KEY,
            "GOOGLE_GEMINI_BASE_URL": ctx.fake.gemini_base_url,
            "GEMINI_TELEMETRY_ENABLED": "false",
            "GEMINI_CLI_TRUST_WORKSPACE": "true",
        }
    )
    return env


def gemini_run(ctx: Ctx, permissions: Permissions, task: str, max_attempts: int = 2) -> Run:
    return preset_run(ctx, "gemini", permissions, gemini_env(ctx, max_attempts), task, model=GEMINI_MODEL)


def gemini_hi(ctx: Ctx) -> Run:
    ctx.fake.script(text("Hi from the fake gemini", usage=Usage(input=101, output=11, cache_read=20)))
    return gemini_run(ctx, "deny", "say hi")


def gemini_tool_yolo(ctx: Ctx) -> Run:
    ctx.fake.script(
        run_command("echo hi", usage=Usage(input=120, output=14), preamble="I'll run the command."),
        text("It printed hi.", usage=Usage(input=150, output=9, cache_read=100, reasoning=4)),
    )
    return gemini_run(ctx, "allow", "run echo hi")


def gemini_tool_deny(ctx: Ctx) -> Run:
    ctx.fake.script(
        run_command("echo hi", usage=Usage(input=120, output=14), preamble="I'll run the command."),
        text("I could not run it.", usage=Usage(input=150, output=9, cache_read=100)),
    )
    return gemini_run(ctx, "deny", "run echo hi")


def gemini_429_then_ok(ctx: Ctx) -> Run:
    ctx.fake.script(error(429, retry_after=0), text("Hi after a retry", usage=Usage(input=103, output=13)))
    return gemini_run(ctx, "deny", "say hi", max_attempts=2)


def gemini_429_exhausted(ctx: Ctx) -> Run:
    ctx.fake.script(error(429, retry_after=0), error(429, retry_after=0))
    return gemini_run(ctx, "deny", "say hi", max_attempts=2)


def opencode_env(ctx: Ctx) -> dict[str, str]:
    provider, model = OPENCODE_MODEL.split("/")
    config = {
        "$schema": "https://opencode.ai/config.json",
        "model": OPENCODE_MODEL,
        "autoupdate": False,
        "share": "disabled",
        "agent": {"title": {"disable": True}},
        "provider": {
            provider: {
                "npm": "@ai-sdk/anthropic",
                "name": "Fake",
                "options": {"baseURL": f"{ctx.fake.anthropic_base_url}/v1", "apiKey": FAKE_KEY},
                "models": {
                    model: {
                        "name": "Fake model",
                        "tool_call": True,
                        "cost": OPENCODE_PRICE,
                        "limit": {"context": 200000, "output": 8192},
                    }
                },
            }
        },
    }
    config_dir = ctx.home / ".config" / "opencode"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "opencode.json").write_text(json.dumps(config, indent=2))
    env = _base_env(ctx.home)
    env.update(
        {
            "XDG_CONFIG_HOME": str(ctx.home / ".config"),
            "XDG_DATA_HOME": str(ctx.home / ".local" / "share"),
            "XDG_CACHE_HOME": str(ctx.home / ".cache"),
            "XDG_STATE_HOME": str(ctx.home / ".local" / "state"),
            "npm_config_offline": "true",
        }
    )
    for flag in (
        "MODELS_FETCH",
        "AUTOUPDATE",
        "SHARE",
        "DEFAULT_PLUGINS",
        "LSP_DOWNLOAD",
        "CLAUDE_CODE",
        "EXTERNAL_SKILLS",
    ):
        env[f"OPENCODE_DISABLE_{flag}"] = "1"
    return env


def opencode_run(ctx: Ctx, permissions: Permissions, task: str) -> Run:
    run = preset_run(ctx, "opencode", permissions, opencode_env(ctx), task)
    run.extra["price"] = OPENCODE_PRICE
    return run


def opencode_hi(ctx: Ctx) -> Run:
    ctx.fake.script(text("Hi from the fake model", usage=Usage(input=101, output=11, cache_read=20, cache_write=5)))
    return opencode_run(ctx, "allow", "say hi")


def opencode_bash_allow(ctx: Ctx) -> Run:
    ctx.fake.script(
        run_command("echo hi", usage=Usage(input=120, output=14, cache_write=30), preamble="I'll run the command."),
        text("It printed hi.", usage=Usage(input=150, output=9, cache_read=100)),
    )
    return opencode_run(ctx, "allow", "run echo hi")


def opencode_bash_deny(ctx: Ctx) -> Run:
    ctx.fake.script(
        run_command("touch denied.txt", usage=Usage(input=120, output=14), preamble="I'll run the command."),
        text("never asked for: opencode stops after a refusal", usage=Usage(input=1, output=1)),
    )
    run = opencode_run(ctx, "deny", "touch denied.txt")
    run.extra["file_created"] = (ctx.project / "denied.txt").exists()
    return run


def opencode_429_then_ok(ctx: Ctx) -> Run:
    ctx.fake.script(
        error(429, retry_after=0),
        error(429, retry_after=0),
        text("Hi after two retries", usage=Usage(input=103, output=13)),
    )
    return opencode_run(ctx, "allow", "say hi")


def opencode_429_exhausted(ctx: Ctx) -> Run:
    ctx.fake.script(*[error(429, retry_after=0)] * 6)  # 1.18.33: the first try and five retries
    return opencode_run(ctx, "allow", "say hi")


OTHERS: dict[str, Callable[[Ctx], Run]] = {
    "gemini-hi": gemini_hi,
    "gemini-tool-yolo": gemini_tool_yolo,
    "gemini-tool-deny": gemini_tool_deny,
    "gemini-429-then-ok": gemini_429_then_ok,
    "gemini-429-exhausted": gemini_429_exhausted,
    "opencode-hi": opencode_hi,
    "opencode-bash-allow": opencode_bash_allow,
    "opencode-bash-deny": opencode_bash_deny,
    "opencode-429-then-ok": opencode_429_then_ok,
    "opencode-429-exhausted": opencode_429_exhausted,
}

SCENARIOS: dict[str, Callable[[Ctx], Run]] = {
    "claude-hi": claude_hi,
    "claude-tool-permission-allow": claude_tool_permission_allow,
    "claude-permission-deny": claude_permission_deny,
    "claude-two-turns-stdin": claude_two_turns_stdin,
    "claude-429-then-ok": claude_429_then_ok,
    "claude-429-exhausted": claude_429_exhausted,
    "codex-exec-hi": codex_exec_hi,
    "codex-exec-command": codex_exec_command,
    "codex-exec-429-then-ok": codex_exec_429_then_ok,
    "codex-exec-429-exhausted": codex_exec_429_exhausted,
    "codex-app-server-turn": codex_app_server_turn,
}
ALL = {**SCENARIOS, **OTHERS}


# -- writing -------------------------------------------------------------------------------------------------------


def usage_total(usages: list[Usage]) -> dict[str, int]:
    return {
        "input": sum(u.input for u in usages),
        "output": sum(u.output for u in usages),
        "cache_read": sum(u.cache_read for u in usages),
        "cache_write": sum(u.cache_write for u in usages),
        "reasoning": sum(u.reasoning for u in usages),
    }


def wire_total(items: list[Any]) -> dict[str, int]:
    """The sum of the wire usage objects (nested details flattened: `input_tokens_details.cached_tokens` ->
    `cached_tokens`), in the API's own field names."""
    total: dict[str, int] = {}
    for s in items:
        for key, value in (s.wire_usage or {}).items():
            for k, v in value.items() if isinstance(value, dict) else [(key, value)]:
                total[k] = total.get(k, 0) + v
    return total


def served_report(
    fake: FakeModel, marks: list[int], exit_code: int | None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    served = list(fake.served)

    def ok_usages(items: list[Any]) -> list[Usage]:
        return [s.reply.usage for s in items if s.status == 200 and s.completed]

    def ok(items: list[Any]) -> list[Any]:
        return [s for s in items if s.status == 200 and s.completed]

    turns, turns_wire = [], []
    previous = 0
    for mark in marks:
        turns.append(usage_total(ok_usages(served[previous:mark])))
        turns_wire.append(wire_total(ok(served[previous:mark])))
        previous = mark
    return {
        "note": (
            "usage fields: input = uncached input tokens (Anthropic input_tokens); Responses wire input_tokens = "
            "input + cache_read + cache_write; Gemini wire promptTokenCount = input + cache_read + cache_write. "
            "wire_usage is the usage object exactly as sent."
        ),
        "exit_code": exit_code,
        "replies": [
            {
                "api": s.api,
                "status": s.status,
                "completed": s.completed,
                "kind": type(s.reply).__name__,
                "wire_usage": s.wire_usage,
                "tool_call": s.tool_call,
            }
            for s in served
        ],
        "total": usage_total(ok_usages(served)),
        "turns": turns,
        "total_wire": wire_total(ok(served)),
        "turns_wire": turns_wire,
        **(extra or {}),
    }


def scrub(line: str, home: Path) -> str:
    line = line.replace(str(home), "/home/user")
    return line.replace(str(home).replace("/", "-"), "-home-user")


def record(name: str, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="crewtui-rec-") as tmp, FakeModel() as fake:
        home = Path(tmp) / "home"
        project = home / "project"
        project.mkdir(parents=True)
        started = time.monotonic()
        run = ALL[name](Ctx(fake, home, project))
        took = time.monotonic() - started
        (out / f"{name}.jsonl").write_text("".join(scrub(line, home) + "\n" for line in run.lines))
        sent = out / f"{name}.sent.jsonl"
        if run.sent:
            sent.write_text("".join(scrub(line, home) + "\n" for line in run.sent))
        elif sent.exists():
            sent.unlink()
        report = served_report(fake, run.turn_marks, run.exit_code, run.extra)
        (out / f"{name}.served.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{name}: {len(run.lines)} lines, exit {run.exit_code}, {len(report['replies'])} model requests, {took:.1f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the scenarios")
    parser.add_argument("--others", action="store_true", help="record the gemini and opencode scenarios too (opt-in)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output directory (default: {OUT.relative_to(REPO)})")
    args = parser.parse_args()
    if args.list:
        print("\n".join(SCENARIOS))
        print("\n".join(f"{name}  (--others)" for name in OTHERS))
        return 0
    unknown = [s for s in args.scenarios if s not in ALL]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)} (see --list)")
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.scenarios or [*SCENARIOS, *(OTHERS if args.others else [])]
    if args.scenarios and args.others:
        names += [n for n in OTHERS if n not in names]
    for name in names:
        record(name, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
