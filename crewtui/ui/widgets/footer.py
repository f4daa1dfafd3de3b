"""The footer: the keys of the action registry that fit the terminal's width, the most needed first.

Textual's `Footer` lays out every binding in a row and lets the ones past the edge fall off, so at 80 columns
`? Help` and `q Quit` were cut and the palette key overlapped the rest. This one drops whole keys instead, the
least needed first (`FOOTER_PRIORITY` in actions.py), and keeps the ones it shows in the registry's order;
`?` (help) and the palette list the rest.
"""

from __future__ import annotations

from itertools import groupby

from textual.app import ComposeResult
from textual.binding import Binding
from textual.reactive import reactive
from textual.widgets import Footer
from textual.widgets._footer import FooterKey, FooterLabel, KeyGroup

from crewtui.ui.actions import FOOTER_PRIORITY

# Columns of the palette key docked on the right (its border, key, description, padding and margin).
PALETTE_WIDTH = {True: 12, False: 14}  # by `compact`


class CrewFooter(Footer):
    width = reactive(0, recompose=True)
    """The columns there are to fill (the app sets it as the terminal resizes); 0 until known."""

    def _entry_width(self, bindings: list[Binding]) -> int:
        """Columns one footer entry takes, as Footer's CSS lays it out (compact or not)."""
        if len(bindings) > 1:  # a group: its keys side by side, then the group's name
            keys = sum(len(self.app.get_key_display(b)) for b in bindings)
            group = bindings[0].group
            label = len(group.description) if group else 0
            return 1 + keys + 1 + label + (0 if self.compact else 1)
        b = bindings[0]
        key, desc = len(self.app.get_key_display(b)), len(b.description)
        return key + 1 + desc + 1 if self.compact else key + desc + 3

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        active = self.screen.active_bindings
        by_action: dict[str, tuple[Binding, bool, str]] = {}
        for _node, binding, enabled, tooltip in active.values():
            if binding.show:
                by_action.setdefault(binding.action, (binding, enabled, tooltip))
        # Entries as the footer shows them: one per action, a group's actions as one entry.
        entries: list[list[tuple[Binding, bool, str]]] = []
        for group, items in groupby(by_action.values(), lambda item: item[0].group):
            members = list(items)
            if group is not None and len(members) > 1:
                entries.append(members)
            else:
                entries.extend([m] for m in members)
        keep = self._fit(entries)
        for entry in entries:
            if id(entry) not in keep:
                continue
            if len(entry) > 1:
                group = entry[0][0].group
                with KeyGroup(classes="-compact" if group and group.compact else ""):
                    for binding, enabled, tooltip in entry:
                        yield FooterKey(
                            binding.key,
                            self.app.get_key_display(binding),
                            "",
                            binding.action,
                            disabled=not enabled,
                            tooltip=tooltip or binding.description,
                            classes="-grouped",
                        ).data_bind(compact=Footer.compact)
                yield FooterLabel(group.description if group else "")
            else:
                binding, enabled, tooltip = entry[0]
                yield FooterKey(
                    binding.key,
                    self.app.get_key_display(binding),
                    binding.description,
                    binding.action,
                    disabled=not enabled,
                    tooltip=tooltip,
                ).data_bind(compact=Footer.compact)
        if self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE:
            try:
                _node, binding, enabled, tooltip = active[self.app.COMMAND_PALETTE_BINDING]
            except KeyError:
                pass
            else:
                yield FooterKey(
                    binding.key,
                    self.app.get_key_display(binding),
                    binding.description,
                    binding.action,
                    classes="-command-palette",
                    disabled=not enabled,
                    tooltip=binding.tooltip or binding.description,
                )

    def _fit(self, entries: list[list[tuple[Binding, bool, str]]]) -> set[int]:
        """The entries (by id()) that fit in the width, taken in FOOTER_PRIORITY order; all while it is unknown."""
        if not self.width:
            return {id(e) for e in entries}
        room = self.width - (PALETTE_WIDTH[self.compact] if self.show_command_palette else 0)

        def rank(entry: list[tuple[Binding, bool, str]]) -> int:
            binding = entry[0][0]
            name = (binding.group.description if len(entry) > 1 and binding.group else binding.id) or ""
            return FOOTER_PRIORITY.index(name) if name in FOOTER_PRIORITY else len(FOOTER_PRIORITY)

        keep: set[int] = set()
        for entry in sorted(entries, key=rank):
            need = self._entry_width([b for b, _, _ in entry])
            if need <= room:
                keep.add(id(entry))
                room -= need
        return keep
