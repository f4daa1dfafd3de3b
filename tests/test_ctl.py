"""`crewtui run --headless` plus `crewtui ctl`, as real processes talking over the real control socket."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crewtui.locations import DataDir
from tests.conftest import ECHO_AGENT, PY, SLEEPER, pid_alive

ENV = {k: v for k, v in os.environ.items() if not k.startswith("CREWTUI_")}


def ctl(
    data_dir: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "crewtui", "ctl", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        input=input,
        env=env or ENV,
    )


def crewtui(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "crewtui", *args], capture_output=True, text=True, timeout=60, env=ENV)


def assert_one_line_error(p: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


class Runtime:
    def __init__(self, data_dir: Path, crew: Path | None = None) -> None:
        self.data_dir = data_dir
        args = [PY, "-m", "crewtui", "run", "--headless", "--data-dir", str(data_dir)]
        if crew:
            args.insert(4, str(crew))
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=ENV)
        deadline = time.time() + 20
        while not DataDir(data_dir).socket.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited: {self.proc.stderr.read()}")
            if time.time() > deadline:
                raise AssertionError("runtime did not start")
            time.sleep(0.05)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=20)
        return err


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(tmp_path / "data")
    yield rt
    ctl(rt.data_dir, "kill", "--prefix", "", "--yes")  # refused (empty prefix) but harmless
    for s in json.loads(ctl(rt.data_dir, "list", "--json").stdout or "[]"):
        if s["state"] in ("running", "yielded", "pending"):
            ctl(rt.data_dir, "kill", s["key"], "--yes")
    rt.stop()


def test_no_runtime_is_one_line_and_exit_2(tmp_path):
    p = ctl(tmp_path / "nothing-here", "list")
    assert_one_line_error(
        p, "no crewtui runtime is listening", str(tmp_path / "nothing-here"), "crewtui run --headless"
    )


def test_every_verb_over_the_socket(runtime):
    d = runtime.data_dir
    p = ctl(
        d,
        "spawn",
        "--label",
        "blog-publisher-superada",
        "--domain",
        "article:superada",
        "--json",
        "--",
        PY,
        "-c",
        ECHO_AGENT,
    )
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["state"] == "running" and s["label"] == "blog-publisher-superada"
    assert (os.stat(DataDir(d).socket).st_mode & 0o777) == 0o600

    assert ctl(d, "send", "blog-publisher-superada", "hello crew").returncode == 0
    deadline = time.time() + 10
    while "steered: hello crew" not in ctl(d, "history", s["key"]).stdout:
        assert time.time() < deadline
        time.sleep(0.1)

    listed = json.loads(ctl(d, "list", "--json", "--prefix", "blog-").stdout)
    assert [x["key"] for x in listed] == [s["key"]]
    assert "blog-publisher-superada" in ctl(d, "list").stdout

    kid = json.loads(
        ctl(
            d,
            "spawn",
            "--label",
            "kid",
            "--parent",
            s["key"],
            "--json",
            "--",
            PY,
            "-c",
            "import json; print(json.dumps({'ok': 1}))",
        ).stdout
    )
    y = ctl(d, "yield", "--parent", s["key"], "--children", kid["key"])
    assert y.returncode == 0, y.stderr
    assert json.loads(y.stdout)["children"][0]["result"] == {"ok": 1}

    k = ctl(d, "kill", "blog-publisher-superada", "--json")
    assert k.returncode == 0, k.stderr
    assert json.loads(k.stdout)[0]["state"] == "killed"
    assert json.loads(ctl(d, "info").stdout)["data_dir"] == str(d)


def test_watch_streams_events(runtime):
    d = runtime.data_dir
    w = subprocess.Popen(
        [PY, "-m", "crewtui", "ctl", "--data-dir", str(d), "watch", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert w.stderr.readline() == "watching (Ctrl-C to stop)\n"  # subscribed: no event from here is missed
        ctl(d, "spawn", "--label", "watched", "--", PY, "-c", "print('hi')")
        kinds = []
        deadline = time.time() + 15
        while "session_state_changed" not in kinds or len([k for k in kinds if k == "session_state_changed"]) < 2:
            assert time.time() < deadline, kinds
            ev = json.loads(w.stdout.readline())
            kinds.append(ev["kind"])
        assert kinds[0] == "session_spawned"
    finally:
        w.terminate()
        w.wait(timeout=10)


def test_bad_inputs_are_one_line_exit_2_and_change_nothing(runtime):
    d = runtime.data_dir
    live = json.loads(
        ctl(d, "spawn", "--label", "holder", "--domain", "repo:blog", "--json", "--", PY, "-c", ECHO_AGENT).stdout
    )
    ended = json.loads(ctl(d, "spawn", "--label", "ended", "--json", "--", PY, "-c", "pass").stdout)
    deadline = time.time() + 10
    while json.loads(ctl(d, "list", "--json", "--prefix", "ended").stdout)[0]["state"] != "done":
        assert time.time() < deadline
        time.sleep(0.1)
    before = sqlite3.connect(DataDir(d).store).execute("select key, data from sessions order by key").fetchall()

    assert_one_line_error(ctl(d, "send", "nobody", "hi"), "no session with key or label 'nobody'")
    assert_one_line_error(ctl(d, "kill", "s-00000000000000000000000000"), "no session")
    assert_one_line_error(ctl(d, "history", "nobody"), "nobody")
    assert_one_line_error(ctl(d, "spawn", "--label", "Bad Label", "--", PY, "-c", "pass"), "invalid label 'Bad Label'")
    assert_one_line_error(ctl(d, "spawn", "--label", "holder", "--", PY, "-c", "pass"), "label 'holder'", live["key"])
    assert_one_line_error(
        ctl(d, "spawn", "--label", "other", "--domain", "repo:blog", "--", PY, "-c", "pass"),
        "repo:blog",
        live["key"],
        "holder",
    )
    assert_one_line_error(ctl(d, "send", ended["key"], "hi"), "has ended")
    assert_one_line_error(ctl(d, "send", "holder", "x" * (64 * 1024 + 10)), "64 KiB")
    assert_one_line_error(ctl(d, "spawn", "--label", "noargv"), "nothing to run")
    assert_one_line_error(ctl(d, "spawn", "--label", "missing", "--", "no-such-program-xyz"), "no-such-program-xyz")
    assert_one_line_error(ctl(d, "spawn", "--label", "x", "--watchdog", "soon", "--", PY), "--watchdog")
    assert_one_line_error(ctl(d, "list", "--state", "sleeping"), "unknown state 'sleeping'")
    assert_one_line_error(ctl(d, "kill", "--prefix", "hold"), "--yes")  # not a terminal: confirmation needed

    after = sqlite3.connect(DataDir(d).store).execute("select key, data from sessions order by key").fetchall()
    assert after == before


def test_crew_file_errors_stop_the_runtime_before_it_starts(tmp_path):
    bad = tmp_path / "crew.toml"
    bad.write_text("[crew]\nname = 'x'\nmax_concurent = 5\n")
    assert_one_line_error(
        crewtui("run", str(bad), "--headless", "--data-dir", str(tmp_path / "d")),
        "crew.toml",
        "crew.max_concurent",
        "unknown key",
    )
    assert not (tmp_path / "d").exists()
    bad.write_text("[crew\n")
    assert_one_line_error(crewtui("run", str(bad), "--headless", "--data-dir", str(tmp_path / "d")), "not valid TOML")
    bad.write_text("[crew]\nmax_concurrent = 'many'\n")
    assert_one_line_error(
        crewtui("run", str(bad), "--headless", "--data-dir", str(tmp_path / "d")), "crew.max_concurrent"
    )
    bad.write_text("[[cron]]\nname='c'\nschedule={kind='every', every='1m'}\nspawn={agent='writr', label='x-{item}'}\n")
    assert_one_line_error(
        crewtui("run", str(bad), "--headless", "--data-dir", str(tmp_path / "d")), "unknown agent 'writr'"
    )


def test_unusable_data_dirs_and_stores_are_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert_one_line_error(crewtui("run", "--headless", "--data-dir", str(afile / "sub")), "not writable")
    notdb = tmp_path / "notdb"
    notdb.mkdir()
    (notdb / "crewtui.db").write_text("this is not sqlite, just text\n" * 100)
    before = (notdb / "crewtui.db").read_bytes()
    assert_one_line_error(crewtui("run", "--headless", "--data-dir", str(notdb)), "not a crewtui database")
    assert (notdb / "crewtui.db").read_bytes() == before
    newer = tmp_path / "newer"
    newer.mkdir()
    con = sqlite3.connect(newer / "crewtui.db")
    con.execute("pragma application_id = 1129469780")  # 0x43525754: crewtui's
    con.execute("create table sessions(key text)")
    con.execute("pragma user_version = 999")
    con.commit()
    con.close()
    assert_one_line_error(crewtui("run", "--headless", "--data-dir", str(newer)), "schema version 999")


def test_second_runtime_on_the_same_data_dir_is_refused_with_the_first_pid(runtime):
    p = crewtui("run", "--headless", "--data-dir", str(runtime.data_dir))
    assert_one_line_error(p, "already served", f"pid {runtime.proc.pid}")


def test_headless_stop_leaves_sessions_running_for_readoption(tmp_path):
    d = tmp_path / "data"
    rt = Runtime(d)
    s = json.loads(ctl(d, "spawn", "--label", "long-haul", "--json", "--", PY, "-c", SLEEPER).stdout)
    err = rt.stop()
    assert rt.proc.returncode == 0 and "sessions left running" in err
    assert pid_alive(s["agent_pid"])
    assert not DataDir(d).socket.exists()
    rt2 = Runtime(d)
    try:
        again = json.loads(ctl(d, "list", "--json").stdout)
        assert [(x["key"], x["state"]) for x in again] == [(s["key"], "running")]
        assert ctl(d, "kill", "long-haul").returncode == 0
        assert not pid_alive(s["agent_pid"])
    finally:
        rt2.stop()
