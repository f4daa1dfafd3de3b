"""Agent adapters: one preset per agent CLI (see base.py for the contract), found by name."""

from __future__ import annotations

from crewtui.adapters.aider import Aider
from crewtui.adapters.base import AgentOptions, Conversation, Preset
from crewtui.adapters.claude_code import ClaudeCode
from crewtui.adapters.codex import Codex
from crewtui.adapters.gemini import Gemini
from crewtui.adapters.jsonl import Jsonl
from crewtui.adapters.openclaw import Openclaw
from crewtui.adapters.opencode import Opencode
from crewtui.errors import BadInput

PRESETS: dict[str, Preset] = {
    p.name: p for p in (ClaudeCode(), Codex(), Gemini(), Opencode(), Aider(), Openclaw(), Jsonl())
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; one-line BadInput naming the known ones otherwise."""
    preset = PRESETS.get(name)
    if preset is None:
        known = ", ".join(sorted(PRESETS))
        raise BadInput(f"unknown preset {name!r}: use one of {known}")
    return preset


__all__ = ["PRESETS", "AgentOptions", "Conversation", "Preset", "get_preset"]
