"""The verb table (crewtui.api.VERBS) and what derives from it: the control server's dispatch, RemoteRuntime's
methods, the orchestrator's parameter names and the dashboard's test fake.

The end-to-end tests run a real ControlServer on a stub orchestrator that answers every verb with a sample of its
return type, so each verb is checked over the socket without starting a runtime.
"""

from __future__ import annotations

import asyncio
import inspect
import types
import typing
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import pytest

from crewtui import api
from crewtui.api import VERBS, VERBS_BY_OP, RuntimeAPI, RuntimeInfo, Verb
from crewtui.control import protocol
from crewtui.control.client import RemoteRuntime
from crewtui.control.server import ControlServer
from crewtui.errors import BadInput
from crewtui.events import SystemEvent
from crewtui.locations import DataDir
from crewtui.model import (
    ChildResult,
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
from crewtui.runtime.orchestrator import Orchestrator
from crewtui.spend import GatewayInfo, GatewayPoolInfo, UsageRow, UsageTotals
from tests.ui.fake_runtime import FakeRuntime

# What the socket served before the table existed (server.py's _ops, READ_ONLY_OPS and CANCEL_ON_HANGUP, and
# its watch special case): the table must serve exactly this.
OPS = {
    "info",
    "spawn",
    "send",
    "answer",
    "list",
    "get",
    "history",
    "kill",
    "yield",
    "registry",
    "events",
    "retry",
    "sweep",
    "acquire",
    "cron_list",
    "cron_add",
    "cron_remove",
    "cron_trigger",
    "runs",
    "timeline",
    "watch",
    # Added by the issue "Hardening" (paged history): a session's whole result, and what older history holds.
    "result",
    "older",
    # Added by the issue "Model gateway".
    "gateway",
    "usage",
    "resume",
    # Added by the issue "Workspaces".
    "diff",
    "merge",
    "discard",
    # Added by the issue "Attach and notify".
    "peek",
}
READ_ONLY = {
    "info",
    "list",
    "get",
    "history",
    "registry",
    "events",
    "runs",
    "timeline",
    "cron_list",
    "acquire",
    "result",
    "older",
    "gateway",
    "usage",
    "diff",
    "peek",
}
CANCEL_ON_HANGUP = {"yield", "acquire"}


def request_reply_verbs() -> list[Verb]:
    return [v for v in VERBS if not v.stream]


# ------------------------------------------------------------------------------------------------ the table


def test_the_table_serves_the_ops_the_socket_always_served() -> None:
    assert set(VERBS_BY_OP) == OPS
    assert {v.op for v in VERBS if v.read_only and not v.stream} == READ_ONLY
    assert {v.op for v in VERBS if v.cancel_on_hangup and not v.stream} == CANCEL_ON_HANGUP
    assert [v.op for v in VERBS if v.stream] == ["watch"]
    assert [v.op for v in VERBS if v.flat] == ["spawn"]
    assert VERBS_BY_OP["yield"].method == "yield_"


def test_every_runtime_api_method_is_a_verb_and_every_verb_a_method() -> None:
    methods = {name for name, attr in vars(RuntimeAPI).items() if not name.startswith("_") and callable(attr)}
    assert methods == {v.method for v in VERBS}
    for v in VERBS:
        assert v.function is vars(RuntimeAPI)[v.method]
        assert "return" in v.hints and all(name in v.hints for name in v.signature.parameters), v.op


def test_a_method_without_a_verb_is_refused() -> None:
    class Sloppy:
        async def forgotten(self) -> None: ...

    with pytest.raises(TypeError, match=r"forgotten needs a @verb"):
        api._collect(Sloppy)


def test_the_orchestrator_serves_every_verb_under_the_wire_arg_names() -> None:
    for v in VERBS:
        method = getattr(Orchestrator, v.method, None)
        assert method is not None, f"the orchestrator has no {v.method}()"
        params = list(inspect.signature(method).parameters.values())[1:]
        wire = list(v.signature.parameters)
        assert [p.name for p in params[: len(wire)]] == wire, v.op
        # Its own extra parameters (kill's reason, retry's cause) cannot be reached from the wire: they need defaults.
        assert all(p.default is not p.empty for p in params[len(wire) :]), v.op
        assert inspect.iscoroutinefunction(method) != v.stream, v.op


# ------------------------------------------------------------------------------------------------ samples


def _strip(tp: Any) -> Any:
    """The type under Annotated and `| None`."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return _strip(rest[0])
    return tp


SESSION = Session(key="s-1", label="one", state=SessionState.RUNNING, created_at=1.0, updated_at=2.0)
RESULTS: dict[Any, Any] = {
    RuntimeInfo: RuntimeInfo(pid=1, data_dir="/d", crew="c", agents=["a"], started_at=1.0, max_concurrent=2),
    Session: SESSION,
    History: History(key="s-1", label="one", state=SessionState.DONE, lines=["a", "b"], stderr=["e"]),
    YieldResult: YieldResult(
        parent="s-1",
        children=[ChildResult(key="s-2", label="two", state=SessionState.DONE, exit_code=0, result={"ok": 1})],
    ),
    SweepItem: SweepItem(key="s-1", label="one", idle_for=700.0, reason="stale"),
    CronJobInfo: CronJobInfo(name="j", schedule="every 2m", payload="spawn", runs=3),
    CronRun: CronRun(id="j#1", job="j", number=1, nominal=1.0, started_at=1.5, sessions=["s-1"], final=True, rate=1.0),
    TimelineItem: TimelineItem(ts=1.0, kind="cron", name="j", outcome="ran"),
    dict: {"pool": "p", "waited": 0.25, "nested": {"x": [1, 2]}},
    GatewayInfo: GatewayInfo(
        url="http://127.0.0.1:9", pools=[GatewayPoolInfo(name="a", provider="anthropic", upstream="u")]
    ),
    UsageRow: UsageRow(by="pool", name="a", usage=UsageTotals(requests=3, cost_usd=0.5)),
    str: "a: resumed",
    TerminalScreen: TerminalScreen(key="s-1", label="one", rows=2, cols=4, lines=["ab", ""], cursor=(0, 2)),
}
EVENT = SystemEvent(seq=7, ts=1.0, text="hello", level="warning")


def sample_result(tp: Any) -> Any:
    tp = _strip(tp)
    if typing.get_origin(tp) is list:
        return [sample_result(typing.get_args(tp)[0])] * 2
    origin = typing.get_origin(tp)
    if origin is dict and typing.get_args(tp)[1] is int:
        return {"blog": 3, "scout": 1}  # counts (older)
    if origin is dict or tp is Any:
        return RESULTS[dict]
    if tp in RESULTS:
        return RESULTS[tp]
    return EVENT  # the Event union


def sample_args(v: Verb) -> dict[str, Any]:
    """Arguments for a call, none of them the default (so a dropped argument shows)."""
    out: dict[str, Any] = {}
    for name in v.signature.parameters:
        hint = v.hints[name]
        tp = _strip(hint)
        if typing.get_origin(tp) is list:
            out[name] = ["a", "b"]
        elif typing.get_origin(tp) is dict:
            out[name] = {"name": "j", "every": "2m"}
        elif tp is SpawnRequest:
            out[name] = SpawnRequest(label="x", argv=["true"], watchdog_after=60.0, env={"A": "1"})
        elif tp is SessionState:
            out[name] = SessionState.RUNNING
        elif typing.get_origin(tp) is typing.Literal:
            out[name] = typing.get_args(tp)[-1]
        else:
            out[name] = {str: "x", int: 7, float: 2.5, bool: name != "wait"}[tp]
    return out


class StubOrchestrator:
    """Answers every verb with a sample of its return type and records the calls and flushes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.flushes = 0
        self.watching = 0

    async def flush(self) -> None:
        self.flushes += 1

    def watch(self) -> Any:
        self.watching += 1
        queue: asyncio.Queue[Any] = asyncio.Queue()
        queue.put_nowait(EVENT)
        queue.put_nowait(None)  # the runtime stopping: the stream ends
        return types.SimpleNamespace(queue=queue, close=lambda: None)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        verb = next((v for v in VERBS if v.method == name), None)
        if verb is None:
            raise AttributeError(name)

        async def answer(**kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            return sample_result(verb.hints["return"])

        return answer


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[StubOrchestrator, RemoteRuntime]]:
    stub = StubOrchestrator()
    dd = DataDir(tmp_path)
    server = ControlServer(stub, dd)  # type: ignore[arg-type]
    await server.start()
    server.set_ready()
    try:
        yield stub, RemoteRuntime(dd.socket, dd.root)
    finally:
        await server.stop()


# ------------------------------------------------------------------------------------------------ over the socket


async def test_every_verb_goes_through_server_and_client_by_name_and_comes_back_typed(
    served: tuple[StubOrchestrator, RemoteRuntime],
) -> None:
    stub, rt = served
    for v in request_reply_verbs():
        args = sample_args(v)
        flushes = stub.flushes
        result = await getattr(rt, v.method)(**args)
        assert stub.calls[-1] == (v.method, args), v.op
        expected = sample_result(v.hints["return"])
        assert result == expected, v.op  # a model parsed as its class; a dict stays a dict
        assert stub.flushes == flushes + (0 if v.read_only else 1), f"{v.op}: flushed {stub.flushes - flushes}"
    assert {name for name, _ in stub.calls} == {v.method for v in request_reply_verbs()}
    assert await rt.ping()
    assert [ev async for ev in rt.watch()] == [EVENT] and stub.watching == 1


async def test_positional_arguments_and_defaults_go_by_name(served: tuple[StubOrchestrator, RemoteRuntime]) -> None:
    stub, rt = served
    await rt.history("one")
    assert stub.calls[-1] == ("history", {"ref": "one", "tail": 50})
    await rt.yield_(["a"], None, False)
    assert stub.calls[-1] == ("yield_", {"children": ["a"], "parent": None, "wait": False})
    await rt.list("running")  # type: ignore[arg-type]  # the CLI passes the state as it was typed
    assert stub.calls[-1] == (
        "list",
        # Without a limit the client pages (LIST_PAGE sessions a reply), so every reply stays small.
        {"state": SessionState.RUNNING, "prefix": None, "limit": 200, "before": None, "since": None, "ended": None},
    )
    with pytest.raises(TypeError):
        await rt.history("one", tial=5)  # type: ignore[call-arg]


async def test_unknown_op_lists_the_tables_ops(served: tuple[StubOrchestrator, RemoteRuntime]) -> None:
    _, rt = served
    with pytest.raises(BadInput) as info:
        await rt.call("format_disk")
    listed = info.value.message.split("; ops: ")[1].split(", ")
    assert listed == sorted([*VERBS_BY_OP, "ping"]) == sorted([*OPS, "ping"])
    assert info.value.message.startswith("unknown op 'format_disk'")


async def test_bad_args_are_refused_before_the_runtime_is_asked(served: tuple[StubOrchestrator, RemoteRuntime]) -> None:
    stub, rt = served
    refused: list[tuple[str, dict[str, Any], str]] = [
        ("kill", {"ref": ["a", "b"]}, "a session key or label is required"),
        ("get", {}, "get: ref: Field required"),
        (
            "list",
            {"state": "sleeping"},
            "unknown state 'sleeping'; states: " + ", ".join(s.value for s in SessionState),
        ),
        ("history", {"ref": "x", "tail": "many"}, "history: tail: Input should be a valid integer"),
        ("spawn", {"label": "x", "argv": ["true"], "evil": 1}, "spawn: evil: Extra inputs are not permitted"),
        ("yield", {"children": ["a", 5]}, "a session key or label is required"),
    ]
    for op, args, message in refused:
        with pytest.raises(BadInput) as info:
            await rt.call(op, **args)
        assert info.value.message.startswith(message), (op, info.value.message)
    assert stub.calls == [] and stub.flushes == 0


# ------------------------------------------------------------------------------------------------ wire encoding


def test_decoded_args_keep_the_old_leniencies() -> None:
    decode = protocol.decode_args
    assert decode(VERBS_BY_OP["list"], {"state": "", "prefix": "p", "unknown": 1}) == {
        "state": None,
        "prefix": "p",
        "limit": None,
        "before": None,
        "since": None,
        "ended": None,
    }
    assert decode(VERBS_BY_OP["kill"], {}) == {"ref": None, "prefix": None}
    assert decode(VERBS_BY_OP["history"], {"ref": "x", "tail": "20"}) == {"ref": "x", "tail": 20}
    assert decode(VERBS_BY_OP["timeline"], {"start": 1, "end": "2.5"}) == {"start": 1.0, "end": 2.5}
    req = decode(VERBS_BY_OP["spawn"], {"label": "x", "argv": ["true"], "watchdog_after": float("nan")})["request"]
    assert isinstance(req, SpawnRequest) and req.watchdog_after != req.watchdog_after  # NaN: the runtime refuses it
    with pytest.raises(BadInput, match=r"^history: tail: Input should be a finite number"):
        decode(VERBS_BY_OP["history"], {"ref": "x", "tail": float("inf")})


def test_request_args_are_what_the_client_always_sent() -> None:
    args = protocol.request_args
    assert args(VERBS_BY_OP["list"]) == {
        "state": None,
        "prefix": None,
        "limit": None,
        "before": None,
        "since": None,
        "ended": None,
    }
    assert args(VERBS_BY_OP["kill"], prefix="p") == {"ref": None, "prefix": "p"}
    assert args(VERBS_BY_OP["info"]) == {}
    req = SpawnRequest(label="x", argv=["true"], watchdog_after=float("inf"))
    # Flattened, defaults left out, and an infinite watchdog kept (the runtime refuses it; null would mean "none").
    assert args(VERBS_BY_OP["spawn"], req) == {"label": "x", "argv": ["true"], "watchdog_after": float("inf")}
    assert protocol.encode({"op": "list", "args": args(VERBS_BY_OP["list"], SessionState.DONE)}) == (
        b'{"op":"list","args":{"state":"done","prefix":null,"limit":null,"before":null,"since":null,"ended":null}}\n'
    )


def test_results_dump_as_their_json_form() -> None:
    assert protocol.dump_result([SESSION]) == [SESSION.model_dump(mode="json")]
    assert protocol.dump_result(None) is None
    assert protocol.dump_result({"a": [EVENT]}) == {"a": [EVENT.model_dump(mode="json")]}


# ------------------------------------------------------------------------------------------------ implementations


def test_remote_runtime_has_a_generated_method_per_verb() -> None:
    for v in request_reply_verbs():
        method = vars(RemoteRuntime).get(v.method)
        assert method is not None and method is not v.function, v.op
        assert inspect.signature(method) == inspect.signature(v.function), v.op
        assert method.__qualname__ == f"RemoteRuntime.{v.method}" and method.__doc__ == v.function.__doc__
    for v in VERBS:
        if v.stream:
            assert v.method in vars(RemoteRuntime), f"RemoteRuntime must write out the stream {v.op} itself"


async def test_a_verb_the_fake_does_not_fake_says_so() -> None:
    fake = FakeRuntime()
    assert RuntimeAPI in type(fake).__mro__  # (isinstance needs a runtime_checkable protocol)
    own = {v.method for v in VERBS if v.method in vars(FakeRuntime)}
    assert own == {v.method for v in VERBS} - {"events", "acquire", "cron_add", "cron_remove"}
    with pytest.raises(NotImplementedError, match=r"^FakeRuntime does not implement the runtime verb events\(\)$"):
        await fake.events()
    with pytest.raises(NotImplementedError, match=r"cron_remove\(\)"):
        await fake.cron_remove("x")
