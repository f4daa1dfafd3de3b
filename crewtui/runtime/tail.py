"""Bounded reading of session output files: new lines since an offset, the last lines, and the result.

Sessions write their stdout and stderr logs in their session dir while the runtime tails them. Every read here
is bounded, so one agent that prints a gigabyte, or a megabyte without a newline, cannot stall the runtime
or fill its memory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crewtui.locations import SessionDir
from crewtui.model import MAX_RESULT_BYTES

MAX_LINE_CHARS = 4096
# Enough raw bytes to decode MAX_LINE_CHARS characters whatever their UTF-8 length.
_MAX_LINE_BYTES = MAX_LINE_CHARS * 4
_BLOCK = 8192


# Lines of agents that speak JSON (presets) are read whole up to this, so a long tool result still parses.
AGENT_LINE_BYTES = 4 << 20


def _decode(raw: bytes, line_bytes: int = _MAX_LINE_BYTES) -> str:
    text = raw[:line_bytes].decode("utf-8", errors="replace")
    if line_bytes == _MAX_LINE_BYTES:
        text = text[:MAX_LINE_CHARS]
    # CRLF output reads better without the CR; nothing else is changed.
    return text[:-1] if text.endswith("\r") else text


def read_new(
    path: Path, offset: int, max_bytes: int = 1 << 20, line_bytes: int = _MAX_LINE_BYTES
) -> tuple[list[str], int, int]:
    """Return (complete new lines after `offset`, the offset just after the last of them, bytes consumed).

    A partial last line waits for its newline, except that a pending line longer than `max_bytes` is
    emitted truncated (lines are capped at 4096 characters anyway) and the rest of it is skipped when it
    arrives. An offset past the end of the file means the file was truncated (a new attempt): reading
    starts again at 0, so the returned offset, not offset + consumed, is the one to keep.
    A missing file gives ([], offset, 0). `line_bytes` (default: 4096 characters' worth) caps each line.
    """
    max_bytes = max(1, max_bytes)
    try:
        f = open(path, "rb")
    except (FileNotFoundError, NotADirectoryError):
        return [], offset, 0
    with f:
        size = os.fstat(f.fileno()).st_size
        if offset < 0 or offset > size:
            offset = 0
        if offset == size:
            return [], offset, 0
        # One byte before the offset says whether we stand at a line start or inside an over-long line
        # whose head was already emitted.
        start = offset - 1 if offset > 0 else 0
        f.seek(start)
        data = f.read(max_bytes + (offset - start))
    mid_line = offset > 0 and data[:1] != b"\n"
    data = data[offset - start :]
    if not data:
        return [], offset, 0

    consumed = 0
    if mid_line:
        nl = data.find(b"\n")
        if nl == -1:
            # All of it belongs to a line already emitted truncated: drop it now.
            return [], offset + len(data), len(data)
        consumed = nl + 1
        data = data[consumed:]

    lines: list[str] = []
    last_nl = data.rfind(b"\n")
    if last_nl == -1:
        if consumed == 0 and len(data) >= max_bytes:
            lines.append(_decode(data, line_bytes))
            consumed = len(data)
        # After a skipped tail the pending line may be short only because the read stopped: next call.
        return lines, offset + consumed, consumed
    for raw in data[:last_nl].split(b"\n"):
        lines.append(_decode(raw, line_bytes))
    consumed += last_nl + 1
    return lines, offset + consumed, consumed


def read_lines_upto(path: Path, end: int) -> list[str]:
    """Every complete line of an agent's log before offset `end` (each up to AGENT_LINE_BYTES): what a restarted
    runtime feeds its conversation again to know where it stands."""
    try:
        with open(path, "rb") as f:
            data = f.read(max(0, end))
    except (FileNotFoundError, NotADirectoryError):
        return []
    last_nl = data.rfind(b"\n")
    if last_nl == -1:
        return []
    return [_decode(raw, AGENT_LINE_BYTES) for raw in data[:last_nl].split(b"\n")]


def _tail_raw(path: Path, n: int, max_bytes: int) -> list[bytes]:
    """The last `n` lines of a file as raw bytes (a final line without newline counts), reading backwards
    at most `max_bytes`; a line cut by that bound is left out."""
    if n <= 0:
        return []
    try:
        f = open(path, "rb")
    except (FileNotFoundError, NotADirectoryError):
        return []
    with f:
        size = os.fstat(f.fileno()).st_size
        limit = min(size, max(0, max_bytes))
        block = _BLOCK
        while True:
            want = min(limit, block)
            start = size - want
            # One byte more tells whether the first line read is complete.
            f.seek(max(0, start - 1))
            chunk = f.read(want + (1 if start > 0 else 0))
            complete_start = start == 0 or chunk[:1] == b"\n"
            if start > 0:
                chunk = chunk[1:]
            body = chunk[:-1] if chunk.endswith(b"\n") else chunk
            parts = body.split(b"\n")
            if not complete_start:
                parts = parts[1:]
            if len(parts) >= n or want >= limit:
                break
            block *= 4
    if not chunk:
        return []
    return parts[-n:]


def tail_lines(path: Path, n: int, max_bytes: int = 256 << 10) -> list[str]:
    """The last `n` lines of a file (decoded, each capped at 4096 characters), reading at most `max_bytes`
    from the end. A missing file has no lines."""
    return [_decode(raw) for raw in _tail_raw(path, n, max_bytes)]


def tail_agent_lines(path: Path, n: int, max_bytes: int = 8 << 20) -> list[str]:
    """The last `n` lines of an agent's log, each whole up to AGENT_LINE_BYTES (JSON events can be long)."""
    return [_decode(raw, AGENT_LINE_BYTES) for raw in _tail_raw(path, n, max_bytes)]


def _json_container(raw: bytes) -> tuple[bool, Any]:
    try:
        value = json.loads(raw.strip())
    except ValueError:
        return False, None
    return isinstance(value, (dict, list)), value


_RESULT_SCAN_LINES = 1000


@dataclass(frozen=True)
class FoundResult:
    """What a finished session left as its result."""

    found: bool = False
    value: Any = None
    size: int = 0  # bytes of its JSON
    too_big: int | None = None  # bytes of a result (or last line) over MAX_RESULT_BYTES, not kept


def read_result(sd: SessionDir, limit: int = MAX_RESULT_BYTES) -> FoundResult:
    """A session's result: `result.json` if it exists and parses, else the last stdout line that is a JSON
    object or array (searched from the end, bounded). One over `limit` bytes is not kept, and says so."""
    try:
        size = sd.result.stat().st_size
    except OSError:
        pass
    else:
        if size > limit:
            return FoundResult(too_big=size)
        try:
            text = sd.result.read_bytes()
            return FoundResult(True, json.loads(text), len(text))
        except (OSError, ValueError):
            pass
    # Raw lines, not tail_lines: a result line may well be longer than a display line.
    lines = _tail_raw(sd.stdout, _RESULT_SCAN_LINES, limit + 1)
    last = next((raw for raw in reversed(lines) if raw.strip()), None)
    over = _last_line_over(sd.stdout, limit)
    if over is not None and (last is None or len(last) <= limit):
        # The last line did not fit in what was read: it is longer than the limit.
        return FoundResult(too_big=over)
    for raw in reversed(lines):
        if not raw.strip():
            continue
        ok, value = _json_container(raw)
        if ok:
            return FoundResult(True, value, len(raw.strip()))
    return FoundResult()


def find_result(sd: SessionDir) -> tuple[bool, Any]:
    """`read_result` as (found, value)."""
    got = read_result(sd)
    return got.found, got.value


def _last_line_over(path: Path, limit: int) -> int | None:
    """The length of the file's last line (trailing newline aside) if it is over `limit` bytes, else None."""
    try:
        f = open(path, "rb")
    except OSError:
        return None
    with f:
        size = os.fstat(f.fileno()).st_size
        end = size
        f.seek(max(0, size - 1))
        if size and f.read(1) == b"\n":
            end -= 1
        if end <= limit:
            return None
        f.seek(end - limit - 1)
        window = f.read(limit + 1)
    # No newline in the last limit + 1 bytes: the line is longer than the limit (`end` bounds it from above).
    return None if b"\n" in window else end
