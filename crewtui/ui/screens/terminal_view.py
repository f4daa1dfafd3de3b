"""The main screen's terminal sessions and the sessions that need you: peek, attach, the next waiting session.

`TerminalView` sits between `MainView` (main_view.py: panes, events, selection) and `MainScreen` (main.py: the
actions on sessions). A selected terminal session (`tty = true`) shows its screen in the right pane instead of its
transcript (widgets/peek.py). `enter` on one attaches: the dashboard suspends itself (Textual's `App.suspend`),
says in one line how to detach, runs `crewtui.attaching.attach` (dtach, in a thread: an embedded runtime lives on
this event loop and must go on meanwhile, nothing is drawn on the lent terminal) and comes back as it was. A
dashboard served in a browser, or a terminal that cannot be suspended, says how to attach from a shell instead.
`w` puts the cursor on the next session that waits on a person, across groups, wrapping around.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from textual import work
from textual.app import SuspendNotSupported
from textual.widget import Widget
from textual.widgets.tree import TreeNode

from crewtui import attaching
from crewtui.errors import CrewError
from crewtui.model import Session, SessionState
from crewtui.text import clean
from crewtui.ui.calls import FAILED
from crewtui.ui.screens.main_view import MainView
from crewtui.ui.widgets.peek import TerminalPeek
from crewtui.ui.widgets.session_tree import RowRef

log = logging.getLogger("crewtui.ui")


def rows_in_order(node: TreeNode[RowRef]) -> Iterator[str]:
    """The row ids under `node` as the tree lists them, folded groups' rows included."""
    for child in node.children:
        if child.data is not None:
            yield child.data.node_id
        yield from rows_in_order(child)


class TerminalView(MainView):
    @property
    def peek(self) -> TerminalPeek:
        return self.query_one("#peek", TerminalPeek)

    # ------------------------------------------------------------------------------------ peek

    def _select(self, ref: RowRef | None) -> None:
        if ref is None:
            self._peek_at(None)
        super()._select(ref)

    def _show_detail(self, ref: RowRef) -> None:
        # The selection, a change of its session, once a second: the peek follows (cheap when nothing changed).
        super()._show_detail(ref)
        self._peek_at(ref)

    def _pane_widget(self, pane: str) -> Widget:
        # A terminal session's screen is where its transcript was: `]` and the narrow tabs focus it (to scroll it).
        if pane == "detail" and self.has_class("-peek") and not self.changes_shown:
            return self.query_one("#peek-box")
        return super()._pane_widget(pane)

    def _peek_at(self, ref: RowRef | None) -> None:
        s = self.book.sessions.get(ref.id) if ref is not None and ref.kind == "session" else None
        tty = s is not None and s.tty
        self.set_class(tty, "-peek")
        self.peek.show(s if tty else None)

    # ------------------------------------------------------------------------------------ attach

    def attach_if_terminal(self, key: str) -> bool:
        """`enter` on a session: attach when it is a terminal session (True), else leave it to `open` (False)."""
        s = self.book.sessions.get(key)
        if s is None or not s.tty:
            return False
        self._attach_session(key, s.label)
        return True

    def _from_a_shell(self, label: str) -> None:
        self.notify(f"attach from a terminal: crewtui attach {label}", severity="warning")

    @work(exclusive=True, group="attach", exit_on_error=False)
    async def _attach_session(self, key: str, label: str) -> None:
        if self.app.is_web:  # a browser page has no terminal to lend
            self._from_a_shell(label)
            return
        s = await self._call("get", key, what=f"attaching to {label}")  # as it is now, with its session dir
        if s is FAILED:
            return
        try:
            attaching.attach_command(s)  # not a terminal session, ended, its terminal gone, dtach missing
        except CrewError as exc:
            self.notify(exc.message, severity="warning")
            return
        try:
            with self.app.suspend():
                error = await self._hand_over(s)
        except SuspendNotSupported:
            self._from_a_shell(label)
            return
        if error is not None:
            self.notify(error, severity="warning")
        else:
            self.notify(f"detached from {label}")
        self.session_tree.focus()

    async def _hand_over(self, s: Session) -> str | None:
        """The terminal is the session's until it is detached from: nothing here may raise (the app resumes after
        this returns) nor draw (the driver's writer is stopped meanwhile). Why it failed, or None."""
        with self.app.batch_update():
            print(f"attaching to {clean(s.label)}; detach with {attaching.DETACH_WORDS} (it keeps running)", flush=True)
            try:
                code = await asyncio.to_thread(attaching.attach, s)
            except CrewError as exc:
                return exc.message
            except Exception as exc:
                log.exception("attaching to %s failed", s.key)
                return f"attaching to {s.label} failed: {exc}"
        if code != 0:  # dtach could not reach its terminal (it said why on the lent terminal, gone by now)
            return f"attaching to {s.label} failed (dtach exited {code}): its terminal did not answer"
        return None

    # ------------------------------------------------------------------------------------ the sessions that need you

    def action_next_waiting(self) -> None:
        """`w`: the cursor to the next session that waits on a person, in the tree's order across groups, wrapping
        around; one line when none waits, or when the filter hides those that do."""
        waiting = {k for k, s in self.book.sessions.items() if s.state == SessionState.WAITING}
        if not waiting:
            self.notify("nobody waits on you")
            return
        tree = self.session_tree
        order = list(rows_in_order(tree.root))
        shown = [row for row in order if row.startswith("s:") and row[2:] in waiting]
        if not shown:
            n = len(waiting)
            self.notify(
                f"{n} session{'s wait' if n != 1 else ' waits'} on you, hidden by the filter: escape clears it",
                severity="warning",
            )
            return
        here = tree.current.node_id if tree.current is not None else None
        at = order.index(here) if here in order else -1
        after = [row for row in order[at + 1 :] + order[: at + 1] if row in shown]
        target = after[0]
        if target == here:
            self.notify(f"only {self.book.sessions[target[2:]].label} waits on you")
            return
        tree.select_row(target)
