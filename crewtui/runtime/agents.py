"""Agents with a preset: the runtime's side of each conversation (crewtui/adapters holds the agents' side).

For every running session of a preset agent this keeps its `Conversation`: writes the lines it starts with,
feeds it every stdout line the tailer reads, and folds the events into the session (activity, tokens, cost,
turns, its agent's session id, what it waits for). A request for a person moves the session to `waiting`;
the answer (`approve` / `deny`) moves it back to `running`. When every turn asked of an agent that reads turns
from stdin has ended, its stdin is closed so it exits like a finished program. Writes to an agent go through
one task per session, in order; nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from crewtui.adapters import get_preset
from crewtui.adapters.base import (
    Activity,
    AgentEvent,
    AgentOptions,
    AgentSession,
    Answered,
    Conversation,
    Cost,
    Needs,
    Price,
    RateLimited,
    Reply,
    Said,
    Tokens,
    Totals,
    TurnEnded,
    Unparsed,
    Usage,
    one_line,
)
from crewtui.config import CrewConfig, render_command
from crewtui.errors import BadInput, Conflict
from crewtui.events import SessionAgentUpdate, SessionAnswered
from crewtui.model import MAX_STEER_BYTES, Session, SessionState, Turn, of_record
from crewtui.runtime.bus import EventBus
from crewtui.runtime.drivers import SessionHandle
from crewtui.runtime.limits import Pools
from crewtui.runtime.sessions import SessionTable
from crewtui.spend import TokenCounts

log = logging.getLogger("crewtui.agents")


@dataclass
class Link:
    """One session's conversation and what the runtime knows of it."""

    conversation: Conversation
    price: Price | None
    totals: Totals = field(default_factory=Totals)
    # What earlier attempts of the session used (a retry starts a new process and conversation: spend adds up).
    base_tokens: Tokens = field(default_factory=Tokens)
    base_cost: float = 0.0
    base_turns: int = 0
    last_turn: TurnEnded | None = None
    closed: bool = False  # its stdin was closed
    answers: list[SessionAnswered] = field(default_factory=list)  # given by this runtime
    writes: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class AgentLinks:
    """The conversations of the running preset sessions."""

    def __init__(
        self,
        table: SessionTable,
        bus: EventBus,
        crew: CrewConfig,
        pools: Pools,
        handles: Callable[[str], SessionHandle | None],
    ) -> None:
        self.table = table
        self.bus = bus
        self.crew = crew
        self.pools = pools
        self.handles = handles
        self.links: dict[str, Link] = {}

    # ------------------------------------------------------------------------------------ lifecycle

    def open(self, s: Session, replay: list[str] | None = None) -> None:
        """Start the conversation of a session that now runs. `replay`: the lines it printed before a restart
        of the runtime, fed again (without acting on them) so the conversation knows where it stands."""
        if s.preset is None or s.key in self.links:
            return
        options = self._options(s)  # an agent gone from the crew file: the preset's defaults
        preset = get_preset(s.preset)
        conversation = preset.conversation(options, s.task)
        price = options.price
        link = Link(conversation, price)
        self.links[s.key] = link
        first = conversation.start()
        # Stored before the gateway existed, a session's reported figures were in tokens/cost_usd.
        reported = s.reported_tokens if s.reported_tokens is not None else (s.tokens if s.usage is None else None)
        before = Tokens(**reported.model_dump()) if reported is not None else Tokens()
        cost_before = (
            s.reported_cost_usd if s.reported_cost_usd is not None else (s.cost_usd or 0.0) if s.usage is None else 0.0
        )
        if replay is not None:
            for line in replay:
                try:
                    events = conversation.feed(line)
                except Exception:  # as in feed: a parser bug must not keep the session from being adopted or ended
                    log.exception("the %s parser failed on a line of %s", s.preset, s.key)
                    events = [Unparsed(line)]
                for ev in events:
                    link.totals.apply(ev)
                    if isinstance(ev, TurnEnded):
                        link.last_turn = ev
            # The session's figures already hold what this attempt said before: the rest is earlier attempts'.
            t = link.totals
            before = Tokens(
                max(0, before.input - t.tokens.input),
                max(0, before.output - t.tokens.output),
                max(0, before.cache_read - t.tokens.cache_read),
                max(0, before.cache_write - t.tokens.cache_write),
            )
            cost_before = max(0.0, cost_before - self._cost(link, t.tokens, t.cost_usd))
            link.base_turns = max(0, s.turns - t.turns)
        else:
            link.base_turns = s.turns
        link.base_tokens, link.base_cost = before, cost_before
        if not preset.reads_stdin:
            self._close(s.key, link)  # it would wait for the end of its input (again, after a restart: no harm)
        if replay is not None:
            return
        if first:
            self._write(s.key, link, first)

    def close(self, key: str) -> Link | None:
        """The session ended: forget its conversation (its last turn is returned for the record)."""
        return self.links.pop(key, None)

    def answers(self, key: str) -> list[SessionAnswered]:
        """The answers this runtime gave a running session (the store has them too, once written)."""
        link = self.links.get(key)
        return list(link.answers) if link else []

    def last_turn(self, key: str) -> TurnEnded | None:
        link = self.links.get(key)
        return link.last_turn if link else None

    # ------------------------------------------------------------------------------------ output

    def feed(self, s: Session, lines: list[str]) -> None:
        """Fold what a session printed into it (called by the tailer with every new stdout line)."""
        link = self.links.get(s.key)
        if link is None:
            return
        events: list[AgentEvent] = []
        for line in lines:
            try:
                events.extend(link.conversation.feed(line))
            except Exception:  # a parser bug must not stop the runtime: the line stays in the transcript
                log.exception("the %s parser failed on a line of %s", s.preset, s.key)
                events.append(Unparsed(line))
        if events:
            self._apply(s, link, events)

    def _apply(self, s: Session, link: Link, events: list[AgentEvent]) -> None:
        replies: list[str] = []
        changed = False
        for ev in events:
            link.totals.apply(ev)
            if isinstance(ev, Activity):
                s.activity = ev.text
                changed = True
            elif isinstance(ev, AgentSession):
                s.agent_session = ev.id
                changed = True
            elif isinstance(ev, (Usage, Cost, TurnEnded)):
                changed = True
                if isinstance(ev, TurnEnded):
                    link.last_turn = ev
            elif isinstance(ev, RateLimited):
                pool = self.pools.get(s.pool)
                if pool is not None:
                    pool.rate_limit_retries += 1
            elif isinstance(ev, Reply):
                replies.append(ev.line)
            elif isinstance(ev, Unparsed):
                s.unparsed += 1
            elif isinstance(ev, (Needs, Answered, Said)):
                pass
        self._fold(s, link)
        needs = self._needs(link)
        if needs != s.needs:
            s.needs = needs
            changed = True
        self._wait_state(s, link)
        if replies:
            self._write(s.key, link, replies)
        if changed:
            self.publish(s)
        self._maybe_close(s, link)

    def _fold(self, s: Session, link: Link) -> None:
        t = link.totals
        s.turns = link.base_turns + t.turns
        tokens = link.base_tokens + t.tokens
        if tokens.input or tokens.output or tokens.cache_read or tokens.cache_write:
            s.reported_tokens = TokenCounts(**tokens.as_dict())
        cost = self._cost(link, t.tokens, t.cost_usd)
        if cost or link.base_cost or t.cost_usd is not None:
            s.reported_cost_usd = link.base_cost + cost
        of_record(s)

    @staticmethod
    def _cost(link: Link, tokens: Tokens, reported: float | None) -> float:
        """This attempt's cost: what the agent reported, else its tokens priced by the crew file (else 0)."""
        if reported is not None:
            return reported
        return link.price.cost(tokens) if link.price is not None else 0.0

    @staticmethod
    def _needs(link: Link) -> dict[str, Any] | None:
        pending = link.conversation.pending
        if not pending:
            return None
        first = next(iter(pending.values()))
        out = first.as_dict()
        if len(pending) > 1:
            out["more"] = len(pending) - 1
        return out

    def _wait_state(self, s: Session, link: Link) -> None:
        if link.conversation.pending and s.state == SessionState.RUNNING:
            what = s.needs.get("tool") or s.needs.get("kind") if s.needs else "a person"
            self.table.transition(s, SessionState.WAITING, reason=f"waiting on a person: {what}")
        elif not link.conversation.pending and s.state == SessionState.WAITING:
            self.table.transition(s, SessionState.RUNNING, reason=None)

    def publish(self, s: Session) -> None:
        self.bus.publish(
            SessionAgentUpdate(
                session=s.key,
                label=s.label,
                activity=s.activity,
                agent_session=s.agent_session,
                turns=s.turns,
                tokens=s.tokens,
                cost_usd=s.cost_usd,
                needs=s.needs,
                usage=s.usage,
                gateway_hold=s.gateway_hold,
                reported_tokens=s.reported_tokens,
                reported_cost_usd=s.reported_cost_usd,
            )
        )

    # ------------------------------------------------------------------------------------ input

    def steer_mode(self, s: Session) -> str | None:
        link = self.links.get(s.key)
        return link.conversation.steer_mode if link else None

    def steer(self, s: Session, text: str) -> bool:
        """Put `text` before a preset session's agent; False if the session has no conversation (plain argv).

        An agent that cannot be steered while it runs (`next_turn`) gets it when this run has ended: the session
        continues its conversation (the preset's resume argv, with the agent's session id) as its next run."""
        link = self.links.get(s.key)
        if link is None:
            return False
        if link.conversation.steer_mode == "next_turn":
            preset = get_preset(s.preset or "")
            preset.resume_argv(self._options(s), s.agent_session or "?", text)  # BadInput if it cannot continue
            s.queued_steers.append(text)  # stored: a runtime that restarts meanwhile still delivers it
            self.table.store.put_session(s)
            return True
        if link.closed:
            raise Conflict(f"session {self.table.describe(s.key)} has finished its turns and is ending")
        lines = link.conversation.steer(text)
        self._write(s.key, link, lines)
        return True

    def continuation(self, s: Session) -> list[str] | None:
        """The argv of the run that continues a `next_turn` session with the steers sent while it ran (taken)."""
        texts, s.queued_steers = s.queued_steers, []
        if not texts or s.preset is None:
            return None
        if not s.agent_session:
            log.warning("%s cannot continue: its agent never said its session id", s.key)
            return None
        text = "\n\n".join(texts)
        return get_preset(s.preset).resume_argv(self._options(s), s.agent_session, text)

    def _options(self, s: Session) -> AgentOptions:
        agent = self.crew.agents.get(s.agent) if s.agent else None
        if agent is None:
            return AgentOptions()
        options = agent.options()
        values = {"task": s.task or "", "label": s.label, "key": s.key, "python": sys.executable}
        return replace(options, command=tuple(render_command(list(options.command), values)))

    def answer(self, s: Session, request: str | None, allow: bool, message: str | None) -> str:
        """Answer what a waiting session asked; returns the request id answered."""
        link = self.links.get(s.key)
        if link is None or not link.conversation.pending:
            raise Conflict(f"session {self.table.describe(s.key)} is {s.state.value}, not waiting for an answer")
        pending = dict(link.conversation.pending)
        if request is None and len(pending) == 1:
            request = next(iter(pending))
        lines = link.conversation.answer(request, allow, message)
        answered = next(k for k in pending if k not in link.conversation.pending)
        event = SessionAnswered(session=s.key, label=s.label, request=answered, allow=allow, message=message)
        link.answers.append(event)  # for a transcript read before the event writer has stored it
        self.bus.publish(event)
        self._write(s.key, link, lines)
        s.needs = self._needs(link)
        s.activity = "thinking" if allow else one_line(f"denied: {message}" if message else "denied")
        self._wait_state(s, link)
        self.publish(s)
        return answered

    def _write(self, key: str, link: Link, lines: list[str]) -> None:
        async def write() -> None:
            async with link.writes:  # FIFO: lines reach the agent in the order they were asked for
                handle = self.handles(key)
                if handle is None:
                    return
                for line in lines:
                    try:
                        await handle.send(line)
                    except Exception as exc:
                        log.warning("could not write to %s: %s", key, exc)
                        return

        task = asyncio.create_task(write(), name=f"agent-write-{key}")
        link.tasks.add(task)
        task.add_done_callback(link.tasks.discard)

    def _maybe_close(self, s: Session, link: Link) -> None:
        c = link.conversation
        if link.closed or not c.closes_stdin or not c.finished:
            return
        self._close(s.key, link)

    def _close(self, key: str, link: Link) -> None:
        """Close the agent's stdin, after every line already asked for."""
        link.closed = True

        async def close() -> None:
            async with link.writes:
                handle = self.handles(key)
                if handle is not None:
                    await handle.close_input()

        task = asyncio.create_task(close(), name=f"agent-close-{key}")
        link.tasks.add(task)
        task.add_done_callback(link.tasks.discard)

    # ------------------------------------------------------------------------------------ the end

    def outcome(self, s: Session) -> tuple[bool, Any, str | None, bool]:
        """(has a result, the result, why it failed or None, failed on an exhausted rate limit) of a session whose
        agent process ended, from its last turn."""
        turn = self.last_turn(s.key)
        if turn is None:
            return False, None, None, False
        result = turn.result if turn.result is not None else turn.text
        if turn.is_error:
            return result is not None, result, turn.error or "its last turn failed", turn.rate_limited
        return result is not None, result, None, False


def conversation_turns(preset: str, lines: list[str], max_chars: int = 4000) -> list[Turn]:
    """The readable turns in an agent's output lines (read by a fresh parser of its preset)."""
    conversation = get_preset(preset).conversation(AgentOptions(), None)
    turns: list[Turn] = []
    for line in lines:
        try:
            events = conversation.feed(line)
        except Exception:
            continue
        for ev in events:
            if isinstance(ev, Said):
                text = ev.text if len(ev.text) <= max_chars else ev.text[: max_chars - 1] + "…"
                turns.append(Turn(role=ev.role, text=text, name=ev.name, ref=ev.ref))
    return turns


def with_answers(turns: list[Turn], answers: list[SessionAnswered]) -> list[Turn]:
    """The turns with each permission's answer after it (answers go to the agent's stdin, so its output does not
    hold them; the runtime's events do)."""
    by_request = {a.request: a for a in answers}
    out: list[Turn] = []
    for turn in turns:
        out.append(turn)
        answer = by_request.get(turn.ref) if turn.role == "permission" and turn.ref else None
        if answer is not None:
            text = "approved" if answer.allow else "denied" + (f": {answer.message}" if answer.message else "")
            out.append(Turn(role="answer", text=text, ref=answer.request))
    return out


def check_answer_message(message: str | None) -> None:
    """The message of an answer (what the agent reads): one line, at most 64 KiB."""
    if message is not None:
        if len(message.encode("utf-8", errors="replace")) > MAX_STEER_BYTES:
            raise BadInput("the message is over the 64 KiB limit")
        if any(c in message for c in "\n\r\0"):
            raise BadInput("the message must be one line (no newline or NUL characters)")
