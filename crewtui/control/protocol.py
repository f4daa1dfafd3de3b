"""The control socket's wire format: one JSON object per line, and how a verb's arguments and result travel.

Request: {"op": "spawn", "args": {...}}. Reply: {"ok": true, "result": ...} or
{"ok": false, "error": {"kind": "conflict", "message": "..."}}. `watch` replies {"ok": true, "result":
"watching"} and then one {"event": {...}} line per event until the client hangs up. `ping` answers "pong".

The verbs themselves are `crewtui.api.VERBS`: a verb's args are its `RuntimeAPI` parameters by name (for a
`flat` verb, the fields of its one model parameter), checked against their type hints on arrival; its result is
the JSON form of its return type, parsed back with that type by the client.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model

from crewtui.api import Verb
from crewtui.errors import BadInput, CrewError

MAX_LINE = 1 << 20  # 1 MiB: a steer text is at most 64 KiB; anything much larger is a broken client
# A reply is at most this long: a whole result (at most 16 MiB, escaped) fits; a listing is paged far below it.
MAX_REPLY = 40 << 20
# Sessions per page when a client lists everything (a page of summaries stays around a megabyte).
LIST_PAGE = 200
PING = "ping"  # a liveness check of the socket itself, not a runtime verb


def encode(obj: Any) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def ok(result: Any) -> bytes:
    return encode({"ok": True, "result": result})


def err(exc: CrewError) -> bytes:
    return encode({"ok": False, "error": {"kind": exc.kind, "message": exc.message}})


def args_error(op: str, exc: Exception) -> BadInput:
    """One line naming the op and, for a validation error, the first bad argument."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or op
        return BadInput(f"{op}: {where}: {first.get('msg', 'invalid value')}")
    return BadInput(f"{op}: bad arguments ({exc})")


MALFORMED = 'malformed request: expected one JSON line {"op": ..., "args": {...}}'


def parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """A request line's op and args; BadInput in one line when it is none. A lone surrogate escape ("\\ud800",
    which JSON allows and Python decodes) is refused: it is no Unicode text, and a steer, task or argv holding it
    could not be written to the store or to the agent (the runtime would have done half of what was asked)."""
    try:
        msg = json.loads(line)
        op, args = msg["op"], msg.get("args") or {}
        if not isinstance(op, str) or not isinstance(args, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: absurdly nested JSON
        raise BadInput(MALFORMED) from None
    stack: list[Any] = [args]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                bad = ascii(value[exc.start])[1:-1]
                raise BadInput(f"{op}: text with a lone surrogate ({bad}) is no Unicode text; nothing done") from None
    return op, args


# ------------------------------------------------------------------------------------------------ client side


def request_args(verb: Verb, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """A call's arguments as the wire carries them: every parameter by name, defaults included.

    Raises TypeError, as a call would, for arguments the verb does not take.
    """
    bound = verb.signature.bind(*args, **kwargs)
    bound.apply_defaults()
    if verb.flat:
        (model,) = bound.arguments.values()
        # Python mode, not JSON mode: that would turn an infinite watchdog into null, which the runtime would take
        # for "no watchdog" instead of refusing it.
        out: dict[str, Any] = model.model_dump(exclude_defaults=True)
        return out
    return {name: _plain(value) for name, value in bound.arguments.items()}


def _plain(value: Any) -> Any:
    # Only what json.dumps cannot take as is; a str given for an enum (the CLI's --state) goes as it is.
    return value.model_dump() if isinstance(value, BaseModel) else value


@cache
def _result_adapter(verb: Verb) -> TypeAdapter[Any]:
    return TypeAdapter(verb.hints["return"])


def parse_result(verb: Verb, raw: Any) -> Any:
    """A reply's result as the verb's return type (models, lists of them, None...)."""
    return _result_adapter(verb).validate_python(raw)


# ------------------------------------------------------------------------------------------------ server side


@cache
def _args_model(verb: Verb) -> type[BaseModel]:
    if verb.flat:
        (param,) = verb.signature.parameters
        model = verb.hints[param]
        assert isinstance(model, type) and issubclass(model, BaseModel), f"{verb.op}: a flat verb takes one model"
        return model
    fields: dict[str, Any] = {
        name: (verb.hints[name], ... if p.default is p.empty else p.default)
        for name, p in verb.signature.parameters.items()
    }
    # Unknown args are ignored, as they always were: an older or newer client's extra field is not an error.
    return create_model(f"{verb.op}_args", __config__=ConfigDict(extra="ignore"), **fields)


def decode_args(verb: Verb, args: dict[str, Any]) -> dict[str, Any]:
    """A request's args as keyword arguments of the verb's method, checked against its type hints.

    Raises BadInput: one line naming the op and the first bad argument (or the runtime's own message for a
    bad session ref or state, see crewtui.api).
    """
    try:
        parsed = _args_model(verb).model_validate(args)
    except ValidationError as exc:
        raise args_error(verb.op, exc) from None
    if verb.flat:
        (param,) = verb.signature.parameters
        return {param: parsed}
    return {name: getattr(parsed, name) for name in verb.signature.parameters}


def dump_result(obj: Any) -> Any:
    """A verb's result as JSON-ready data: models in their JSON form, everything else as it is."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, list):
        return [dump_result(o) for o in obj]
    if isinstance(obj, dict):
        return {k: dump_result(v) for k, v in obj.items()}
    return obj
