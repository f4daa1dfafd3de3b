"""Agent and user text is shown, never interpreted: no terminal escape from an agent reaches the user's terminal
(the dashboard and `crewtui ctl`), no label, pattern or name is read as markup, and no filter can freeze the UI.

The dashboard's tests run it on a real orchestrator with real agent processes and look at the bytes it would
write to the terminal (what Textual's compositor renders for a full repaint); the `ctl` tests run the real
command at a real pseudo-terminal against a real headless runtime; the runaway filter is typed into a real
dashboard process on a pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from textual.widgets import Input, Static

from crewtui.model import SessionState, SpawnRequest
from crewtui.runtime.orchestrator import Orchestrator
from crewtui.ui.app import CrewApp, make_app
from crewtui.ui.screens.spawn import SpawnScreen
from tests.conftest import PY, SLEEPER, crew_from, py, wait_for
from tests.faults.helpers import Dashboard, kill_leftover_sessions, wait_until
from tests.test_ctl import ENV, Runtime
from tests.ui.test_keys import SIZE, ready, recording, select

# What hostile agents print: a window title (OSC 0), a clipboard write (OSC 52, ended by ST), a screen wipe (CSI),
# the same wipe as an 8-bit C1 CSI, a full reset (ESC c), a right-to-left override and a lone ESC.
HOSTILE = (
    "title\x1b]0;PWNED-TITLE\x07 clip\x1b]52;c;UFdORUQ=\x1b\\ wipe\x1b[2J\x1b[H c1\x9b2J reset\x1bc"
    " bidi\u202eevil end lone\x1b"
)
# Bytes none of which crewtui itself ever writes: any of them in the output came from an agent.
DANGEROUS = re.compile(r"\x1b\]|\x1bP|\x1b\[2J|\x1bc|[\x07\x80-\x9f\u202a-\u202e\u2066-\u2069]")

AGENT = textwrap.dedent(
    f"""
    import sys
    hostile = {HOSTILE!r}
    print("out " + hostile, flush=True)
    print("err " + hostile, file=sys.stderr, flush=True)
    for line in sys.stdin:
        print("steered: " + line.rstrip("\\n"), flush=True)
    """
)
ENDED_AGENT = textwrap.dedent(
    f"""
    import json, sys
    hostile = {HOSTILE!r}
    print(json.dumps({{"said": hostile}}, ensure_ascii=False), flush=True)
    print("fatal " + hostile, file=sys.stderr, flush=True)
    sys.exit(1)
    """
)


def terminal_bytes(app: CrewApp) -> str:
    """What the dashboard writes to its terminal for a full repaint of what it shows now."""
    return app.screen._compositor.render_update(full=True).render_segments(app.console)


def dangerous(out: str) -> list[str]:
    return sorted({m.group() for m in DANGEROUS.finditer(out)})


# ------------------------------------------------------------------------------------------------ the sanitizer


def test_clean_removes_escape_sequences_and_shows_every_other_control_character() -> None:
    from crewtui.text import clean, json_safe

    assert clean("plain text, tabs\tkept") == "plain text, tabs\tkept"
    assert clean("a\x1b]0;title\x07b\x1b]52;c;eA==\x1b\\c\x1b[2J\x1b[31md\x1b[0m") == "abcd"
    assert clean("\x1bP1$r0m\x1b\\dcs\x1b_apc\x1b\\\x1bcreset\x1b(Bset") == "dcsresetset"
    assert clean("c1 \x9b2J\x9d0;t\x9cok") == "c1 ok"
    assert clean("lone\x1b") == "lone␛"
    assert clean("\x1b]0;never ended") == "␛]0;never ended"
    assert clean("nul\x00 bel\x07 bs\x08 cr\r del\x7f nel\x85") == "nul␀ bel␇ bs␈ cr␍ del␡ nel\\x85"
    assert clean("bidi\u202eevil\u2066x\u2069 ls\u2028") == "bidi\\u202eevil\\u2066x\\u2069 ls\\u2028"
    assert clean("two\nlines") == "two␊lines"
    assert clean("two\nlines", newlines=True) == "two\nlines"
    assert clean(clean(HOSTILE)) == clean(HOSTILE)
    assert not dangerous(clean(HOSTILE))
    raw = json.dumps({"x": HOSTILE}, ensure_ascii=False)
    assert json.loads(json_safe(raw)) == {"x": HOSTILE}
    assert not dangerous(json_safe(raw))


# ------------------------------------------------------------------------------------------------ the dashboard


async def test_agent_escapes_never_reach_the_dashboards_terminal(make_orch: Any) -> None:
    orch: Orchestrator = await make_orch()
    live = (await orch.spawn(SpawnRequest(label="hostile-live", argv=py(AGENT)))).key
    ended = (await orch.spawn(SpawnRequest(label="hostile-ended", argv=py(ENDED_AGENT)))).key
    await orch.wait_ended(ended, timeout=10)
    assert orch.sessions[ended].state == SessionState.FAILED
    await wait_for(lambda: orch.sessions[live].last_output_at is not None, what="the first output")
    app = make_app(orch)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(app, pilot)
        await select(app, pilot, live)
        await orch.send(live, "steer \x1b]0;PWNED-STEER\x07 \x9b2J")
        transcript = app.main_screen.transcript
        await wait_for(
            lambda: sum("steer" in line.text for line in transcript.lines) >= 2, what="steer echo and answer"
        )
        await pilot.pause()
        out = terminal_bytes(app)
        assert dangerous(out) == []
        # Shown (the words around the sequences, a lone ESC as ␛), never acted on.
        assert "out title clip wipe" in out and "err title" in out and "lone␛" in out

        await select(app, pilot, ended)
        await wait_for(lambda: any("fatal" in line.text for line in transcript.lines), what="the ended transcript")
        await pilot.pause()
        out = terminal_bytes(app)
        assert dangerous(out) == []
        assert "fatal title" in out


# ------------------------------------------------------------------------------------------------ markup


CREW_WITH_AGENT = f"""
[crew]
name = "markup [/x] [b]bold"

[agents.sleepy]
command = [{json.dumps(PY)}, "-c", {json.dumps(SLEEPER)}]
"""


async def test_markup_in_labels_patterns_domains_and_messages_is_shown_not_read(make_orch: Any) -> None:
    orch: Orchestrator = await make_orch(crew_from(CREW_WITH_AGENT))
    # A domain is free text: a killed session holds "[/x]", a live one took it over, so a retry is refused with
    # a message (a notification) that quotes it.
    first = (await orch.spawn(SpawnRequest(label="first-holder", argv=py(SLEEPER), domain="[/x] [b]"))).key
    await orch.kill(first)
    second = (await orch.spawn(SpawnRequest(label="second-holder", argv=py(SLEEPER), domain="[/x] [b]"))).key
    app = make_app(orch)
    notes = recording(app)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(app, pilot)
        # The detail pane shows the domain as typed.
        await select(app, pilot, second)
        await pilot.pause()
        assert "domain [/x] [b]" in terminal_bytes(app)
        # The runtime's refusal, quoting the domain, as a notification.
        await select(app, pilot, first)
        await pilot.press("r")
        await wait_for(lambda: any("is now held by" in n for n in notes), what="the refusal")
        await pilot.pause(0.3)
        assert "domain '[/x] [b]' is now held" in terminal_bytes(app)
        # A label the form refuses: the form's message quotes it.
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, SpawnScreen)
        form.query_one("#spawn-label", Input).value = "[/x]"
        form.query_one("#spawn-label", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        assert "invalid label '[/x]'" in str(form.query_one("#spawn-label-error", Static).render())
        await pilot.press("escape")
        await pilot.pause()
        # A filter the engine refuses: the message quotes it.
        await pilot.press("slash")
        app.query_one("#filter", Input).value = "(?P<[/x]>a)"
        await pilot.pause()
        assert "[/x]" in str(app.query_one("#filter-error", Static).render())
        assert orch.sessions[second].state == SessionState.RUNNING
    assert app.crashed is None and app.return_code in (None, 0)


# ------------------------------------------------------------------------------------------------ runaway regex


def test_a_runaway_filter_cannot_freeze_the_dashboard(tmp_path: Path) -> None:
    """`(a+)+$` backtracks for ages on a label of many a's that does not end in one: typed into the filter of a
    real dashboard, the dashboard must still take the next keys (enter, q, l) and leave."""
    crew = tmp_path / "crew.toml"
    crew.write_text('[crew]\nname = "runaway"\n')
    dash = Dashboard(tmp_path / "data", crew)
    try:
        for n in range(3):
            spawn = ["ctl", "--data-dir", str(tmp_path / "data"), "spawn", "--label", "a" * 60 + f"-{n}", "--json"]
            out = subprocess.run(
                [PY, "-m", "crewtui", *spawn, "--", "sleep", "600"],
                capture_output=True,
                text=True,
                timeout=30,
                env=ENV,
                check=True,
            ).stdout
            assert json.loads(out)["state"] == "running"
        wait_until(lambda: "aaaaaaaaaaaaaaaa" in dash.screen_text(), 20, "the dashboard to show the sessions")
        for key in ("/", *"(a+)+$"):
            os.write(dash._master, key.encode())
            time.sleep(0.05)
        os.write(dash._master, b"\r")  # enter: keep the filter, back to the sessions
        time.sleep(0.3)
        os.write(dash._master, b"q")
        time.sleep(0.5)
        os.write(dash._master, b"l")  # leave the sessions running
        wait_until(lambda: dash.proc.poll() is not None, 20, "the dashboard to take q and leave")
        assert dash.proc.returncode == 0, dash.screen_text()[-2000:]
    finally:
        if dash.alive():
            dash.kill9()
        kill_leftover_sessions(tmp_path / "data")


# ------------------------------------------------------------------------------------------------ ctl


def at_terminal(*args: str) -> tuple[int, str]:
    """Run `crewtui ARGS` with its stdout and stderr on a pseudo-terminal (where click strips nothing); return its
    exit code and everything it wrote there."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([PY, "-m", "crewtui", *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=ENV)
    os.close(slave)
    out = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=60), out.decode("utf-8", errors="replace")


def test_ctl_output_at_a_terminal_carries_no_escapes(tmp_path: Path) -> None:
    rt = Runtime(tmp_path / "data")
    d = str(rt.data_dir)
    ctl = ("ctl", "--data-dir", d)
    master, slave = pty.openpty()
    watch = subprocess.Popen([PY, "-m", "crewtui", *ctl, "watch"], stdout=slave, stderr=slave, env=ENV)
    os.close(slave)
    watched = bytearray()
    reader = threading.Thread(target=drain, args=(master, watched), daemon=True)
    reader.start()
    try:
        time.sleep(1.0)  # the watcher subscribes
        spawned = subprocess.run(
            [PY, "-m", "crewtui", *ctl, "spawn", "--label", "hostile-live", "--json", "--", PY, "-c", AGENT],
            capture_output=True,
            text=True,
            timeout=30,
            env=ENV,
            check=True,
        )
        assert json.loads(spawned.stdout)["state"] == "running"
        subprocess.run(
            [PY, "-m", "crewtui", *ctl, "spawn", "--label", "hostile-ended", "--", PY, "-c", ENDED_AGENT],
            capture_output=True,
            timeout=30,
            env=ENV,
            check=True,
        )
        code, out = at_terminal(*ctl, "send", "hostile-live", "steer \x1b]0;PWNED-STEER\x07 \x9b2J")
        assert code == 0, out

        def history_has(ref: str, needle: str) -> bool:
            return needle in at_terminal(*ctl, "history", ref)[1]

        wait_until(lambda: history_has("hostile-live", "steered: steer"), 15, "the steer's echo")
        wait_until(lambda: history_has("hostile-ended", "fatal title"), 15, "the ended session's output")

        outputs = {
            "list": at_terminal(*ctl, "list"),
            "history": at_terminal(*ctl, "history", "hostile-live"),
            "history of the ended": at_terminal(*ctl, "history", "hostile-ended"),
            "list --json": at_terminal(*ctl, "list", "--json"),
            "history --json": at_terminal(*ctl, "history", "hostile-ended", "--json"),
            "info": at_terminal(*ctl, "info"),
            "an error quoting the input": at_terminal(*ctl, "send", "no-such\x1b]0;PWNED\x07", "hi"),
        }
        wait_until(lambda: b"session_steered" in watched and b"hostile-ended" in watched, 15, "the events")
        outputs["watch"] = (0, watched.decode("utf-8", errors="replace"))
        for what, (_, out) in outputs.items():
            assert dangerous(out) == [], (what, out)
        assert "out title clip wipe" in outputs["history"][1] and "lone␛" in outputs["history"][1]
        assert "fatal title clip" in outputs["history of the ended"][1]
        assert "hostile-live" in outputs["list"][1] and "steered: steer" in outputs["list"][1]
        assert outputs["an error quoting the input"][0] == 2
        # --json keeps what the agent printed, escaped: a script decodes exactly the original text.
        ended = json.loads(outputs["history --json"][1])
        assert "fatal " + HOSTILE in ended["stderr"]
    finally:
        watch.terminate()
        watch.wait(timeout=10)
        reader.join(timeout=10)
        rt.stop()
        kill_leftover_sessions(rt.data_dir)


def drain(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        into += chunk
    os.close(fd)
