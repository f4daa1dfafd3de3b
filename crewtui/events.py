"""The runtime's events: what happened to a session, a cron job, a merge, the runtime itself. The bus numbers
them (gapless), the store logs them, the control socket streams them (`ctl watch`), the UI folds them.

Nothing here does I/O; `timeline_mark` is the one mark an event makes on the cron/watchdog timeline.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from crewtui.model import MergeState, Session, SessionState, TimelineItem
from crewtui.spend import TokenCounts, UsageTotals


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int = 0  # assigned by the runtime when published: gapless, never reused
    ts: float = 0.0
    session: str | None = None  # the session key the event is about, if any
    label: str | None = None


class RuntimeStarted(_EventBase):
    kind: Literal["runtime_started"] = "runtime_started"
    pid: int
    data_dir: str
    readopted: int = 0
    recorded_exits: int = 0
    lost: int = 0


class RuntimeStopped(_EventBase):
    kind: Literal["runtime_stopped"] = "runtime_stopped"
    pid: int
    live_sessions: int = 0


class SessionSpawned(_EventBase):
    kind: Literal["session_spawned"] = "session_spawned"
    parent: str | None = None
    domain: str | None = None
    cron_run: str | None = None
    attempt: int = 1
    snapshot: Session | None = None  # the new session, so a client needs no round trip to show it


class SessionStateChanged(_EventBase):
    kind: Literal["session_state_changed"] = "session_state_changed"
    old: SessionState | None = None
    new: SessionState
    reason: str | None = None
    exit_code: int | None = None
    attempt: int = 1
    node: str | None = None  # where it runs, for sessions on another machine (Ray)


class SessionOutput(_EventBase):
    """New output of a session since the last one (coalesced per tick: only the last lines are carried)."""

    kind: Literal["session_output"] = "session_output"
    stream: Literal["stdout", "stderr"] = "stdout"
    lines: list[str] = Field(default_factory=list)
    nbytes: int = 0


class SessionSteered(_EventBase):
    kind: Literal["session_steered"] = "session_steered"
    text: str


class SessionAgentUpdate(_EventBase):
    """What a session's agent reported since the last update (coalesced per read of its output)."""

    kind: Literal["session_agent"] = "session_agent"
    activity: str | None = None
    agent_session: str | None = None
    turns: int = 0
    tokens: TokenCounts | None = None
    cost_usd: float | None = None
    needs: dict[str, Any] | None = None
    usage: UsageTotals | None = None  # the gateway's measure (when it went through the gateway)
    gateway_hold: str | None = None  # why its model requests wait in the gateway
    reported_tokens: TokenCounts | None = None  # what its agent reported (beside the gateway's figure)
    reported_cost_usd: float | None = None


class SessionAnswered(_EventBase):
    """A person answered what a session waited for (a permission, a question)."""

    kind: Literal["session_answered"] = "session_answered"
    request: str
    allow: bool
    message: str | None = None


class SessionYielded(_EventBase):
    kind: Literal["session_yielded"] = "session_yielded"
    children: list[str]


class YieldDelivered(_EventBase):
    kind: Literal["yield_delivered"] = "yield_delivered"
    children: list[str]


class RegistryMerged(_EventBase):
    kind: Literal["registry_merged"] = "registry_merged"
    entry: str


class CronFired(_EventBase):
    """A cron job's fire: what it did (ran a batch, swept, skipped for overlap or misfire...)."""

    kind: Literal["cron_fired"] = "cron_fired"
    job: str
    nominal: float
    run: str | None = None
    outcome: Literal["ran", "skipped", "replaced", "swept", "system"] = "ran"
    reason: str | None = None


class WatchdogFired(_EventBase):
    kind: Literal["watchdog_fired"] = "watchdog_fired"
    attempt: int = 1
    outcome: Literal["noop", "retried", "timed_out", "gave_up"] = "noop"
    reason: str | None = None


class SessionRetried(_EventBase):
    """A new attempt of a session, same key and label (watchdog, rate limit or a user's retry)."""

    kind: Literal["session_retried"] = "session_retried"
    attempt: int
    cause: Literal["watchdog", "rate_limit", "user", "lost", "steer"] = "user"
    next_try_at: float | None = None


class RunClosed(_EventBase):
    kind: Literal["run_closed"] = "run_closed"
    job: str
    run: str
    rate: float | None
    counts: dict[str, int] = Field(default_factory=dict)


class SweepDone(_EventBase):
    kind: Literal["sweep_done"] = "sweep_done"
    killed: list[str] = Field(default_factory=list)
    cause: Literal["user", "cron"] = "user"
    removed: list[str] = Field(default_factory=list)  # sessions whose worktree (and branch) the sweep removed


class WorkspaceChanged(_EventBase):
    """A step of a session's workspace: its branch queued, merging, merged, in conflict, failing its check, waiting
    (the target checked out by the user), discarded, or its worktree missing."""

    kind: Literal["workspace"] = "workspace"
    action: str
    branch: str | None = None
    merge: MergeState | None = None
    files: list[str] = Field(default_factory=list)
    note: str | None = None
    commit: str | None = None
    changes: dict[str, Any] | None = None


class SystemEvent(_EventBase):
    """A free-text event for the timeline (system payloads of crons, warnings)."""

    kind: Literal["system"] = "system"
    text: str
    level: Literal["info", "warning", "error"] = "info"
    topic: Literal["budget", "fenced", "store_full"] | None = None  # what a notification can be about


class NotificationSent(_EventBase):
    """A notification the runtime sent (or failed to send): about what, by which channel, for which sessions.
    `channel` "terminal" is the dashboards' to ring (bell, OSC 9/777); the runtime sends the others itself."""

    kind: Literal["notification"] = "notification"
    trigger: str  # waiting | failed | timed_out | run_below | budget | fenced | store_full
    channel: str  # terminal | desktop | webhook:<name>
    title: str
    text: str
    sessions: list[str] = Field(default_factory=list)  # the keys it is about (the first 50)
    count: int = 1  # how many happenings it groups
    ok: bool = True
    error: str | None = None


Event = Annotated[
    (
        RuntimeStarted
        | RuntimeStopped
        | SessionSpawned
        | SessionStateChanged
        | SessionOutput
        | SessionSteered
        | SessionAgentUpdate
        | SessionAnswered
        | SessionYielded
        | YieldDelivered
        | RegistryMerged
        | CronFired
        | WatchdogFired
        | SessionRetried
        | RunClosed
        | SweepDone
        | WorkspaceChanged
        | SystemEvent
        | NotificationSent
    ),
    Field(discriminator="kind"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def timeline_mark(ev: Event) -> TimelineItem | None:
    """The timeline mark an event makes (the scheduler keeps the same marks; we show them before it is asked)."""
    if isinstance(ev, CronFired):
        return TimelineItem(ts=ev.ts, kind="cron", name=ev.job, outcome=ev.outcome)
    if isinstance(ev, WatchdogFired):
        return TimelineItem(ts=ev.ts, kind="watchdog", name=ev.label or ev.session or "?", outcome=ev.outcome)
    if isinstance(ev, RunClosed):
        rate = f"{ev.rate:.0%}" if ev.rate is not None else "n/a"
        return TimelineItem(ts=ev.ts, kind="run", name=ev.run, outcome=rate)
    if isinstance(ev, SweepDone):
        removed = f", {len(ev.removed)} worktrees removed" if ev.removed else ""
        return TimelineItem(ts=ev.ts, kind="sweep", name=ev.cause, outcome=f"{len(ev.killed)} killed{removed}")
    if isinstance(ev, SessionRetried):
        return TimelineItem(ts=ev.ts, kind="retry", name=ev.label or "?", outcome=f"attempt {ev.attempt} ({ev.cause})")
    if isinstance(ev, SessionStateChanged) and ev.new in (SessionState.KILLED, SessionState.TIMED_OUT):
        return TimelineItem(ts=ev.ts, kind="kill", name=ev.label or "?", outcome=ev.new.value)
    if isinstance(ev, WorkspaceChanged) and ev.action not in ("merging",):
        return TimelineItem(ts=ev.ts, kind="merge", name=ev.label or "?", outcome=ev.action)
    if isinstance(ev, NotificationSent):
        return TimelineItem(ts=ev.ts, kind="notify", name=ev.title[:60], outcome=ev.channel if ev.ok else "failed")
    if isinstance(ev, SystemEvent):
        return TimelineItem(ts=ev.ts, kind="system", name=ev.text[:60], outcome=ev.level)
    return None


def event_from_json(text: str | bytes) -> Event:
    return EVENT_ADAPTER.validate_json(text)
