"""Terminal sessions (`tty = true`) attacked: an agent writing what a terminal would obey (clipboard writes, queries
that ask for an answer on its input, images in pieces, sequences the emulator cannot play), steers holding keys
rather than text, concurrent peeks, a dtach killed by hand, a data dir too deep for a socket's path, and a dashboard
whose attach fails. Real processes where the behaviour is theirs (tests/test_terminal_sessions.py has the rigs)."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import struct
import termios
import threading
import time
from pathlib import Path

import pytest

from crewtui import attaching
from crewtui.errors import BadInput
from crewtui.locations import DataDir
from crewtui.model import Session, SessionState
from crewtui.runtime.drivers.terminal import typed
from crewtui.runtime.peek import BACKLOG, Peeker
from tests.conftest import wait_for
from tests.faults.helpers import PY, Headless, call, kill_leftover_sessions, wait_until
from tests.test_terminal_sessions import DTACH_IN, Attached, screen, session
from tests.ui.conftest import fake_app, recording, settle
from tests.ui.fake_terminals import CHECKOUT
from tests.ui.test_terminal_peek import WIDE, lend_terminal, select

needs_dtach = pytest.mark.skipif(shutil.which("dtach") is None, reason="dtach is missing: scripts/install-debian.sh")


class Clock:
    def now(self) -> float:
        return time.time()


def peeker_on(tmp_path: Path, *, live: bool = False) -> tuple[Peeker, Session, Path]:
    """A Peeker on a data dir with one terminal session (ended: the default size, no pts); its transcript's path."""
    dd = DataDir(tmp_path / "data").ensure()
    s = Session(
        key="s-1",
        label="hostile",
        state=SessionState.RUNNING if live else SessionState.DONE,
        created_at=0,
        updated_at=0,
        tty=True,
    )
    sd = dd.session(s.key)
    sd.path.mkdir(parents=True, exist_ok=True)
    sd.stdout.write_bytes(b"")
    return Peeker(dd, Clock()), s, sd.stdout


def write(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


# ------------------------------------------------------------------------------------------------ peek


def test_peek_drops_an_image_string_written_in_pieces(tmp_path: Path) -> None:
    """A sixel image (ESC P ... ESC \\) or a kitty graphics APC longer than what is kept of an open sequence, read
    while half written: drawn as text before (the screen filled with its payload)."""
    peeker, s, out = peeker_on(tmp_path)
    sixel = b"\x1bPq#0;2;0;0;0" + b"~" * 10_000 + b"\x1b\\"
    write(out, b"before\r\n" + sixel[:5000])
    assert peeker.peek(s).lines[:2] == ["before", ""]
    write(out, sixel[5000:-1])  # all but the ST's last byte: its ESC ends this look
    assert peeker.peek(s).lines[:2] == ["before", ""]
    write(out, b"\\after\r\n\x1b_Gf=100;" + b"A" * 6000)
    write(out, b"B" * 10)
    assert peeker.peek(s).lines[:3] == ["before", "after", ""]
    write(out, b"\x1b\\done\r\n")
    assert peeker.peek(s).lines[:4] == ["before", "after", "done", ""]


def test_peek_skips_sequences_the_emulator_cannot_play(tmp_path: Path) -> None:
    """pyte's handlers raise on some well-formed sequences (DECXCPR `CSI ? 6 n`, a private `CSI ? 1 r`, extra
    parameters): the whole look failed ("TypeError: ...") and the rest of what was read was never played."""
    peeker, s, out = peeker_on(tmp_path)
    write(out, b"one\x1b[?6n\r\ntwo\x1b[?1r\x1b[1;2;3D\x1b[?5A\r\nthree\r\n")
    assert peeker.peek(s).lines[:3] == ["one", "two", "three"]


def test_peek_survives_a_wide_characters_half_left_alone(tmp_path: Path) -> None:
    """`中` then CSI P (delete a character) at its left half leaves its right half alone: pyte's `display` raised
    IndexError on every look after it, so the session's screen could never be peeked again."""
    peeker, s, out = peeker_on(tmp_path)
    write(out, "中文\r\x1b[P".encode())
    assert peeker.peek(s).lines[0] == " 文"
    write(out, b"\r\nstill here\r\n")
    assert peeker.peek(s).lines[:2] == [" 文", "still here"]


def test_two_peeks_at_once_take_turns(tmp_path: Path) -> None:
    """Two dashboards peeking at one session at the same moment (the runtime runs each peek in a thread): "ValueError:
    generator already executing" from the emulator, and the screen missing what the failed look had read."""
    errors: list[BaseException] = []
    for _ in range(3):
        peeker, s, out = peeker_on(tmp_path)
        write(out, b"".join(b"\x1b[1;1Hline %d \x1b[31mred\x1b[0m\r\n" % i for i in range(40_000)))

        def look(p: Peeker = peeker, s: Session = s) -> None:
            try:
                p.peek(s)
            except BaseException as exc:  # what a thread raised is the test's
                errors.append(exc)

        threads = [threading.Thread(target=look) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for _ in range(100):  # a look plays for a while at most: the next ones play the rest
            if peeker.peek(s).lines[0] == "line 39999 red":
                break
        assert peeker.peek(s).lines[0] == "line 39999 red"
    assert errors == []


def test_peek_shows_and_never_obeys_what_a_terminal_would_act_on(tmp_path: Path) -> None:
    """Holds: clipboard writes, hyperlinks, titles, queries, mode switches, invalid UTF-8, NULs, wide and combining
    characters come out as text without one control character; a 0-byte transcript and one cut mid-sequence too."""
    peeker, s, out = peeker_on(tmp_path)
    assert peeker.peek(s).lines == [""] * 40
    write(out, b"a\x1b]52;c;aGVsbG8=\x07b\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\x1b]0;title\x07\x1b[c\x1b[6n\x1b[18t")
    write(out, b"\x1b[?2004h\x1b[?1000h\x1b[?1049h\r\nz\xff\x00\xe4\xb8\xad e\xcc\x81\r\ncut\x1b[3")
    lines = peeker.peek(s).lines
    assert lines[:3] == ["ablink", "z\ufffd中 \u00e9", "cut"]
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for line in lines for c in line)
    write(out, b"1mred\r\n")  # the sequence cut by the end of the file ends: played, not drawn
    assert peeker.peek(s).lines[2:4] == ["cutred", ""]


def test_peek_of_a_huge_transcript_reads_its_end_only(tmp_path: Path) -> None:
    """Holds: 100 MB (sparse: NULs) then a screen: the first look plays the last BACKLOG bytes, in well under a
    second, and the screen is the last one."""
    peeker, s, out = peeker_on(tmp_path)
    with open(out, "r+b") as f:
        f.truncate(100 << 20)
        f.seek(0, 2)
        f.write(b"\x1b[2J\x1b[Hthe end\r\n")
    started = time.monotonic()
    assert peeker.peek(s).lines[0] == "the end"
    assert time.monotonic() - started < 5
    assert BACKLOG < 1 << 20


# ------------------------------------------------------------------------------------------------ steer


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a\x03b", "\\x03 at character 2"),
        ("x\x1b[201~rm -rf ~", "\\x1b at character 2"),
        ("\x04", "\\x04"),
        ("quit\x1c", "\\x1c"),
        ("del\x7f", "\\x7f"),
        ("c1\x9b2J", "\\x9b"),
    ],
)
def test_a_steer_holding_keys_is_refused_in_one_line(text: str, shown: str) -> None:
    """A steer into a terminal session is a line of text: Ctrl-C (SIGINT to the agent), Ctrl-\\ (SIGQUIT), Ctrl-D,
    ESC (a bracketed paste's end marker: what follows would be typed as keys, not pasted) were typed as keys."""
    with pytest.raises(BadInput) as caught:
        typed((text + "\n").encode())
    assert shown in caught.value.message and "\n" not in caught.value.message
    assert typed("tab\there, ünïcode 中\n".encode()) == "tab\there, ünïcode 中\r".encode()


# An agent on a raw terminal that draws what a terminal would obey, then records every byte it reads (an answer to
# one of its queries would be there) until it reads QUIT.
RAW = r"""
import os, select, sys, time, tty
tty.setraw(0)
log = open(sys.argv[1], "wb", buffering=0)
os.write(1, b"\x1b]52;c;aGVsbG8=\x07\x1b[c\x1b[6n\x1b[18t\x1b[>c\x1b[?6n\x1b]0;pwned\x07\x1b[?1049h\x1b[?2004hREADY\r\n")
while True:
    if select.select([0], [], [], 0.2)[0]:
        got = os.read(0, 65536)
        log.write(got)
        if b"QUIT" in got:
            sys.exit(0)
"""


@needs_dtach
def test_a_hostile_agent_gets_no_answers_and_a_steer_types_text_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    typed_in = tmp_path / "typed"
    typed_in.write_bytes(b"")
    h = Headless(data)
    try:
        key = call(h.dd.socket, "spawn", label="raw", argv=[PY, "-c", RAW, str(typed_in)], tty=True)["result"]["key"]
        wait_until(lambda: "READY" in screen(h, key), 10, "READY on its screen")
        for text in ("a\x03b", "x\x1b[201~y", "q\x1c"):
            r = call(h.dd.socket, "send", ref=key, text=text)
            assert not r["ok"] and r["error"]["kind"] == "bad_input", r
        assert call(h.dd.socket, "send", ref=key, text="hello")["ok"]
        wait_until(lambda: typed_in.read_bytes() == b"hello\r", 10, "the plain steer typed")
        assert session(h, key)["state"] == "running"
        assert call(h.dd.socket, "send", ref=key, text="QUIT")["ok"]
        wait_until(lambda: session(h, key)["state"] == "done", 10, "done")
        assert typed_in.read_bytes() == b"hello\rQUIT\r"  # nothing answered its queries, nothing refused was typed
    finally:
        h.stop()
        kill_leftover_sessions(data)


# ------------------------------------------------------------------------------------------------ its dtach


def chain_of(sd: Path) -> list[int]:
    """Pids of what runs under the session's dtach (the recorder, script, the agent): their command lines name
    the session dir."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.name.isdigit() and str(sd).encode() in cmdline and not cmdline.startswith(b"dtach\0"):
            found.append(int(proc.name))
    return found


@needs_dtach
def test_a_dtach_killed_by_hand_leaves_nothing_running(tmp_path: Path) -> None:
    """Its dtach killed -9: the session failed, and the recorder, script and the agent ran on (left to init,
    unwatched, the agent still writing the transcript) until the agent ended of itself."""
    data = tmp_path / "data"
    h = Headless(data)
    try:
        marker = str(data / "sessions")  # in the agent's argv, so it is found as part of the chain
        argv = ["sh", "-c", f"echo up; sleep 300; : {marker}"]
        key = call(h.dd.socket, "spawn", label="cut", argv=argv, tty=True)["result"]["key"]
        wait_until(lambda: "up" in screen(h, key), 10, "up")
        chain = chain_of(Path(marker))
        assert len(chain) >= 3, chain  # the recorder, script, the agent's sh (and the shim)
        os.kill(session(h, key)["agent_pid"], signal.SIGKILL)  # the agent the shim watches is dtach
        wait_until(lambda: session(h, key)["state"] == "failed", 15, "failed")
        wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in set(chain)), 10, "the chain gone")
    finally:
        h.stop()
        kill_leftover_sessions(data)


@needs_dtach
def test_a_data_dir_too_deep_for_a_socket_path_still_attaches_steers_and_peeks(tmp_path: Path) -> None:
    """Holds: the socket's path is 190 bytes (AF_UNIX takes 107): dtach binds it relative to the session dir, the
    runtime types through /proc/self/fd, `crewtui attach` runs dtach in the session dir."""
    data = tmp_path / ("d" * 60) / ("e" * 60) / "data"
    h = Headless(data)
    try:
        key = call(h.dd.socket, "spawn", label="deep", argv=["sh", "-c", "read x; echo got $x; read y"], tty=True)
        key = key["result"]["key"]
        assert len(str(data / "sessions" / key / "tty.sock")) > 107
        wait_until(lambda: (data / "sessions" / key / "tty.sock").exists(), 10, "its socket")
        assert call(h.dd.socket, "send", ref=key, text="typed")["ok"]
        wait_until(lambda: "got typed" in screen(h, key), 10, "the steer on its screen")
        a = Attached(data, "deep")
        a.read_until(DTACH_IN)
        a.type(b"bye\r")
        assert a.exit_code() == 0  # it ended: dtach lets go
        wait_until(lambda: session(h, key)["state"] == "done", 10, "done")
    finally:
        h.stop()
        kill_leftover_sessions(data)


# ------------------------------------------------------------------------------------------------ the dashboard


async def test_a_failed_attach_is_said_not_taken_for_a_detach(monkeypatch: pytest.MonkeyPatch) -> None:
    """dtach exits 1 when it cannot reach the terminal (its socket left behind by a dtach killed by hand, the
    session ending that moment): it said why on the lent terminal, which the dashboard took back at once, and the
    dashboard said "detached from LABEL"."""
    app = fake_app(terminals=True)
    notes = recording(app)
    lend_terminal(app, monkeypatch, check=False)
    monkeypatch.setattr(attaching, "attach", lambda s: 1)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await select(app, pilot, CHECKOUT)
        await pilot.press("enter")
        await wait_for(lambda: bool(notes), what="the line")
    assert notes == [f"attaching to {CHECKOUT} failed (dtach exited 1): its terminal did not answer"]


def test_attach_takes_an_argv_never_a_shell_string(tmp_path: Path) -> None:
    """Holds: labels are checked on spawn (`a-z 0-9 . _ -`), and the attach is an argv run in the session's dir."""
    s = Session(key="k", label="x", state=SessionState.RUNNING, created_at=0, updated_at=0, tty=True)
    s.output_dir = str(tmp_path)
    (tmp_path / "tty.sock").touch()
    if shutil.which("dtach") is None:
        pytest.skip("dtach is missing")
    argv, where = attaching.attach_command(s)
    assert argv[1:] == ["-a", "tty.sock", "-e", "^\\", "-r", "winch", "-z"] and where == tmp_path


def test_a_peek_never_blocks_on_what_the_session_dir_names_as_its_terminal(tmp_path: Path) -> None:
    """The session dir's `pts` (where the recorder wrote its terminal's path) naming a FIFO: opening it blocked the
    peek's thread for good, and with it every peek after it."""
    peeker, s, out = peeker_on(tmp_path, live=True)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (out.parent / "pts").write_text(f"{fifo}\n")
    write(out, b"still drawn\r\n")
    done: list[list[str]] = []
    t = threading.Thread(target=lambda: done.append(peeker.peek(s).lines), daemon=True)
    t.start()
    t.join(5)
    if not done:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let the stuck thread go
    assert done and done[0][0] == "still drawn"


def test_a_terminal_sized_65535_by_65535_is_peeked_at_a_bounded_size(tmp_path: Path) -> None:
    """Any process of the user can size the session's terminal (TIOCSWINSZ on its pts): at 65535x65535 the emulator's
    screen had 4e9 cells, and a look never ended (holding every other peek behind it)."""
    peeker, s, out = peeker_on(tmp_path, live=True)
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 65535, 65535, 0, 0))
        (out.parent / "pts").write_text(os.ttyname(slave) + "\n")
        write(out, b"huge\r\n")
        done: list[tuple[int, int, str]] = []

        def look() -> None:
            screen = peeker.peek(s)
            done.append((screen.rows, screen.cols, screen.lines[0]))

        t = threading.Thread(target=look, daemon=True)
        t.start()
        t.join(10)
        assert done == [(200, 600, "huge")]
    finally:
        os.close(master)
        os.close(slave)


def test_a_look_is_bounded_in_time_whatever_the_agent_drew(tmp_path: Path) -> None:
    """A few bytes can cost the emulator much: 60,000 `ESC [ 2 J` (240 kB) erase a full screen each, 16 s of one
    look at 40x120 (7 minutes at 200x600), the runtime's peeks all waiting behind it. Each look plays for a while
    at most; the next ones play the rest."""
    peeker, s, out = peeker_on(tmp_path, live=True)
    write(out, b"x" * 4800 + b"\x1b[2J" * 20_000 + b"\x1b[Hdone\r\n")  # 5 s of work
    looks = []
    for _ in range(400):
        looks.append(peeker.peek(s).lines[0])
        if looks[-1] == "done":
            break
    # Not one look that played it all (that look held every other peek for seconds), and the rest came after.
    assert looks[-1] == "done" and len(looks) > 1, looks


def test_decaln_is_not_played(tmp_path: Path) -> None:
    """`ESC # 8` fills the screen with E: 5 ms of the emulator's work at 40x120 (0.1 s at 200x600) for 3 bytes, so
    3,000 of them held one look for 14 s. Cut, like the strings the emulator does not know."""
    peeker, s, out = peeker_on(tmp_path, live=True)
    write(out, b"\x1b#8" * 3000 + b"ok\r\n")
    assert peeker.peek(s).lines[:2] == ["ok", ""]  # played, the second line would be all E


@needs_dtach
def test_attaching_to_a_session_from_inside_itself_is_refused(tmp_path: Path) -> None:
    """A shell session running `crewtui attach` on its own label: dtach's client printed the session's output into
    the session, which printed it again, a loop that grew its transcript by 100 kB a second until someone killed it."""
    data = tmp_path / "data"
    h = Headless(data)
    try:
        key = call(h.dd.socket, "spawn", label="self", argv=["sh", "-i"], tty=True)["result"]["key"]
        wait_until(lambda: screen(h, key)[0].strip() in ("#", "$"), 10, "its prompt")
        line = f"{PY} -m crewtui attach self --data-dir {data}"
        assert call(h.dd.socket, "send", ref=key, text=line)["ok"]
        refused = "crewtui: this runs inside self: attaching to it from here would feed its screen back into it"
        wait_until(lambda: refused in screen(h, key), 20, "the refusal on its screen")
        time.sleep(1)
        assert (data / "sessions" / key / "stdout.log").stat().st_size < 4096
        assert session(h, key)["state"] == "running"
    finally:
        h.stop()
        kill_leftover_sessions(data)


def test_a_peek_never_blocks_on_a_fifo_in_place_of_the_transcript(tmp_path: Path) -> None:
    """The agent (same user) replaces its session dir's stdout.log with a FIFO: opening it blocked the peek's thread
    for good, and every peek behind it."""
    peeker, s, out = peeker_on(tmp_path, live=True)
    out.unlink()
    os.mkfifo(out)
    done: list[list[str]] = []
    t = threading.Thread(target=lambda: done.append(peeker.peek(s).lines), daemon=True)
    t.start()
    t.join(5)
    if not done:
        os.close(os.open(out, os.O_WRONLY | os.O_NONBLOCK))  # let the stuck thread go
    assert done == [[""] * 40]
