"""How a crew file check states a problem: the pydantic error it raises and how values and keys read in it.

Every check of the models raises `fail(...)`; explain.py recognises those errors by ERROR_TYPE and turns
each into its one line, `<file>: <key.path>: <what was expected>, got <what>`. Values are shown with
`describe` and keys with `toml_key`, both in TOML's terms, so the line reads like the file.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, time
from typing import Any

from pydantic_core import PydanticCustomError

ERROR_TYPE = "crew"  # the pydantic error type of every check written here


def fail(msg: str, path: str = "") -> PydanticCustomError:
    """An error for pydantic to collect; `path` is relative to where the failing validator sits."""
    return PydanticCustomError(ERROR_TYPE, "{msg}", {"msg": msg, "path": path})


def describe(value: Any) -> str:
    """How a bad value is shown after `got`: in TOML's terms, short enough for one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table" if value else "an empty table"
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, list):
        text = "[" + ", ".join(describe(v) for v in value[:6]) + (", ...]" if len(value) > 6 else "]")
    else:
        text = repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= 80 else text[:77] + "..."


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(part: str) -> str:
    """One part of a key path as TOML writes it: bare when it can be, else a quoted string."""
    return part if _BARE_KEY.fullmatch(part) else json.dumps(part)
