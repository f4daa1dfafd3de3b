"""aider (`aider --message`): one task per run, plain text out; tokens and cost read from its usage lines.

aider prints no JSON on stdout (its `--analytics-log FILE` JSONL goes to a file the runtime does not tail), so
this preset reads the plain lines it prints, as written by `Coder.calculate_and_show_tokens_and_cost` in
`aider/coders/base_coder.py` (Aider-AI/aider 0.86; not run here):

    Tokens: 1.2k sent, 200 cache write, 3.4k cache hit, 300 received. Cost: $0.01 message, $0.05 session.

(the cache parts only when non-zero; with both cache parts the `Cost:` part is on a line of its own; no `Cost:`
part when the model has no price). Counts are rounded by aider (`format_tokens`: 1234 → "1.2k", 12345 → "12k"),
so tokens are approximate. "sent" counts the whole prompt: input = sent - cache hit - cache write (uncached).
Each usage line is one message's (added); the `$… session` cost is the run's running total. A retry after a
model error prints `Retrying in 0.5 seconds...` after the error line: a rate limit when that line says so.
"Applied edit to PATH" shows as an edit. Every other line is plain output, kept in the transcript (not
Unparsed). The run ends when aider exits; there is no end-of-turn line, so no TurnEnded (the exit code tells).

Permissions: only `allow` (`--yes-always`): without it aider asks on its terminal, which a session does not have.
"""

from __future__ import annotations

import math
import re
from typing import ClassVar

from crewtui.adapters.base import (
    Activity,
    AgentEvent,
    AgentOptions,
    Conversation,
    Cost,
    Permissions,
    Preset,
    RateLimited,
    Said,
    Tokens,
    Usage,
    as_int,
    as_num,
    one_line,
)

_NUM = r"([\d.,]+[kKmM]?)"
_TOKENS = re.compile(rf"Tokens:\s*{_NUM} sent(?:,\s*{_NUM} cache write)?(?:,\s*{_NUM} cache hit)?,\s*{_NUM} received\.")
_SESSION_COST = re.compile(r"Cost:\s*\$([\d.,]+) message,\s*\$([\d.,]+) session")
_RETRY = re.compile(r"Retrying in ([\d.]+) seconds")
_EDIT = re.compile(r"Applied edit to (.+)")
_RATE_WORDS = ("ratelimit", "rate limit", "429", "overloaded", "too many requests")


def count(text: str | None) -> int:
    """aider's rounded count ("1.2k", "12k", "950", "1,234") as an int."""
    if not text:
        return 0
    s = text.replace(",", "").strip()
    scale = 1
    if s[-1:] in ("k", "K"):
        scale, s = 1000, s[:-1]
    elif s[-1:] in ("m", "M"):
        scale, s = 1_000_000, s[:-1]
    try:
        number = float(s) * scale
    except ValueError:
        return 0
    return as_int(round(number)) if math.isfinite(number) else 0


def amount(text: str) -> float | None:
    """A dollar or seconds figure of aider's ("0.05", "1,234.5"), or None for one that is not a number."""
    try:
        return as_num(float(text.replace(",", "")))
    except ValueError:
        return None


class AiderConversation(Conversation):
    steer_mode = "next_turn"
    closes_stdin = False

    def __init__(self, options: AgentOptions, task: str | None) -> None:
        super().__init__(options, task)
        self._rate_error = False  # the last error line was a rate limit

    def start(self) -> list[str]:
        self.asked += 1  # the task, in the argv
        return []

    def feed(self, line: str) -> list[AgentEvent]:
        text = line.strip().lstrip("> ").strip()  # aider's chat history quotes its own lines with "> "
        if not text:
            return []
        out: list[AgentEvent] = []
        if "Tokens:" in text:
            m = _TOKENS.search(text)
            if m:
                sent, write, hit, received = (count(g) for g in m.groups())
                tokens = Tokens(input=max(0, sent - write - hit), output=received, cache_read=hit, cache_write=write)
                out += [Usage(tokens), Activity("thinking")]
        if "Cost:" in text:
            c = _SESSION_COST.search(text)
            cost = amount(c.group(2)) if c else None
            if cost is not None:
                out.append(Cost(cost, total=True))
        if out:
            return out
        if text.startswith("Retrying in"):
            r = _RETRY.search(text)
            delay = amount(r.group(1)) if r else None
            if self._rate_error:
                rl = RateLimited(delay=delay, status=429)
                return [rl, Activity(rl.describe())]
            return [Activity(one_line(text))]
        low = text.lower()
        if "error" in low:
            self._rate_error = any(w in low for w in _RATE_WORDS)
            return []
        e = _EDIT.match(text)
        if e:
            return [Said("tool_result", text, name="edit"), Activity(one_line(f"edited {e.group(1)}"))]
        return []


class Aider(Preset):
    name = "aider"
    program = "aider"
    install = "python -m pip install aider-install && aider-install"
    conversation_class = AiderConversation
    reads_stdin = False  # its task is in its argv
    permissions: ClassVar[tuple[Permissions, ...]] = ("allow",)
    reports_cost = True

    def argv(self, options: AgentOptions, task: str | None) -> list[str]:
        return [
            *self.command(options),
            *(["--message", task] if task is not None else []),
            "--yes-always",
            "--no-pretty",
            "--no-fancy-input",
            *(["--model", options.model] if options.model else []),
            *options.args,
        ]
