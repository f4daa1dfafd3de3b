"""Group session labels into a radix tree on `-` boundaries, for the sessions pane.

`blog-publisher-superada-2026-04-02` and `blog-publisher-openclaw-guide-2026-04-02` share the group
`blog-publisher`; a group with a single child folds into its parent's path (no chains of one-child
groups), and a "group" of a single session is just that session. A group with older history the dashboard
has not loaded (`crewtui.ui.older`) is always a group of its own at the top, its last row an `OlderNode`. The
result is a plain description of the
wanted tree (ids, parents, order) that the tree widget reconciles against what it shows, changing only the
difference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Set
from dataclasses import dataclass, field

_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[object, ...]:
    """Sort "r2" before "r10": runs and dates read in their natural order."""
    return tuple(int(p) if p.isdigit() else p for p in _DIGITS.split(text))


@dataclass
class GroupNode:
    """A group: every session whose label starts with `prefix` + "-" (or equals it)."""

    prefix: str
    children: list[GroupNode | LeafNode | OlderNode] = field(default_factory=list)

    @property
    def id(self) -> str:
        return "g:" + self.prefix


@dataclass
class LeafNode:
    key: str
    label: str
    group: str | None  # the enclosing group's prefix, None at the top level

    @property
    def id(self) -> str:
        return "s:" + self.key

    @property
    def name(self) -> str:
        """The label without its group's prefix: the group row already says it."""
        if self.group and self.label.startswith(self.group + "-"):
            return self.label[len(self.group) + 1 :]
        return self.label


@dataclass
class OlderNode:
    """The row of a top-level group's older ended sessions, not loaded: opening it loads the next page."""

    prefix: str

    @property
    def id(self) -> str:
        return "o:" + self.prefix


Item = GroupNode | LeafNode | OlderNode


@dataclass
class _Trie:
    children: dict[str, _Trie] = field(default_factory=dict)
    sessions: list[tuple[str, str]] = field(default_factory=list)  # (key, label) ending exactly here
    size: int = 0  # sessions in this subtree
    top: bool = False  # a top-level group that stays one (it has, or had, older history)
    older: bool = False  # its older history is not all loaded: it ends with an `OlderNode`


def build_forest(
    items: list[tuple[str, str]],
    older: Iterable[str] = (),
    tops: Iterable[str] = (),
    *,
    first: set[str] | frozenset[str] = frozenset(),
) -> list[Item]:
    """The top-level rows for (key, label) pairs: groups first, then sessions, each in natural order; the
    sessions whose keys are in `first` (waiting on a person) come before both, at the top of their group. Each
    prefix in `older` (a label's first part) gets a top-level group ending with its `OlderNode`, even with no
    session loaded; one in `tops` stays a top-level group of its own while it has sessions (once its older
    history is loaded, its rows keep their place instead of folding into a longer prefix)."""
    root = _Trie()
    for key, label in items:
        node = root
        node.size += 1
        for token in label.split("-"):
            node = node.children.setdefault(token, _Trie())
            node.size += 1
        node.sessions.append((key, label))
    for prefix in tops:
        if prefix in root.children:
            root.children[prefix].top = True
    for prefix in older:
        node = root.children.setdefault(prefix, _Trie())
        node.top = node.older = True
    return _children_of(root, [], None, first)


def _children_of(node: _Trie, path: list[str], group: str | None, first: Set[str]) -> list[Item]:
    groups: list[GroupNode] = []
    leaves = [LeafNode(k, lbl, group) for k, lbl in node.sessions] if path and group == "-".join(path) else []
    for token in sorted(node.children, key=natural_key):
        child = node.children[token]
        for item in _fold(child, [*path, token], group, first):
            (groups if isinstance(item, GroupNode) else leaves).append(item)  # type: ignore[arg-type]
    groups.sort(key=lambda g: natural_key(g.prefix))
    leaves.sort(key=lambda s: (natural_key(s.label), s.key))
    top = [s for s in leaves if s.key in first] if first else []
    if top:
        leaves = [s for s in leaves if s.key not in first]
    return [*top, *groups, *leaves, *([OlderNode(group)] if node.older and group is not None else [])]


def _fold(node: _Trie, path: list[str], group: str | None, first: Set[str]) -> list[Item]:
    """What a trie node becomes under its parent group: a leaf, a group, or (folded) its only child."""
    if node.top:
        prefix = "-".join(path)
        return [GroupNode(prefix, _children_of(node, path, prefix, first))]
    if node.size == 1:
        key, label = _only_session(node)
        return [LeafNode(key, label, group)]
    if not node.sessions and len(node.children) == 1:
        token, child = next(iter(node.children.items()))
        return _fold(child, [*path, token], group, first)
    prefix = "-".join(path)
    g = GroupNode(prefix)
    g.children = _children_of(node, path, prefix, first)
    return [g]


def _only_session(node: _Trie) -> tuple[str, str]:
    while not node.sessions:
        node = next(iter(node.children.values()))
    return node.sessions[0]


def walk(forest: list[Item]) -> list[tuple[str | None, Item]]:
    """Every node with its parent group's id (None at the top), parents before children."""
    out: list[tuple[str | None, Item]] = []

    def visit(parent: str | None, items: list[Item]) -> None:
        for item in items:
            out.append((parent, item))
            if isinstance(item, GroupNode):
                visit(item.id, item.children)

    visit(None, forest)
    return out


def group_members(prefix: str, labels: dict[str, str]) -> list[str]:
    """Keys of the sessions a group holds: the label is the prefix or starts with prefix + "-"."""
    head = prefix + "-"
    return [k for k, lbl in labels.items() if lbl == prefix or lbl.startswith(head)]
