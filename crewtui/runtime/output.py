"""Output tailing: new lines of running sessions become `SessionOutput` events, and offsets are kept.

One task wakes every `interval` and reads only the sessions inotify saw writing (plus any it could not
watch), so an idle crew costs nothing. How far each session's logs were read is persisted now and then, so a
restarted runtime tails from there.
"""

from __future__ import annotations

import asyncio
import logging

from crewtui.clock import ClockLike
from crewtui.errors import BadInput
from crewtui.events import SessionAnswered, SessionOutput
from crewtui.locations import DataDir, SessionDir
from crewtui.model import History, Session, SessionState
from crewtui.runtime.agents import AgentLinks, conversation_turns, with_answers
from crewtui.runtime.bus import EventBus
from crewtui.runtime.drivers.terminal import transcript_lines
from crewtui.runtime.sessions import SessionTable
from crewtui.runtime.tail import AGENT_LINE_BYTES, MAX_LINE_CHARS, read_new, tail_agent_lines, tail_lines
from crewtui.runtime.watcher import OutputWatcher
from crewtui.store import Store

log = logging.getLogger("crewtui.output")

OUTPUT_LINES_PER_EVENT = 20  # the UI shows a tail; more lines per tick would only cost
# Seconds: output offsets are bookkeeping, a slightly old one only re-reads a bit.
OFFSET_PERSIST_EVERY = 2.0


class OutputTailer:
    """Reads the logs of the sessions it follows and publishes their new lines."""

    def __init__(
        self, table: SessionTable, bus: EventBus, store: Store, clock: ClockLike, data_dir: DataDir, interval: float
    ) -> None:
        self.table = table
        self.bus = bus
        self.store = store
        self.clock = clock
        self.data_dir = data_dir
        self.interval = interval
        self.watcher = OutputWatcher()
        self.following: set[str] = set()
        self.dirty_offsets: set[str] = set()
        self._last_persist = 0.0
        self._task: asyncio.Task[None] | None = None
        # Sessions of a preset agent: every stdout line goes to its conversation (see agents.py).
        self.agents: AgentLinks | None = None

    def start(self) -> None:
        self.watcher.start()
        self._task = asyncio.create_task(self._loop(), name="output-tailer")

    async def stop(self) -> None:
        """Stop reading and record how far each live session's output was read."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.persist_offsets()

    def close(self) -> None:
        self.watcher.close()

    def follow(self, key: str) -> None:
        self.following.add(key)
        self.watcher.watch(key, self.data_dir.session_dir(key))

    def unfollow(self, key: str) -> None:
        self.following.discard(key)
        self.dirty_offsets.discard(key)
        self.watcher.unwatch(key)

    def persist_offsets(self) -> None:
        for key in self.dirty_offsets:
            self.store.put_session(self.table.sessions[key])
        self.dirty_offsets.clear()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                # Only sessions inotify saw writing, plus any it could not watch (polled).
                keys = self.watcher.take_dirty()
                keys.update(k for k in self.following if not self.watcher.watched(k))
                for key in keys:
                    s = self.table.sessions.get(key)
                    if (
                        s is not None
                        and s.state in (SessionState.RUNNING, SessionState.WAITING, SessionState.YIELDED)
                        and key in self.following
                    ):
                        self.tail(s)
                now = self.clock.now()
                if self.dirty_offsets and now - self._last_persist >= OFFSET_PERSIST_EVERY:
                    self.persist_offsets()
                    self._last_persist = now
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("output tailing failed")

    def tail(self, s: Session) -> None:
        """Publish what a session wrote since the last look (bounded reads; never blocks on a long line)."""
        sd = self.data_dir.session(s.key)
        agents = self.agents if s.preset is not None and self.agents is not None else None
        for stream in ("stdout", "stderr"):
            offset = s.stdout_offset if stream == "stdout" else s.stderr_offset
            if stream == "stdout" and agents is not None:
                # Whole lines (a JSON event may be long): the conversation reads them, the transcript shows them cut.
                lines, new_offset, nbytes = read_new(sd.stream(stream), offset, AGENT_LINE_BYTES, AGENT_LINE_BYTES)
            else:
                lines, new_offset, nbytes = read_new(sd.stream(stream), offset)
            if nbytes == 0:
                continue
            if stream == "stdout":
                s.stdout_offset = new_offset
                if agents is not None and lines:
                    agents.feed(s, lines)
                    lines = [line[:MAX_LINE_CHARS] for line in lines]
            else:
                s.stderr_offset = new_offset
            if s.tty and stream == "stdout":
                lines = transcript_lines(lines)
            if lines:
                s.last_output_at = self.clock.now()
                s.last_line = lines[-1][:500]
                self.bus.publish(
                    SessionOutput(
                        session=s.key,
                        label=s.label,
                        stream=stream,
                        lines=lines[-OUTPUT_LINES_PER_EVENT:],
                        nbytes=nbytes,
                    )
                )
            self.dirty_offsets.add(s.key)


async def read_history(s: Session, sd: SessionDir, tail: int, store: Store, agents: AgentLinks) -> History:
    """The last `tail` lines of a session's stdout and stderr; for an agent with a preset, its conversation too."""
    if tail < 1 or tail > 100_000:
        raise BadInput(f"--tail must be between 1 and 100000, got {tail}")
    if s.preset is None:
        lines, err = await asyncio.to_thread(lambda: (tail_lines(sd.stdout, tail), tail_lines(sd.stderr, tail)))
        if s.tty:
            lines = transcript_lines(lines)
        return History(key=s.key, label=s.label, state=s.state, lines=lines, stderr=err)
    # An agent's lines are read whole once: its conversation from them, the transcript's lines cut from them.
    raw, err = await asyncio.to_thread(lambda: (tail_agent_lines(sd.stdout, tail), tail_lines(sd.stderr, tail)))
    stored = await store.events(session=s.key, kind="session_answered")  # earlier runtimes' answers
    answers = [a for a in stored if isinstance(a, SessionAnswered)] + agents.answers(s.key)
    turns = with_answers(conversation_turns(s.preset, raw), answers)
    lines = [line[:MAX_LINE_CHARS] for line in raw]
    return History(key=s.key, label=s.label, state=s.state, lines=lines, stderr=err, turns=turns)
