"""The contract between crewtui and one agent CLI: how to start it, talk to it, and read what it prints.

A **preset** (one module per agent in this package) knows one CLI: the argv to run (its program, the flags that
make it speak JSON, then the user's extra `args`), the lines to write on its stdin at the start (Claude Code
takes the task as a stream-json user message; Codex's app-server wants a JSON-RPC handshake), and how a steer or
an answer to a permission is written. For each session it opens a **conversation**: a small stateful parser
that turns every stdout line into typed events (below) and may ask for lines to be written back (a protocol
reply). Nothing here does I/O or blocks; the runtime feeds lines in and acts on the events. A line a parser
cannot read is never lost: it stays in the transcript and comes back as `Unparsed`.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from crewtui.errors import BadInput

Permissions = Literal["ask", "allow", "deny"]
# How a steer reaches the agent: `live` joins the running turn (or queues as the next one in the same process);
# `next_turn`: the agent cannot be steered while it runs, the steer continues the conversation (resume by its
# session id) once this run has ended.
SteerMode = Literal["live", "next_turn"]

ACTIVITY_CHARS = 120  # one line in a table cell
# What an agent's numbers may say, at most: a token count (per field; sums stop there too, so four of them stay far
# inside SQLite's 64-bit integers and a float's exact range) and dollars. Nothing real comes near either.
MAX_TOKENS = 10**15
MAX_USD = 1e9
# How deep an agent's JSON may nest: a line nested deeper is not read (Unparsed), as a session holding it (a
# permission's input, a result) could no longer be stored (pydantic serialises some 250 levels).
MAX_DEPTH = 64


@dataclass(frozen=True)
class Price:
    """Dollars per million tokens, for agents that report no cost of their own."""

    input: float = 0.0
    output: float = 0.0
    cache_read: float = 0.0
    cache_write: float = 0.0

    def cost(self, tokens: Tokens) -> float:
        return (
            tokens.input * self.input
            + tokens.output * self.output
            + tokens.cache_read * self.cache_read
            + tokens.cache_write * self.cache_write
        ) / 1_000_000


@dataclass(frozen=True)
class Tokens:
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            min(MAX_TOKENS, self.input + other.input),
            min(MAX_TOKENS, self.output + other.output),
            min(MAX_TOKENS, self.cache_read + other.cache_read),
            min(MAX_TOKENS, self.cache_write + other.cache_write),
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "input": self.input,
            "output": self.output,
            "cache_read": self.cache_read,
            "cache_write": self.cache_write,
        }


@dataclass(frozen=True)
class AgentOptions:
    """What the crew file says about one agent of a preset (`[agents.NAME]`)."""

    command: tuple[str, ...] = ()  # the program (and any fixed words before the preset's flags); () = preset's
    args: tuple[str, ...] = ()  # extra arguments, passed through
    permissions: Permissions = "ask"
    price: Price | None = None
    model: str | None = None  # for presets that choose the model in their protocol rather than by a flag


# --------------------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Activity:
    """What the agent does now, one line: "thinking", "Bash: npm test", "editing src/app.py"."""

    text: str


@dataclass(frozen=True, slots=True)
class AgentSession:
    """The agent's own id for this conversation (Claude's session id, Codex's thread id): resume needs it."""

    id: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens used. `total`: the conversation's totals so far (replace); otherwise more to add."""

    tokens: Tokens
    total: bool = False


@dataclass(frozen=True, slots=True)
class Cost:
    """Dollars the agent reports. `total`: the conversation's total so far (replace); otherwise more to add."""

    usd: float
    total: bool = True


@dataclass(frozen=True, slots=True)
class TurnEnded:
    """A turn ended: the answer to the task (or a steer). `turns`: the count so far, if the agent says it."""

    text: str | None = None
    is_error: bool = False
    error: str | None = None
    rate_limited: bool = False  # it ended because the model's rate limit ran out of retries
    turns: int | None = None
    result: Any = None  # a structured result (the `jsonl` protocol), else None: `text` is the result


@dataclass(frozen=True, slots=True)
class Needs:
    """The agent waits on a person: a permission for a tool, or a question."""

    kind: Literal["permission", "question"]
    id: str
    tool: str | None = None
    input: Any = None
    text: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "id": self.id}
        if self.tool is not None:
            out["tool"] = self.tool
        if self.input is not None:
            out["input"] = self.input
        if self.text is not None:
            out["text"] = self.text
        return out


@dataclass(frozen=True, slots=True)
class Answered:
    """A request the agent made was answered (by us, or the agent withdrew it)."""

    id: str


@dataclass(frozen=True, slots=True)
class RateLimited:
    """The model refused for rate (or overload); the agent retries by itself."""

    attempt: int | None = None
    max: int | None = None
    delay: float | None = None  # seconds until the retry
    status: int | None = None

    def describe(self) -> str:
        what = "overloaded" if self.status == 529 else "rate limited"
        parts = [what]
        if self.attempt is not None:
            parts.append(f"retry {self.attempt}/{self.max}" if self.max else f"retry {self.attempt}")
        if self.delay is not None:
            parts.append(f"in {self.delay:.0f}s")
        return parts[0] + (", " + " ".join(parts[1:]) if len(parts) > 1 else "")


Role = Literal["user", "assistant", "tool", "tool_result", "permission", "answer", "system", "error"]


@dataclass(frozen=True, slots=True)
class Said:
    """One readable turn of the conversation, for the transcript (not raw JSON)."""

    role: Role
    text: str
    name: str | None = None  # the tool's name for `tool` / `tool_result`
    ref: str | None = None  # a permission's request id, so its answer can be put beside it


@dataclass(frozen=True, slots=True)
class Reply:
    """A line the conversation needs written to the agent's stdin now (a protocol step)."""

    line: str


@dataclass(frozen=True, slots=True)
class Unparsed:
    """A line that is not what the protocol says; it stays in the transcript, the session goes on."""

    line: str


AgentEvent = (
    Activity | AgentSession | Usage | Cost | TurnEnded | Needs | Answered | RateLimited | Said | Reply | Unparsed
)


# ----------------------------------------------------------------------------------------- conversations


class Conversation(ABC):
    """One session's exchange with its agent: feed it stdout lines, ask it for the lines to write."""

    steer_mode: ClassVar[SteerMode] = "live"
    # The agent takes turns on stdin until it closes (Claude Code, Codex app-server): once `finished`, the runtime
    # closes its stdin so it exits. False: the agent ends by itself.
    closes_stdin: ClassVar[bool] = True

    def __init__(self, options: AgentOptions, task: str | None) -> None:
        self.options = options
        self.task = task
        self.asked = 0  # turns asked of the agent (the task, live steers)
        self.ended = 0  # turns it ended
        self.pending: dict[str, Needs] = {}

    def start(self) -> list[str]:
        """Lines to write on stdin once the agent runs (the task, a handshake). Default: none."""
        return []

    @abstractmethod
    def feed(self, line: str) -> list[AgentEvent]:
        """The events one stdout line makes (never raises: what it cannot read is `Unparsed`)."""

    def steer(self, text: str) -> list[str]:
        """Lines that put `text` before the agent mid-run. Raises BadInput if the agent cannot take it now."""
        raise BadInput(f"{self.preset_name()} cannot be steered while it runs")

    def answer(self, request_id: str | None, allow: bool, message: str | None = None) -> list[str]:
        """Lines that answer a pending request (None: the only one). BadInput for an id that is not pending."""
        raise BadInput(f"{self.preset_name()} does not ask for permissions")

    @property
    def finished(self) -> bool:
        """Every turn asked has ended and nothing waits: the agent's stdin may close, so it exits."""
        return self.asked > 0 and self.ended >= self.asked and not self.pending

    def take(self, request_id: str | None) -> Needs:
        """The pending request `request_id` (None: the only one), removed; one-line BadInput otherwise."""
        if not self.pending:
            raise BadInput("it is not waiting for an answer")
        if request_id is None:
            if len(self.pending) > 1:
                ids = ", ".join(sorted(self.pending))
                raise BadInput(f"it waits on {len(self.pending)} requests; name one of: {ids}")
            request_id = next(iter(self.pending))
        needs = self.pending.pop(request_id, None)
        if needs is None:
            ids = ", ".join(sorted(self.pending))
            raise BadInput(f"no pending request {request_id!r} (stale?); pending: {ids}")
        return needs

    @classmethod
    def preset_name(cls) -> str:
        return cls.__module__.rsplit(".", 1)[-1]


class Preset(ABC):
    """One agent CLI: its name, the program people install, the argv, and its conversations."""

    name: ClassVar[str]
    program: ClassVar[str]  # its usual name on PATH
    install: ClassVar[str]  # how to install it, for the "not found" message
    conversation_class: ClassVar[type[Conversation]]  # what each session's exchange with it is
    permissions: ClassVar[tuple[Permissions, ...]] = ("ask", "allow", "deny")  # the settings it can honour
    reports_cost: ClassVar[bool] = False  # else tokens are priced with the crew file's `price`
    # False: the agent takes nothing on stdin (its task is in its argv), and some wait for the end of a piped stdin
    # before they start: the runtime closes it at once.
    reads_stdin: ClassVar[bool] = True
    task_on_stdin: ClassVar[bool] = False  # the task is written on stdin (one protocol line), not put in the argv

    def command(self, options: AgentOptions) -> list[str]:
        return list(options.command) or [self.program]

    def env(self, options: AgentOptions) -> dict[str, str]:
        """Environment the agent needs for these options (the crew file's `env` can override it)."""
        return {}

    def gateway_args(self, base_url: str) -> list[str]:
        """Arguments that point the agent at the model gateway (`base_url` is its session's, without /v1), for
        agents that read the endpoint from their config rather than ANTHROPIC_BASE_URL / OPENAI_BASE_URL."""
        return []

    @abstractmethod
    def argv(self, options: AgentOptions, task: str | None) -> list[str]:
        """The whole argv for one session."""

    @property
    def steer_mode(self) -> SteerMode:
        """How a steer reaches this agent (its conversations say)."""
        return self.conversation_class.steer_mode

    def conversation(self, options: AgentOptions, task: str | None) -> Conversation:
        """A fresh conversation for one session."""
        return self.conversation_class(options, task)

    def resume_argv(self, options: AgentOptions, agent_session: str, text: str) -> list[str]:
        """The argv that continues conversation `agent_session` with `text` (for `next_turn` steering)."""
        raise BadInput(f"{self.name} cannot continue a conversation")

    @property
    def default_permissions(self) -> Permissions:
        """When the crew file says none: a person decides if the agent can ask; else it is refused what needs
        approval; else allowed (aider and OpenClaw cannot run headless any other way)."""
        return next(p for p in ("ask", "deny", "allow") if p in self.permissions)

    def check(self, options: AgentOptions) -> None:
        """Raise BadInput (one line, naming the key) for a setting this preset cannot honour."""
        if options.permissions not in self.permissions:
            can = " or ".join(repr(p) for p in self.permissions)
            raise BadInput(f"permissions = {options.permissions!r} does not apply to preset {self.name} (use {can})")


# ------------------------------------------------------------------------------------------------ helpers


# A JSON escape: a surrogate pair, a lone surrogate, or any other (so an escaped backslash is skipped whole).
_ESCAPE = re.compile(
    r"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"  # a pair: kept
    r"|u[dD][89a-fA-F][0-9a-fA-F]{2}"  # a lone surrogate: U+FFFD
    r"|.)",
    re.S,
)
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        for child in v.values() if isinstance(v, dict) else v:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def parse_json(text: str) -> Any:
    """The JSON value in `text`, or None: not JSON, or nested deeper than MAX_DEPTH. A lone surrogate escape
    ("\\ud800") reads as U+FFFD: such a string could not be encoded as UTF-8 (JSON, SQLite) later."""
    if "\\u" in text and _SURROGATE.search(text):  # the substring test first: most lines have no escape
        text = _ESCAPE.sub(lambda m: "\\ufffd" if len(m.group()) == 6 else m.group(), text)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(value, (dict, list)) and text.count("{") + text.count("[") > MAX_DEPTH and _too_deep(value):
        return None
    return value


def loads(line: str) -> dict[str, Any] | None:
    """The JSON object on a line, or None (not JSON, or JSON that is not an object). A byte order mark before it
    is ignored."""
    text = line.strip().removeprefix("\ufeff")
    if not text.startswith("{"):
        return None
    value = parse_json(text)
    return value if isinstance(value, dict) else None


def dumps(value: Any) -> str:
    """One protocol line (compact JSON, no newline inside)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def one_line(text: Any, limit: int = ACTIVITY_CHARS) -> str:
    """A value as one short line for an activity: whitespace folded, cut with an ellipsis."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def as_int(value: Any) -> int:
    """A count an agent reports: a non-negative int (not a bool) up to MAX_TOKENS, else 0."""
    return min(value, MAX_TOKENS) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def as_num(value: Any, limit: float = MAX_USD) -> float | None:
    """An amount an agent reports (dollars, seconds): a finite non-negative number up to `limit`, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return float(min(value, limit)) if value >= 0 else None


def tool_activity(name: str, args: Any) -> str:
    """ "Bash: npm test", "editing src/app.py": what a tool call does, in a few words."""
    a = args if isinstance(args, dict) else {}
    lname = name.lower()
    path = a.get("file_path") or a.get("path") or a.get("notebook_path")
    if lname in ("edit", "multiedit", "write", "notebookedit", "apply_patch", "file_change") and path:
        return one_line(f"editing {path}")
    if lname in ("read",) and path:
        return one_line(f"reading {path}")
    for k in ("command", "cmd", "pattern", "query", "url", "description", "prompt"):
        v = a.get(k)
        if isinstance(v, list):
            v = " ".join(str(x) for x in v)
        if isinstance(v, str) and v.strip():
            return one_line(f"{name}: {v}")
    return one_line(name)


@dataclass
class Totals:
    """What a session knows of its agent, folded from its events (the runtime keeps one per session)."""

    tokens: Tokens = field(default_factory=Tokens)
    cost_usd: float | None = None
    turns: int = 0
    unparsed: int = 0
    rate_limited: int = 0

    def apply(self, ev: AgentEvent) -> None:
        if isinstance(ev, Usage):
            self.tokens = ev.tokens if ev.total else self.tokens + ev.tokens
        elif isinstance(ev, Cost):
            self.cost_usd = ev.usd if ev.total else min(MAX_USD, (self.cost_usd or 0.0) + ev.usd)
        elif isinstance(ev, TurnEnded):
            self.turns = ev.turns if ev.turns is not None else self.turns + 1
        elif isinstance(ev, Unparsed):
            self.unparsed += 1
        elif isinstance(ev, RateLimited):
            self.rate_limited += 1
