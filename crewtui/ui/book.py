"""The dashboard's copy of the runtime's sessions, patched by events, plus what the user filters and marks.

Pure Python (no Textual): the app feeds it the events buffered since the last tick, and it answers what
changed, so the widgets repaint only those rows. Keeping this apart from the widgets also lets the tests and
the benchmark drive it without a terminal. It holds the live sessions, a window of recent ended ones and what
the user opened of older history; the rest of that history is only counted (`older`, crewtui/ui/older.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from crewtui.events import (
    CronFired,
    Event,
    RunClosed,
    RuntimeStopped,
    SessionAgentUpdate,
    SessionAnswered,
    SessionOutput,
    SessionRetried,
    SessionSpawned,
    SessionStateChanged,
    SessionSteered,
    SessionYielded,
    WorkspaceChanged,
    timeline_mark,
)
from crewtui.formatting import day_start
from crewtui.model import Session, SessionState, TimelineItem
from crewtui.ui.grouping import Item, build_forest
from crewtui.ui.label_filter import LabelFilter
from crewtui.ui.older import OlderHistory

ANSWERS_KEPT = 50
RETRYABLE = frozenset({SessionState.FAILED, SessionState.LOST, SessionState.KILLED, SessionState.TIMED_OUT})


@dataclass
class Changes:
    """What one batch of events changed, for the widgets to repaint."""

    rows: set[str] = field(default_factory=set)  # sessions whose row or detail changed
    states: bool = False  # some session changed state (or appeared): counts and group roll-ups move
    structure: bool = False  # a session appeared (or its label did): regroup
    output: dict[str, list[tuple[str, list[str]]]] = field(default_factory=dict)  # key -> [(stream, lines)]
    steered: dict[str, list[str]] = field(default_factory=dict)
    agent: set[str] = field(default_factory=set)  # what a session's agent says changed (activity, tokens, needs)
    answered: dict[str, list[SessionAnswered]] = field(default_factory=dict)
    usage: bool = False  # some session's tokens or cost moved: group and run sums, the header's spend
    retried: set[str] = field(default_factory=set)  # a new attempt starts with fresh output files
    marks: list[TimelineItem] = field(default_factory=list)
    schedule: bool = False  # a cron fired or a run closed: reload the jobs and runs
    unknown: set[str] = field(default_factory=set)  # events about sessions this copy has not seen
    # Sessions whose copy lacks what the runtime worked out as they ended (a workspace's counted changes): got again.
    refetch: set[str] = field(default_factory=set)
    stopped: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.rows
            or self.structure
            or self.output
            or self.marks
            or self.schedule
            or self.stopped
            or self.agent
            or self.answered
        )


class SessionBook:
    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.marked: set[str] = set()
        self.pattern: LabelFilter | None = None
        self.state_filter: SessionState | None = None
        self.answers: dict[str, list[SessionAnswered]] = {}  # per session, the last answers seen
        self.older = OlderHistory()  # what is older than the window loaded (crewtui/ui/older.py)

    # ------------------------------------------------------------------------------------ loading

    def load(self, sessions: Iterable[Session]) -> Changes:
        """Take a full listing (start, or a resync): new sessions and changed ones are reported."""
        ch = Changes()
        for s in sessions:
            old = self.sessions.get(s.key)
            if old is None or old.label != s.label:
                ch.structure = True
            if old is None or old != s:
                ch.rows.add(s.key)
            if old is None or old.state != s.state:
                ch.states = True
                if old is not None and SessionState.WAITING in (old.state, s.state):
                    ch.structure = True  # a waiting session sorts to the top of its group
            self.sessions[s.key] = s
        return ch

    def apply(self, events: Iterable[Event]) -> Changes:
        ch = Changes()
        for ev in events:
            self._apply_one(ev, ch)
        return ch

    def _apply_one(self, ev: Event, ch: Changes) -> None:
        mark = timeline_mark(ev)
        if mark is not None:
            ch.marks.append(mark)
        if isinstance(ev, (CronFired, RunClosed)):
            ch.schedule = True
        if isinstance(ev, RuntimeStopped):
            ch.stopped = True
            return
        key = ev.session
        if key is None:
            return
        if isinstance(ev, SessionSpawned):
            snap = ev.snapshot or Session(
                key=key,
                label=ev.label or key,
                parent=ev.parent,
                domain=ev.domain,
                cron_run=ev.cron_run,
                attempt=ev.attempt,
                created_at=ev.ts,
                updated_at=ev.ts,
            )
            old = self.sessions.get(key)
            if old is None or old.label != snap.label:
                ch.structure = True
            self.sessions[key] = snap
            ch.rows.add(key)
            ch.states = True
            return
        s = self.sessions.get(key)
        if s is None:
            # Spawned before we listed, or its spawn event was dropped: ask the runtime for it.
            ch.unknown.add(key)
            return
        if isinstance(ev, SessionStateChanged):
            if SessionState.WAITING in (s.state, ev.new) and s.state != ev.new:
                ch.structure = True  # a waiting session sorts to the top of its group
            if ev.new.terminal:
                s.needs = None
            s.state = ev.new
            s.reason = ev.reason
            s.attempt = ev.attempt
            s.node = ev.node
            s.updated_at = ev.ts or s.updated_at
            if ev.exit_code is not None or ev.new.live:
                s.exit_code = ev.exit_code
            if ev.new == SessionState.RUNNING and s.started_at is None:
                s.started_at = ev.ts
            if ev.new.terminal:
                s.ended_at = ev.ts
                s.yield_on = None
                if s.branch is not None:
                    ch.refetch.add(key)
            elif ev.new == SessionState.PENDING:
                s.ended_at = None
                s.started_at = None
                # A new attempt gets new processes (the runtime clears them too); the event does not carry
                # them, so the app asks for them when it shows the session (`lacks_pids`).
                s.shim_pid = s.agent_pid = s.shim_start = s.agent_start = None
            ch.rows.add(key)
            ch.states = True
        elif isinstance(ev, SessionOutput):
            if ev.lines:
                s.last_line = ev.lines[-1][:500]
                s.last_output_at = ev.ts
                ch.output.setdefault(key, []).append((ev.stream, list(ev.lines)))
                ch.rows.add(key)
        elif isinstance(ev, SessionRetried):
            s.attempt = ev.attempt
            s.next_try_at = ev.next_try_at
            s.shim_pid = s.agent_pid = s.shim_start = s.agent_start = None
            ch.rows.add(key)
            ch.retried.add(key)
        elif isinstance(ev, SessionYielded):
            s.yield_on = list(ev.children)
            ch.rows.add(key)
        elif isinstance(ev, SessionSteered):
            ch.steered.setdefault(key, []).append(ev.text)
        elif isinstance(ev, SessionAgentUpdate):
            s.activity = ev.activity
            s.agent_session = ev.agent_session
            s.turns = ev.turns
            s.tokens = ev.tokens
            s.cost_usd = ev.cost_usd  # the figure of record: the gateway's measure when it has one
            s.needs = ev.needs
            s.usage = ev.usage
            s.gateway_hold = ev.gateway_hold
            s.reported_tokens = ev.reported_tokens
            s.reported_cost_usd = ev.reported_cost_usd
            ch.rows.add(key)
            ch.agent.add(key)
            ch.usage = True
        elif isinstance(ev, WorkspaceChanged):
            self._workspace_changed(s, ev)
            ch.rows.add(key)
        elif isinstance(ev, SessionAnswered):
            # The agent's output says what it asked, not the answer: kept here for the conversation's turns.
            answers = self.answers.setdefault(key, [])
            answers.append(ev)
            del answers[:-ANSWERS_KEPT]
            ch.answered.setdefault(key, []).append(ev)

    @staticmethod
    def _workspace_changed(s: Session, ev: WorkspaceChanged) -> None:
        """A step of its workspace: the merge state, its note and the counted changes, as the runtime keeps them."""
        if ev.branch:
            s.branch = ev.branch
        if ev.changes is not None:
            s.changes = ev.changes
        if ev.merge is not None:
            s.merge = ev.merge
        if ev.action == "queued":
            s.merge_queued_at = ev.ts
        if ev.action == "conflict":
            s.merge_note = f"conflict in {', '.join(ev.files) or '?'}: {ev.note}"  # as the runtime words it
        elif ev.action != "removed":  # a merged branch's cleanup: the note of the merge stays
            s.merge_note = ev.note
        s.updated_at = ev.ts or s.updated_at

    # ------------------------------------------------------------------------------------ filters

    def set_pattern(self, text: str) -> None:
        """Filter labels by a regex (RE2, searched, case-insensitive). Raises FilterError, saying why in one
        line, for a pattern it cannot use."""
        self.pattern = LabelFilter(text) if text else None

    def visible(self, s: Session) -> bool:
        if self.state_filter is not None and s.state != self.state_filter:
            return False
        return self.pattern is None or self.pattern.search(s.label)

    def visible_items(self) -> list[tuple[str, str]]:
        return [(k, s.label) for k, s in self.sessions.items() if self.visible(s)]

    @property
    def filtered(self) -> bool:
        return self.pattern is not None or self.state_filter is not None

    def forest(self) -> list[Item]:
        # A filter cannot say which older sessions it would show: their rows wait until it is cleared.
        first = {k for k, s in self.sessions.items() if s.state == SessionState.WAITING}
        return build_forest(
            self.visible_items(), () if self.filtered else self.older.left, self.older.groups, first=first
        )

    # ------------------------------------------------------------------------------------ summaries

    def counts(self) -> dict[SessionState, int]:
        out: dict[SessionState, int] = {}
        for s in self.sessions.values():
            out[s.state] = out.get(s.state, 0) + 1
        return out

    def waiting(self) -> int:
        """Sessions waiting on a person: the header's "need you"."""
        return sum(1 for s in self.sessions.values() if s.state == SessionState.WAITING)

    def has_agents(self) -> bool:
        """Some session is of an agent with a preset (it reports activity, tokens and cost)."""
        return any(s.preset is not None or s.cost_usd is not None for s in self.sessions.values())

    def cost_today(self, now: float) -> float | None:
        """What the sessions started today (local time) cost, of those that report a cost; None when none does.
        Of the sessions loaded: the live ones and the recent window, which holds today's in all but the busiest
        crews."""
        since = day_start(now)
        total: float | None = None
        for s in self.sessions.values():
            if s.cost_usd is not None and (s.started_at or s.created_at) >= since:
                total = (total or 0.0) + s.cost_usd
        return total

    def node_counts(self) -> dict[str, int]:
        """Live sessions per node, for crews that run on other machines (Ray); empty when all are local."""
        out: dict[str, int] = {}
        for s in self.sessions.values():
            if s.node is not None and s.state.live:
                out[s.node] = out.get(s.node, 0) + 1
        return out

    def members(self, prefix: str, visible_only: bool = True) -> list[Session]:
        """Sessions of a group: the visible ones (what its row sums up and what marking takes), or all of
        them (what a group kill reaches, whatever the filter hides)."""
        head = prefix + "-"
        return [
            s
            for s in self.sessions.values()
            if (s.label == prefix or s.label.startswith(head)) and (not visible_only or self.visible(s))
        ]

    def marked_sessions(self) -> list[Session]:
        return [self.sessions[k] for k in sorted(self.marked) if k in self.sessions]

    def toggle_mark(self, keys: list[str]) -> set[str]:
        """Mark the keys, or unmark them all when every one is already marked (a group toggles as one)."""
        keys = [k for k in keys if k in self.sessions]
        if keys and all(k in self.marked for k in keys):
            self.marked.difference_update(keys)
        else:
            self.marked.update(keys)
        return set(keys)


def usage(sessions: Iterable[Session]) -> tuple[int, float | None]:
    """(tokens, cost) summed over sessions: a group's or a cron run's spend; cost None when none reports one."""
    tokens = 0
    cost: float | None = None
    for s in sessions:
        if s.tokens is not None:
            tokens += s.tokens.total
        if s.cost_usd is not None:
            cost = (cost or 0.0) + s.cost_usd
    return tokens, cost


def lacks_pids(s: Session) -> bool:
    """A session that has (or had) processes, but this copy does not know them: state events carry no pids."""
    return s.state != SessionState.PENDING and s.shim_pid is None and s.agent_pid is None


def completion_rate(counts: dict[SessionState, int]) -> float | None:
    """done / ended: what share of the sessions that finished finished well (None while none has ended)."""
    ended = sum(n for st, n in counts.items() if st.terminal)
    return counts.get(SessionState.DONE, 0) / ended if ended else None
