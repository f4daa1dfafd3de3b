"""A deterministic in-memory RuntimeAPI for the dashboard's snapshot tests and screenshots.

A unit test of the UI layer wants the same screen every time: 50 sessions under six label prefixes in
every state, a few cron jobs with runs, and timeline marks, all at fixed times relative to a FakeClock. The
pilot tests of the keys use a real Orchestrator instead.

It subclasses `RuntimeAPI` rather than copying its verb list: a verb it does not fake (events, acquire,
cron_add, cron_remove) raises a NotImplementedError that names it.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator
from typing import Any

from crewtui.api import RuntimeAPI, RuntimeInfo
from crewtui.clock import FakeClock
from crewtui.errors import BadInput, Conflict, NotFound
from crewtui.events import (
    Event,
    SessionAgentUpdate,
    SessionAnswered,
    SessionSpawned,
    SessionStateChanged,
    WorkspaceChanged,
)
from crewtui.model import (
    CronJobInfo,
    CronRun,
    History,
    Session,
    SessionState,
    SpawnRequest,
    SweepItem,
    TerminalScreen,
    TimelineItem,
    TokenCounts,
    Turn,
    YieldResult,
    validate_label,
)
from crewtui.spend import GatewayInfo, UsageBy, UsageRow
from tests.ui.fake_gateway import gateway_info, make_holds, usage_rows
from tests.ui.fake_terminals import make_terminals, screen_of
from tests.ui.fake_workspaces import WORKSPACE_AGENTS, WORKSPACE_REPO, diff_of, make_best_of, make_workspaces

T0 = 1_775_116_800.0 + 9 * 3600  # 2026-04-02 17:00:00 UTC: "now" in every snapshot

S = SessionState
# (label, state, attempt, minutes ago created, last line)
_SESSIONS: list[tuple[str, SessionState, int, float, str]] = []


def _add(label: str, state: SessionState, attempt: int, ago: float, last: str) -> None:
    _SESSIONS.append((label, state, attempt, ago, last))


for run, ago in ((1, 50), (2, 35), (3, 20), (4, 5)):
    for i, item in enumerate(("superada", "openclaw-guide", "ada-lovelace")):
        if run < 4:
            st = S.FAILED if (run, i) == (2, 1) else S.DONE
            last = "git push rejected (non-fast-forward)" if st == S.FAILED else '{"words": 812, "status": "published"}'
        else:
            st = (S.RUNNING, S.RUNNING, S.PENDING)[i]
            last = ("drafting section 3 of 5", "checking facts in the intro", "")[i]
        _add(f"blog-publisher-{item}-2026-04-02-r{run}", st, 2 if (run, i) == (3, 2) else 1, ago + i * 0.5, last)
for run, ago in ((1, 58), (2, 38), (3, 18)):
    for i, item in enumerate(("llm-evals", "agent-memory", "rate-limits", "tooling")):
        if run < 3:
            st = (S.DONE, S.DONE, S.LOST, S.DONE)[i] if run == 1 else (S.DONE, S.FAILED, S.DONE, S.DONE)[i]
        else:
            st = (S.RUNNING, S.YIELDED, S.RUNNING, S.PENDING)[i]
        last = {
            S.DONE: '{"sources": 14, "summary": "ok"}',
            S.FAILED: "search API returned HTTP 500",
            S.LOST: "reading sources for rate-limits",
            S.RUNNING: "reading sources for " + item,
            S.YIELDED: "waiting for 3 subagents",
            S.PENDING: "",
        }[st]
        _add(f"research-scout-{item}-r{run}", st, 1, ago + i * 0.3, last)
for run, (st, att) in enumerate(
    ((S.DONE, 1), (S.TIMED_OUT, 2), (S.DONE, 2), (S.KILLED, 1), (S.DONE, 1), (S.RUNNING, 1)), start=1
):
    last = {
        S.DONE: '{"accounts": 42, "flags": 3}',
        S.TIMED_OUT: "auditing account 17 of 42",
        S.KILLED: "auditing account 3 of 42",
        S.RUNNING: "auditing account 29 of 42",
    }[st]
    _add(f"ads-auditor-2026-04-02-r{run}", st, att, 60 - run * 9, last)
for n, st in zip(range(101, 109), (S.DONE, S.DONE, S.RUNNING, S.RUNNING, S.FAILED, S.KILLED, S.PENDING, S.RUNNING)):
    last = {
        S.DONE: "approved with 2 comments",
        S.RUNNING: f"reviewing src/api/handlers_{n}.py",
        S.FAILED: "tool output was not valid JSON",
        S.KILLED: "reviewing tests/",
        S.PENDING: "",
    }[st]
    _add(f"code-review-pr-{n}", st, 1, 40 - (n - 100) * 3, last)
for i, (src, n) in enumerate((("email", 1), ("email", 2), ("slack", 1), ("slack", 2), ("github", 1), ("github", 2))):
    st = (S.DONE, S.RUNNING, S.DONE, S.TIMED_OUT, S.RUNNING, S.DONE)[i]
    last = {
        S.DONE: "triaged 12 items, 2 escalated",
        S.RUNNING: f"reading {src} thread {n * 7}",
        S.TIMED_OUT: "waiting on slack API",
    }[st]
    _add(f"triage-{src}-{n}", st, 1, 30 - i * 4, last)
for i, name in enumerate(("backup-nightly", "deploy-api", "deploy-web", "rotate-keys", "clean-tmp", "sync-dns")):
    st = (S.DONE, S.RUNNING, S.FAILED, S.DONE, S.KILLED, S.RUNNING)[i]
    last = {
        S.DONE: "ok",
        S.RUNNING: f"step {i + 2}/6: {name}",
        S.FAILED: "healthcheck failed: 502",
        S.KILLED: "rm -rf /tmp/crew-*",
    }[st]
    _add(f"ops-{name}", st, 1, 55 - i * 8, last)

assert len(_SESSIONS) == 50, len(_SESSIONS)

AGENTS = ["auditor", "scout", "sub", "writer"]


def _agent_for(label: str) -> str:
    for prefix, agent in (("blog", "writer"), ("research", "scout"), ("ads", "auditor")):
        if label.startswith(prefix):
            return agent
    return "sub"


def make_sessions(now: float) -> list[Session]:
    out = []
    for n, (label, st, attempt, ago, last) in enumerate(_SESSIONS, start=1):
        created = now - ago * 60
        live = st.live
        run = None
        if label.startswith(("blog-publisher", "research-scout", "ads-auditor")):
            job = label.split("-", 2)[0] + "-" + label.split("-", 2)[1]
            run = f"{job}#{label.rsplit('-r', 1)[1]}"
        out.append(
            Session(
                key=f"s-01jqfake{n:018d}",
                label=label,
                state=st,
                attempt=attempt,
                max_attempts=2,
                agent=_agent_for(label),
                task=f"work on {label}",
                domain=f"article:{label.split('-')[2]}" if label.startswith("blog") else None,
                pool="model-a" if label.startswith("blog") else "model-b" if label.startswith("research") else None,
                cron_run=run,
                created_at=created,
                started_at=None if st == S.PENDING else created + 2,
                ended_at=None if live else created + 240,
                updated_at=created + 240,
                exit_code=None if live else {S.DONE: 0, S.FAILED: 1, S.KILLED: 143, S.TIMED_OUT: 143}.get(st),
                result={"ok": True, "words": 812} if st == S.DONE else None,
                reason={
                    S.FAILED: f"exit code 1: {last}",
                    S.KILLED: "killed by user",
                    S.TIMED_OUT: "watchdog: not done after 900s, attempts used up (2/2)",
                    S.LOST: "its process vanished while no runtime was watching",
                    S.PENDING: "waiting for pool model-a (20/20 running)",
                }.get(st),
                shim_pid=40000 + n * 2 if live and st != S.PENDING else None,
                agent_pid=40001 + n * 2 if live and st != S.PENDING else None,
                last_output_at=created + 200 if last else None,
                last_line=last or None,
                queue_position=1 if st == S.PENDING else None,
            )
        )
    return out


# Sessions of agents with a preset (`FakeRuntime(agents=True)`): label -> (preset, state, activity, turns,
# tokens (input, output, cache read, cache write), cost, needs). The code reviews are Claude Code's, two of them
# waiting on a person; a triage agent (jsonl) asks a question; blog's current run spends too.
AGENT_SESSIONS: dict[str, tuple[str, SessionState, str | None, int, tuple[int, int, int, int], float | None, Any]] = {
    "code-review-pr-101": ("claude-code", S.DONE, "idle", 3, (12_400, 1_830, 40_200, 2_100), 0.1834, None),
    "code-review-pr-102": ("claude-code", S.DONE, "idle", 2, (9_100, 1_240, 31_000, 1_900), 0.1402, None),
    "code-review-pr-103": (
        "claude-code",
        S.RUNNING,
        "Bash: pytest tests/api -q",
        1,
        (4_210, 620, 18_300, 1_200),
        0.0931,
        None,
    ),
    "code-review-pr-104": (
        "claude-code",
        S.WAITING,
        "waiting: Bash: rm -rf build && npm run build",
        1,
        (3_050, 410, 12_800, 900),
        0.0412,
        {
            "kind": "permission",
            "id": "toolu_01HfR3",
            "tool": "Bash",
            "input": {"command": "rm -rf build && npm run build", "description": "Clean rebuild"},
        },
    ),
    "code-review-pr-105": ("claude-code", S.FAILED, "idle", 1, (2_000, 150, 0, 0), 0.0150, None),
    "code-review-pr-106": ("claude-code", S.KILLED, "thinking", 0, (310, 12, 0, 0), 0.0021, None),
    "code-review-pr-107": ("claude-code", S.PENDING, None, 0, (0, 0, 0, 0), None, None),
    "code-review-pr-108": (
        "claude-code",
        S.RUNNING,
        "rate limited, retry 2/10 in 4s",
        0,
        (1_200, 40, 0, 0),
        0.0044,
        None,
    ),
    "triage-email-2": (
        "jsonl",
        S.WAITING,
        "waiting: Which label should escalations get: urgent or p1?",
        0,
        (820, 95, 0, 0),
        0.0031,
        {"kind": "question", "id": "q1", "text": "Which label should escalations get: urgent or p1?"},
    ),
    "ops-deploy-api": (
        "codex",
        S.WAITING,
        "waiting: may it run kubectl rollout restart deploy/api?",
        2,
        (15_300, 2_050, 60_100, 0),
        0.3120,
        {
            "kind": "permission",
            "id": "call_7",
            "tool": "Bash",
            "input": {"command": ["kubectl", "rollout", "restart", "deploy/api"]},
            "more": 1,
        },
    ),
    "blog-publisher-superada-2026-04-02-r4": (
        "claude-code",
        S.RUNNING,
        "editing drafts/superada.md",
        1,
        (6_400, 2_900, 22_000, 1_500),
        0.1177,
        None,
    ),
    "blog-publisher-openclaw-guide-2026-04-02-r4": (
        "claude-code",
        S.RUNNING,
        "WebFetch: https://docs.openclaw.ai/guide",
        1,
        (5_100, 700, 15_000, 1_100),
        0.0663,
        None,
    ),
}

# The conversation of a preset session, as `history(...).turns` reads it from its agent's lines.
AGENT_TURNS: list[Turn] = [
    Turn(role="user", text="Review PR 104: the build script changes"),
    Turn(role="assistant", text="I'll look at the diff first, then run the tests."),
    Turn(role="tool", text='{"command":"git diff origin/main --stat"}', name="Bash"),
    Turn(role="tool_result", text=" scripts/build.sh | 12 ++++++------\n package.json     |  2 +-\n 2 files changed"),
    Turn(role="tool", text='{"command":"pytest tests/api -q"}', name="Bash"),
    Turn(role="permission", text="Bash: pytest tests/api -q", name="Bash"),
    Turn(role="tool_result", text="42 passed in 3.1s"),
    Turn(role="assistant", text="Tests pass. The build output may be stale; a clean rebuild will tell."),
    Turn(role="tool", text='{"command":"rm -rf build && npm run build"}', name="Bash"),
    Turn(role="permission", text="Bash: rm -rf build && npm run build", name="Bash"),
]


def agent_lines(label: str) -> list[str]:
    """The raw lines a preset session's agent printed (JSON): what the dashboard must not show as they are."""
    return [
        '{"type":"system","subtype":"init","session_id":"5f0c1e2a-agent","model":"claude-sonnet"}',
        '{"type":"assistant","message":{"content":[{"type":"tool_use","name":"Bash","input":{"command":"ls"}}]}}',
        f'{{"type":"user","message":{{"content":"review {label}"}}}}',
    ]


def make_agents(sessions: dict[str, Session]) -> None:
    """Turn the sessions named in AGENT_SESSIONS into sessions of preset agents (in place)."""
    for s in sessions.values():
        spec = AGENT_SESSIONS.get(s.label)
        if spec is None:
            continue
        preset, state, activity, turns, (i, o, cr, cw), cost, needs = spec
        s.preset = preset
        s.state = state
        s.activity = activity
        s.turns = turns
        s.tokens = TokenCounts(input=i, output=o, cache_read=cr, cache_write=cw) if i or o or cr or cw else None
        s.cost_usd = cost
        s.needs = needs
        s.agent_session = f"5f0c1e2a-{s.label.rsplit('-', 1)[-1]}" if state != S.PENDING else None
        if state == S.WAITING:
            s.reason = f"waiting on a person: {(needs or {}).get('tool') or (needs or {}).get('kind')}"
        if state.live and state != S.PENDING:
            s.last_line = agent_lines(s.label)[-1]


ENDED = sum(1 for _, st, *_ in _SESSIONS if st.terminal)  # a window of this many holds every ended one above


def make_archive(now: float = T0) -> list[Session]:
    """Older history for `FakeRuntime(archive=...)`: 406 ended sessions of the days before the 50, created
    before them (their keys sort first): yesterday's blog and research runs, a month of digests (a group only
    in older history) and `blogger-*` (a prefix listing of `blog` matches it too; it is not blog's)."""
    labels: list[str] = [f"digest-2026-03-{day:02d}" for day in range(1, 32)]
    labels += [f"blogger-weekly-{week}" for week in range(1, 16)]
    labels += [
        f"research-scout-{item}-r{run}"
        for run in range(1, 31)
        for item in ("llm-evals", "agent-memory", "rate-limits", "tooling")
    ]
    labels += [
        f"blog-publisher-{item}-2026-04-01-r{run}"
        for run in range(1, 81)
        for item in ("superada", "openclaw-guide", "ada-lovelace")
    ]
    out = []
    start = now - 3 * 86400
    for n, label in enumerate(labels, start=1):
        created = start + n * 300
        failed = n % 7 == 0
        out.append(
            Session(
                key=f"s-01jqarch{n:018d}",
                label=label,
                state=S.FAILED if failed else S.DONE,
                agent=_agent_for(label),
                task=f"work on {label}",
                created_at=created,
                started_at=created + 2,
                ended_at=created + 200,
                updated_at=created + 200,
                exit_code=1 if failed else 0,
                result=None if failed else {"ok": True},
                reason="exit code 1: tool output was not valid JSON" if failed else None,
                last_line="tool output was not valid JSON" if failed else "ok",
            )
        )
    return out


JOBS = [
    ("ads-auditor", "every 30m", "spawn", 30),
    ("blog-publisher", "every 15m", "spawn", 15),
    ("heartbeat", "every 1h", "system", 60),
    ("research-scout", "every 20m", "spawn", 20),
    ("sweep-stale", "every 10m", "sweep", 10),
]


class FakeRuntime(RuntimeAPI):
    """Implements RuntimeAPI in memory. `emit(event)` feeds `watch()` for tests that want live events."""

    def __init__(
        self,
        clock: FakeClock | None = None,
        *,
        scheduler: bool = True,
        sessions: bool = True,
        ray_nodes: tuple[str, ...] = (),
        archive: builtins.list[Session] = (),  # type: ignore[assignment]
        agents: bool = False,
        gateway: bool = True,
        holds: bool = False,
        workspaces: bool = False,
        best_of: bool = False,
        terminals: bool = False,
    ) -> None:
        self.clock = clock or FakeClock(T0)
        # Ended sessions of long ago: listed and counted like a runtime's store, never loaded by the dashboard
        # unless asked for (pages of older history).
        self.archive: dict[str, Session] = {s.key: s for s in archive}
        now = self.clock.now()
        self.sessions: dict[str, Session] = {s.key: s for s in make_sessions(now)} if sessions else {}
        if agents:
            make_agents(self.sessions)
        if holds:
            make_holds(self.sessions)  # sessions whose model requests wait in the gateway
        if best_of:
            self.sessions.update((s.key, s) for s in make_best_of(now))  # three tries of one task
        if terminals:
            self.sessions.update((s.key, s) for s in make_terminals(now))  # on a pseudo-terminal: peek, attach
        self.peek_error: str | None = None  # a test makes `peek` fail with this
        self.workspaces = workspaces or best_of
        if self.workspaces:
            make_workspaces(self.sessions)  # sessions in git worktrees of their own (tests/ui/fake_workspaces.py)
        self.gateway_info = gateway_info() if gateway else GatewayInfo()  # a test may change it between reads
        self.ray_nodes = ray_nodes
        if ray_nodes:
            # As on the Ray backend: every session that started ran on one of the nodes, and has no local pids.
            for n, s in enumerate(self.sessions.values()):
                s.driver = "ray"
                s.shim_pid = s.agent_pid = s.shim_start = s.agent_start = None
                s.node = None if s.state == S.PENDING else ray_nodes[n % len(ray_nodes) if n % 5 else 0]
        self.scheduler = scheduler
        self._queues: builtins.list[asyncio.Queue[Event | None]] = []
        self.calls: builtins.list[tuple[str, Any]] = []
        self.answered: set[str] = set()
        self._next = 1000

    # ------------------------------------------------------------------ sessions

    async def info(self) -> RuntimeInfo:
        return RuntimeInfo(
            pid=4242,
            data_dir="/tmp/crew",
            crew="enterprise",
            agents=AGENTS,
            started_at=self.clock.now() - 3600,
            max_concurrent=60,
            backend=f"ray {self.ray_nodes[0].split('/')[0]}:6379 (host mode)" if self.ray_nodes else "local",
        )

    def _resolve(self, ref: str) -> Session:
        if ref in self.sessions:
            return self.sessions[ref]
        for s in self.sessions.values():
            if s.label == ref:
                return s
        raise NotFound(f"no session with key or label {ref!r}")

    async def spawn(self, request: SpawnRequest) -> Session:
        self.calls.append(("spawn", request))
        validate_label(request.label)
        for s in self.sessions.values():
            if s.label == request.label and s.state.live:
                raise Conflict(f"label {request.label!r} is held by live session {s.key} ({s.label})")
        if request.agent is not None and request.agent not in AGENTS:
            raise BadInput(f"unknown agent {request.agent!r}; agents: {', '.join(AGENTS)}")
        workspace = self.workspaces and (request.repo is not None or request.agent in WORKSPACE_AGENTS)
        if request.best_of is not None and not workspace:
            raise BadInput("best of N needs a workspace: --repo PATH, or an agent with a workspace")
        self._next += 1
        now = self.clock.now()
        s = Session(
            key=f"s-01jqfake{self._next:018d}",
            label=request.label,
            state=S.RUNNING,
            agent=request.agent,
            task=request.task,
            domain=request.domain,
            created_at=now,
            started_at=now,
            updated_at=now,
        )
        if workspace:  # as the runtime's: its own worktree on crew/LABEL
            s.repo, s.base, s.branch = request.repo or WORKSPACE_REPO, "main", f"crew/{s.label}"
            s.worktree, s.merge, s.best_of = f"/tmp/crew/worktrees/{s.key}", "none", request.best_of
        self.sessions[s.key] = s
        self.emit(SessionSpawned(session=s.key, label=s.label, ts=now, snapshot=s.model_copy()))
        return s.model_copy()

    async def send(self, ref: str, text: str) -> Session:
        self.calls.append(("send", (ref, text)))
        s = self._resolve(ref)
        if s.state.terminal:
            raise Conflict(f"session {s.key} ({s.label}) has ended ({s.state.value}); it cannot be steered")
        return s.model_copy()

    async def answer(self, ref: str, allow: bool, request: str | None = None, message: str | None = None) -> Session:
        self.calls.append(("answer", (ref, allow, request, message)))
        s = self._resolve(ref)
        if s.state != SessionState.WAITING or not s.needs:
            raise Conflict(f"session {s.key} ({s.label}) is {s.state.value}, not waiting for an answer")
        if request is not None and request != s.needs.get("id"):
            raise BadInput(f"no pending request {request!r} (stale?); pending: {s.needs.get('id')}")
        now = self.clock.now()
        request = str(s.needs.get("id"))
        self.answered.add(s.key)
        self.emit(SessionAnswered(session=s.key, label=s.label, ts=now, request=request, allow=allow, message=message))
        s.needs = None
        s.state = SessionState.RUNNING
        s.activity = "thinking" if allow else (f"denied: {message}" if message else "denied")
        s.reason = None
        self.emit(
            SessionStateChanged(session=s.key, label=s.label, ts=now, old=S.WAITING, new=S.RUNNING, attempt=s.attempt)
        )
        self.emit(
            SessionAgentUpdate(
                session=s.key,
                label=s.label,
                ts=now,
                activity=s.activity,
                agent_session=s.agent_session,
                turns=s.turns,
                tokens=s.tokens,
                cost_usd=s.cost_usd,
                needs=None,
            )
        )
        return s.model_copy()

    async def list(
        self,
        state: SessionState | None = None,
        prefix: str | None = None,
        limit: int | None = None,
        before: str | None = None,
        since: float | None = None,
        ended: bool | None = None,
    ) -> builtins.list[Session]:
        self.calls.append(
            (
                "list",
                {"state": state, "prefix": prefix, "limit": limit, "before": before, "since": since, "ended": ended},
            )
        )
        found = [
            s.model_copy()
            for s in sorted([*self.sessions.values(), *self.archive.values()], key=lambda s: s.key)
            if (state is None or s.state == state)
            and (prefix is None or s.label.startswith(prefix))
            and (before is None or s.key < before)
            and (since is None or s.updated_at >= since)
            and (ended is None or s.state.terminal == ended)
        ]
        return found if limit is None else found[max(0, len(found) - limit) :]

    async def result(self, ref: str) -> Any:
        return self._resolve(ref).result

    async def older(self, before: str) -> dict[str, int]:
        self.calls.append(("older", before))
        counts: dict[str, int] = {}
        for s in [*self.sessions.values(), *self.archive.values()]:
            if s.key < before and s.state.terminal:
                counts[s.prefix] = counts.get(s.prefix, 0) + 1
        return counts

    async def get(self, ref: str) -> Session:
        return self._resolve(ref).model_copy()

    async def history(self, ref: str, tail: int = 50) -> History:
        s = self._resolve(ref)
        lines = [
            f"step {i}: {('researching', 'drafting', 'checking facts in', 'revising')[i % 4]} part {i}"
            for i in range(1, 13)
        ]
        if s.last_line:
            lines.append(s.last_line)
        err = ["warning: slow response from model-a (4.2s)"] if s.state == S.FAILED else []
        if s.preset is not None:
            turns = list(AGENT_TURNS)
            if s.state != S.WAITING and s.key not in self.answered:
                turns = turns[:-2]  # it never asked for the clean rebuild
            return History(key=s.key, label=s.label, state=s.state, lines=agent_lines(s.label), stderr=err, turns=turns)
        return History(key=s.key, label=s.label, state=s.state, lines=lines[-tail:], stderr=err)

    async def kill(self, ref: str | None = None, prefix: str | None = None) -> builtins.list[Session]:
        self.calls.append(("kill", ref or prefix))
        return []

    async def yield_(
        self, children: builtins.list[str] | None = None, parent: str | None = None, wait: bool = True
    ) -> YieldResult | None:
        raise BadInput("not in the fake")

    async def registry(self) -> dict[str, Any]:
        return {}

    async def peek(self, ref: str) -> TerminalScreen:
        """As the runtime's: a terminal session's screen now (tests/ui/fake_terminals.py)."""
        self.calls.append(("peek", ref))
        s = self._resolve(ref)
        if not s.tty:
            raise BadInput(f"{s.label} is not a terminal session (spawn it with --tty, or an agent with tty = true)")
        if self.peek_error is not None:
            raise Conflict(self.peek_error)
        return screen_of(s)

    # ------------------------------------------------------------------ the model gateway

    async def gateway(self) -> GatewayInfo:
        self.calls.append(("gateway", None))
        return self.gateway_info.model_copy(deep=True)

    async def usage(self, by: UsageBy = "pool", since: float | None = None) -> builtins.list[UsageRow]:
        return usage_rows() if self.gateway_info.url is not None else []

    async def resume(self, ref: str | None = None, pool: str | None = None, budget: float | None = None) -> str:
        """As the runtime's: a session paused over its budget goes on (its hold cleared, and an update says so)."""
        self.calls.append(("resume", (ref, pool, budget)))
        if ref is None:
            raise BadInput("resume: only a session in the fake")
        s = self._resolve(ref)
        if not (s.gateway_hold or "").startswith("paused"):
            raise BadInput(f"{s.label} is not paused over its budget")
        s.gateway_hold = None
        self.emit(
            SessionAgentUpdate(
                session=s.key,
                label=s.label,
                ts=self.clock.now(),
                activity=s.activity,
                agent_session=s.agent_session,
                turns=s.turns,
                tokens=s.tokens,
                cost_usd=s.cost_usd,
                needs=s.needs,
                usage=s.usage,
                gateway_hold=None,
            )
        )
        return f"{s.label}: resumed, its budget now $4.00"

    # ------------------------------------------------------------------ workspaces

    def _workspace(self, ref: str, verb: str) -> Session:
        s = self._resolve(ref)
        if s.branch is None or s.merge is None:
            raise BadInput(f"{s.label} has no workspace to {verb}")
        return s

    async def diff(self, ref: str, stat: bool = False) -> str:
        """As the runtime's: the fixed diff of the session's branch (gone once discarded)."""
        self.calls.append(("diff", ref))
        s = self._workspace(ref, "diff")
        if s.merge == "discarded":
            raise BadInput(f"git diff: the branch {s.branch} is gone from {s.repo}")
        text = diff_of(s.label)
        if stat:
            files = (s.changes or {}).get("files", [])
            return "".join(f" {f['path']} | {f['insertions'] + f['deletions']}\n" for f in files)
        return text

    async def merge(self, ref: str) -> Session:
        """As the runtime's: an ended session's branch goes into its repository's merge queue (and stays there: the
        fake has no merge worker)."""
        self.calls.append(("merge", ref))
        s = self._workspace(ref, "merge")
        if s.state.live:
            raise Conflict(f"{s.label} is still {s.state.value}: merge it when it has ended")
        if s.merge in ("queued", "merging", "merged", "discarded"):
            raise Conflict(f"{s.label}: its branch is already {s.merge}")
        s.merge, s.merge_note, s.merge_queued_at = "queued", None, self.clock.now()
        self._workspace_event(s, "queued")
        return s.model_copy(deep=True)

    async def discard(self, ref: str) -> Session:
        self.calls.append(("discard", ref))
        s = self._workspace(ref, "discard")
        if s.state.live:
            raise Conflict(f"{s.label} is still {s.state.value}: kill it first")
        if s.merge in ("merging", "merged"):
            raise Conflict(f"{s.label}: its branch is {s.merge}; nothing to discard")
        s.merge, s.merge_note = "discarded", None
        self._workspace_event(s, "discarded")
        return s.model_copy(deep=True)

    def _workspace_event(self, s: Session, action: str) -> None:
        self.emit(
            WorkspaceChanged(
                session=s.key,
                label=s.label,
                ts=self.clock.now(),
                action=action,
                branch=s.branch,
                merge=s.merge,
                changes=s.changes,
            )
        )

    def emit(self, event: Event) -> None:
        for q in self._queues:
            q.put_nowait(event)

    async def watch(self) -> AsyncIterator[Event]:
        q: asyncio.Queue[Event | None] = asyncio.Queue()
        self._queues.append(q)
        try:
            while True:
                ev = await q.get()
                if ev is None:
                    return
                yield ev
        finally:
            self._queues.remove(q)

    # ------------------------------------------------------------------ scheduling

    def _need(self) -> None:
        if not self.scheduler:
            raise NotImplementedError("no scheduler in this fake")

    async def retry(self, ref: str) -> Session:
        self.calls.append(("retry", ref))
        return self._resolve(ref).model_copy()

    async def sweep(self, dry_run: bool = False) -> builtins.list[SweepItem]:
        self._need()
        self.calls.append(("sweep", dry_run))
        stale = [
            s
            for s in self.sessions.values()
            if s.label in ("code-review-pr-104", "ops-sync-dns") and s.state == S.RUNNING  # waiting: never stale
        ]
        items = [
            SweepItem(
                key=s.key, label=s.label, idle_for=idle, reason=f"stale: no output for {idle:.0f}s (stale_after 600s)"
            )
            for s, idle in zip(stale, (1260.0, 745.0))
        ]
        for s in self.sessions.values():  # worktrees of ended sessions (the fake workspaces' sessions have them)
            if s.worktree is None or s.state.live or s.merge in ("queued", "merging", "discarded"):
                continue
            ahead = (s.changes or {}).get("commits", 0)
            keep = bool(ahead) and s.merge != "merged"
            reason = f"{ahead} commit{'s' if ahead != 1 else ''} on {s.branch} not in main: merge or discard it"
            items.append(
                SweepItem(
                    key=s.key,
                    label=s.label,
                    idle_for=3600.0,
                    reason=reason if keep else "ended 1h ago; nothing in it is lost",
                    kind="worktree",
                    action="keep" if keep else "remove",
                    worktree=s.worktree,
                )
            )
        return items

    async def cron_list(self) -> builtins.list[CronJobInfo]:
        self._need()
        now = self.clock.now()
        out = []
        for name, sched, payload, every in JOBS:
            runs = self._runs(name)
            out.append(
                CronJobInfo(
                    name=name,
                    schedule=sched,
                    payload=payload,  # type: ignore[arg-type]
                    next_fire=now + every * 60 / 3,
                    last_fire=now - every * 60 * 2 / 3,
                    runs=len(runs),
                    last_rate=next((r.rate for r in runs if r.final), None),
                )
            )
        return out

    def _runs(self, job: str) -> builtins.list[CronRun]:
        now = self.clock.now()
        by_run: dict[str, builtins.list[Session]] = {}
        for s in self.sessions.values():
            if s.cron_run and s.cron_run.startswith(job + "#"):
                by_run.setdefault(s.cron_run, []).append(s)
        # Older runs than the sessions we keep: history for the sparkline.
        old_rates = {
            "blog-publisher": [1.0, 0.67, 1.0, 1.0, 0.33, 1.0, 0.67, 1.0],
            "research-scout": [0.75, 1.0, 0.5, 0.75, 1.0, 0.25, 0.75],
            "ads-auditor": [1.0, 0.0, 1.0],
        }.get(job, [])
        runs = []
        for i, rate in enumerate(old_rates, start=1):
            runs.append(
                CronRun(
                    id=f"{job}#old{i}",
                    job=job,
                    number=i,
                    nominal=now - 86400 + i * 600,
                    started_at=now - 86400 + i * 600,
                    final=True,
                    rate=rate,
                    counts={"spawned": 3, "done": round(rate * 3)},
                )
            )
        base = len(old_rates)
        for rid in sorted(by_run, key=lambda r: int(r.split("#")[1])):
            members = by_run[rid]
            n = int(rid.split("#")[1])
            done = sum(1 for s in members if s.state == S.DONE)
            final = all(s.state.terminal for s in members)
            started = min(s.created_at for s in members)
            runs.append(
                CronRun(
                    id=rid,
                    job=job,
                    number=base + n,
                    nominal=started,
                    started_at=started,
                    sessions=[s.key for s in members],
                    final=final,
                    rate=done / len(members) if final else None,
                    counts={"spawned": len(members), "done": done},
                )
            )
        return list(reversed(runs))

    async def cron_trigger(self, name: str) -> CronRun | None:
        self._need()
        self.calls.append(("cron_trigger", name))
        if name not in {j[0] for j in JOBS}:
            raise NotFound(f"no cron job named {name!r}")
        return CronRun(id=f"{name}#99", job=name, number=99, nominal=self.clock.now(), started_at=self.clock.now())

    async def runs(self, job: str | None = None, limit: int = 50) -> builtins.list[CronRun]:
        self._need()
        if job is None:
            return sorted((r for j in JOBS for r in self._runs(j[0])), key=lambda r: -r.nominal)[:limit]
        return self._runs(job)[:limit]

    async def timeline(self, start: float, end: float) -> builtins.list[TimelineItem]:
        self._need()
        now = self.clock.now()
        items: builtins.list[TimelineItem] = []
        for name, _, payload, every in JOBS:
            t = now - every * 60 * 2 / 3
            while t >= start:
                outcome = {"spawn": "ran", "sweep": "swept", "system": "system"}[payload]
                if name == "blog-publisher" and abs(t - (now - 35 * 60)) < 60:
                    outcome = "skipped"
                items.append(TimelineItem(ts=t, kind="cron", name=name, outcome=outcome))
                t -= every * 60
            t = now + every * 60 / 3
            while t <= end:
                items.append(TimelineItem(ts=t, kind="cron", name=name, future=True))
                t += every * 60
        for ago, rate, run in (
            (48, "100%", "blog-publisher#9"),
            (33, "67%", "blog-publisher#10"),
            (18, "100%", "blog-publisher#11"),
            (44, "75%", "research-scout#8"),
            (24, "75%", "research-scout#9"),
            (40, "0%", "ads-auditor#2"),
        ):
            items.append(TimelineItem(ts=now - ago * 60, kind="run", name=run, outcome=rate))
        for ago, label, outcome in (
            (45, "ads-auditor-2026-04-02-r2", "retried"),
            (30, "ads-auditor-2026-04-02-r2", "timed_out"),
            (12, "blog-publisher-superada-2026-04-02-r3", "noop"),
            (27, "triage-slack-2", "timed_out"),
        ):
            items.append(TimelineItem(ts=now - ago * 60, kind="watchdog", name=label, outcome=outcome))
        items += [
            TimelineItem(
                ts=now - 29 * 60, kind="retry", name="ads-auditor-2026-04-02-r3", outcome="attempt 2 (watchdog)"
            ),
            TimelineItem(ts=now - 15 * 60, kind="kill", name="ops-clean-tmp", outcome="killed"),
            TimelineItem(ts=now - 8 * 60, kind="sweep", name="cron", outcome="1 killed"),
            TimelineItem(ts=now + 11 * 60, kind="watchdog", name="blog-publisher-superada-2026-04-02-r4", future=True),
            TimelineItem(ts=now + 25 * 60, kind="run", name="research-scout#10", outcome="deadline", future=True),
        ]
        return sorted((i for i in items if start <= i.ts <= end), key=lambda i: i.ts)
