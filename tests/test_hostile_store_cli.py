"""A careless user and a hostile environment against the store file and the `crewtui` / `crewtui ctl` command line.

Each case is one clear line (or the documented answer), never a traceback, a hang or a changed store.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crewtui.control.protocol import LIST_PAGE
from crewtui.store.schema import check_in_background
from tests.faults.helpers import ENV, PY, Headless, ctl, fill_history

pytestmark = pytest.mark.timeout(120)


def one_line(p: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def run_headless(data_dir: Path) -> subprocess.CompletedProcess[str]:
    # Bounded: a store path that blocks its reader used to hang the start forever.
    return subprocess.run(
        [PY, "-m", "crewtui", "run", "--headless", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
        stdin=subprocess.DEVNULL,
    )


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _devnull(path: Path) -> None:
    path.symlink_to("/dev/null")


def _socket(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()


@pytest.mark.parametrize("make", [_fifo, _devnull, _socket], ids=["fifo", "symlink-to-dev-null", "socket"])
def test_a_store_path_that_is_no_regular_file_is_refused_in_one_line_and_never_waited_on(tmp_path: Path, make) -> None:
    """A FIFO at DATA_DIR/crewtui.db blocked the start forever (the header check opened it for reading)."""
    d = tmp_path / "data"
    d.mkdir(mode=0o700)
    make(d / "crewtui.db")
    one_line(run_headless(d), 2, str(d / "crewtui.db"), "not a regular file")
    assert not (d / "control.sock").exists()
    assert not (d / "crewtui.db-wal").exists()


def _sqlite_with_pages(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("create table t(x text)")
        db.executemany("insert into t values (?)", [("x" * 500,) for _ in range(2000)])
    db.close()


@pytest.mark.parametrize("name", ["a%20b", "a?b", "a#b", "50%"])
def test_the_background_check_reads_the_store_itself_whatever_its_data_dirs_name(tmp_path: Path, name: str) -> None:
    """The check of a big store opened `file:PATH?mode=ro` unquoted: under a data dir named `a%20b` a sound store
    was said damaged, under `a?b` or `a#b` another path was checked and damage went unseen."""
    d = tmp_path / name
    d.mkdir()
    db = d / "crewtui.db"
    _sqlite_with_pages(db)
    assert check_in_background(db) is None
    data = bytearray(db.read_bytes())
    pages = len(data) // 4096
    for page in range(pages // 2, pages // 2 + 3):
        data[page * 4096 : (page + 1) * 4096] = b"\xa5" * 4096
    db.write_bytes(bytes(data))
    before = db.read_bytes()
    said = check_in_background(db)
    assert said is not None and "is damaged" in said and str(db) in said, said
    assert db.read_bytes() == before


# Ctrl-C in the ~0.3 s the command takes to load: a finder that raises KeyboardInterrupt at the first import of
# click stands for the signal landing there (deterministically).
_CTRL_C_WHILE_LOADING = """
import runpy, sys
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "click":
            raise KeyboardInterrupt
        return None
sys.meta_path.insert(0, CtrlC())
sys.argv = ["crewtui", "ctl", "list"]
runpy.run_module("crewtui", run_name="__main__", alter_sys=True)
"""


def test_ctrl_c_while_the_command_still_loads_is_one_line_and_exit_130() -> None:
    p = subprocess.run([PY, "-c", _CTRL_C_WHILE_LOADING], capture_output=True, text=True, timeout=30, env=ENV)
    assert one_line(p, 130) == "crewtui: interrupted"
    assert p.stdout == ""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Headless]:
    rt = Headless(tmp_path / "data")
    try:
        yield rt
    finally:
        for s in json.loads(ctl(rt.data_dir, "list", "--json", "--all").stdout or "[]"):
            if s["state"] in ("running", "yielded", "pending", "waiting"):
                ctl(rt.data_dir, "kill", s["key"], "--yes")
        rt.stop()


def test_ctrl_c_during_a_long_ctl_call_is_one_line_exit_130_and_leaves_the_session(served: Headless) -> None:
    d = served.data_dir
    assert ctl(d, "spawn", "--label", "parent", "--", "sleep", "300").returncode == 0
    assert ctl(d, "spawn", "--label", "child", "--parent", "parent", "--", "sleep", "300").returncode == 0
    p = subprocess.Popen(
        [PY, "-m", "crewtui", "ctl", "--data-dir", str(d), "yield", "--parent", "parent", "child"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    time.sleep(2.0)  # loaded and waiting on the socket
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert (p.returncode, out, err) == (130, "", "crewtui: interrupted\n")
    child = json.loads(ctl(d, "info", "child").stdout)
    assert child["state"] == "running"


def test_list_paging_boundaries_and_hostile_arguments_over_a_real_runtime(served: Headless) -> None:
    d = served.data_dir
    for i in range(5):
        assert ctl(d, "spawn", "--label", f"pg-{i}", "--", PY, "-c", "print('\\x1b[2J\\u202eend')").returncode == 0
    keys = [s["key"] for s in json.loads(ctl(d, "list", "--json", "--all").stdout)]
    assert len(keys) == 5
    # exactly a page, the last page, an empty page
    page = json.loads(ctl(d, "list", "--json", "--limit", "5").stdout)
    assert [s["key"] for s in page] == keys
    older = json.loads(ctl(d, "list", "--json", "--limit", "2", "--before", keys[2]).stdout)
    assert [s["key"] for s in older] == keys[:2]
    assert json.loads(ctl(d, "list", "--json", "--before", keys[0]).stdout) == []
    # absurd but valid numbers answer; invalid ones are one line
    assert len(json.loads(ctl(d, "list", "--json", "--limit", str(10**20)).stdout)) == 5
    assert len(json.loads(ctl(d, "list", "--json", "--since", "99999999d").stdout)) == 5
    one_line(ctl(d, "list", "--since", "1e309s"), 2, "--since")
    one_line(ctl(d, "list", "--before", "pg"), 2, "no session with key or label 'pg'")  # a prefix names nothing
    one_line(ctl(d, "history", "pg-1", "--tail", "-1"), 2, "--tail")
    one_line(ctl(d, "history", "pg-1", "--tail", str(10**20)), 2, "--tail")
    one_line(ctl(d, "spawn", "--label", "ünï", "--", "true"), 2, "invalid label")
    # --json stays valid JSON whatever the agents printed, and carries no raw escape
    text = ctl(d, "list", "--json", "--all").stdout
    assert "\x1b" not in text and "\u202e" not in text
    assert len(json.loads(text)) == 5
    # a reader gone early: no traceback
    p = subprocess.run(
        f"{PY} -m crewtui ctl --data-dir {d} list --all | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert "Traceback" not in p.stderr and p.stdout.startswith("KEY"), p.stderr


def test_ctl_with_an_unusable_data_dir_says_so_in_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    p = subprocess.run(
        [PY, "-m", "crewtui", "ctl", "--data-dir", str(tmp_path / "nowhere"), "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    one_line(p, 2, "no crewtui runtime is listening", str(tmp_path / "nowhere"))
    assert not (tmp_path / "nowhere").exists()
    p = subprocess.run(
        [sys.executable, "-m", "crewtui", "ctl", "--data-dir", str(afile), "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert p.returncode == 2 and "is a file" in p.stderr and "Traceback" not in p.stderr


def test_a_history_of_exactly_one_page_lists_whole_and_a_limit_past_any_count_is_all_of_it(tmp_path: Path) -> None:
    """With history in the store (a restart on a long history), `list --limit 10**20` said
    `list: bad arguments (Python int too large to convert to SQLite INTEGER)`; on a fresh runtime it answered."""
    d = tmp_path / "data"
    fill_history(d, LIST_PAGE)
    rt = Headless(d)
    try:
        every = json.loads(ctl(d, "list", "--json", "--all").stdout)
        keys = [s["key"] for s in every]
        assert len(set(keys)) == LIST_PAGE and keys == sorted(keys)
        for limit in (str(10**20), str((1 << 63) - 1)):
            p = ctl(d, "list", "--json", "--limit", limit)
            assert p.returncode == 0, p.stderr
            assert [s["key"] for s in json.loads(p.stdout)] == keys
        assert json.loads(ctl(d, "list", "--json", "--before", keys[0]).stdout) == []
        last = json.loads(ctl(d, "list", "--json", "--limit", "7", "--before", keys[7]).stdout)
        assert [s["key"] for s in last] == keys[:7]
        p = ctl(d, "list", "--limit", str(LIST_PAGE))
        assert p.stdout.count("\n") == LIST_PAGE + 1 and f"--before {keys[0]}" in p.stderr
    finally:
        rt.stop()


def test_an_empty_data_dir_or_socket_is_refused_not_taken_for_the_default_one(served: Headless) -> None:
    """`crewtui ctl --data-dir "$DIR" kill … --yes` with DIR unset acted on the default data dir's runtime."""
    d = served.data_dir
    assert ctl(d, "spawn", "--label", "elsewhere", "--", "sleep", "300").returncode == 0
    env = {**ENV, "CREWTUI_DATA_DIR": str(d)}  # the default data dir is the served one
    for args in (
        ["ctl", "--data-dir", "", "kill", "elsewhere", "--yes"],
        ["ctl", "--socket", "", "kill", "elsewhere", "--yes"],
        ["--data-dir", "", "ctl", "kill", "elsewhere", "--yes"],
        ["run", "--headless", "--data-dir", ""],
    ):
        p = subprocess.run([PY, "-m", "crewtui", *args], capture_output=True, text=True, timeout=60, env=env)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "an empty path" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert json.loads(ctl(d, "info", "elsewhere").stdout)["state"] == "running"
