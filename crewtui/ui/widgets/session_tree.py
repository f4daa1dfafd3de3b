"""The sessions pane: sessions grouped by label prefix in a Tree, one aligned row per session.

Live, with 1,000 sessions: the tree keeps a dict id -> node and changes only what changed. A new structure
(spawns, filters) is reconciled against the nodes it has (remove the gone, insert the new in place); a
changed session gets `set_label` only when its rendered row differs. Never `clear()` and rebuild: that
loses the cursor, the scroll position and what the user folded. Names and last lines are foreign text: cleaned
(`crewtui.text.clean`) before they are cut to their column, and never read as markup. A top-level group with
older history not loaded ends with a row that says how much (`crewtui.ui.older`); opening it loads a page. A session
in a workspace (its own git worktree) says where its branch's merge stands ("⌥ merged", "⌥ conflict") before its
last line.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar, Literal

from rich.text import Text
from textual import events, on
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from crewtui.clock import ClockLike
from crewtui.formatting import age, fit
from crewtui.model import Session, SessionState
from crewtui.text import clean
from crewtui.ui.book import SessionBook, completion_rate
from crewtui.ui.diffs import merge_mark
from crewtui.ui.format import (
    DIM,
    WAITING_COLOR,
    cost_text,
    hold_style,
    plain,
    rate_text,
    rollup,
    state_text,
    usage_text,
)
from crewtui.ui.grouping import GroupNode, Item, LeafNode, walk
from crewtui.ui.older import PAGE

STATE_W = 11  # "◷ timed_out"
ATTEMPT_W = 3
AGE_W = 4
COST_W = 7  # "$0.0042", "$12,345": at the end of the row, where a group's tokens and cost end too
MIN_LAST_W = 8  # the cost column is left out before the activity gets narrower than this
FIXED_W = 1 + STATE_W + 1 + ATTEMPT_W + 1 + AGE_W + 2
MARK = "● "


@dataclass(frozen=True)
class RowRef:
    """What a tree row stands for: a group (by prefix), a session (by key), or a group's older history (by the
    group's prefix)."""

    kind: Literal["group", "session", "older"]
    id: str
    depth: int
    name: str  # what the row shows as its name (a leaf's label without its group's prefix)

    @property
    def node_id(self) -> str:
        return {"group": "g:", "session": "s:", "older": "o:"}[self.kind] + self.id

    @property
    def signature_id(self) -> str:
        """Under what id the tree caches the row's rendering (a session's by its key, as rows are refreshed)."""
        return self.id if self.kind == "session" else self.node_id


class SessionTree(Tree[RowRef], inherit_bindings=False):
    """Sessions grouped by label prefix. Posts `RowHighlighted` when the cursor lands on another row."""

    ICON_NODE = "▸ "
    ICON_NODE_EXPANDED = "▾ "

    # Our own navigation keys only: space and enter belong to the dashboard's action registry (mark and
    # open), so the tree must not swallow them.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "scroll_home", "Top", show=False),
        Binding("end", "scroll_end", "Bottom", show=False),
        Binding("left", "fold", "Fold", show=False),
        Binding("right", "unfold", "Unfold", show=False),
    ]

    class RowHighlighted(Message):
        """The cursor moved to another row. Replaceable: when scrolling fast, only the last one matters."""

        def __init__(self, tree: SessionTree, ref: RowRef | None) -> None:
            super().__init__()
            self.session_tree = tree
            self.ref = ref

        @property
        def control(self) -> SessionTree:
            return self.session_tree

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, SessionTree.RowHighlighted)

    def __init__(self, book: SessionBook, clock: ClockLike, *, id: str | None = None) -> None:
        super().__init__("sessions", id=id)
        self.show_root = False
        self.guide_depth = 3
        self.auto_expand = True
        self.book = book
        self.clock = clock
        self.nodes: dict[str, TreeNode[RowRef]] = {}
        self.collapsed: set[str] = set()  # group prefixes the user folded; new groups start unfolded
        self._signatures: dict[str, tuple[object, ...]] = {}
        self._width = 0
        self._last_ref: RowRef | None = None
        self._group_counts: dict[str, dict[SessionState, int]] = {}
        self._name_need = 40  # cells the longest shown name needs, indent included

    # ------------------------------------------------------------------------------------ layout

    def _columns(self, depth: int) -> tuple[int, int, int]:
        """(name width, last-output width, cost width) for a row at `depth`, so every column starts at the same
        x. The cost is the last column, fixed (with its leading space), or 0 on a pane too narrow for it.

        The name column is as wide as the longest name shown needs (up to half the pane), so short
        names leave the room to the activity or last output line.
        """
        width = max(30, self._width)
        name_end = max(16, min(self._name_need + 1, int(width * 0.5)))
        name_w = max(6, name_end - depth * self.guide_depth - len(MARK))
        room = max(0, width - name_end - FIXED_W - 1)
        cost_w = COST_W + 1 if room >= COST_W + 1 + MIN_LAST_W else 0
        return name_w, room - cost_w, cost_w

    def get_label_width(self, node: TreeNode[RowRef]) -> int:
        # Rows are cut to the pane's width already; answering without rendering keeps a rebuild of 1,000
        # lines cheap (the stock method renders every label to measure it).
        return 0

    def on_resize(self, event: events.Resize) -> None:
        width = self._rows_width()
        if width != self._width:
            self._width = width
            self.refresh_all(force=True)

    def _rows_width(self) -> int:
        """The cells a row has: the pane's, less the vertical scrollbar its rows need. Worked out from the rows
        rather than read off the layout, which shows a newly needed scrollbar only at its next pass, and whether
        that pass came before this resize depends on the order in which the screen's events arrived."""
        region = self.scrollable_content_region
        bar_due = (
            not self.show_vertical_scrollbar
            and self.styles.overflow_y != "hidden"
            and self.last_line + 1 > region.height
        )
        return region.width - self.styles.scrollbar_size_vertical if bar_due else region.width

    # ------------------------------------------------------------------------------------ rendering

    def _session_label(self, ref: RowRef, s: Session, now: float) -> tuple[tuple[object, ...], Text]:
        name_w, last_w, cost_w = self._columns(ref.depth)
        marked = s.key in self.book.marked
        age_s = age(s.created_at, now)
        # A preset session's last line is its agent's JSON: its activity says what it does in words. A session whose
        # model requests wait in the gateway says that instead ("queued for anthropic (3rd)"), but one waiting on a
        # person keeps what it asks.
        hold = s.gateway_hold if s.state != SessionState.WAITING else None
        line = hold or (s.activity if s.preset is not None else s.last_line)
        cost = s.cost_usd if cost_w else None
        if cost is None:
            last_w += cost_w  # the cost column is the last: a row without a cost gives it to its text
        last = clean(line or "")[: last_w + 1]  # cleaned before the cut, which could split a sequence
        merge = merge_mark(s)  # its branch: "⌥ merged", "⌥ conflict"
        merged = merge.plain if merge is not None else None
        sig = (s.state, s.attempt, age_s, last, marked, name_w, last_w, ref.name, s.node, cost, bool(hold), merged)
        cached = self._signatures.get(s.key)
        if cached is not None and cached[0] == sig:
            return sig, cached[1]  # type: ignore[return-value]
        text = Text(no_wrap=True, overflow="crop")
        text.append(MARK if marked else "  ", style="bold #e5c07b")
        text.append(fit(clean(ref.name), name_w), style="bold" if s.state.live else "")
        text.append(" ")
        text.append_text(state_text(s.state, STATE_W))
        text.append(" ")
        text.append(f"#{s.attempt}".ljust(ATTEMPT_W), style="bold #d19a66" if s.attempt > 1 else DIM)
        text.append(" ")
        text.append(age_s.rjust(AGE_W), style=DIM)
        if last_w > 0:
            text.append("  ")
            if s.node:
                # Where it runs (Ray): the node's address, before the last output line.
                where = ("@" + clean(s.node.split("/", 1)[0]))[:last_w]
                text.append(where, style="#56b6c2")
                last_w -= len(where) + 1
                if last_w > 0:
                    text.append(" ")
            if merge is not None and last_w > 0:
                merge.truncate(last_w)
                text.append_text(merge)
                last_w -= len(merge) + 1
                if last_w > 0:
                    text.append(" ")
            if last_w > 0:
                if hold:
                    style = hold_style(hold)
                else:
                    style = WAITING_COLOR if s.state == SessionState.WAITING else "#abb2bf"
                text.append(fit(last, last_w) if cost is not None else fit(last, last_w).rstrip(), style=style)
            if cost is not None:
                text.append(" ")
                text.append_text(cost_text(cost, COST_W))
        return sig, text

    def _group_signature(
        self, ref: RowRef, counts: dict[SessionState, int], marked: int, spend: tuple[int, float | None]
    ) -> tuple[object, ...]:
        return (
            tuple(sorted((k.value, v) for k, v in counts.items())),
            marked,
            self._columns(ref.depth),
            ref.name,
            spend,
        )

    def _group_label(
        self, ref: RowRef, counts: dict[SessionState, int], marked: int, spend: tuple[int, float | None] = (0, None)
    ) -> Text:
        name_w, last_w, cost_w = self._columns(ref.depth)
        total = sum(counts.values())
        text = Text(no_wrap=True, overflow="crop")
        text.append(fit(clean(ref.name), name_w), style="bold #56b6c2")
        if not total:
            return text  # a group only in older history: its older row says the rest
        text.append(f"{total:>4}", style="bold")
        text.append(" ")
        text.append_text(rate_text(completion_rate(counts), 4))
        text.append("  ")
        text.append_text(rollup(counts))
        if marked:
            text.append(f"  ●{marked}", style="bold #e5c07b")
        spent = usage_text(*spend)
        if spent and cost_w:
            # Right-aligned to end where the sessions' cost column ends.
            end = name_w + FIXED_W + last_w + cost_w
            gap = end - len(text) - len(spent)
            if gap >= 2:
                text.append(" " * gap)
                text.append_text(spent)
        return text

    def _render_session(self, key: str, now: float, force: bool = False) -> None:
        node = self.nodes.get("s:" + key)
        s = self.book.sessions.get(key)
        if node is None or s is None or node.data is None:
            return
        old = self._signatures.get(key)
        sig, text = self._session_label(node.data, s, now)
        if force or old is None or old[0] != sig:
            self._signatures[key] = (sig, text)
            node.set_label(text)

    def _older_label(self, ref: RowRef) -> tuple[tuple[object, ...], Text]:
        older = self.book.older
        n, loading = older.left.get(ref.id, 0), ref.id in older.loading
        width = max(30, self._width) - ref.depth * self.guide_depth
        sig = (n, loading, width)
        text = Text(no_wrap=True, overflow="crop")
        text.append("  ")
        if loading:
            text.append(f"loading older {ref.id} sessions…", style=f"italic {DIM}")
        else:
            text.append(f"{n:,} older ended session{'' if n == 1 else 's'}", style="italic #abb2bf")
            text.append(f"  enter loads {'them' if n <= PAGE else f'the next {PAGE}'}", style=DIM)
        text.truncate(width)
        return sig, text

    def refresh_older(self, force: bool = False) -> None:
        """Relabel the older rows whose count changed, or that started or stopped loading."""
        for node_id, node in self.nodes.items():
            if not node_id.startswith("o:") or node.data is None:
                continue
            old = self._signatures.get(node_id)
            sig, text = self._older_label(node.data)
            if force or old is None or old[0] != sig:
                self._signatures[node_id] = (sig, text)
                node.set_label(text)

    def refresh_rows(self, keys: set[str] | list[str], force: bool = False) -> None:
        now = self.clock.now()
        for key in keys:
            self._render_session(key, now, force)

    def refresh_groups(self, force: bool = False) -> None:
        """Recount every group from its visible sessions (one pass) and relabel the ones that changed."""
        counts: dict[str, dict[SessionState, int]] = {}
        marked: dict[str, int] = {}
        spend: dict[str, tuple[int, float | None]] = {}
        for node_id, node in self.nodes.items():
            if not node_id.startswith("s:"):
                continue
            s = self.book.sessions.get(node_id[2:])
            if s is None:
                continue
            tokens = s.tokens.total if s.tokens is not None else 0
            cost = s.cost_usd
            parent = node.parent
            while parent is not None and parent.data is not None:
                c = counts.setdefault(parent.data.id, {})
                c[s.state] = c.get(s.state, 0) + 1
                if s.key in self.book.marked:
                    marked[parent.data.id] = marked.get(parent.data.id, 0) + 1
                if tokens or cost is not None:
                    t, usd = spend.get(parent.data.id, (0, None))
                    spend[parent.data.id] = (t + tokens, usd if cost is None else (usd or 0.0) + cost)
                parent = parent.parent
        self._group_counts = counts
        for node_id, node in self.nodes.items():
            if not node_id.startswith("g:") or node.data is None:
                continue
            prefix = node.data.id
            c, m, u = counts.get(prefix, {}), marked.get(prefix, 0), spend.get(prefix, (0, None))
            sig = self._group_signature(node.data, c, m, u)
            old = self._signatures.get(node_id)
            if force or old is None or old[0] != sig:
                text = self._group_label(node.data, c, m, u)
                self._signatures[node_id] = (sig, text)
                node.set_label(text)
        self.refresh_older(force)

    def refresh_all(self, force: bool = False) -> None:
        """Re-render every row (a resize), or only the rows on screen (ages, once a second: a row scrolled
        into view catches up within a second, and 1,000 rows cost no more than 40)."""
        now = self.clock.now()
        if force:
            for node_id in list(self.nodes):
                if node_id.startswith("s:"):
                    self._render_session(node_id[2:], now, True)
            self.refresh_groups(True)
            return
        top = self.scroll_offset.y
        for line in self._tree_lines[top : top + self.size.height + 1]:
            ref = line.node.data
            if ref is not None and ref.kind == "session":
                self._render_session(ref.id, now)

    def group_counts(self, prefix: str) -> dict[SessionState, int]:
        return dict(self._group_counts.get(prefix, {}))

    # ------------------------------------------------------------------------------------ structure

    def sync(self, forest: list[Item]) -> None:
        """Make the tree show `forest`, touching only the rows that differ."""
        wanted = {item.id: parent for parent, item in walk(forest)}
        need = self._measure(forest, 0, None)
        if need != self._name_need:
            self._name_need = need
            if self.nodes:  # rows already shown were cut for the old width (new ones get the new one)
                self.call_later(self.refresh_all, True)
        for node_id in list(self.nodes):
            node = self.nodes.get(node_id)
            if node is None:
                continue  # went with an ancestor already
            parent = node.parent
            parent_id = parent.data.node_id if parent is not None and parent.data is not None else None
            if node_id not in wanted or wanted[node_id] != parent_id:
                self._drop(node)
        cursor = self.cursor_node
        self._fill(self.root, forest, 0)
        self.refresh_groups()
        if cursor is not None and cursor.data is not None:
            # The row under the cursor stays under it, though rows moved above it (a session that waits on a
            # person goes to the top of its group) or it moved itself: the selection never jumps to another
            # session, which `a` would then answer.
            target = self.nodes.get(cursor.data.node_id)
            if target is not None and self._tree_lines:  # the rows laid out now: the cursor moves before a frame
                self._keep_cursor(target)
        self.call_after_refresh(self._check_cursor)

    def _keep_cursor(self, node: TreeNode[RowRef]) -> None:
        if self.cursor_node is not node and node.data is not None and self.nodes.get(node.data.node_id) is node:
            self.move_cursor(node)

    def _measure(self, items: list[Item], depth: int, parent: str | None) -> int:
        need = 10
        for item in items:
            if isinstance(item, GroupNode):
                name = item.prefix if parent is None else item.prefix[len(parent) + 1 :]
                need = max(
                    need, depth * self.guide_depth + 2 + len(name), self._measure(item.children, depth + 1, item.prefix)
                )
            elif isinstance(item, LeafNode):
                need = max(need, depth * self.guide_depth + len(MARK) + len(item.name))
        return need

    def _drop(self, node: TreeNode[RowRef]) -> None:
        stack = [node]
        while stack:
            n = stack.pop()
            if n.data is not None:
                self.nodes.pop(n.data.node_id, None)
                self._signatures.pop(n.data.signature_id, None)
            stack.extend(n.children)
        node.remove()

    def _reorder(self, parent: TreeNode[RowRef], items: list[Item]) -> None:
        """Drop the fewest rows under `parent` that stand out of the wanted order (`_fill` puts them back in
        place): those outside the longest run already in order."""
        children = parent.children
        if len(children) < 2:
            return
        where = {id(child): i for i, child in enumerate(children)}
        present = [self.nodes[item.id] for item in items if item.id in self.nodes]
        seq = [where[id(node)] for node in present if id(node) in where]
        if all(a < b for a, b in itertools.pairwise(seq)):
            return
        keep = set(_longest_increasing(seq))
        for node in present:
            if id(node) in where and where[id(node)] not in keep:
                self._drop(node)

    def _fill(self, parent: TreeNode[RowRef], items: list[Item], depth: int) -> None:
        now = self.clock.now()
        self._reorder(parent, items)
        for i, item in enumerate(items):
            node = self.nodes.get(item.id)
            if node is None:
                before = i if i < len(parent.children) else None
                if isinstance(item, GroupNode):
                    name = item.prefix if depth == 0 or parent.data is None else item.prefix[len(parent.data.id) + 1 :]
                    ref = RowRef("group", item.prefix, depth, name)
                    node = parent.add(plain(name), ref, before=before, expand=item.prefix not in self.collapsed)
                    self.nodes[item.id] = node
                elif isinstance(item, LeafNode):
                    ref = RowRef("session", item.key, depth, item.name)
                    s = self.book.sessions[item.key]
                    sig, text = self._session_label(ref, s, now)
                    self._signatures[item.key] = (sig, text)
                    node = parent.add_leaf(text, ref, before=before)
                    self.nodes[item.id] = node
                else:
                    ref = RowRef("older", item.prefix, depth, "")
                    sig, text = self._older_label(ref)
                    self._signatures[item.id] = (sig, text)
                    node = parent.add_leaf(text, ref, before=before)
                    self.nodes[item.id] = node
            if isinstance(item, GroupNode):
                self._fill(node, item.children, depth + 1)

    # ------------------------------------------------------------------------------------ cursor

    @property
    def current(self) -> RowRef | None:
        node = self.cursor_node
        return node.data if node is not None else None

    def select_key(self, key: str) -> bool:
        """Put the cursor on a session's row (unfolding its groups); False if it is not shown."""
        return self.select_row("s:" + key)

    def select_row(self, node_id: str) -> bool:
        """Put the cursor on a row by its id (`s:KEY`, `g:PREFIX`, `o:PREFIX`), unfolding its groups."""
        node = self.nodes.get(node_id)
        if node is None:
            return False
        parent = node.parent
        while parent is not None and parent is not self.root:
            parent.expand()
            parent = parent.parent
        self.call_after_refresh(self.move_cursor, node)
        return True

    def _check_cursor(self) -> None:
        """After a regroup the cursor may sit on another row without the stock widget saying so."""
        if self.cursor_line < 0 and self.last_line >= 0:
            self.cursor_line = 0
        ref = self.current
        if ref != self._last_ref:
            self._last_ref = ref
            self.post_message(self.RowHighlighted(self, ref))

    @on(Tree.NodeHighlighted)
    def _row_highlighted(self, event: Tree.NodeHighlighted[RowRef]) -> None:
        event.stop()
        self._last_ref = event.node.data
        self.post_message(self.RowHighlighted(self, event.node.data))

    @on(Tree.NodeCollapsed)
    def _remember_fold(self, event: Tree.NodeCollapsed[RowRef]) -> None:
        event.stop()
        if event.node.data is not None:
            self.collapsed.add(event.node.data.id)

    @on(Tree.NodeExpanded)
    def _remember_unfold(self, event: Tree.NodeExpanded[RowRef]) -> None:
        event.stop()
        if event.node.data is not None:
            self.collapsed.discard(event.node.data.id)

    @on(Tree.NodeSelected)
    def _swallow_selected(self, event: Tree.NodeSelected[RowRef]) -> None:
        event.stop()  # a click folds a group (auto_expand); the app acts on highlights, not selections

    def action_fold(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.allow_expand and node.is_expanded:
            node.collapse()
        elif node.parent is not None and node.parent is not self.root:
            self.move_cursor(node.parent)

    def action_unfold(self) -> None:
        node = self.cursor_node
        if node is not None and node.allow_expand and not node.is_expanded:
            node.expand()

    def toggle_current(self) -> None:
        node = self.cursor_node
        if node is not None and node.allow_expand:
            node.toggle()


def _longest_increasing(seq: list[int]) -> list[int]:
    """The values of a longest strictly increasing subsequence of `seq` (patience sorting, n log n)."""
    tails: list[int] = []  # index into seq of the smallest tail of a run of each length
    prev: list[int] = [-1] * len(seq)
    for i, v in enumerate(seq):
        lo, hi = 0, len(tails)
        while lo < hi:
            mid = (lo + hi) // 2
            if seq[tails[mid]] < v:
                lo = mid + 1
            else:
                hi = mid
        if lo:
            prev[i] = tails[lo - 1]
        if lo == len(tails):
            tails.append(i)
        else:
            tails[lo] = i
    out: list[int] = []
    i = tails[-1] if tails else -1
    while i >= 0:
        out.append(seq[i])
        i = prev[i]
    return out[::-1]
