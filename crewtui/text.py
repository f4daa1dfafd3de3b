"""Foreign text made safe to put on a terminal: what agents print, labels, reasons, what users type.

The project's rule is that agent and user text is shown, never interpreted. A terminal interprets control
characters and escape sequences (ESC ] 0 ; title BEL retitles it, ESC [ 2 J wipes it, OSC 52 writes the
clipboard, ESC c resets it), so every place that shows foreign text (the dashboard, `crewtui ctl` output)
passes it through `clean` first. Pure functions on `str`; nothing of crewtui is imported (the bottom layer).

The rules of `clean`:

- A complete escape sequence is removed, with what it carries: CSI (colours, cursor moves, ESC [ 2 J), the
  strings OSC, DCS, SOS, PM and APC up to their terminator (BEL or ST), and the short ones (ESC c, ESC 7,
  ESC ( B...), in their 7-bit and 8-bit (C1) forms. They only style or drive a terminal; the text around them
  reads as the agent meant it.
- Every other control character is made visible, one cell each where it can be: C0 as its Unicode control
  picture (a lone ESC as ␛, BEL as ␇, NUL as ␀, a newline as ␊ unless newlines are kept), DEL as ␡. So an
  unterminated sequence shows as ␛ and the rest of it, as text. Tab is kept.
- C1 controls left over, the bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069:
  they reorder what follows, "Trojan Source") and the Unicode line and paragraph separators are shown as
  escapes (`\\x85`, `\\u202e`).

`json_safe` does the same for JSON text printed for scripts: what JSON leaves raw (DEL, C1, the bidi controls,
U+2028/9) becomes a `\\uXXXX` escape, so the decoded value is unchanged and a terminal never sees the character.
"""

from __future__ import annotations

import re

_ST = r"(?:\x07|\x1b\\|\x9c)"  # BEL, ESC \ and the 8-bit ST end a string sequence
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]"  # CSI: parameters, intermediates, final byte
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*" + _ST + r"|"  # OSC, DCS, SOS, PM, APC strings
    r"\x1b[\x20-\x2f]*[\x30-\x4f\x51-\x57\x59\x5a\x5c\x60-\x7e]"  # the others: ESC c, ESC 7, ESC ( B, ESC # 8...
)
# Bidi embeddings, overrides and isolates; the Unicode line and paragraph separators.
_FORMAT = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
_CONTROL = re.compile(f"[\\x00-\\x08\\x0a-\\x1f\\x7f-\\x9f{_FORMAT}]")
_CONTROL_KEEP_NEWLINES = re.compile(f"[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f{_FORMAT}]")
_JSON_RAW = re.compile(f"[\\x7f-\\x9f{_FORMAT}]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # ␀ ... ␟: the control pictures, one cell wide
    if code == 0x7F:
        return "\u2421"  # ␡
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def clean(text: str, *, newlines: bool = False) -> str:
    """`text` with escape sequences removed and every other control character made visible (the module's
    rules). `newlines=True` keeps line feeds, for text shown over several lines."""
    if not _CONTROL.search(text):
        return text  # the common case: nothing to do, no copy
    text = _SEQUENCE.sub("", text)
    return (_CONTROL_KEEP_NEWLINES if newlines else _CONTROL).sub(_visible, text)


def clean_or(text: str | None, missing: str = "") -> str:
    """`clean(text)`, or `missing` for None or an empty text."""
    return clean(text) if text else missing


def json_safe(json_text: str) -> str:
    """JSON text (as `json.dumps(..., ensure_ascii=False)` writes it) with the characters JSON leaves raw that a
    terminal would act on escaped as `\\uXXXX`. They occur only inside strings, so the JSON decodes the same."""
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", json_text)
