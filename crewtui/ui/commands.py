"""The command palette's provider: built from the action registry, so it offers exactly what the keys do.

Names and help lines go to the palette as literal text (`Content`, escaped help), never read as markup.
"""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content
from textual.markup import escape

from crewtui.ui.actions import ACTIONS, ActionSpec, key_label


def _help(spec: ActionSpec) -> str:
    # Hit.help is read as markup by the palette: escaped, so a "[" in a key or a sentence stays a "[".
    return escape(f"key {key_label(spec)} · {spec.help}")


class ActionsProvider(Provider):
    async def discover(self) -> Hits:
        for spec in ACTIONS:
            yield DiscoveryHit(
                Content(spec.palette_name),
                partial(self.app.run_action, spec.action),
                text=spec.palette_name,
                help=_help(spec),
            )

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for spec in ACTIONS:
            name = spec.palette_name
            score = max(matcher.match(name), matcher.match(spec.help) * 0.8)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(name),
                    partial(self.app.run_action, spec.action),
                    text=name,
                    help=_help(spec),
                )
