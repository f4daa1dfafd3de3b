"""The session table: the sessions in memory, their exclusive claims (live labels, domains) and families.

Every state change goes through `transition`, which checks it against the allowed transitions, records it in
the store and publishes it. Claims are taken before the first `await` of a request, so two concurrent
requests can never both win the same label or domain. Sessions that ended long ago may have left memory
(see retention.py); `find` reads those from the store.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from crewtui.clock import ClockLike
from crewtui.errors import BadInput, Conflict, NotFound
from crewtui.events import SessionStateChanged
from crewtui.model import MAX_ATTEMPTS, TRANSITIONS, Session, SessionState, SpawnRequest, validate_label
from crewtui.runtime.bus import EventBus
from crewtui.store import Store


class ClaimTable:
    """A map from a claimed name to the key of the session holding it."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._holders: dict[str, str] = {}

    def holder(self, name: str) -> str | None:
        return self._holders.get(name)

    def check(self, name: str, describe: Callable[[str], str]) -> None:
        """Raise Conflict naming the holder if `name` is held; `describe(key)` renders the holder."""
        key = self._holders.get(name)
        if key is not None:
            raise Conflict(f"{self._what} {name!r} is held by live session {describe(key)}")

    def claim(self, name: str, key: str) -> None:
        self._holders[name] = key

    def release(self, name: str | None, key: str) -> None:
        # Only the holder can release: a retry or a later session with the same name must not lose its claim.
        if name is not None and self._holders.get(name) == key:
            del self._holders[name]

    def __len__(self) -> int:
        return len(self._holders)


class SessionTable:
    """The sessions of one runtime in memory, with their claims and their parent/child links."""

    def __init__(self, store: Store, bus: EventBus, clock: ClockLike) -> None:
        self.store = store
        self.bus = bus
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self.labels = ClaimTable("label")
        self.domains = ClaimTable("domain")
        self.children: dict[str, set[str]] = {}
        self.ended: dict[str, asyncio.Event] = {}  # set when the session is terminal
        self.yielded_on: dict[str, set[str]] = {}  # parent -> children already handed to a yield
        self.evictions = 0  # sessions evicted so far: a store read that spans a change re-reads

    # ------------------------------------------------------------------------------------ membership

    def load(self, stored: list[Session], more: bool = False) -> None:
        """The sessions a start found in the store: live ones hold their claims again. `more`: the store holds
        others (ended long ago), which readers then look for there."""
        if more:
            self.evictions = max(self.evictions, 1)
        for s in stored:
            self.sessions[s.key] = s
            self.ended[s.key] = asyncio.Event()
            if s.parent:
                self.children.setdefault(s.parent, set()).add(s.key)
            if s.state.terminal:
                self.ended[s.key].set()
            else:
                self.claim(s)

    def add(self, s: Session) -> None:
        """A new session: it takes its claims now, before anything awaits."""
        self.sessions[s.key] = s
        self.ended[s.key] = asyncio.Event()
        self.claim(s)
        if s.parent:
            self.children.setdefault(s.parent, set()).add(s.key)

    def claim(self, s: Session) -> None:
        self.labels.claim(s.label, s.key)
        if s.domain:
            self.domains.claim(s.domain, s.key)

    def release(self, s: Session) -> None:
        self.labels.release(s.label, s.key)
        self.domains.release(s.domain, s.key)

    def forget(self, key: str) -> None:
        """Drop an ended session from memory (it is final in the store)."""
        s = self.sessions.pop(key)
        self.ended.pop(key, None)
        self.children.pop(key, None)
        self.yielded_on.pop(key, None)
        siblings = self.children.get(s.parent) if s.parent else None
        if s.parent and siblings is not None:
            siblings.discard(key)
            if not siblings:
                del self.children[s.parent]
        self.evictions += 1

    def bring_back(self, family: list[Session]) -> list[str]:
        """Put an evicted family (all ended, as stored) back in memory; return the keys that came back."""
        back = []
        for m in family:
            if m.key in self.sessions:
                continue
            self.sessions[m.key] = m
            self.ended[m.key] = ended = asyncio.Event()
            ended.set()
            back.append(m.key)
            if m.parent is not None and m.parent in self.sessions:
                self.children.setdefault(m.parent, set()).add(m.key)
                # Children of an attempt that ended count as handed over: a retried parent's bare yield waits
                # for its new children only.
                self.yielded_on.setdefault(m.parent, set()).add(m.key)
        return back

    # ------------------------------------------------------------------------------------ lookups

    def describe(self, key: str) -> str:
        s = self.sessions.get(key)
        return f"{key} ({s.label})" if s else key

    def resolve(self, ref: str) -> Session:
        """A session by key, or by label (the live holder first, else the newest session with it)."""
        if not isinstance(ref, str) or not ref:
            raise BadInput("a session key or label is required")
        s = self.sessions.get(ref)
        if s is not None:
            return s
        holder = self.labels.holder(ref)
        if holder is not None:
            return self.sessions[holder]
        matches = [s for s in self.sessions.values() if s.label == ref]
        if matches:
            return max(matches, key=lambda s: s.created_at)
        raise NotFound(f"no session with key or label {ref!r}")

    def in_memory(self, ref: str) -> bool:
        return ref in self.sessions or self.labels.holder(ref) is not None

    async def find(self, ref: str) -> Session:
        """`resolve`, including sessions evicted from memory (read from the store; they have all ended).

        The result is the in-memory session when there is one (mutating it is real), else a stored copy.
        """
        if not isinstance(ref, str) or not ref:
            raise BadInput("a session key or label is required")
        if self.in_memory(ref) or not self.evictions:
            return self.resolve(ref)
        while True:
            evictions = self.evictions
            by_key = await self.store.get_session(ref)
            by_label = [] if by_key is not None else await self.store.query_sessions(label=ref, exclude=self.sessions)
            if evictions == self.evictions:  # else a session left memory while we read: read again
                break
        if self.in_memory(ref):
            return self.resolve(ref)  # restored or respawned meanwhile: memory is newer
        if by_key is not None:
            return by_key
        matches = [s for s in self.sessions.values() if s.label == ref] + by_label
        if matches:
            return max(matches, key=lambda s: s.created_at)
        raise NotFound(f"no session with key or label {ref!r}")

    async def listing(
        self,
        state: SessionState | None = None,
        prefix: str | None = None,
        *,
        ended: bool | None = None,
        before: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[Session]:
        """Copies of the sessions in memory and in the store that match, in key order: with `limit`, the newest
        that many (keys are sortable by creation)."""

        def match(s: Session) -> bool:
            return (
                (state is None or s.state == state)
                and (prefix is None or s.label.startswith(prefix))
                and (ended is None or s.state.terminal == ended)
                and (before is None or s.key < before)
                and (since is None or s.updated_at >= since)
            )

        stored: list[Session] = []
        while self.evictions:
            evictions = self.evictions
            # Sessions held in memory are skipped (their copy is newer); read before looking at memory, so a
            # session evicted meanwhile is found in the store, never missed. With a limit, read as many more as
            # memory holds: those rows may be the ones skipped.
            extra = None if limit is None else limit + len(self.sessions)
            stored = await self.store.page_sessions(
                state=state, prefix=prefix, ended=ended, before=before, since=since, limit=extra
            )
            if evictions == self.evictions:
                break
        out = [s.model_copy(deep=True) for s in self.sessions.values() if match(s)]
        out += [s for s in stored if s.key not in self.sessions]
        out.sort(key=lambda s: s.key)
        return out if limit is None else out[max(0, len(out) - limit) :]

    def descendants(self, key: str) -> list[str]:
        out: list[str] = []
        stack = list(self.children.get(key, ()))
        while stack:
            k = stack.pop()
            out.append(k)
            stack.extend(self.children.get(k, ()))
        return out

    def family(self, root: str) -> list[str]:
        return [root, *self.descendants(root)]

    # ------------------------------------------------------------------------------------ spawning

    def check_spawn(self, req: SpawnRequest) -> None:
        """Refuse a spawn whose label or domain is held or malformed, or whose limits make no sense."""
        validate_label(req.label)
        self.labels.check(req.label, self.describe)
        if req.domain is not None:
            if not req.domain or len(req.domain) > 256 or any(c in req.domain for c in "\n\r\0"):
                raise BadInput(f"invalid domain {req.domain!r}: use one line of at most 256 characters")
            self.domains.check(req.domain, self.describe)
        if not 1 <= req.max_attempts <= MAX_ATTEMPTS:
            raise BadInput(f"max_attempts must be between 1 and {MAX_ATTEMPTS}, got {req.max_attempts}")
        # `not 0 < x < inf` also refuses NaN (JSON over the socket can carry it), which would break the timer heap.
        if req.watchdog_after is not None and not 0 < req.watchdog_after < math.inf:
            raise BadInput(f"watchdog must be a positive finite duration, got {req.watchdog_after}")

    async def parent_for(
        self, req: SpawnRequest, max_depth: int, max_children: int
    ) -> tuple[Session | None, int] | None:
        """The parent a spawn names and the child's depth, or Conflict. None: the claims `check_spawn` saw may
        be stale (the parent came back into memory while we read the store): check again."""
        if not req.parent:
            return None, 0
        if self.in_memory(req.parent):
            parent = self.resolve(req.parent)
        else:
            # Not in memory: ended long ago (evicted) or unknown, so this spawn is refused below.
            parent = await self.find(req.parent)
            if not parent.state.terminal:
                return None
        if parent.state.terminal:
            raise Conflict(
                f"parent {self.describe(parent.key)} has ended ({parent.state.value}); it cannot have new children"
            )
        depth = parent.depth + 1
        if depth > max_depth:
            raise Conflict(
                f"spawn refused: {req.label!r} would be at depth {depth}, over max_spawn_depth {max_depth} "
                f"(parent {self.describe(parent.key)} is at depth {parent.depth})"
            )
        live_children = [k for k in self.children.get(parent.key, ()) if self.sessions[k].state.live]
        if len(live_children) >= max_children:
            raise Conflict(
                f"spawn refused: parent {self.describe(parent.key)} already has {len(live_children)} live children "
                f"(max_children {max_children})"
            )
        return parent, depth

    # ------------------------------------------------------------------------------------ state

    def transition(self, s: Session, new: SessionState, reason: str | None) -> None:
        """Move a session to `new`: checked, stored and published."""
        old = s.state
        if new != old and new not in TRANSITIONS[old]:
            # A bug in the runtime, never user input: refuse loudly rather than corrupt the record.
            raise RuntimeError(f"illegal transition {old.value} -> {new.value} for {s.key}")
        s.state = new
        s.reason = reason
        s.updated_at = self.clock.now()
        if new != SessionState.YIELDED:
            s.yield_on = None
        self.store.put_session(s)
        self.bus.publish(
            SessionStateChanged(
                session=s.key,
                label=s.label,
                old=old,
                new=new,
                reason=reason,
                exit_code=s.exit_code,
                attempt=s.attempt,
                node=s.node,
            )
        )
