"""The tries of a best-of group, one card each: what the compare view (screens/compare.py) shows per try.

`try_lines` is pure: the state and how long it ran, tokens and cost, where its merge stands (the check's result:
merged, check failed with the last lines of its output, a conflict...), how much it changed (files, insertions,
deletions, commits) and its biggest files with their counts. `TryCard` draws those lines at the width it is given,
one row each (a long path keeps its end: the file's name), and `TryColumn` is the widget that holds one. Labels,
paths and notes are the agents' and the repository's text: drawn through `plain`, never read as markup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text
from textual.widgets import Static

from crewtui.model import Session
from crewtui.text import clean
from crewtui.ui.diffs import BRANCH, MARK, REMOVED, TROUBLE, changes_text, counts_text, files_total, merge_words
from crewtui.ui.format import DIM, plain, state_text, usage_text

NOTE_LINES = 3  # of a merge note (a failed check's output ends with its summary): the last ones
FileLine = tuple[Text, str]  # a file's counts, and its path (cut to the width when drawn)
Line = Text | FileLine


def try_number(s: Session) -> tuple[int, str]:
    """Where a try sorts in its group: LABEL-2 before LABEL-10."""
    found = re.search(r"-(\d+)$", s.label)
    return (int(found.group(1)) if found else 1_000, s.label)


def run_time(seconds: float) -> str:
    """ "42s", "11m02s", "1h05m": how long a try ran, to the second while that matters for comparing them."""
    secs = max(0, int(seconds))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    return f"{secs // 3600}h{secs % 3600 // 60:02d}m"


def time_text(s: Session, now: float) -> Text:
    """ "ran 11m02s", "14m10s so far" while it runs, "not started" while it waits for a slot."""
    if s.started_at is None:
        return Text("not started", style=DIM)
    if s.state.terminal:
        return Text(f"ran {run_time((s.ended_at or s.updated_at) - s.started_at)}", style=DIM)
    return Text(f"{run_time(now - s.started_at)} so far", style=DIM)


def merge_state_text(s: Session) -> Text:
    """ "⌥ check failed" in red, "⌥ merged" in green, "⌥ unmerged"; "⌥ at work in its worktree" while it runs."""
    out = Text(MARK + " ", style=BRANCH)
    words, style = merge_words(s)
    if s.state.live and not words:
        out.append("at work in its worktree", style=BRANCH)
    else:
        out.append(words, style=style)
    return out


def note_lines(s: Session, limit: int = NOTE_LINES) -> list[Text]:
    """The last lines of its merge note (a failed check's output, a conflict's files, why it waits)."""
    if not s.merge_note or s.state.live:
        return []
    note = [line for line in clean(s.merge_note, newlines=True).splitlines() if line.strip()]
    style = REMOVED if s.merge in TROUBLE else merge_words(s)[1]
    return [plain(line, style) for line in note[-limit:]]


def size_text(s: Session) -> Text:
    """ "3 files +18 −6 · 2 commits"; what stands in for it before it is counted."""
    counted = changes_text(s.changes)
    if counted is not None:
        return counted
    return Text("changes counted when it ends" if s.state.live else "no changes counted", style=DIM)


def spend_text(s: Session) -> Text:
    """ "24.6k tok $0.1402", or a dash when its agent reports neither."""
    spent = usage_text(s.tokens.total if s.tokens is not None else 0, s.cost_usd)
    return spent if spent.plain else Text("tokens -", style=DIM)


def file_lines(changes: dict[str, Any] | None, limit: int) -> list[Line]:
    """Its biggest files first (insertions + deletions; binary ones last), then "+k more files"."""
    entries = [f for f in (changes or {}).get("files") or () if isinstance(f, dict)]

    def counts(f: dict[str, Any]) -> tuple[int, int]:
        try:
            return int(f.get("insertions", 0)), int(f.get("deletions", 0))
        except (TypeError, ValueError):
            return 0, 0

    entries.sort(key=lambda f: -max(0, sum(counts(f))))
    out: list[Line] = [(counts_text(*counts(f), width=4), str(f.get("path") or "?")) for f in entries[:limit]]
    if files_total(changes) > limit:
        more = files_total(changes) - min(limit, len(entries))
        out.append(Text(f"+{more} more file{'' if more == 1 else 's'}", style=DIM))
    return out


def try_lines(
    s: Session, now: float, *, files: int, notes: int = NOTE_LINES, label: bool = False, compact: bool = False
) -> list[Line]:
    """One try's card. `label` starts it with the label (stacked; a column has it in its border). `compact`: two
    lines (stacked, not selected). `notes`: rows kept for the merge note, so the cards of a group line up."""
    head = Text()
    if label:
        head.append_text(plain(s.label, "bold"))
        head.append("  ")
    head.append_text(state_text(s.state))
    head.append("  ")
    head.append_text(time_text(s, now))
    if compact:
        rest = Text()
        rest.append_text(merge_state_text(s))
        for part in (size_text(s), spend_text(s)):
            rest.append(" · ", style=DIM)
            rest.append_text(part)
        return [head, rest]
    said = note_lines(s, notes)
    lines: list[Line] = [head, spend_text(s), merge_state_text(s), *said]
    lines += [Text() for _ in range(notes - len(said))]
    lines.append(size_text(s))
    lines += file_lines(s.changes, files)
    return lines


def fit_path(path: str, width: int) -> str:
    """A path cut to `width` cells from its start: "…/api/handlers_102.py" (its file name is what tells)."""
    path = clean(path)
    if len(path) <= width:
        return path
    return "…" + path[-(width - 1) :] if width > 1 else "…"


@dataclass
class TryCard:
    """A try's lines drawn one row each at the width given, padded to `height` rows (cards of a group line up)."""

    lines: list[Line] = field(default_factory=list)
    height: int = 0

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        for line in self.lines:
            if isinstance(line, tuple):
                counts, path = line
                text = counts.copy()
                text.append(" ")
                text.append_text(plain(fit_path(path, max(1, width - counts.cell_len - 1))))
            else:
                text = line.copy()
            text.no_wrap = True
            text.overflow = "ellipsis"
            yield text
        for _ in range(self.height - len(self.lines)):
            yield Text()


class TryColumn(Static):
    """One try of the group: a column (its label in the border), or a block when the tries are stacked."""

    def __init__(self, key: str) -> None:
        super().__init__(classes="try")
        self.key = key

    def show(self, card: TryCard, *, title: Text | None, selected: bool) -> None:
        self.border_title = title
        self.set_class(selected, "-selected")
        self.update(card)
