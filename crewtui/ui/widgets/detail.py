"""The right pane: the selected session's (or group's) detail, and its live transcript tail.

Everything here but our own words is foreign (agent output, labels, reasons, results, steers): it is shown
through `plain(...)`, never as markup and with its terminal escapes removed.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import events, on
from textual.widgets import RichLog, Static

from crewtui.events import SessionAnswered
from crewtui.formatting import age, clock_time, date_time, money
from crewtui.model import History, Session, SessionState, Turn
from crewtui.ui.book import completion_rate
from crewtui.ui.diffs import branch_text, changes_text, has_workspace, keys_text, merge_text, trouble_block
from crewtui.ui.format import (
    COST_COLOR,
    DIM,
    HOLD_PAUSED_COLOR,
    STATE_COLORS,
    WAITING_COLOR,
    compact_json,
    hold_style,
    plain,
    rate_text,
    rollup,
    state_text,
    tokens_detail,
)

STDERR_STYLE = "#e06c75"
NOTE_STYLE = f"italic {DIM}"


def _kv(rows: list[tuple[str, RenderableType]]) -> Table:
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(style=DIM, justify="right", no_wrap=True, width=8)
    grid.add_column(ratio=1, overflow="ellipsis", no_wrap=True)
    for name, value in rows:
        grid.add_row(name, value)
    return grid


def needs_block(s: Session) -> Text | None:
    """What a waiting session asks, set apart above its facts, with the keys that answer it; None otherwise."""
    if s.state != SessionState.WAITING:
        return None
    needs = s.needs or {}
    question = needs.get("kind") == "question"
    head = Text(" ! ", style="bold #282c34 on #ff9e64")
    if not needs:
        head.append(" waits for you", style=f"bold {WAITING_COLOR}")
    elif question:
        head.append(" asks you", style=f"bold {WAITING_COLOR}")
    else:
        head.append(" asks to use ", style=f"bold {WAITING_COLOR}")
        head.append_text(plain(str(needs.get("tool") or "a tool"), "bold"))
    if needs.get("more"):
        head.append(f"  (+{needs['more']} more pending)", style=DIM)
    if needs.get("id"):
        head.append("  request ", style=DIM)
        head.append_text(plain(str(needs["id"]), DIM))
    body = Text()
    if question:
        body.append_text(plain(str(needs.get("text") or ""), "bold", newlines=True))
    elif needs.get("input") is not None:
        body.append_text(plain(compact_json(needs["input"], 240), "#e5c07b"))
    keys = Text()
    for key, words in (("a", "answer" if question else "approve"), ("d", "deny (with a message)")):
        if keys:
            keys.append(" · ", style=DIM)
        keys.append(key, style="bold #e5c07b")
        keys.append(f" {words}", style=DIM)
    out = Text("\n").join([head, *([body] if body else []), keys])
    out.append("\n")
    return out


def paused_block(s: Session) -> Text | None:
    """A session paused in the gateway over its budget, set apart above its facts (it needs a person, as a waiting
    one does), with the key that lets it go on; None otherwise. The hold is the runtime's words: foreign text."""
    hold = s.gateway_hold
    if not hold or not hold.startswith("paused"):
        return None
    head = Text()
    head.append(" $ ", style=f"bold #282c34 on {HOLD_PAUSED_COLOR}")  # over its budget
    head.append(" paused in the model gateway", style=f"bold {HOLD_PAUSED_COLOR}")
    head.append("  R", style="bold #e5c07b")
    head.append(" resumes it", style=DIM)
    out = Text("\n").join([head, plain(hold, hold_style(hold))])
    out.append("\n")
    return out


def spend_rows(s: Session) -> list[tuple[str, RenderableType]]:
    """What a session spent, of record: its cost and tokens; when the gateway measured them, how many requests it
    counted, and what the agent itself reported when that differs."""
    spend = Text(money(s.cost_usd), style=COST_COLOR if s.cost_usd is not None else DIM)
    if s.usage is None:
        spend.append(f"  {tokens_detail(s.tokens)} tokens", style=DIM)
        return [("spent", spend)]
    n = s.usage.requests
    spend.append(f"  measured by the gateway: {n:,} request{'' if n == 1 else 's'}", style=DIM)
    rows: list[tuple[str, RenderableType]] = [("spent", spend), ("tokens", Text(tokens_detail(s.tokens), style=DIM))]
    if s.reported_cost_usd is not None and money(s.reported_cost_usd) != money(s.cost_usd):
        said = Text(money(s.reported_cost_usd), style="#d19a66")
        said.append(" by its agent's count", style=DIM)
        if s.reported_tokens is not None:
            said.append(f"  {tokens_detail(s.reported_tokens)}", style=DIM)
        rows.append(("reported", said))
    return rows


def workspace_rows(s: Session) -> list[tuple[str, RenderableType]]:
    """A session in a workspace: its branch, what it changed, where its merge stands (and the keys)."""
    counted = changes_text(s.changes)
    if counted is None:
        counted = Text("counted when it ends" if s.state.live else "-", style=DIM)
    rows: list[tuple[str, RenderableType]] = [("branch", branch_text(s)), ("changes", counted)]
    if s.best_of is not None:  # one of several tries of one task (`ctl spawn --best-of N`)
        tries = Text("a try of ", style=DIM)
        tries.append_text(plain(s.best_of, "bold"))
        tries.append("  ")
        tries.append_text(keys_text([("b", "compare the tries")]))
        rows.insert(0, ("best of", tries))
    if trouble_block(s) is None:  # a conflict or a failed check says it in a block above, with its keys
        rows.append(("merge", merge_text(s)))
    return rows


class SessionDetail(Static):
    """Key facts of one session: what it is, where it stands, how it ended."""

    _shown: tuple[object, ...] | None = None

    def _show(self, signature: tuple[object, ...], renderable: RenderableType) -> None:
        # An update re-lays out the screen; the once-a-second refresh mostly changes nothing.
        if signature != self._shown:
            self._shown = signature
            self.update(renderable)

    def show_session(self, s: Session, now: float) -> None:
        state = state_text(s.state)
        # A user's retry may go past max_attempts (that bounds the watchdog's retries, not the user's).
        of = f"/{s.max_attempts}" if s.attempt <= s.max_attempts else ""
        state.append(f"  attempt {s.attempt}{of}", style=DIM)
        if s.queue_position and s.state == SessionState.PENDING:
            state.append(f"  queue #{s.queue_position}", style=DIM)
        times = f"created {clock_time(s.created_at)} ({age(s.created_at, now)} ago)"
        if s.ended_at:
            times += f" · ended {clock_time(s.ended_at)}"
        elif s.last_output_at:
            times += f" · last output {age(s.last_output_at, now)} ago"
        pids = "-"
        if s.shim_pid or s.agent_pid:
            pids = f"agent {s.agent_pid or '-'} · shim {s.shim_pid or '-'}"
        where = (
            " · ".join(
                x
                for x in (
                    f"agent {s.agent}" if s.agent else "",
                    f"pool {s.pool}" if s.pool else "",
                    f"domain {s.domain}" if s.domain else "",
                )
                if x
            )
            or "-"
        )
        exit_text = Text(
            "-" if s.exit_code is None else str(s.exit_code),
            style="" if s.exit_code in (None, 0) else STATE_COLORS[SessionState.FAILED],
        )
        result = None if s.result is None else json.dumps(s.result, ensure_ascii=False, separators=(",", ":"))
        if result is None and "result" in s.trimmed:  # a listing carried only its size
            result = f"{s.result_bytes or 0:,} bytes: crewtui ctl result {s.label}"
        rows: list[tuple[str, RenderableType]] = [
            ("key", plain(s.key, "bold")),
            ("label", plain(s.label, "bold")),
            ("state", state),
            ("parent", plain(s.parent, missing="-")),
            ("runs on", plain(where)),
            *([("cwd", plain(s.cwd))] if s.cwd else []),
            *([("node", plain(s.node))] if s.node else []),
            ("pids", Text(pids)),
            ("exit", exit_text),
            ("reason", plain(s.reason, "#d19a66" if s.reason else "", missing="-")),
            ("result", plain(result, "#98c379" if result is not None else "", missing="-")),
            ("time", Text(times, style=DIM)),
        ]
        if s.cron_run:
            rows.insert(4, ("cron run", plain(s.cron_run)))
        if has_workspace(s):
            at = next(i for i, (name, _) in enumerate(rows) if name == "pids")
            rows[at:at] = workspace_rows(s)
        if s.preset is not None:
            rows = self._agent_rows(s, rows)
        else:
            # A plain argv agent whose model requests go through the gateway: what the gateway measured.
            extra = spend_rows(s) if s.usage is not None else []
            if s.gateway_hold and not s.gateway_hold.startswith("paused"):
                extra.insert(0, ("gateway", plain(s.gateway_hold, hold_style(s.gateway_hold))))
            at = next((i for i, (name, _) in enumerate(rows) if name == "state"), 2) + 1
            rows[at:at] = extra
        blocks = [b for b in (needs_block(s), paused_block(s), trouble_block(s)) if b is not None]
        renderable: RenderableType = Group(*blocks, _kv(rows)) if blocks else _kv(rows)
        self._show((*(str(b) for b in blocks), *(str(v) for _, v in rows)), renderable)

    @staticmethod
    def _agent_rows(s: Session, rows: list[tuple[str, RenderableType]]) -> list[tuple[str, RenderableType]]:
        """A preset session's rows: what its agent does and spent instead of what is empty while it runs."""
        keep = [
            (name, value)
            for name, value in rows
            if not (
                (name == "parent" and s.parent is None)
                or (name in ("exit", "result") and s.state.live and str(value) == "-")
            )
        ]
        agent = plain(s.preset, "bold")
        agent.append(f" · {s.turns} turn{'' if s.turns == 1 else 's'}", style="")
        if s.agent_session:
            agent.append(" · conversation ", style=DIM)
            agent.append_text(plain(s.agent_session))
        if s.unparsed:
            agent.append(f" · {s.unparsed} unparsed line{'' if s.unparsed == 1 else 's'}", style=DIM)
        activity = plain(s.activity, WAITING_COLOR if s.state == SessionState.WAITING else "#abb2bf", missing="-")
        at = next((i for i, (name, _) in enumerate(keep) if name == "state"), 2) + 1
        hold: list[tuple[str, RenderableType]] = []
        if s.gateway_hold and not s.gateway_hold.startswith("paused"):  # a paused one is a block above
            hold.append(("gateway", plain(s.gateway_hold, hold_style(s.gateway_hold))))
        keep[at:at] = [*hold, ("doing", activity), ("agent", agent), *spend_rows(s)]
        return keep

    def show_group(self, prefix: str, counts: dict[SessionState, int], older: int = 0) -> None:
        total = sum(counts.values())
        live = sum(n for st, n in counts.items() if st.live)
        rate = rate_text(completion_rate(counts), 0)
        rate.append("  done / ended", style=DIM)
        rows: list[tuple[str, RenderableType]] = [
            ("group", plain(prefix, "bold #56b6c2")),
            ("sessions", Text(f"{total} ({live} live)")),
            ("states", rollup(counts) or Text("-")),
            ("rate", rate),
            ("keys", Text("k kills the group · space marks it", style=DIM)),
        ]
        if older:
            rows.insert(2, ("older", Text(f"{older:,} ended, not loaded (its last row loads them)", style=DIM)))
        self._show(("group", prefix, *(str(v) for _, v in rows)), _kv(rows))

    def show_older(self, prefix: str, left: int, loading: bool, before: float | None, page: int) -> None:
        """A group's older row: how many of its ended sessions are older than what is loaded."""
        what = "them" if left <= page else f"the next {page}"
        rows: list[tuple[str, RenderableType]] = [
            ("group", plain(prefix, "bold #56b6c2")),
            ("older", Text(f"{left:,} ended session{'' if left == 1 else 's'}, not loaded")),
            ("created", Text(f"before {date_time(before)}" if before is not None else "-", style=DIM)),
            ("keys", Text("loading…" if loading else f"enter loads {what}, newest first", style=DIM)),
        ]
        self._show(("older", prefix, *(str(v) for _, v in rows)), _kv(rows))

    def show_nothing(self, note: str) -> None:
        self._show(("note", note), plain(note, NOTE_STYLE))


TOOL_RESULT_LINES = 6  # a tool's output is shown cut to its first lines: the turns around it matter more

# role -> (the mark before the text, its style, the text's style)
_TURN_STYLE: dict[str, tuple[str, str, str]] = {
    "user": ("› you ", "bold #c678dd", "#c678dd"),
    "assistant": ("", "", ""),
    "tool": ("⚙ ", "bold #61afef", "#61afef"),
    "tool_result": ("  ↳ ", DIM, DIM),
    "permission": ("! asks ", f"bold {WAITING_COLOR}", WAITING_COLOR),
    "answer": ("» ", "bold #98c379", "#98c379"),
    "system": ("· ", DIM, f"italic {DIM}"),
    "error": ("✘ ", f"bold {STDERR_STYLE}", STDERR_STYLE),
}


def turn_text(turn: Turn) -> Text:
    """One turn of a conversation, readable: the agent's words as they are, a tool call with its name and
    input, its result cut to a few lines, a permission asked and how it was answered. Foreign text throughout:
    cleaned, never markup."""
    mark, mark_style, style = _TURN_STYLE.get(turn.role, ("", "", ""))
    text = turn.text
    if turn.role in ("tool_result", "error"):
        lines = text.splitlines()
        if len(lines) > TOOL_RESULT_LINES:
            text = "\n".join(lines[:TOOL_RESULT_LINES]) + f"\n… {len(lines) - TOOL_RESULT_LINES} more lines"
    out = Text(mark, style=mark_style)
    if turn.name and turn.role == "tool":
        out.append_text(plain(turn.name, "bold"))
        out.append(" ")
    body = plain(text, style, newlines=True)
    if turn.role == "tool_result" and "\n" in text:
        body = Text("\n    ").join(body.split("\n"))  # the result's lines stay under its arrow
    out.append_text(body)
    return out


def answer_text(answer: SessionAnswered) -> Text:
    """ "» approved" / "» denied: not now": how a person answered a request."""
    out = Text("» ", style="bold #98c379" if answer.allow else f"bold {STDERR_STYLE}")
    out.append("approved" if answer.allow else "denied", style="#98c379" if answer.allow else STDERR_STYLE)
    if answer.message:
        out.append(": ")
        out.append_text(plain(answer.message))
    return out


class Transcript(RichLog):
    """The selected session's output: its history tail, then live lines as they come.

    RichLog wraps a line once, at the width it has when written; the pane's width changes (a resize, or a
    narrow terminal's tab coming into view), so the lines are kept and re-wrapped when it does.
    """

    MAX_LINES = 2000

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            id=id, max_lines=self.MAX_LINES, wrap=True, markup=False, highlight=False, auto_scroll=True, min_width=20
        )
        self.key: str | None = None
        self.turns = False  # it shows a preset session's conversation (turns), which live lines do not extend
        self._entries: deque[Text] = deque(maxlen=self.MAX_LINES)
        self._wrapped_at = 0

    def _put(self, text: Text) -> None:
        self._entries.append(text)
        self.write(text)

    def _reset(self) -> None:
        self._entries.clear()
        self.clear()

    @on(events.Resize)
    def _rewrap(self, event: events.Resize) -> None:
        width = event.size.width
        if width and width != self._wrapped_at:
            self._wrapped_at = width
            self.clear()
            for text in self._entries:
                self.write(text, scroll_end=False)
            # Now, not after the next refresh: a tab coming into view must show the tail at once, not the top
            # for a frame (or for good, if a screenshot or a slow machine catches that frame).
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    def show_note(self, note: str) -> None:
        self.key = None
        self.turns = False
        self._reset()
        self._put(plain(note, NOTE_STYLE))

    def show_history(self, history: History, answers: Sequence[SessionAnswered] = ()) -> None:
        """The tail of a session's output; a preset session's as its conversation's turns, with the answers this
        dashboard saw given to its permission requests."""
        self.key = history.key
        self.turns = history.turns is not None
        self._reset()
        if history.turns is not None:
            self._show_turns(history, answers)
            return
        if not history.lines and not history.stderr:
            self._put(Text("no output yet", style=NOTE_STYLE))
        for line in history.lines:
            self._put(plain(line))
        if history.stderr:
            self._put(Text(f"── stderr, last {len(history.stderr)} lines ──", style=NOTE_STYLE))
            for line in history.stderr:
                self._put(plain(line, STDERR_STYLE))

    def _show_turns(self, history: History, answers: Sequence[SessionAnswered]) -> None:
        """A preset session's conversation as its turns, not the JSON lines its agent printed."""
        turns = history.turns or []
        if not turns:
            self._put(Text("no turns yet", style=NOTE_STYLE))
        # The agent's output says what it asked, not what it was told. The runtime puts each answer after its
        # request (matched by id); from a runtime that does not, the answers seen here go after the last requests
        # that were answered (one still waits while the session does).
        if any(t.role == "answer" or t.ref for t in turns):
            answers = ()
        asked = [i for i, t in enumerate(turns) if t.role == "permission"]
        if history.state == SessionState.WAITING and asked:
            asked.pop()
        n = min(len(asked), len(answers))
        after = dict(zip(asked[len(asked) - n :], answers[len(answers) - n :], strict=True))
        for i, turn in enumerate(turns):
            self._put(turn_text(turn))
            if i in after:
                self._put(answer_text(after[i]))
        if history.stderr:
            self._put(Text(f"── stderr, last {len(history.stderr)} lines ──", style=NOTE_STYLE))
            for line in history.stderr:
                self._put(plain(line, STDERR_STYLE))

    def append(self, stream: str, lines: list[str]) -> None:
        style = STDERR_STYLE if stream == "stderr" else ""
        for line in lines:
            self._put(plain(line, style))

    def append_answer(self, answer: SessionAnswered) -> None:
        self._put(answer_text(answer))

    def append_steer(self, text: str) -> None:
        self._put(plain(f"» steered: {text}", "bold #c678dd"))
