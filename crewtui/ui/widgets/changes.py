"""The Changes view (`c`): what the selected session's branch changed in its workspace, in the right pane.

A summary (branch, counts, merge state and note), the changed files with their +/− counts, and the selected
file's diff, coloured and scrollable (wrapped, so it reads at 80 columns). The diff comes from `runtime.diff(ref)`,
read when the view shows a session and again when that session's state or counted changes move, and is split per
file (crewtui/ui/diffs.py). Keys: in the file list ↑↓ pick a file and pgup/pgdn scroll the diff; enter goes into
the diff, where ↑↓ pgup pgdn home end scroll and ←→ pick a file. What the runtime sends is foreign text, drawn by
diffs.py (cleaned, never markup); a failed read is said in the pane, not in a toast.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from crewtui.api import RuntimeAPI
from crewtui.model import Session
from crewtui.text import clean
from crewtui.ui.calls import FAILED, call_runtime
from crewtui.ui.diffs import (
    REMOVED,
    TROUBLE,
    FileDiff,
    branch_text,
    changes_text,
    diff_text,
    file_prompt,
    has_workspace,
    keys_text,
    merge_keys,
    merge_mark,
    merge_words,
    split_diff,
)
from crewtui.ui.format import DIM, plain

NOTE_STYLE = f"italic {DIM}"
KEYS = [("↑↓", "files"), ("pgup pgdn", "scroll"), ("enter", "the diff")]
NO_WORKSPACE = (
    "{label} has no workspace: it did not run in a git worktree of its own, so there is no branch to review "
    "(sessions of an agent with a workspace, or spawned with --repo, have one)"
)


def summary_text(s: Session) -> Text:
    """The view's head: the branch and what it changed; the merge state with its note (a conflict's last lines);
    the keys."""
    out = branch_text(s)
    counted = changes_text(s.changes)
    if counted is not None:
        out.append(" · ", style=DIM)
        out.append_text(counted)
    mark = merge_mark(s)
    if mark is not None and mark.plain.strip() != "⌥":
        out.append("\n")
        out.append_text(mark)
        if s.merge_note:
            note = clean(s.merge_note, newlines=True).splitlines()
            style = REMOVED if s.merge in TROUBLE else merge_words(s)[1]
            out.append(": ", style=DIM)
            out.append_text(Text("\n").join(plain(line, style) for line in note[-3:]))
    out.append("\n")
    out.append_text(keys_text([*KEYS, *(k for k in merge_keys(s) if k[0] != "c"), ("c", "back")]))
    return out


class FileList(OptionList, inherit_bindings=False):
    """The changed files: ↑↓ pick one. The rest of the keys (pgup/pgdn, enter, ←→) are the pane's."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "Previous file", show=False),
        Binding("down", "cursor_down", "Next file", show=False),
        Binding("home", "first", "First file", show=False),
        Binding("end", "last", "Last file", show=False),
    ]


class DiffView(VerticalScroll, inherit_bindings=False):
    """The selected file's diff: scrolls up and down (its lines wrap, nothing goes off to the side); ←→ are the
    pane's, which pick a file."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "scroll_up", "Scroll up", show=False),
        Binding("down", "scroll_down", "Scroll down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "scroll_home", "Top", show=False),
        Binding("end", "scroll_end", "Bottom", show=False),
    ]


class ChangesPane(Vertical):
    """The summary, the file list and the diff of the session `show_session` was last given (MainView gives it the
    selected one while the view is shown)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "pick(-1)", "Previous file", show=False),
        Binding("right", "pick(1)", "Next file", show=False),
        Binding("pageup", "scroll_diff(-1)", "Scroll the diff up", show=False),
        Binding("pagedown", "scroll_diff(1)", "Scroll the diff down", show=False),
        Binding("enter", "into_diff", "Into the diff", show=False),
    ]

    def __init__(self, runtime: RuntimeAPI, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.runtime = runtime
        self.key: str | None = None  # the session shown
        self.files: list[FileDiff] = []
        self.current = -1  # the file shown, in `files`
        self.loading = False
        self._wanted: tuple[object, ...] | None = None  # what the diff shown (or coming) was read for
        self._summary: object = None
        self._list_wants_focus = False

    def compose(self) -> ComposeResult:
        yield Static("", id="changes-summary")
        yield FileList(id="changes-files")
        with DiffView(id="changes-diff"):
            yield Static("", id="changes-text")

    @property
    def file_list(self) -> FileList:
        return self.query_one("#changes-files", FileList)

    @property
    def diff_view(self) -> DiffView:
        return self.query_one("#changes-diff", DiffView)

    def focus_target(self) -> Widget:
        """Where the focus goes in the view: the file list, or the diff while there is no list."""
        return self.file_list if self.files else self.diff_view

    def open(self) -> None:
        """The view opens: the focus goes to the file list, which takes it when the files come if they are not there
        yet. Both steps go through this widget's queue, so they happen in that order."""
        self._list_wants_focus = True
        self.call_after_refresh(self._focus_opening)

    def _focus_opening(self) -> None:
        self.focus_target().focus()
        if self.files:
            self._list_wants_focus = False

    # ------------------------------------------------------------------------------------ what it shows

    def _set_summary(self, signature: object, text: Text) -> None:
        if signature != self._summary:  # the detail refreshes every second; mostly nothing moved
            self._summary = signature
            self.query_one("#changes-summary", Static).update(text)

    def _set_text(self, text: Text) -> None:
        self.query_one("#changes-text", Static).update(text)
        self.diff_view.scroll_home(animate=False, immediate=True)

    def _set_files(self, files: list[FileDiff], changes: dict[str, Any] | None, keep: str | None = None) -> None:
        self.files = files
        self.current = -1
        listing = self.file_list
        listing.set_options(Option(file_prompt(f, changes)) for f in files)
        listing.display = bool(files)
        if files:
            at = next((i for i, f in enumerate(files) if f.path == keep), 0)
            listing.highlighted = at
            self.show_file(at)
            self.call_after_refresh(self._focus_list)  # after a focus the opening asked for before the files came

    def _focus_list(self) -> None:
        if self._list_wants_focus and self.diff_view.has_focus and self.files:
            self.file_list.focus()
            self._list_wants_focus = False

    def _stop_loading(self, wanted: tuple[object, ...]) -> bool:
        """Show something other than a diff; False when it is shown already (the refresh every second)."""
        if wanted == self._wanted:
            return False
        self._wanted = wanted
        self.loading = False
        self.workers.cancel_group(self, "changes-diff")
        if self.files:
            self._set_files([], None)
        self.file_list.display = False
        return True

    def show_note(self, note: str) -> None:
        """Not a session (a group, nothing selected): one line says what to select."""
        self.key = None
        if self._stop_loading(("note", note)):
            self._set_summary(("note", note), plain(note, NOTE_STYLE))
            self._set_text(Text())

    def show_session(self, s: Session) -> None:
        """Show (or keep showing) what `s` changed; its diff is read again when its state or counts moved."""
        if not has_workspace(s):
            self.key = s.key
            if self._stop_loading((s.key, "no workspace")):
                self._set_summary(("none", s.key), plain(NO_WORKSPACE.format(label=s.label), NOTE_STYLE))
                self._set_text(Text())
            return
        self._set_summary(
            (s.key, s.state, s.branch, s.base, s.base_commit, s.merge, s.merge_note, repr(s.changes)), summary_text(s)
        )
        if s.merge == "discarded":
            self.key = s.key
            if self._stop_loading((s.key, "discarded")):
                note = f"the branch of {s.label} and its worktree were discarded: nothing is left to show"
                self._set_text(plain(note, NOTE_STYLE))
            return
        wanted = (s.key, s.state, s.attempt, json.dumps(s.changes, sort_keys=True, default=str))
        if wanted == self._wanted:
            return
        self._wanted = wanted
        keep = self.files[self.current].path if s.key == self.key and 0 <= self.current < len(self.files) else None
        if s.key != self.key:
            self._set_files([], None)
            self._set_text(Text(f"reading the diff of {clean(s.label)}…", style=NOTE_STYLE))
        self.key = s.key
        self.loading = True
        self._load(s, keep)

    @work(exclusive=True, group="changes-diff", exit_on_error=False)
    async def _load(self, s: Session, keep: str | None) -> None:
        try:
            text = await call_runtime(self.runtime, self._failed, "diff", s.key, what="the diff")
        finally:
            self.loading = False
        if text is FAILED or not self.is_attached or self.key != s.key:
            return
        files = split_diff(str(text))
        self._set_files(files, s.changes, keep)
        if not files:
            what = "nothing committed on it yet" if s.state.live else "no changes against where it started"
            self._set_text(Text.assemble(plain(s.branch, NOTE_STYLE), (f": {what}", NOTE_STYLE)))

    def _failed(self, message: str, **_: Any) -> None:
        """`call_runtime`'s way to say the read failed: in the pane, where the next good read replaces it."""
        self._set_files([], None)
        self._set_text(Text.assemble(("the diff could not be read: ", NOTE_STYLE), plain(message, REMOVED)))

    def show_file(self, index: int) -> None:
        if not 0 <= index < len(self.files) or index == self.current:
            return
        self.current = index
        self._set_text(diff_text(self.files[index]))

    @on(OptionList.OptionHighlighted, "#changes-files")
    def _file_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        self.show_file(event.option_index)

    @on(OptionList.OptionSelected, "#changes-files")
    def _file_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()  # a click: the diff shows it already (highlighted)

    # ------------------------------------------------------------------------------------ keys

    def action_pick(self, step: int) -> None:
        """←→: the previous or next file (the list follows)."""
        if not self.files:
            return
        index = max(0, min(len(self.files) - 1, self.current + step))
        self.file_list.highlighted = index
        self.show_file(index)

    def action_scroll_diff(self, pages: int) -> None:
        view = self.diff_view
        if pages > 0:
            view.scroll_page_down(animate=False)
        else:
            view.scroll_page_up(animate=False)

    def action_into_diff(self) -> None:
        self._list_wants_focus = False
        self.diff_view.focus()
