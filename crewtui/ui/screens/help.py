"""The `?` screen: every key from the action registry, and what the symbols and colours mean."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from crewtui.model import STATE_SYMBOLS, TimelineItem
from crewtui.ui.actions import ACTIONS, key_label
from crewtui.ui.format import DIM, STATE_COLORS, STATE_ORDER
from crewtui.ui.widgets.timeline import mark_symbol

KEY_STYLE = "bold #e5c07b"


def key_span(keys: list[str]) -> str:
    """ "1-9,0": runs of consecutive keys as first-last, the rest listed."""
    runs: list[list[str]] = []
    for key in keys:
        if runs and len(key) == 1 and len(runs[-1][-1]) == 1 and ord(key) == ord(runs[-1][-1]) + 1:
            runs[-1].append(key)
        else:
            runs.append([key])
    return ",".join(r[0] if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def keys_table() -> Table:
    table = Table(box=None, show_header=False, expand=True, pad_edge=False)
    table.add_column(width=7, no_wrap=True)
    table.add_column(ratio=1)
    grouped: set[str] = set()
    for spec in ACTIONS:
        if spec.group is not None:
            # The state filters read better as one line than as nine.
            if spec.group.description in grouped:
                continue
            grouped.add(spec.group.description)
            members = [a for a in ACTIONS if a.group == spec.group]
            keys = key_span([key_label(a) for a in members])
            body = Text("State filter (its key again: all): ")
            body.append(" · ".join(f"{key_label(a)} {a.description}" for a in members), style=DIM)
            table.add_row(Text(keys, style=KEY_STYLE), body)
            continue
        table.add_row(Text(key_label(spec), style=KEY_STYLE), Text(spec.help))
    table.add_row(Text("ctrl+p", style=KEY_STYLE), Text("Command palette: every action above, by name"))
    table.add_row(Text("←/→", style=KEY_STYLE), Text("Fold / unfold a group (or go to its parent)"))
    return table


def legend() -> Text:
    t = Text()
    t.append("states  ", style=f"bold {DIM}")
    for st in STATE_ORDER:
        t.append(f"{STATE_SYMBOLS[st]} {st.value}  ", style=STATE_COLORS[st])
    t.append("\nrows    ", style=f"bold {DIM}")
    t.append(
        "label · state · #attempt · age · activity or last output (or where it waits in the model gateway) · cost;  "
        "a group: sessions · done/ended rate · states · tokens and cost;  ⌥ a session's own git branch and where its "
        "merge stands (unmerged, queued, merged, conflict…): c shows its changes\n",
        style=DIM,
    )
    t.append("marks   ", style=f"bold {DIM}")
    for kind, outcome, words in (
        ("cron", "ran", "fired"),
        ("cron", "skipped", "skipped"),
        ("run", "90%", "run ≥80%"),
        ("run", "40%", "run <50%"),
        ("watchdog", "noop", "watchdog ok"),
        ("watchdog", "retried", "retried"),
        ("watchdog", "timed_out", "timed out"),
        ("kill", "killed", "kill"),
        ("sweep", "1 killed", "sweep"),
        ("merge", "merged", "merged"),
        ("merge", "conflict", "merge conflict"),
        ("notify", "terminal", "notified"),
    ):
        sym, color, _ = mark_symbol(TimelineItem(ts=0, kind=kind, name="", outcome=outcome))  # type: ignore[arg-type]
        t.append(f"{sym} {words}  ", style=color)
    t.append("◇○□ dim: upcoming", style=DIM)
    return t


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "close", "Close", id="help-close")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="help-dialog"):
            yield Label("crewtui keys", classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                yield Static(keys_table(), id="help-keys")
                yield Static(legend(), id="help-legend")
            yield Static(Text("escape closes", style=DIM), classes="dialog-text")

    def action_close(self) -> None:
        self.dismiss(None)
