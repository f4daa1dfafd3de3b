"""The one registry of the dashboard's actions: keys, footer, `?` help and the command palette all read it.

Adding an action here gives it a binding (with an id, so a keymap can rebind it), a footer entry, a help
line and a palette command at once; they can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding, BindingType

from crewtui.model import SessionState


@dataclass(frozen=True)
class ActionSpec:
    key: str
    action: str  # an App action, with arguments if any: "state_filter('running')"
    description: str  # short: the footer
    id: str
    help: str  # a sentence: the help screen and the palette
    show: bool = True  # in the footer (the palette and help list every action)
    key_display: str | None = None
    group: Binding.Group | None = None

    def binding(self) -> Binding:
        return Binding(
            self.key,
            self.action,
            self.description,
            show=self.show,
            key_display=self.key_display,
            id=self.id,
            group=self.group,
        )

    @property
    def palette_name(self) -> str:
        return self.help.split(":", 1)[0] if ":" in self.help else self.description


_STATE_GROUP = Binding.Group("state", compact=True)

# 1 = every state; 2..9 = one state each, in the order the issue gives them; 0 (after 9 on the keyboard) =
# waiting, which came later: added at the end so the keys people know keep their states.
STATE_KEYS: tuple[tuple[str, SessionState | None], ...] = (
    ("1", None),
    ("2", SessionState.RUNNING),
    ("3", SessionState.PENDING),
    ("4", SessionState.YIELDED),
    ("5", SessionState.DONE),
    ("6", SessionState.FAILED),
    ("7", SessionState.TIMED_OUT),
    ("8", SessionState.KILLED),
    ("9", SessionState.LOST),
    ("0", SessionState.WAITING),
)

ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("n", "spawn", "Spawn", "spawn", "Spawn a session: label, agent, task, domain, watchdog, best of N"),
    ActionSpec("s", "steer", "Steer", "steer", "Steer: send a line to the selected session, or to every marked one"),
    ActionSpec(
        "a",
        "approve",
        "Approve",
        "approve",
        "Approve: say yes to the selected waiting session (the marked ones after a confirm)",
    ),
    ActionSpec(
        "d",
        "deny",
        "Deny",
        "deny",
        "Deny: say no to the selected (or marked) waiting sessions, optionally saying why",
    ),
    ActionSpec("k", "kill", "Kill", "kill", "Kill: the marked sessions, the selected one, or the selected group"),
    ActionSpec(
        "x", "sweep", "Sweep", "sweep", "Sweep stale sessions: preview the ones with no recent output, then kill them"
    ),
    ActionSpec(
        "r", "retry", "Retry", "retry", "Retry: start a new attempt of a failed, lost, killed or timed-out session"
    ),
    ActionSpec("t", "trigger", "Trigger", "trigger", "Trigger the cron job selected in the meters pane now"),
    ActionSpec(
        "g",
        "gateway",
        "Gateway",
        "gateway",
        "Gateway: each model pool's rates against its limits, its line, pause and spend today",
    ),
    ActionSpec(
        "R",
        "resume",
        "Resume",
        "resume",
        "Resume: let the selected session, paused in the gateway over its budget, go on",
        show=False,  # only for a paused session, which says so (R) in its detail
    ),
    # A session's workspace (its own git worktree): only for a session with one, whose detail says so (c, m, D).
    ActionSpec(
        "c",
        "changes",
        "Changes",
        "changes",
        "Changes: the files the selected session's branch changed, and their diffs",
        show=False,
    ),
    ActionSpec(
        "m",
        "merge",
        "Merge",
        "merge",
        "Merge: put the selected ended session's branch in its repository's merge queue",
        show=False,
    ),
    ActionSpec(
        "D",
        "discard",
        "Discard",
        "discard",
        "Discard: throw away the selected ended session's branch and worktree (asks first)",
        show=False,
    ),
    ActionSpec(
        "b",
        "best_of",
        "Best of",
        "best-of",
        "Best of N: the tries of the selected session's task side by side, to merge the one you want",
        show=False,  # only for a try of a best-of group, whose detail says so (b)
    ),
    ActionSpec(
        "plus",
        "zoom_in",
        "Zoom in",
        "zoom-in",
        "Zoom the timeline in: a shorter span either side of now (1d, 6h, 1h, 15m, 5m, 1m)",
        key_display="+",
    ),
    ActionSpec(
        "minus",
        "zoom_out",
        "Zoom out",
        "zoom-out",
        "Zoom the timeline out: a longer span either side of now (1m, 5m, 15m, 1h, 6h, 1d)",
        key_display="-",
    ),
    ActionSpec(
        "space",
        "mark",
        "Mark",
        "mark",
        "Mark or unmark the selected session (a group marks all of it)",
        key_display="␣",
    ),
    ActionSpec(
        "slash", "filter", "Filter", "filter", "Filter sessions by label (a regular expression)", key_display="/"
    ),
    *(
        ActionSpec(
            key,
            f"state_filter({(st.value if st else 'all')!r})",
            (st.value if st else "all"),
            f"state-{st.value if st else 'all'}",
            f"Show {'all sessions' if st is None else st.value.replace('_', ' ') + ' sessions'}",
            group=_STATE_GROUP,
        )
        for key, st in STATE_KEYS
    ),
    ActionSpec(
        "w",
        "next_waiting",
        "Next waiting",
        "next-waiting",
        "Next waiting: the cursor to the next session that waits on you, across groups (0: only those)",
        show=False,  # the header says when some need you
    ),
    ActionSpec(
        "enter",
        "open",
        "Open",
        "open",
        "Open: attach to a terminal session (detach with Ctrl-\\), else focus the selected session's transcript "
        "(a group folds; older rows load a page)",
        show=False,
    ),
    ActionSpec(
        "right_square_bracket",
        "next_pane",
        "Pane",
        "next-pane",
        "Next pane: sessions, detail, schedule (tabs on a narrow terminal; moves the focus on a wide one)",
        key_display="]",
    ),
    ActionSpec("escape", "clear", "Clear", "clear", "Clear: the filter, the state filter and the marks", show=False),
    ActionSpec("question_mark", "help", "Help", "help", "Help: every key and what the colours mean", key_display="?"),
    ActionSpec("q", "quit", "Quit", "quit", "Quit: leave the sessions running, or kill them"),
)

BINDINGS: list[BindingType] = [a.binding() for a in ACTIONS]

# What the footer keeps when the terminal is too narrow for every key, most needed first (action ids; "state"
# is the 1-9, 0 group). `?` lists every key, so it and `q` go last.
FOOTER_PRIORITY: tuple[str, ...] = (
    "quit",
    "help",
    "next-pane",
    "spawn",
    "approve",
    "deny",
    "kill",
    "steer",
    "filter",
    "sweep",
    "retry",
    "trigger",
    "mark",
    "gateway",
    "zoom-in",
    "zoom-out",
    "state",
)


def key_label(spec: ActionSpec) -> str:
    return spec.key_display or spec.key
