"""How `crewtui ctl` prints sessions, cron jobs, runs, sweeps and events for a person (`--json` is for scripts).

Fixed-width columns, one line per item; times, ages and rates come from `crewtui.formatting`, as the
dashboard's do, so both say the same thing the same way. Labels, names, output and reasons are cleaned of
terminal escapes (`crewtui.text.clean`) before they are padded, so the columns measure what is shown.
"""

from __future__ import annotations

import json
import time

from crewtui.events import Event
from crewtui.formatting import age, clock_time, date_time, money, percent
from crewtui.model import STATE_SYMBOLS, CronJobInfo, CronRun, Session, SweepItem, Turn
from crewtui.text import clean, json_safe


def node_width(sessions: list[Session]) -> int:
    """The NODE column's width: 0 (no column) unless some session runs on another machine (the Ray backend)."""
    if not any(s.node for s in sessions):
        return 0
    return max((len(clean(s.node or "local")) for s in sessions), default=0)


def session_header(node_width: int = 0) -> str:
    node_head = f"{'NODE':<{node_width}}  " if node_width else ""
    return f"{'KEY':<28}  {'LABEL':<44}   {'STATE':<9} {'#':>2}  {'AGE':>5}  {node_head}LAST OUTPUT"


def session_line(s: Session, node_width: int = 0) -> str:
    sym = STATE_SYMBOLS[s.state]
    node = f"{clean(s.node or 'local'):<{node_width}}  " if node_width else ""
    return (
        f"{clean(s.key)}  {clean(s.label):<44} {sym} {s.state.value:<9} {s.attempt:>2}  "
        f"{age(s.created_at, time.time()):>5}  {node}{clean(what_it_does(s))[:60]}"
    )


def what_it_does(s: Session) -> str:
    """The last column: its cost (an agent with a preset, or measured by the gateway), then why it waits in the
    gateway, else an agent's activity, else its last output line."""
    metered = s.preset is not None or s.usage is not None
    cost = f"{money(s.cost_usd)} " if s.cost_usd is not None and metered else ""
    if s.gateway_hold:
        return cost + s.gateway_hold
    return cost + ((s.activity or "") if s.preset is not None else (s.last_line or ""))


def job_header() -> str:
    return f"{'NAME':<24} {'SCHEDULE':<36} {'PAYLOAD':<7} {'NEXT FIRE':<19}  {'RUNS':>4}  LAST RATE"


def job_line(j: CronJobInfo) -> str:
    return (
        f"{clean(j.name):<24} {clean(j.schedule):<36} {j.payload:<7} {date_time(j.next_fire):<19}  {j.runs:>4}  "
        f"{percent(j.last_rate)}"
    )


def run_header() -> str:
    return (
        f"{'RUN':<28} {'FIRED':<19}  {'RATE':>5}  {'SPAWNED':>7} {'DONE':>4} {'FAILED':>6} {'T/O':>3} "
        f"{'KILLED':>6} {'LOST':>4} {'LIVE':>4}  STATE"
    )


def run_line(r: CronRun) -> str:
    c = r.counts
    return (
        f"{clean(r.id):<28} {date_time(r.nominal):<19}  {percent(r.rate):>5}  {c.get('spawned', 0):>7} "
        f"{c.get('done', 0):>4} {c.get('failed', 0):>6} {c.get('timed_out', 0):>3} {c.get('killed', 0):>6} "
        f"{c.get('lost', 0):>4} {c.get('running', 0):>4}  {'final' if r.final else 'open'}"
    )


def event_line(ev: Event) -> str:
    """`ctl watch`: time, kind, whose, and the rest of the event as compact JSON."""
    detail = {
        k: v
        for k, v in ev.model_dump(mode="json").items()
        if k not in {"seq", "ts", "kind", "session", "label"} and v not in (None, [], "")
    }
    whose = clean(ev.label or ev.session or "")
    return f"{clock_time(ev.ts)} {ev.kind:<22} {whose:<40} {json_safe(json.dumps(detail, ensure_ascii=False))}"


_ROLE_MARKS = {
    "user": "you",
    "assistant": "agent",
    "tool": "tool",
    "tool_result": "  ->",
    "permission": "asks",
    "answer": "answer",
    "system": "note",
    "error": "  !!",
}


def turn_line(turn: Turn) -> str:
    """`ctl history`: one turn of an agent's conversation, marked by who said it (its text cleaned, one line)."""
    name = f"{clean(turn.name)} " if turn.name else ""
    text = clean(" ".join(turn.text.split()))  # one line: newlines folded first, then what remains made visible
    return f"{_ROLE_MARKS.get(turn.role, turn.role):>6} {name}{text[:300]}"


SWEEP_VERBS = {"kill": ("would kill", "killed"), "remove": ("would remove", "removed"), "keep": ("keeps", "kept")}


def sweep_lines(items: list[SweepItem], dry_run: bool) -> list[str]:
    """One line per thing the sweep kills, removes (a worktree) or keeps (a worktree with work not merged)."""
    out = []
    for item in items:
        verb = SWEEP_VERBS[item.action][0 if dry_run else 1]
        what = "" if item.kind == "stale" else " worktree of"
        out.append(f"{verb}{what} {item.key}  {clean(item.label):<44} {clean(item.reason)}")
    return out


def sweep_summary(items: list[SweepItem]) -> str | None:
    """What a sweep would do, for its confirmation ("kill 2 stale sessions and remove 1 worktree"); None: nothing."""
    kills = sum(1 for i in items if i.action == "kill")
    removes = sum(1 for i in items if i.action == "remove")
    parts = [f"kill {kills} stale session{'s' if kills != 1 else ''}"] if kills else []
    parts += [f"remove {removes} worktree{'s' if removes != 1 else ''}"] if removes else []
    return " and ".join(parts) or None
