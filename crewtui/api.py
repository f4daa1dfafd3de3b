"""The one interface between the runtime and its clients (the dashboard, `crewtui ctl`, agents), and its verb table.

Two implementations: the `Orchestrator` itself (in-process, when the dashboard embeds the runtime) and
`crewtui.control.client.RemoteRuntime` (over the control socket, when a client attaches). A client written
against `RuntimeAPI` works with either.

`RuntimeAPI` is also the control protocol's verb table: each method carries a `@verb(...)` saying how the
socket serves it (its wire op, whether it only reads, whether a hang-up cancels it), and `VERBS` collects them.
The control server dispatches from it and `RemoteRuntime` generates its methods from it, so a verb is added by
adding one method here (and implementing it in the orchestrator, under the same parameter names: they are the
wire's argument names).
"""

from __future__ import annotations

import builtins
import inspect
import sys
import typing
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import BaseModel, BeforeValidator, Field

from crewtui.errors import BadInput
from crewtui.events import Event
from crewtui.model import (
    CronJobInfo,
    CronRun,
    History,
    Session,
    SessionState,
    SpawnRequest,
    SweepItem,
    TerminalScreen,
    TimelineItem,
    YieldResult,
)
from crewtui.spend import GatewayInfo, UsageBy, UsageRow


class RuntimeInfo(BaseModel):
    """What a client needs to know about the runtime it talks to."""

    pid: int
    data_dir: str
    crew: str
    crew_file: str | None = None
    agents: list[str]
    started_at: float
    max_concurrent: int
    backend: str = "local"  # "local", or "ray ADDRESS (host mode)" / "(actor mode)" on a Ray cluster
    # How a kill finds every process of a session: "cgroup" where the machine allows, else "process group +
    # environment scan" (see crewtui/runtime/drivers/containment.py).
    containment: str = ""
    # Per pool: sessions running now, and the model calls its agents said were refused for rate and retried.
    pools: dict[str, dict[str, int]] = Field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- argument types
# Plain types to callers and to mypy; over the socket their validators answer a bad value with the message the
# runtime itself gives (clients and scripts match on these), where pydantic's generic one would differ.


def _session_ref(value: object) -> object:
    if not isinstance(value, str):
        raise BadInput("a session key or label is required")
    return value


def _state_filter(value: object) -> object:
    if not value:  # "" asks for no filter, as it always did over the socket
        return None
    try:
        return SessionState(value)
    except (ValueError, TypeError):
        raise BadInput(f"unknown state {value!r}; states: {', '.join(s.value for s in SessionState)}") from None


SessionRef = Annotated[str, BeforeValidator(_session_ref)]
"""A session key, or a label (its live holder, else its newest session)."""

StateFilter = Annotated[SessionState | None, BeforeValidator(_state_filter)]
"""Only sessions in this state; None for every state."""


# ---------------------------------------------------------------------------------------------- the verb table


@dataclass(frozen=True)
class Verb:
    """How the control socket serves one `RuntimeAPI` method."""

    op: str  # the wire name: the method's, but `yield` for `yield_`
    method: str
    # Changes nothing in the store: answered at once. Any other verb is answered only once its changes are
    # committed, so a client told "spawned" or "killed" is never contradicted by a runtime kill -9ed a moment later.
    read_only: bool
    # A client hanging up cancels it (it only waits); any other verb runs to completion regardless.
    cancel_on_hangup: bool
    # The wire args are the fields of its one parameter, a model (spawn's SpawnRequest), not the parameters.
    flat: bool
    # Answers with a stream of events until the client hangs up (watch), not with one reply: the server and the
    # client special-case it, and the flags above only describe it.
    stream: bool
    function: Callable[..., Any] = field(compare=False, repr=False)

    @cached_property
    def signature(self) -> inspect.Signature:
        """The method's parameters without `self`: on the wire, the argument names and their defaults."""
        sig = inspect.signature(self.function)
        return sig.replace(parameters=builtins.list(sig.parameters.values())[1:])

    @cached_property
    def hints(self) -> dict[str, Any]:
        """The resolved annotations of the parameters, and of the result under "return" (Annotated kept)."""
        return typing.get_type_hints(self.function, include_extras=True)


F = TypeVar("F", bound=Callable[..., Any])
_marked: dict[Callable[..., Any], Verb] = {}  # the RuntimeAPI methods `verb` marked, for `_collect`


def verb(
    *,
    op: str | None = None,
    read_only: bool = False,
    cancel_on_hangup: bool = False,
    flat: bool = False,
    stream: bool = False,
) -> Callable[[F], F]:
    """Mark a `RuntimeAPI` method as a verb of the control socket.

    A verb writes unless it says read_only=True: one wrongly marked read-only could be answered before its change
    is committed, one wrongly left writing only costs a flush.
    """

    def mark(fn: F) -> F:
        _marked[fn] = Verb(op or fn.__name__, fn.__name__, read_only, cancel_on_hangup, flat, stream, fn)
        return fn

    return mark


def unimplemented(api: object) -> NotImplementedError:
    """What a verb raises in an explicit subclass of `RuntimeAPI` that does not define it (the verb is the
    caller: every default body is `raise unimplemented(self)`)."""
    name = sys._getframe(1).f_code.co_name
    return NotImplementedError(f"{type(api).__name__} does not implement the runtime verb {name}()")


class RuntimeAPI(Protocol):
    """Everything a client can ask of the runtime; each method is a verb of the control socket.

    The bodies raise `unimplemented(self)` rather than being `...`: a class that subclasses this explicitly
    (RemoteRuntime, the dashboard's test fake) then inherits a clear NotImplementedError for a verb it lacks,
    and mypy does not take the verbs for abstract (it would refuse to instantiate such a class).
    """

    @verb(read_only=True)
    async def info(self) -> RuntimeInfo:
        """The runtime's pid, data dir, crew and agents."""
        raise unimplemented(self)

    @verb(flat=True)
    async def spawn(self, request: SpawnRequest) -> Session:
        """Start a session."""
        raise unimplemented(self)

    @verb()
    async def send(self, ref: SessionRef, text: str) -> Session:
        """Steer a running session: one line to its stdin."""
        raise unimplemented(self)

    @verb()
    async def answer(
        self, ref: SessionRef, allow: bool, request: str | None = None, message: str | None = None
    ) -> Session:
        """Answer what a waiting session asked: allow (approve) or deny a permission, or answer a question."""
        raise unimplemented(self)

    @verb(read_only=True)
    async def list(
        self,
        state: StateFilter = None,
        prefix: str | None = None,
        limit: int | None = None,
        before: str | None = None,
        since: float | None = None,
        ended: bool | None = None,
    ) -> builtins.list[Session]:
        """Sessions in key order (keys sort by creation), each as a listing carries it (see `model.listed`):
        only those in a state, whose label starts with a prefix, created before the session `before`, changed
        since a time, ended (True) or live (False); with `limit`, the newest that many. A client pages a long
        history with limit and before."""
        raise unimplemented(self)

    @verb(read_only=True)
    async def result(self, ref: SessionRef) -> Any:
        """A session's whole result (a listing carries a big one only as its size)."""
        raise unimplemented(self)

    @verb(read_only=True)
    async def older(self, before: str) -> dict[str, int]:
        """Ended sessions created before the session `before`, counted by the top of their label's group: what
        a dashboard that loaded only recent history can open."""
        raise unimplemented(self)

    @verb(read_only=True)
    async def get(self, ref: SessionRef) -> Session:
        raise unimplemented(self)

    @verb(read_only=True)
    async def history(self, ref: SessionRef, tail: int = 50) -> History:
        """The last `tail` lines of a session's stdout and stderr."""
        raise unimplemented(self)

    @verb()
    async def kill(self, ref: SessionRef | None = None, prefix: str | None = None) -> builtins.list[Session]:
        """Kill one session (ref) or every live one whose label starts with prefix, with their children."""
        raise unimplemented(self)

    @verb(op="yield", cancel_on_hangup=True)
    async def yield_(
        self, children: builtins.list[SessionRef] | None = None, parent: SessionRef | None = None, wait: bool = True
    ) -> YieldResult | None:
        """Wait for children to end and get their results in one message (None with wait=False: the result
        goes to the parent's stdin)."""
        raise unimplemented(self)

    @verb(read_only=True)
    async def registry(self) -> dict[str, Any]:
        """The crew's shared registry (what sessions merged into it)."""
        raise unimplemented(self)

    @verb(read_only=True)
    async def events(self, since: int = 0, limit: int | None = None) -> builtins.list[Event]:
        """Stored events with a seq above `since`, oldest first."""
        raise unimplemented(self)

    @verb(read_only=True, cancel_on_hangup=True, stream=True)
    def watch(self) -> AsyncIterator[Event]:
        """Every event from now on, until the client stops reading."""
        raise unimplemented(self)

    # Scheduling (crons, watchdogs, sweeps, runs, pools)

    @verb()
    async def retry(self, ref: SessionRef) -> Session:
        """Start a new attempt of an ended session (same key and label)."""
        raise unimplemented(self)

    @verb()
    async def sweep(self, dry_run: bool = False) -> builtins.list[SweepItem]:
        """Kill sessions silent for stale_after (with dry_run, only say which)."""
        raise unimplemented(self)

    @verb(read_only=True, cancel_on_hangup=True)
    async def acquire(self, pool: str) -> dict[str, Any]:
        """Wait until the pool's rate limit grants a permit."""
        raise unimplemented(self)

    # Workspaces

    @verb(read_only=True)
    async def peek(self, ref: SessionRef) -> TerminalScreen:
        """What a terminal session's screen shows now (read-only; attach to type into it)."""
        raise unimplemented(self)

    @verb(read_only=True)
    async def diff(self, ref: SessionRef, stat: bool = False) -> str:
        """What a session's branch changed against where it started (`stat`: per file counts)."""
        raise unimplemented(self)

    @verb()
    async def merge(self, ref: SessionRef) -> Session:
        """Put an ended session's branch in its repository's merge queue (one writer merges, one at a time)."""
        raise unimplemented(self)

    @verb()
    async def discard(self, ref: SessionRef) -> Session:
        """Throw away an ended session's branch and worktree (never one merged)."""
        raise unimplemented(self)

    # The model gateway

    @verb(read_only=True)
    async def gateway(self) -> GatewayInfo:
        """The gateway's pools now: limits, line, pause, today's use against the budget."""
        raise unimplemented(self)

    @verb(read_only=True)
    async def usage(self, by: UsageBy = "pool", since: float | None = None) -> builtins.list[UsageRow]:
        """What model requests used since a time (default: today), by session, group, cron run, pool or day."""
        raise unimplemented(self)

    @verb()
    async def resume(self, ref: SessionRef | None = None, pool: str | None = None, budget: float | None = None) -> str:
        """Let a session (or a pool) paused over its budget go on: to `budget` dollars, else one budget more."""
        raise unimplemented(self)

    @verb(read_only=True)
    async def cron_list(self) -> builtins.list[CronJobInfo]:
        raise unimplemented(self)

    @verb()
    async def cron_add(self, job: dict[str, Any], allow_past: bool = False) -> CronJobInfo:
        """Add a cron job (a [[cron]] table of the crew file, as a dict)."""
        raise unimplemented(self)

    @verb()
    async def cron_remove(self, name: str) -> CronJobInfo:
        raise unimplemented(self)

    @verb()
    async def cron_trigger(self, name: str) -> CronRun | None:
        """Fire a cron job now (None when its payload starts no run)."""
        raise unimplemented(self)

    @verb(read_only=True)
    async def runs(self, job: str | None = None, limit: int = 50) -> builtins.list[CronRun]:
        raise unimplemented(self)

    @verb(read_only=True)
    async def timeline(self, start: float, end: float) -> builtins.list[TimelineItem]:
        """Past and future cron, watchdog, run, retry, kill and sweep marks between two times."""
        raise unimplemented(self)


def _collect(api: type) -> tuple[Verb, ...]:
    verbs = []
    for name, attr in vars(api).items():
        if name.startswith("_") or not callable(attr):
            continue
        v = _marked.get(attr)
        if v is None:
            # Every method is served over the socket: one without a verb would silently be missing there.
            raise TypeError(f"RuntimeAPI.{name} needs a @verb(...)")
        verbs.append(v)
    return tuple(verbs)


VERBS: tuple[Verb, ...] = _collect(RuntimeAPI)
VERBS_BY_OP: Mapping[str, Verb] = {v.op: v for v in VERBS}
