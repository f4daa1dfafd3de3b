"""The main screen: `MainView` (main_view.py: panes, layout, live events, selection), `TerminalView` (peek, attach,
the next waiting session: terminal_view.py) and the actions on sessions.

Spawn, steer, approve and deny (what waiting sessions ask), kill, sweep, retry, trigger, resume (a session paused
in the model gateway), a workspace's Changes, merge and discard (what a session's branch becomes), the tries of a
best-of group side by side (screens/compare.py), marks, filters and panes. The keys are the App's bindings (one
registry, ui/actions.py), which bring them here, so a key still works while a modal is on top, as the
palette does. Each action says in one line what it did or why it could not, and never raises at the user.
Those lines name sessions and quote what the user typed: notifications are plain text (the App's `notify`),
and what is drawn here goes through `plain`.
"""

from __future__ import annotations

import logging

from rich.text import Text
from textual import on, work
from textual.widget import Widget
from textual.widgets import Input, Static

from crewtui.errors import CrewError
from crewtui.model import Session, SessionState
from crewtui.ui.book import RETRYABLE
from crewtui.ui.calls import FAILED, Failures, call_runtime, why_failed
from crewtui.ui.diffs import branch_text, changes_text, has_workspace
from crewtui.ui.format import DIM, plain
from crewtui.ui.label_filter import FilterError
from crewtui.ui.screens.answer import AnswerScreen, asks_list
from crewtui.ui.screens.compare import CompareScreen, pick_group
from crewtui.ui.screens.confirm import ConfirmScreen
from crewtui.ui.screens.main_view import PANES
from crewtui.ui.screens.spawn import SpawnScreen
from crewtui.ui.screens.steer import SteerScreen
from crewtui.ui.screens.sweep import SweepScreen, sweep_counts
from crewtui.ui.screens.terminal_view import TerminalView

log = logging.getLogger("crewtui.ui")


class MainScreen(TerminalView):
    # ------------------------------------------------------------------------------------ spawn, steer

    def action_spawn(self) -> None:
        agents = list(self.info.agents) if self.info else []

        form = SpawnScreen(agents, self.dashboard.runtime.spawn)

        def spawned(session: Session | None) -> None:
            if session is None:
                return
            tries = [s for s in form.started if session.best_of is not None and s.best_of == session.best_of]
            if len(tries) > 1:
                self.notify(f"spawned {len(tries)} tries of {session.best_of}: {', '.join(s.label for s in tries)}")
            else:
                self.notify(f"spawned {session.label} ({session.state.value})")
            if not self.session_tree.select_key(session.key):
                self._select_after = session.key

        self.app.push_screen(form, spawned)

    def action_steer(self) -> None:
        targets = self._targets()
        if not targets:
            self.notify("select a session to steer (or mark several with space)", severity="warning")
            return
        live = [s for s in targets if s.state.live]
        if not live:
            if len(targets) == 1:
                s = targets[0]
                self.notify(f"{s.label} has ended ({s.state.value}); it cannot be steered", severity="warning")
            else:
                self.notify(f"all {len(targets)} marked sessions have ended; none can be steered", severity="warning")
            return

        def chosen(lines: list[str] | None) -> None:
            if lines:
                self._send_all([s.key for s in live], lines)

        self.app.push_screen(SteerScreen(live, skipped=len(targets) - len(live)), chosen)

    @work(group="commands", exit_on_error=False)
    async def _send_all(self, keys: list[str], lines: list[str]) -> None:
        """Each line is one steer, in order; a session that refuses one gets none of the rest (the refusal is
        said once, with the other failures: `Failures`)."""
        sent, failed = 0, Failures()
        for key in keys:
            for line in lines:
                if await call_runtime(self.dashboard.runtime, failed, "send", key, line) is FAILED:
                    break
            else:
                sent += 1
        failed.say(self.notify)
        if sent:
            label = self.book.sessions[keys[0]].label if len(keys) == 1 and keys[0] in self.book.sessions else None
            what = f" ({len(lines)} lines)" if len(lines) > 1 else ""
            self.notify(f"steered {label}{what}" if label else f"steered {sent} of {len(keys)} sessions{what}")

    # ------------------------------------------------------------------------------------ approve, deny

    def _waiting_targets(self, verb: str) -> tuple[list[Session], int] | None:
        """The waiting sessions `a` / `d` answer (the marked ones, else the selected one) and how many marked ones
        are not waiting; None, after saying why in one line, when there is none."""
        marked = self.book.marked_sessions()
        if not marked:
            s = self._selected_session()
            if s is None:
                self.notify(f"select a waiting session to {verb} (or mark several with space)", severity="warning")
                return None
            if s.state != SessionState.WAITING:
                self.notify(f"{s.label} is {s.state.value}, not waiting for an answer", severity="warning")
                return None
            return [s], 0
        waiting = [s for s in marked if s.state == SessionState.WAITING]
        if not waiting:
            n = len(marked)
            self.notify(
                f"none of the {n} marked session{'s' if n != 1 else ''} waits for an answer", severity="warning"
            )
            return None
        return waiting, len(marked) - len(waiting)

    def action_approve(self) -> None:
        found = self._waiting_targets("approve")
        if found is None:
            return
        targets, skipped = found
        if len(targets) == 1 and not self.book.marked:
            s = targets[0]
            if (s.needs or {}).get("kind") == "question":
                self._ask_answer(s)  # a question needs words, not a yes
            else:
                self._answer([(s.key, (s.needs or {}).get("id"))], allow=True, message=None)
            return
        questions = [s for s in targets if (s.needs or {}).get("kind") == "question"]
        targets = [s for s in targets if s not in questions]
        notes = []
        if skipped:
            notes.append(f"{skipped} marked session{'s' if skipped != 1 else ''} not waiting: left alone")
        if questions:
            notes.append(f"{len(questions)} question{'s' if len(questions) != 1 else ''}: answer each on its own")
        if not targets:
            self.notify("the marked sessions wait on questions: answer each on its own (a)", severity="warning")
            return
        body = asks_list(targets)
        for note in notes:
            body.append(f"\n{note}", style="#d19a66")
        n = len(targets)
        title = f"Approve what {n} waiting session{'s' if n != 1 else ''} ask{'' if n != 1 else 's'}?"
        answers = [(s.key, (s.needs or {}).get("id")) for s in targets]

        def confirmed(ok: bool | None) -> None:
            if ok:
                self._answer(answers, allow=True, message=None)

        self.app.push_screen(
            ConfirmScreen(title, body, confirm=f"Approve {n}", danger=False, id="approve-confirm"), confirmed
        )

    def action_deny(self) -> None:
        found = self._waiting_targets("deny")
        if found is None:
            return
        targets, skipped = found
        note = f"({skipped} marked session{'s' if skipped != 1 else ''} not waiting: left alone)" if skipped else ""
        answers = [(s.key, (s.needs or {}).get("id")) for s in targets]

        def chosen(message: str | None) -> None:
            if message is not None:
                self._answer(answers, allow=False, message=message or None)

        self.app.push_screen(AnswerScreen(targets, "deny", note), chosen)

    def _ask_answer(self, s: Session) -> None:
        def chosen(text: str | None) -> None:
            if text:
                self._answer([(s.key, (s.needs or {}).get("id"))], allow=True, message=text)

        self.app.push_screen(AnswerScreen([s], "answer"), chosen)

    @work(group="commands", exit_on_error=False)
    async def _answer(self, answers: list[tuple[str, str | None]], *, allow: bool, message: str | None) -> None:
        """Answer each session's request by its id, the one the user saw: one answered meanwhile (stale) is
        refused by the runtime rather than another request answered in its place. One line says how it went."""
        verb = "approved" if allow else "denied"
        if len(answers) == 1:
            key, request = answers[0]
            s = await self._call("answer", key, allow, request=request, message=message)
            if s is not FAILED:
                self.notify(f"{verb} {s.label}" + (f": {message}" if message and not allow else ""))
                self.book.marked.discard(key)
            return
        done: list[str] = []
        refused: list[str] = []
        for key, request in answers:
            try:
                await self.dashboard.runtime.answer(key, allow, request=request, message=message)
            except CrewError as exc:
                refused.append(exc.message)
            except Exception as exc:  # a broken connection: said in the line below, the trace in the log
                log.exception("answering %s failed", key)
                refused.append(why_failed(exc))
            else:
                done.append(key)
        self.book.marked.difference_update(done)
        self.session_tree.refresh_rows(done)
        self.session_tree.refresh_groups()
        self.update_header()
        line = f"{verb} {len(done)} of {len(answers)} sessions"
        if refused:
            line += f"; {len(refused)} refused: {refused[0]}"
        self.notify(line, severity="warning" if refused else "information")

    # ------------------------------------------------------------------------------------ kill, sweep

    def action_kill(self) -> None:
        marked = self.book.marked_sessions()
        ref = self.session_tree.current
        if marked:
            live = [s for s in marked if s.state.live]
            if not live:
                self.notify("none of the marked sessions is live", severity="warning")
                return
            body = Text("\n").join(plain(f"{s.label}  ({s.state.value})") for s in live[:30])
            if len(live) > 30:
                body.append(f"\n… and {len(live) - 30} more", style=DIM)
            self._confirm_kill(f"Kill {len(live)} marked sessions?", body, keys=[s.key for s in live])
        elif ref is not None and ref.kind == "group":
            members = [s for s in self.book.members(ref.id, visible_only=False) if s.state.live]
            if not members:
                self.notify(f"group {ref.id} has no live session", severity="warning")
                return
            body = plain(f"{len(members)} live sessions whose label starts with {ref.id}-, and their children.", "bold")
            for member in members[:20]:
                body.append("\n")
                body.append_text(plain(member.label, DIM))
            if len(members) > 20:
                body.append(f"\n… and {len(members) - 20} more", style=DIM)
            exact = [s.key for s in members if s.label == ref.id]
            self._confirm_kill(f"Kill group {ref.id}?", body, prefix=ref.id + "-", keys=exact)
        else:
            s = self._selected_session()
            if s is None:
                self.notify("select a session or a group to kill", severity="warning")
                return
            if s.state.terminal:
                self.notify(f"{s.label} has already ended ({s.state.value})", severity="warning")
                return
            body = Text.assemble(
                plain(s.label, "bold"),
                f"\n{s.key} · {s.state.value} · attempt {s.attempt}\n",
                (("SIGTERM to its process group, SIGKILL after the grace period; its children are killed too."), DIM),
            )
            self._confirm_kill(f"Kill {s.label}?", body, keys=[s.key])

    def _confirm_kill(self, title: str, body: Text, *, keys: list[str], prefix: str | None = None) -> None:
        def confirmed(ok: bool | None) -> None:
            if ok:
                self._kill(keys, prefix)

        self.app.push_screen(ConfirmScreen(title, body, confirm="Kill", id="kill-confirm"), confirmed)

    @work(group="commands", exit_on_error=False)
    async def _kill(self, keys: list[str], prefix: str | None) -> None:
        killed, failed = 0, Failures()  # a failure per session (a runtime gone away) is said once, with a count
        if prefix is not None:
            out = await call_runtime(self.dashboard.runtime, failed, "kill", prefix=prefix)
            if out is not FAILED:
                killed += len(out)
        for key in keys:
            s = self.book.sessions.get(key)
            if s is not None and s.state.terminal:
                continue
            out = await call_runtime(self.dashboard.runtime, failed, "kill", key)
            if out is not FAILED:
                killed += len(out)
        failed.say(self.notify)
        if killed:
            self.notify(f"killed {killed} session{'s' if killed != 1 else ''}")
            self.book.marked.difference_update(keys)

    def action_sweep(self) -> None:
        self._sweep()

    @work(exclusive=True, group="sweep", exit_on_error=False)
    async def _sweep(self) -> None:
        items = await self._call("sweep", dry_run=True, what="the stale sweep")
        if items is FAILED:
            return
        kill, remove, keep = sweep_counts(items)
        if not kill and not remove:
            kept = f"; {keep} worktree{'s' if keep != 1 else ''} of ended sessions hold work not merged" if keep else ""
            self.notify(f"nothing is stale: every running session wrote output recently{kept}")
            return
        if not await self.app.push_screen_wait(SweepScreen(items)):
            return
        swept = await self._call("sweep", what="the stale sweep")
        if swept is not FAILED:
            kill, remove, _ = sweep_counts(swept)
            self.notify(
                f"swept: {kill} stale session{'s' if kill != 1 else ''} killed, {remove} worktree"
                f"{'s' if remove != 1 else ''} removed"
            )

    # ------------------------------------------------------------------------------------ retry, trigger

    def action_retry(self) -> None:
        targets = self._targets()
        if not targets:
            self.notify("select a failed, lost, killed or timed-out session to retry", severity="warning")
            return
        retryable = [s for s in targets if s.state in RETRYABLE]
        if not retryable:
            s = targets[0]
            what = f"{s.label} is {s.state.value}" if len(targets) == 1 else "none of the marked sessions"
            self.notify(f"{what}; only a failed, lost, killed or timed-out session can be retried", severity="warning")
            return
        self._retry([s.key for s in retryable])

    @work(group="commands", exit_on_error=False)
    async def _retry(self, keys: list[str]) -> None:
        failed, retried = Failures(), []  # one line for what went, one for what failed: not one per session
        for key in keys:
            s = await call_runtime(self.dashboard.runtime, failed, "retry", key, what="retry")
            if s is not FAILED:
                retried.append(s)
        if len(retried) == 1:
            s = retried[0]
            self.notify(f"retrying {s.label}: attempt {s.attempt} ({s.state.value})")
        elif retried:
            names = ", ".join(s.label for s in retried[:3]) + (", …" if len(retried) > 3 else "")
            self.notify(f"retrying {len(retried)} sessions: {names}")
        failed.say(self.notify)

    def action_trigger(self) -> None:
        job = self.meters.selected_job
        if job is None:
            self.notify("no cron job to trigger: select one in the cron jobs pane", severity="warning")
            return
        self._trigger(job)

    @work(group="commands", exit_on_error=False)
    async def _trigger(self, job: str) -> None:
        run = await self._call("cron_trigger", job, what="triggering a cron job")
        if run is FAILED:
            return
        if run is None:
            self.notify(f"fired {job}")
        else:
            refused = f", {len(run.refused)} refused" if run.refused else ""
            self.notify(f"fired {job}: run #{run.number}, {len(run.sessions)} sessions{refused}")
        self._schedule_soon()

    # ------------------------------------------------------------------------------------ resume

    def action_resume(self) -> None:
        """Let the selected session, paused in the model gateway over its budget, go on (`ctl resume LABEL`)."""
        s = self._selected_session()
        if s is None:
            self.notify("select a session paused in the gateway to resume it", severity="warning")
            return
        hold = s.gateway_hold or ""
        if not hold.startswith("paused"):
            why = f" ({hold})" if hold else ""
            self.notify(f"{s.label} is not paused in the gateway{why}; nothing to resume", severity="warning")
            return
        self._resume(s.label)

    @work(group="commands", exit_on_error=False)
    async def _resume(self, label: str) -> None:
        line = await self._call("resume", ref=label, what="resume")
        if line is not FAILED:
            self.notify(str(line))

    # ------------------------------------------------------------------------------------ workspaces

    def action_changes(self) -> None:
        """`c`: the right pane shows the selected session's Changes (its branch's files and diff), or its detail."""
        on = not self.changes_shown
        self.changes_shown = on
        self.set_class(on, "-changes")
        self.title_right()
        inside = self.app.focused is not None and self.changes_pane in self.app.focused.ancestors
        if on:
            self.show_changes_of(self.session_tree.current)
            if self.layout_mode == "narrow":
                self._show_pane("detail")
            self.changes_pane.open()
        elif inside:
            # Back to the sessions, to pick the next one to review (on a narrow terminal: its detail tab).
            self._pane_widget("detail" if self.layout_mode == "narrow" else "sessions").focus()

    def _workspace_session(self, verb: str, s: Session | None = None) -> Session | None:
        """`s` (else the selected session), when it has a workspace that has ended; else None, after saying why in one
        line."""
        if s is None:
            s = self._selected_session()
        if s is None:
            self.notify(f"select a session with a workspace to {verb} its branch", severity="warning")
            return None
        if not has_workspace(s):
            self.notify(f"{s.label} has no workspace: no branch to {verb}", severity="warning")
            return None
        if s.state.live:
            when = "merge it when it has ended" if verb == "merge" else "kill it first"
            self.notify(f"{s.label} is still {s.state.value}: {when}", severity="warning")
            return None
        return s

    def action_merge(self) -> None:
        """`m`: put the selected session's branch in its repository's merge queue (`ctl merge LABEL`)."""
        self.merge_session(None)

    def merge_session(self, s: Session | None) -> None:
        """Merge `s` (None: the selected session), or say in one line why not: `m` here and in the best-of view."""
        s = self._workspace_session("merge", s)
        if s is None:
            return
        if s.merge in ("queued", "merging", "merged", "discarded"):
            self.notify(f"{s.label}: its branch is already {s.merge}", severity="warning")
            return
        self._merge(s.key)

    @work(group="commands", exit_on_error=False)
    async def _merge(self, key: str) -> None:
        s = await self._call("merge", key, what="merge")
        if s is not FAILED:
            self.notify(merge_line(s))

    def action_discard(self) -> None:
        """`D`: throw away the selected session's branch and worktree, after a confirm (`ctl discard LABEL`)."""
        s = self._workspace_session("discard")
        if s is None:
            return
        if s.merge in ("merging", "merged", "discarded"):
            self.notify(f"{s.label}: its branch is {s.merge}; nothing to discard", severity="warning")
            return
        body = Text.assemble(plain(s.label, "bold"), "\n", branch_text(s))
        counted = changes_text(s.changes)
        if counted is not None:
            body.append("\n")
            body.append_text(counted)
        body.append("\nIts branch and its worktree are deleted; what it did is lost.", style=DIM)
        key = s.key

        def confirmed(ok: bool | None) -> None:
            if ok:
                self._discard(key)

        self.app.push_screen(
            ConfirmScreen(f"Discard the work of {s.label}?", body, confirm="Discard", id="discard-confirm"), confirmed
        )

    @work(group="commands", exit_on_error=False)
    async def _discard(self, key: str) -> None:
        s = await self._call("discard", key, what="discard")
        if s is not FAILED:
            self.notify(merge_line(s))

    def action_best_of(self) -> None:
        """`b`: the tries of the selected session's best-of group side by side (screens/compare.py)."""
        found = pick_group(self.book, self.session_tree.current)
        if isinstance(found, str):
            self.notify(found, severity="warning")
            return
        group, start = found
        screen = CompareScreen(
            self.book, group, self.clock.now, merge=self.merge_session, select=self.session_tree.select_key, start=start
        )
        self.app.push_screen(screen, self.open_changes)

    def open_changes(self, key: str | None) -> None:
        """Select the session `key` and show its Changes (enter in the best-of view)."""
        if key is None:
            return
        tree = self.session_tree
        if not tree.select_key(key):
            label = self.book.sessions[key].label if key in self.book.sessions else key
            self.notify(f"{label} is hidden by the filter: escape clears it", severity="warning")
            return
        if not self.changes_shown:
            tree.call_after_refresh(self.action_changes)  # after the cursor moved there (queued on the tree too)

    # ------------------------------------------------------------------------------------ marks and filters

    def action_mark(self) -> None:
        tree = self.session_tree
        ref = tree.current
        if ref is None:
            return
        if ref.kind == "older":
            return  # not loaded: nothing to mark
        if ref.kind == "session":
            changed = self.book.toggle_mark([ref.id])
            tree.action_cursor_down()  # htop: tag and move on, so a run of rows is quick to mark
        else:
            changed = self.book.toggle_mark([s.key for s in self.book.members(ref.id)])
        tree.refresh_rows(changed)
        tree.refresh_groups()
        self.update_header()

    def action_filter(self) -> None:
        if self.layout_mode == "narrow":
            self._show_pane("sessions")
        self.query_one("#left").add_class("-filtering")
        self.query_one("#filter", Input).focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        error = self.query_one("#filter-error", Static)
        try:
            self.book.set_pattern(event.value)
        except FilterError as exc:
            error.update(plain(str(exc)))
            error.add_class("-shown")
            return
        error.update("")
        error.remove_class("-shown")
        self._regroup()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if not event.value:
            self.query_one("#left").remove_class("-filtering")
        self.session_tree.focus()

    def _regroup(self) -> None:
        with self.app.batch_update():
            self.session_tree.sync(self.book.forest())
            self._update_titles()
            self.update_header()
        if not self.session_tree.nodes:
            self._select(None)

    def action_state_filter(self, state: str) -> None:
        chosen = None if state == "all" else SessionState(state)
        self.book.state_filter = None if chosen == self.book.state_filter else chosen  # again: every state
        self._regroup()

    def action_clear(self) -> None:
        """Escape: the text filter first, then the state filter, then the marks."""
        filt = self.query_one("#filter", Input)
        if filt.value or filt.has_focus:
            filt.value = ""  # Input.Changed regroups
            self.book.set_pattern("")
            self.query_one("#left").remove_class("-filtering")
            self.query_one("#filter-error", Static).remove_class("-shown")
            self._regroup()
            self.session_tree.focus()
        elif self.book.state_filter is not None:
            self.action_state_filter("all")
        elif self.book.marked:
            changed = set(self.book.marked)
            self.book.marked.clear()
            self.session_tree.refresh_rows(changed)
            self.session_tree.refresh_groups()
            self.update_header()

    # ------------------------------------------------------------------------------------ panes

    def action_open(self) -> None:
        ref = self.session_tree.current
        if ref is None:
            return
        if ref.kind == "group":
            self.session_tree.toggle_current()
            return
        if ref.kind == "older":
            self.load_older(ref.id)  # the group's next page of older sessions
            return
        if self.attach_if_terminal(ref.id):  # a terminal session: enter hands the terminal to it
            return
        if self.layout_mode == "narrow":
            self._show_pane("detail")
        self._pane_widget("detail").focus()

    def action_next_pane(self) -> None:
        if self.layout_mode == "narrow":
            pane = PANES[(PANES.index(self.pane) + 1) % len(PANES)]
            self._show_pane(pane)
            self.call_after_refresh(self._pane_widget(pane).focus)
            return
        order: list[Widget] = [self.session_tree, self._pane_widget("detail"), self.meters]
        focused = self.app.focused  # the app's: under a modal, the focus moves back to the first pane
        if focused is not None and self.changes_shown and self.changes_pane in focused.ancestors:
            focused = order[1]  # the file list or the diff: the pane after it comes next
        idx = next((i for i, w in enumerate(order) if w is focused), -1)
        order[(idx + 1) % len(order)].focus()


def merge_line(s: Session) -> str:
    """What a merge or a discard did, in one line, as `crewtui ctl merge` says it: "fix: queued (crew/fix)"."""
    note = f": {s.merge_note}" if s.merge_note else ""
    return f"{s.label}: {s.merge or 'none'} ({s.branch}){note}"
