"""Messages the dashboard's parts send each other, named after what happened.

Widget-specific ones live in their widget (`SessionTree.RowHighlighted`); these are app-wide.
"""

from __future__ import annotations

from textual.message import Message


class RuntimeLost(Message):
    """The runtime's event stream ended: it stopped, or the socket to it closed."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason
