"""The control socket client: `RemoteRuntime` implements `RuntimeAPI` over the socket.

`crewtui ctl`, agents (through `crewtui ctl`) and an attached dashboard use it. One connection per call,
so a blocked `yield` never holds up other calls; `watch` keeps its connection open and streams events.

Its verbs are not written out here: one method per request/reply verb of `crewtui.api.VERBS` is generated
below (arguments sent by parameter name, the reply parsed as the method's return type). mypy sees them as the
`RuntimeAPI` methods that `RemoteRuntime` subclasses explicitly.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from crewtui.api import VERBS, VERBS_BY_OP, RuntimeAPI, Verb
from crewtui.control import protocol
from crewtui.errors import CrewError, RuntimeUnavailable, error_from_wire
from crewtui.events import EVENT_ADAPTER, Event
from crewtui.locations import socket_connect_path
from crewtui.model import Session, SessionState


class RemoteRuntime(RuntimeAPI):
    def __init__(self, socket_path: str | Path, data_dir: str | Path | None = None) -> None:
        self.socket_path = Path(socket_path)
        self.data_dir = Path(data_dir) if data_dir else self.socket_path.parent

    def _hint(self) -> str:
        return f"start one with: crewtui run --headless --data-dir {self.data_dir}"

    def _unavailable(self) -> RuntimeUnavailable:
        return RuntimeUnavailable(
            f"no crewtui runtime is listening in {self.data_dir} (socket {self.socket_path}); {self._hint()}"
        )

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_unix_connection(
                socket_connect_path(self.socket_path), limit=protocol.MAX_REPLY + protocol.MAX_LINE
            )
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise self._unavailable() from None
        except PermissionError:
            raise RuntimeUnavailable(f"not allowed to use the control socket {self.socket_path} (owner only)") from None
        except OSError as exc:
            if exc.errno is None and not self.socket_path.is_symlink():
                # Too long for a Unix socket, and no link to a short twin: a runtime would have made one.
                raise self._unavailable() from None
            why = "a symbolic link loop" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
            raise RuntimeUnavailable(f"cannot reach a runtime at {self.socket_path}: {why}; {self._hint()}") from None

    async def call(self, op: str, /, **args: Any) -> Any:
        """One request: the reply's result as JSON data, or its error raised as the CrewError of its kind."""
        reader, writer = await self._connect()
        try:
            writer.write(protocol.encode({"op": op, "args": args}))
            await writer.drain()
            line = await reader.readline()
        except ConnectionError:
            raise self._unavailable() from None
        except ValueError:  # over the reader's limit: a runtime of another version that does not bound its replies
            raise CrewError(f"{op}: the runtime's reply was too long to read; ask for less") from None
        finally:
            writer.close()
        if not line:
            raise RuntimeUnavailable(f"the runtime in {self.data_dir} closed the connection without answering")
        reply = json.loads(line)
        if not reply.get("ok"):
            e = reply.get("error") or {}
            raise error_from_wire(e.get("kind", "error"), e.get("message", "unknown error"))
        return reply.get("result")

    async def ping(self) -> bool:
        try:
            return bool(await self.call(protocol.PING) == "pong")
        except CrewError:
            return False

    async def watch(self, on_watching: Callable[[], None] | None = None) -> AsyncIterator[Event]:
        """The runtime's events as they happen; `on_watching` is called once the runtime has subscribed us (an
        event from then on is not missed)."""
        reader, writer = await self._connect()
        try:
            writer.write(protocol.encode({"op": "watch", "args": {}}))
            await writer.drain()
            first = await reader.readline()
            if not first or not json.loads(first).get("ok"):
                raise self._unavailable()
            if on_watching is not None:
                on_watching()
            while True:
                line = await reader.readline()
                if not line:
                    return
                yield EVENT_ADAPTER.validate_python(json.loads(line)["event"])
        finally:
            writer.close()


def _remote_method(verb: Verb) -> Callable[..., Awaitable[Any]]:
    async def method(self: RemoteRuntime, *args: Any, **kwargs: Any) -> Any:
        wire_args = protocol.request_args(verb, *args, **kwargs)
        return protocol.parse_result(verb, await self.call(verb.op, **wire_args))

    # Name, docstring and signature of the RuntimeAPI method, for help(), tracebacks and inspect.signature.
    functools.update_wrapper(method, verb.function)
    method.__qualname__ = f"{RemoteRuntime.__name__}.{verb.method}"
    return method


for _verb in VERBS:
    if not _verb.stream:  # a stream is not one request and one reply: written out above
        setattr(RemoteRuntime, _verb.method, _remote_method(_verb))

_list_page = _remote_method(VERBS_BY_OP["list"])


async def _list_all(
    self: RemoteRuntime,
    state: SessionState | None = None,
    prefix: str | None = None,
    limit: int | None = None,
    before: str | None = None,
    since: float | None = None,
    ended: bool | None = None,
) -> list[Session]:
    """Without a limit, every matching session, fetched newest first in pages (each reply stays small however
    long the history); with one, that page."""
    if limit is not None:
        page: list[Session] = await _list_page(self, state, prefix, limit, before, since, ended)
        return page
    out: list[Session] = []
    while True:
        page = await _list_page(self, state, prefix, protocol.LIST_PAGE, before, since, ended)
        out[:0] = page
        if len(page) < protocol.LIST_PAGE:
            return out
        before = page[0].key


functools.update_wrapper(_list_all, VERBS_BY_OP["list"].function)
_list_all.__qualname__ = f"{RemoteRuntime.__name__}.list"
RemoteRuntime.list = _list_all  # type: ignore[method-assign,assignment]
