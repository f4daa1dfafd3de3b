"""Agents with hostile output: a 10 MB/s flood, invalid UTF-8 and control bytes, a 1 MB line without a newline.
The runtime keeps answering while they write, the transcript tail stays bounded, nothing crashes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import textwrap
import time
from pathlib import Path

from crewtui.model import SessionState, SpawnRequest
from crewtui.runtime.tail import MAX_LINE_CHARS
from tests.faults.helpers import ENV, PY, Headless, await_until, kill_all_live, rss_kb

FLOOD = textwrap.dedent(
    """
    import sys, time
    out = sys.stdout.buffer
    chunk = (b"x" * 99 + b"\\n") * 10486            # ~1 MiB of 100-byte lines
    written, start = 0, time.monotonic()
    while time.monotonic() - start < 2.5:
        t = time.monotonic()
        out.write(chunk); out.flush()
        written += len(chunk)
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))   # 10 MiB/s
    out.write(b'{"flooded": %d}\\n' % written); out.flush()
    """
)
GARBAGE = textwrap.dedent(
    """
    import sys, time
    out = sys.stdout.buffer
    for i in range(2000):
        out.write(b"bad \\xff\\xfe\\xc3\\x28 \\x80\\x00 nul \\x1b[2J\\x1b]0;title\\x07 esc \\r\\n")
    out.write(b"\\xed\\xa0\\x80 surrogate \\xf4\\x90\\x80\\x80 too big\\n")
    sys.stderr.buffer.write(b"\\xff" * 100000 + b"\\n")
    out.flush(); time.sleep(0.5)
    """
)
LONG_LINE = "import sys, time; sys.stdout.write('y' * (1 << 20)); sys.stdout.flush(); time.sleep(2)"


async def test_flood_garbage_and_a_megabyte_line_leave_the_runtime_responsive_and_bounded(tmp_path: Path) -> None:
    d = tmp_path / "data"
    h = Headless(d)
    rt = h.client()
    try:
        await rt.spawn(SpawnRequest(label="warm", argv=["true"]))
        rss_before = rss_kb(h.pid)
        flood = await rt.spawn(SpawnRequest(label="flood", argv=[PY, "-c", FLOOD]))
        garbage = await rt.spawn(SpawnRequest(label="garbage", argv=[PY, "-c", GARBAGE]))
        long_line = await rt.spawn(SpawnRequest(label="long-line", argv=[PY, "-c", LONG_LINE]))

        # While they write: every call answers promptly, and so does a real `crewtui ctl list`.
        latencies = []
        cli = subprocess.Popen(
            [PY, "-m", "crewtui", "ctl", "--data-dir", str(d), "list"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        cli_started = time.monotonic()
        cli_time = None
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            if cli_time is None and cli.poll() is not None:
                cli_time = time.monotonic() - cli_started
            t = time.monotonic()
            assert await rt.ping()
            listed = await rt.list()
            latencies.append(time.monotonic() - t)
            assert {s.label for s in listed} >= {"flood", "garbage", "long-line"}
            await asyncio.sleep(0.05)
        out, err = cli.communicate(timeout=30)
        cli_time = cli_time or time.monotonic() - cli_started
        assert cli.returncode == 0 and "flood" in out, err
        assert max(latencies) < 1.5, latencies
        assert cli_time < 5, cli_time

        async def ended() -> bool:
            return all(s.state.terminal for s in await rt.list() if s.label != "warm")

        await await_until(ended, 30, "the hostile sessions to end")
        for s in (flood, garbage, long_line):
            got = await rt.get(s.key)
            assert got.state == SessionState.DONE, (got.label, got.state, got.reason)
        # The result line after 25 MB of output is still found.
        flooded = (await rt.get(flood.key)).result["flooded"]
        assert flooded >= 20 * 1024 * 1024
        assert (d / "sessions" / flood.key / "stdout.log").stat().st_size == flooded + len(
            f'{{"flooded": {flooded}}}\n'
        )

        # The transcript tail is bounded whatever the output was, and always valid text.
        for s in (flood, garbage, long_line):
            hist = await rt.history(s.key, tail=100_000)
            size = sum(len(line) for line in hist.lines) + sum(len(line) for line in hist.stderr)
            assert size <= 2 * 256 * 1024 + MAX_LINE_CHARS, (s.label, size)
            assert all(len(line) <= MAX_LINE_CHARS for line in hist.lines + hist.stderr)
            json.dumps(hist.model_dump(mode="json"))  # encodable as sent over the socket
        hist = await rt.history(garbage.key, tail=5)
        assert hist.lines[-1].startswith("\ufffd") or "surrogate" in hist.lines[-1]
        assert "\ufffd" in hist.lines[0] and hist.stderr and set(hist.stderr[0]) == {"\ufffd"}

        # Nothing crashed and the runtime's memory did not follow the 25 MB of output.
        assert h.alive() and await rt.ping()
        assert rss_kb(h.pid) - rss_before < 64 * 1024, (rss_before, rss_kb(h.pid))
    finally:
        if h.alive():
            await kill_all_live(rt)
            h.stop()
