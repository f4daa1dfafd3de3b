"""Crew file values written as TOML text: a small writer for the flat tables a generated crew file has.

tomllib only reads; a generated crew file (`crewtui import openclaw`) needs strings escaped exactly (quotes,
backslashes, newlines, control and invisible characters), comments kept to one line, and durations and
template literals written the way the crew file reads them.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _escaped_char(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    cat = unicodedata.category(ch)
    if cat == "Cs":  # a lone surrogate (JSON allows "\ud800"): TOML has no way to write it
        return "\\uFFFD"
    # Controls, and invisible format characters (bidi overrides, zero-width), are written as escapes so the
    # file shows what is there.
    if cat in ("Cc", "Cf", "Zl", "Zp"):
        return f"\\u{ord(ch):04X}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08X}"
    return ch


def toml_str(value: str) -> str:
    """A TOML basic string: quotes, backslashes and every control character escaped."""
    return '"' + "".join(_escaped_char(ch) for ch in value) + '"'


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_str(key)


def toml_value(value: Any) -> str:
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return toml_array(value)
    if isinstance(value, dict):
        return toml_inline(value)
    raise TypeError(f"no TOML form for {type(value).__name__}")


def toml_array(values: list[Any]) -> str:
    return "[" + ", ".join(toml_value(v) for v in values) + "]"


def toml_inline(table: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()) + " }"


def comment(text: str) -> str:
    """One comment line: TOML comments cannot hold control characters, and a newline would end the comment."""
    shown = "".join(
        " " if ch in "\n\r\t" else (_escaped_char(ch) if unicodedata.category(ch) in ("Cc", "Cf", "Cs") else ch)
        for ch in text
    )
    return "# " + " ".join(shown.split())


def escape_template(text: str) -> str:
    """A literal for crewtui's `{name}` templates (task, argv): braces doubled, so none is read as a field."""
    return text.replace("{", "{{").replace("}", "}}")


def duration_ms(ms: int) -> str:
    """Milliseconds as a crew file duration: 900000 -> "15m", 5400000 -> "1h30m", 1500 -> "1500ms"."""
    if ms % 1000:
        return f"{ms}ms"
    seconds = ms // 1000
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            count, seconds = divmod(seconds, size)
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
