"""Pydantic types shared by every layer: sessions, their states, spawn requests (the runtime's events are in
crewtui/events.py).

Nothing here does I/O. The store persists these models as JSON, the control socket sends them as JSON,
the UI renders them; so one definition keeps all three in agreement.
"""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from crewtui.durations import parse_duration as parse_duration
from crewtui.durations import short_duration as short_duration
from crewtui.errors import BadInput
from crewtui.spend import TokenCounts, UsageTotals

LABEL_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
MAX_STEER_BYTES = 64 * 1024
MAX_ATTEMPTS = 100  # a retry budget beyond this is a typo, not a plan
MAX_RESULT_BYTES = 16 << 20  # a result over this is not kept (the session says so; it stays in stdout.log)
# A listing carries each session without its bulk (see `listed`); `get` (ctl info, ctl result) has all of it.
LISTED_RESULT_BYTES = 4096
LISTED_TEXT_CHARS = 2000
MIN_EVERY = 1.0  # seconds: the shortest interval of an `every` schedule


def validate_label(label: str) -> str:
    """Return the label if it is a valid session label, else raise BadInput saying why."""
    if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
        raise BadInput(
            f"invalid label {label!r}: use 1-128 characters of a-z 0-9 . _ -, starting with a letter or digit"
        )
    return label


# How a session runs (see crewtui/runtime/drivers): a closed set, since a restarted runtime picks the driver by it.
DriverKind = Literal["process", "callable", "ray"]


class SessionState(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"  # on a person: a permission request or a question (never stale, never swept)
    YIELDED = "yielded"
    DONE = "done"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    KILLED = "killed"
    LOST = "lost"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def live(self) -> bool:
        return self not in TERMINAL_STATES

    @property
    def active(self) -> bool:
        """Its agent process runs (running, or waiting on a person): it holds a slot and its output is read."""
        return self in (SessionState.RUNNING, SessionState.WAITING)


# One symbol per state, shared by `crewtui ctl list` and the dashboard so both speak the same language.
STATE_SYMBOLS: dict[SessionState, str] = {
    SessionState.PENDING: "…",
    SessionState.RUNNING: "▶",
    SessionState.WAITING: "!",
    SessionState.YIELDED: "‖",
    SessionState.DONE: "✔",
    SessionState.FAILED: "✘",
    SessionState.TIMED_OUT: "◷",
    SessionState.KILLED: "☠",
    SessionState.LOST: "?",
}


TERMINAL_STATES = frozenset(
    {SessionState.DONE, SessionState.FAILED, SessionState.TIMED_OUT, SessionState.KILLED, SessionState.LOST}
)

# Allowed transitions; the orchestrator refuses anything else (a bug, not user input).
TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.PENDING: frozenset({SessionState.RUNNING, SessionState.KILLED, SessionState.FAILED}),
    SessionState.RUNNING: frozenset(
        {
            SessionState.YIELDED,
            SessionState.DONE,
            SessionState.FAILED,
            SessionState.TIMED_OUT,
            SessionState.KILLED,
            SessionState.LOST,
            SessionState.PENDING,  # a rate-limited attempt waits for its retry
            SessionState.WAITING,
        }
    ),
    SessionState.WAITING: frozenset(
        {
            SessionState.RUNNING,
            SessionState.YIELDED,
            SessionState.DONE,
            SessionState.FAILED,
            SessionState.TIMED_OUT,
            SessionState.KILLED,
            SessionState.LOST,
            SessionState.PENDING,
        }
    ),
    SessionState.YIELDED: frozenset(
        {
            SessionState.RUNNING,
            SessionState.WAITING,
            SessionState.DONE,
            SessionState.FAILED,
            SessionState.TIMED_OUT,
            SessionState.KILLED,
            SessionState.LOST,
            SessionState.PENDING,
        }
    ),
    # A retry (watchdog, rate limit) starts a new attempt of an ended session with the same key and label.
    SessionState.FAILED: frozenset({SessionState.PENDING, SessionState.RUNNING}),
    SessionState.LOST: frozenset({SessionState.PENDING, SessionState.RUNNING}),
    SessionState.TIMED_OUT: frozenset({SessionState.PENDING}),  # only by a user's retry
    SessionState.KILLED: frozenset({SessionState.PENDING, SessionState.RUNNING}),
    SessionState.DONE: frozenset(),
}


class SpawnRequest(BaseModel):
    """What a caller asks for. Either `agent` (+ `task`) names a crew agent, or `argv` is given directly."""

    model_config = ConfigDict(extra="forbid")

    label: str
    agent: str | None = None
    task: str | None = None
    argv: list[str] | None = None
    domain: str | None = None
    parent: str | None = None
    watchdog_after: float | None = None  # seconds
    max_attempts: int = 1
    cron_run: str | None = None
    pool: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    # Where it runs: an absolute directory (`crewtui ctl spawn` sends the directory it was called from). None:
    # the agent's `cwd`, else the directory the runtime was started in.
    cwd: str | None = None
    repo: str | None = None  # a git repository: it runs in its own worktree of it (an agent's `workspace` says it too)
    base: str | None = None  # the branch its worktree starts from (default: the agent's, else the one checked out)
    best_of: str | None = None  # one of several tries of the same task (`ctl spawn --best-of N`): their group
    tty: bool | None = None  # a terminal session (`ctl spawn --tty`); None: as its agent says

    def tries(self, n: int) -> list[SpawnRequest]:
        """Best of N: the same task as N sessions LABEL-1..N, grouped under LABEL (each gets its own worktree)."""
        if not 2 <= n <= 10:
            raise BadInput(f"best of N takes 2 to 10 tries, got {n}")
        if self.domain is not None:
            raise BadInput("best of N with a domain: every try would claim the same one; leave the domain out")
        return [self.model_copy(update={"label": f"{self.label}-{i}", "best_of": self.label}) for i in range(1, n + 1)]


# failed: git could not do the merge (no conflict: a disk full, a broken repository); `ctl merge` tries again.
MergeState = Literal["none", "queued", "merging", "merged", "conflict", "check_failed", "failed", "discarded"]


class Session(BaseModel):
    """One unit of agent work, as the store keeps it and every client sees it."""

    model_config = ConfigDict(extra="forbid")

    key: str
    label: str
    state: SessionState = SessionState.PENDING
    attempt: int = 1
    max_attempts: int = 1
    agent: str | None = None
    task: str | None = None
    argv: list[str] = Field(default_factory=list)
    driver: DriverKind = "process"
    parent: str | None = None
    depth: int = 0
    domain: str | None = None
    pool: str | None = None
    cron_run: str | None = None
    watchdog_after: float | None = None
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    updated_at: float
    exit_code: int | None = None
    result: Any = None
    result_bytes: int | None = None  # the size of `result` as JSON (kept whole, listed as a preview)
    reason: str | None = None  # why the last state change happened (killed by user, stale, ...)
    output_dir: str | None = None
    cwd: str | None = None  # the directory it runs in
    # Process bookkeeping, so a restarted runtime can re-adopt the session.
    shim_pid: int | None = None
    agent_pid: int | None = None
    shim_start: int | None = None
    agent_start: int | None = None
    stdout_offset: int = 0
    stderr_offset: int = 0
    last_output_at: float | None = None
    last_line: str | None = None
    yield_on: list[str] | None = None  # children keys while yielded
    queue_position: int | None = None
    node: str | None = None
    rate_limited: int = 0  # how many times this attempt was rate limited and retried with backoff
    next_try_at: float | None = None  # a rate-limited session waits as pending until then
    # What its agent says (sessions of an agent with a preset: crewtui/adapters), folded from its output.
    preset: str | None = None
    activity: str | None = None  # one line: what it does now
    agent_session: str | None = None  # the agent's own conversation id (Claude's session id, Codex's thread id)
    turns: int = 0
    tokens: TokenCounts | None = None
    # The figure of record: the gateway's measure when its model requests went through the gateway (`usage`),
    # else what the agent reported (`reported_*`), else its tokens priced by the crew file.
    cost_usd: float | None = None
    reported_tokens: TokenCounts | None = None  # as its agent reported them (kept beside the gateway's)
    reported_cost_usd: float | None = None
    usage: UsageTotals | None = None  # measured by the model gateway (requests, tokens, dollars, refusals)
    gateway_hold: str | None = None  # why its model requests wait in the gateway (its budget; its place in line)
    needs: dict[str, Any] | None = None  # what it waits for: {"kind": "permission", "tool", "input", "id"} | question
    unparsed: int = 0  # output lines its preset could not read (kept in the transcript)
    queued_steers: list[str] = Field(default_factory=list)  # for an agent that takes them on its next run
    # Its workspace (crewtui/workspaces): its own git worktree of `repo` on `branch`, started at `base_commit`.
    repo: str | None = None
    base: str | None = None
    branch: str | None = None
    worktree: str | None = None
    base_commit: str | None = None
    changes: dict[str, Any] | None = None  # {"files": [{"path", "insertions", "deletions"}], "insertions", ...}
    merge: MergeState | None = None
    merge_note: str | None = None  # a conflict's files, a failed check's output, why the merge waits
    merge_queued_at: float | None = None
    port: int | None = None  # its own free TCP port (`{port}` in its agent's command or env)
    best_of: str | None = None  # its group of tries of one task: merging one discards the others
    tty: bool = False  # runs on a terminal (dtach) people can attach to; its screen can be peeked
    # Fields a listing cut short in this copy ("result", "task", "argv"); get the session for all of them.
    trimmed: list[str] = Field(default_factory=list)

    @property
    def prefix(self) -> str:
        """The label's first `-`-separated part, the top of its group."""
        return self.label.split("-", 1)[0]


def of_record(s: Session) -> None:
    """Set a session's `tokens` and `cost_usd` from the figure of record: the gateway's measure when it has one,
    else what its agent reported."""
    if s.usage is not None:
        s.tokens = s.usage.tokens.model_copy()
        s.cost_usd = s.usage.cost_usd
    else:
        s.tokens = s.reported_tokens
        s.cost_usd = s.reported_cost_usd


def listed(s: Session) -> Session:
    """A copy of a session as a listing carries it: a big result as a preview (its size in `result_bytes`), a
    long task or argv element cut, and `trimmed` naming what was cut. A reply of thousands of sessions stays
    small; `get` gives any one of them whole."""
    out = s.model_copy(deep=True)
    if s.result is not None and s.result_bytes is None:  # stored before crewtui measured results
        out.result_bytes = len(json.dumps(s.result, default=str))
    if s.result is not None and (out.result_bytes or 0) > LISTED_RESULT_BYTES:
        out.result = None
        out.trimmed.append("result")
    if s.task is not None and len(s.task) > LISTED_TEXT_CHARS:
        out.task = s.task[:LISTED_TEXT_CHARS] + "…"
        out.trimmed.append("task")
    if any(len(a) > LISTED_TEXT_CHARS for a in s.argv):
        out.argv = [a if len(a) <= LISTED_TEXT_CHARS else a[:LISTED_TEXT_CHARS] + "…" for a in s.argv]
        out.trimmed.append("argv")
    return out


class ChildResult(BaseModel):
    key: str
    label: str
    state: SessionState
    exit_code: int | None = None
    result: Any = None


class YieldResult(BaseModel):
    """What a yielding parent is woken with: every child's end, in one message."""

    type: Literal["yield_result"] = "yield_result"
    parent: str | None = None
    children: list[ChildResult]


class CronRun(BaseModel):
    """One firing of a cron job: the batch it spawned and how it went."""

    id: str  # "<job>#<number>"
    job: str
    number: int  # 1, 2, 3, ... within the job
    nominal: float  # the scheduled fire time this run stands for
    started_at: float
    deadline: float | None = None
    closed_at: float | None = None
    planned: int = 0  # items the payload asked for
    sessions: list[str] = Field(default_factory=list)
    refused: list[str] = Field(default_factory=list)  # why an item could not even be spawned
    counts: dict[str, int] = Field(default_factory=dict)  # spawned done failed timed_out killed lost running
    rate: float | None = None  # done / spawned (refused spawns count as spawned and not done)
    final: bool = False
    manual: bool = False  # fired out of schedule (`ctl cron trigger`, `fire_at_start`): `nominal` is when


class CronJobInfo(BaseModel):
    """A cron job as clients see it."""

    name: str
    schedule: str  # human summary: "every 2m", "cron 0 9 * * * (Europe/Berlin)", "at 2026-04-02 09:00"
    payload: Literal["spawn", "sweep", "system"]
    source: Literal["crew", "ctl"] = "crew"
    next_fire: float | None = None
    last_fire: float | None = None  # the last scheduled fire handled (a manual one is not a scheduled fire)
    runs: int = 0
    misfire: str = "run_once"
    overlap: str = "forbid"
    last_rate: float | None = None


class TerminalScreen(BaseModel):
    """What a terminal session's screen shows now (`peek`): its lines as text, read-only."""

    key: str
    label: str
    rows: int
    cols: int
    lines: list[str]
    cursor: tuple[int, int] = (0, 0)  # row, column
    live: bool = True


class SweepItem(BaseModel):
    """What a sweep does to one thing: kill a stale session, remove the worktree of an ended session whose work is
    merged (or was none), or keep one that holds work not merged, saying so."""

    key: str
    label: str
    idle_for: float  # seconds without output (a worktree: since its session ended)
    reason: str
    kind: Literal["stale", "worktree"] = "stale"
    action: Literal["kill", "remove", "keep"] = "kill"
    worktree: str | None = None


class TimelineItem(BaseModel):
    """One mark on the cron/watchdog timeline: a past happening or a future timer."""

    ts: float
    kind: Literal["cron", "watchdog", "run", "sweep", "kill", "retry", "merge", "notify", "system"]
    name: str  # job name or session label
    outcome: str | None = None  # ran, skipped, noop, retried, timed_out, 75%, ...
    future: bool = False


class Turn(BaseModel):
    """One readable turn of an agent's conversation: its text, a tool call and what it gave, a permission."""

    role: Literal["user", "assistant", "tool", "tool_result", "permission", "answer", "system", "error"]
    text: str
    name: str | None = None  # the tool, for tool calls and permissions
    ref: str | None = None  # a permission's request id (its answer follows it as an `answer` turn)


class History(BaseModel):
    key: str
    label: str
    state: SessionState
    lines: list[str]
    stderr: list[str] = Field(default_factory=list)
    turns: list[Turn] | None = None  # sessions of a preset agent: the conversation, read from the lines
