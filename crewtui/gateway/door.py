"""`Doors`: the runtime's gateway answering the doors of Ray nodes (`node.NodeGateway`, host mode).

A request an agent on a node sends to its node's door is paced and charged here, by the same line, buckets,
pauses and budgets as the runtime's own sessions' requests: the door asks (`serve`, one JSON op per call, over
the host's link) and does what it is told. The ops, in a request's order:

- `admit` {token, nonce, estimate}: waits in the pool's line; {"admitted": true} once it may go (its permit is
  held here under the door's `nonce`), false if the token is unknown or revoked (or the gateway stops);
- `refused` {nonce, status, wait, window, absorbed}: upstream refused it; the pool pauses for everyone, and
  {"retry": true} while the pool's `max_retries` allow (its permit is given back; the door asks `admit` again);
- `answered` {nonce, status, window, wait}: upstream's answer begins; the pool learns from its headers;
- `done` {nonce, api, status, measured, absorbed, error, cut}: the permit goes back, the usage is charged;
- `abandon` {nonce}: the agent hung up: a permit granted (or about to be) goes back.

The session is the one the host named (its link says whose request it is) and must hold the token: a door cannot
spend as another session. A runtime that restarted knows none of the old one's permits: their `done` still
charges the usage.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from crewtui.gateway.accounts import Client
from crewtui.gateway.limits import Permit
from crewtui.gateway.usage import Measured

if TYPE_CHECKING:
    from crewtui.gateway.server import Gateway

_ABANDONED_KEEP_S = 600.0  # an abandon that came before its admit was served is remembered this long
_APIS = ("anthropic", "responses", "chat")


class BadOp(ValueError):
    """An op the door should never have sent."""


class Doors:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._permits: dict[str, tuple[Client, Permit]] = {}  # by nonce: granted, not yet given back
        self._abandoned: dict[str, float] = {}  # by nonce: when

    @property
    def held(self) -> int:
        """Permits granted to doors and not yet given back."""
        return len(self._permits)

    async def serve(self, key: str, line: bytes) -> bytes:
        """One op of a node's door for session `key`; the reply line."""
        try:
            op = json.loads(line)
            if not isinstance(op, dict) or not isinstance(op.get("nonce"), str):
                raise BadOp("not an op")
            kind = op.get("op")
            if kind == "admit":
                reply = await self._admit(key, op)
            elif kind == "refused":
                reply = self._refused(key, op)
            elif kind == "answered":
                reply = self._answered(key, op)
            elif kind == "done":
                reply = self._done(key, op)
            elif kind == "abandon":
                reply = self._abandon(op["nonce"])
            else:
                raise BadOp(f"no op {kind!r}")
        except (ValueError, TypeError, KeyError) as exc:
            reply = {"ok": False, "error": {"kind": "bad_input", "message": f"gateway door: {exc}"[:300]}}
        return (json.dumps({"ok": True, **reply} if reply.get("ok") is not False else reply) + "\n").encode()

    # ------------------------------------------------------------------------------------------ ops

    async def _admit(self, key: str, op: dict[str, Any]) -> dict[str, Any]:
        client = self.gateway.client(str(op.get("token")))
        if client is None or client.key != key:
            self.gateway.forbidden += 1
            return {"admitted": False}
        nonce = op["nonce"]
        permit = await self.gateway.admit(client, _count(op.get("estimate")))
        if permit is None:
            return {"admitted": False}
        if self._abandoned.pop(nonce, None) is not None:  # its agent hung up while it waited here
            self.gateway.limits_of(client).release(permit)
            return {"admitted": False}
        self._permits[nonce] = (client, permit)
        return {"admitted": True}

    def _refused(self, key: str, op: dict[str, Any]) -> dict[str, Any]:
        client = self._client(key, op["nonce"])
        if client is None:
            return {"retry": False}
        retry = _count(op.get("absorbed")) < self.gateway.limits_of(client).config.max_retries
        if retry:  # (else the agent gets the refusal, and `answered` tells the pool)
            held = self._permits.pop(op["nonce"], None)
            permit = held[1] if held is not None else None
            status, wait, window = _count(op.get("status")), _seconds(op.get("wait")), _seconds(op.get("window"))
            self.gateway.refused(client, permit, status, wait, window)
        return {"retry": retry}

    def _answered(self, key: str, op: dict[str, Any]) -> dict[str, Any]:
        client = self._client(key, op["nonce"])
        if client is not None:
            self.gateway.answered(
                client, _count(op.get("status")), _seconds(op.get("window")), _seconds(op.get("wait"))
            )
        return {}

    def _done(self, key: str, op: dict[str, Any]) -> dict[str, Any]:
        held = self._permits.pop(op["nonce"], None)
        client = held[0] if held is not None else self.gateway.client_of(key)
        if client is None:
            return {}  # a session this runtime never knew (its store lost it): nobody to charge
        api = op.get("api")
        if api not in _APIS:
            raise BadOp(f"no API {api!r}")
        error = op.get("error")
        self.gateway.finish(
            client,
            held[1] if held is not None else None,
            api,
            _count(op.get("status")),
            _measured(op.get("measured")),
            _count(op.get("absorbed")),
            str(error)[:300] if error else None,
            op.get("cut") is True,
        )
        return {}

    def _abandon(self, nonce: str) -> dict[str, Any]:
        held = self._permits.pop(nonce, None)
        if held is not None:
            self.gateway.limits_of(held[0]).release(held[1])
            return {}
        now = time.monotonic()
        for old in [n for n, at in self._abandoned.items() if now - at > _ABANDONED_KEEP_S]:
            del self._abandoned[old]
        self._abandoned[nonce] = now
        return {}

    def session_ended(self, key: str) -> int:
        """The session's end is recorded: permits its door still held go back (its node died mid-request, and no
        `done` will ever come: the pool would be a slot short for good); how many."""
        gone = [nonce for nonce, (client, _) in self._permits.items() if client.key == key]
        for nonce in gone:
            client, permit = self._permits.pop(nonce)
            self.gateway.limits_of(client).release(permit)
        return len(gone)

    def _client(self, key: str, nonce: str) -> Client | None:
        held = self._permits.get(nonce)
        return held[0] if held is not None else self.gateway.client_of(key)


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        return None
    return float(min(value, 86_400.0))


def _measured(value: object) -> Measured:
    if not isinstance(value, dict):
        return Measured()
    model = value.get("model")
    return Measured(
        input=_count(value.get("input")),
        output=_count(value.get("output")),
        cache_read=_count(value.get("cache_read")),
        cache_write=_count(value.get("cache_write")),
        model=model if isinstance(model, str) else None,
        known=value.get("known") is True,
    )
