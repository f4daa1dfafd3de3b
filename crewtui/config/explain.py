"""Pydantic validation errors made into one line: the file, the dotted key path, what was expected.

Errors raised by the models' own checks (problems.py's ERROR_TYPE) already say what was expected; the
others are pydantic's, said here in TOML's terms. An unknown key lists the keys the table does know
(found by walking the models from CrewConfig) and suggests the closest.
"""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from crewtui.config.models import HIDDEN_KEYS, CrewConfig
from crewtui.config.problems import ERROR_TYPE, describe, toml_key
from crewtui.errors import ConfigError


def _dotted(loc: tuple[Any, ...] | list[Any]) -> str:
    """("cron", 0, "schedule", "expr") -> "cron[0].schedule.expr"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + toml_key(str(part))
    return out


def _join(base: str, rel: str) -> str:
    if not rel:
        return base
    if not base or rel.startswith("["):
        return base + rel
    return f"{base}.{rel}"


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else args[0]
        else:
            return tp


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that validates the value at `loc` in a CrewConfig, to list its known keys."""
    tp: Any = CrewConfig
    for part in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if not isinstance(part, str) or part not in tp.model_fields:
                return None
            tp = tp.model_fields[part].annotation
        elif origin is dict:
            tp = get_args(tp)[1]
        elif origin is list:
            tp = get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


_EXPECTED = {
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "list_type": "expected an array",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
    "datetime_type": "expected a date-time like 2026-04-02T09:00:00",
    "datetime_parsing": "expected a date-time like 2026-04-02T09:00:00",
    "datetime_from_date_parsing": "expected a date-time like 2026-04-02T09:00:00",
}


def known_keys(loc: tuple[Any, ...]) -> str:
    """The keys a crew file may set in the table at `loc`, comma-separated; "" if `loc` is no table."""
    model = _model_at(loc)
    if model is None:
        return ""
    hidden = HIDDEN_KEYS.get(model, set())
    return ", ".join(name for name in model.model_fields if name not in hidden)


def _explain(err: Any) -> tuple[str, str]:
    """One pydantic error as (dotted key path, what was expected and what was got)."""
    loc = tuple(err.get("loc", ()))
    path = _dotted(loc)
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == ERROR_TYPE:
        return _join(path, ctx.get("path", "")), ctx.get("msg", err.get("msg", ""))
    if kind == "extra_forbidden":
        known = known_keys(loc[:-1])
        msg = f"unknown key (known: {known})" if known else "unknown key"
        close = difflib.get_close_matches(str(loc[-1]), known.split(", "), n=1) if known else []
        return path, msg + (f"; did you mean {close[0]!r}?" if close else "")
    if kind == "missing":
        return path, "required key is missing"
    if kind == "literal_error":
        return path, f"expected {ctx.get('expected', 'one of the allowed values')}, got {describe(value)}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()), "?")
        return path, f"expected a number {op} {bound}, got {describe(value)}"
    if kind == "too_short":
        return path, f"expected at least {ctx.get('min_length', 1)} element(s), got {describe(value)}"
    if kind == "list_type" and loc == ("cron",):
        return path, f"expected an array of tables (write [[cron]], not [cron]), got {describe(value)}"
    if kind in _EXPECTED:
        return path, f"{_EXPECTED[kind]}, got {describe(value)}"
    # An error type not foreseen above: pydantic's own sentence, still on one line.
    msg = str(err.get("msg", kind)).replace("\n", " ")
    return path, f"{msg[:1].lower()}{msg[1:]}, got {describe(value)}"


def config_error(where: str, exc: ValidationError) -> ConfigError:
    """The first of `exc`'s problems as one line naming `where` and the key, with a count of the others."""
    errors = exc.errors(include_url=False)
    path, msg = _explain(errors[0])
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return ConfigError(f"{where}: {path}: {msg}{more}" if path else f"{where}: {msg}{more}")
