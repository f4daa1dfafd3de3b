"""Quieter warts a careless user meets: where a session runs, schedules and limits that make no sense, a yield
that could never end, and an exit status told as a signal."""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from crewtui.errors import BadInput
from crewtui.locations import DataDir
from crewtui.model import SpawnRequest
from tests.conftest import PY, SLEEPER, crew_from, wait_for
from tests.faults.helpers import ENV, Headless, call, wait_until
from tests.test_ctl import assert_one_line_error, crewtui


def ctl(d: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "crewtui", "ctl", "--data-dir", str(d), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
        cwd=cwd,
    )


def one_line(p: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert p.returncode == 2 and "Traceback" not in p.stderr, (p.returncode, p.stderr)
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    for needle in needles:
        assert needle in p.stderr, (needle, p.stderr)


def test_a_session_runs_in_the_directory_ctl_was_called_from_and_says_so(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "app.py").write_text("")
    agents = tmp_path / "crew"
    (agents / "work").mkdir(parents=True)
    crew = agents / "crew.toml"
    crew.write_text(
        textwrap.dedent(
            f"""
        [agents.here]
        command = [{json.dumps(PY)}, "-c", "import os; print(os.getcwd())"]
        cwd = "work"
        """
        )
    )
    d = tmp_path / "data"
    h = Headless(d, crew)
    try:
        # The README's example: a raw argv that names paths relative to where the user stands.
        p = ctl(d, "spawn", "--label", "lint", "--json", "--", "ls", "src", cwd=project)
        assert p.returncode == 0, p.stderr
        s = json.loads(p.stdout)
        assert s["cwd"] == str(project)
        wait_until(lambda: call(d / "control.sock", "get", ref="lint")["result"]["state"] == "done", 20, "lint")
        assert (d / "sessions" / s["key"] / "stdout.log").read_text() == "app.py\n"
        # An agent with a `cwd` key runs there (relative to its crew file), wherever ctl was called.
        p = ctl(d, "spawn", "--label", "here", "--agent", "here", "--json", cwd=project)
        assert p.returncode == 0, p.stderr
        here = json.loads(p.stdout)
        assert here["cwd"] == str(agents / "work")
        wait_until(lambda: call(d / "control.sock", "get", ref="here")["result"]["state"] == "done", 20, "here")
        assert (d / "sessions" / here["key"] / "stdout.log").read_text() == f"{agents / 'work'}\n"
        listed = {x["label"]: x["cwd"] for x in json.loads(ctl(d, "list", "--json").stdout)}
        assert listed == {"lint": str(project), "here": str(agents / "work")}
        # A directory that is not there is one line, and nothing is spawned.
        one_line(
            ctl(d, "spawn", "--label", "nowhere", "--cwd", str(tmp_path / "gone"), "--", "true"), "not a directory"
        )
        assert "nowhere" not in {x["label"] for x in json.loads(ctl(d, "list", "--json").stdout)}
    finally:
        h.stop()


def test_a_cron_that_can_never_fire_is_warned_at_load_and_refused_by_cron_add(tmp_path: Path) -> None:
    crew = tmp_path / "crew.toml"
    crew.write_text('[[cron]]\nname = "feb30"\nschedule = { kind = "cron", expr = "0 0 30 2 *" }\ntext = "never"\n')
    d = tmp_path / "data"
    h = Headless(d, crew)
    try:
        texts = [e["text"] for e in call(d / "control.sock", "events")["result"] if e["kind"] == "system"]
        assert any("feb30" in t and "never fires" in t for t in texts), texts
        one_line(ctl(d, "cron", "add", "feb31", "--cron", "0 0 31 2 *", "--system", "x"), "never fires")
        assert [j["name"] for j in call(d / "control.sock", "cron_list")["result"]] == ["feb30"]
    finally:
        err = h.stop()
    assert "warning" in err and "feb30" in err and "never fires" in err, err


def test_schedules_and_retry_budgets_out_of_range_are_refused(tmp_path: Path) -> None:
    fast = tmp_path / "fast.toml"
    fast.write_text('[[cron]]\nname = "fast"\nschedule = { kind = "every", every = "1ms" }\ntext = "x"\n')
    p = subprocess.run(
        [PY, "-m", "crewtui", "run", str(fast), "--headless", "--data-dir", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    one_line(p, "cron[0].schedule.every", "at least 1s")
    d = tmp_path / "data"
    h = Headless(d)
    try:
        one_line(ctl(d, "spawn", "--label", "greedy", "--max-attempts", "1000000", "--", "true"), "max_attempts", "100")
        one_line(ctl(d, "cron", "add", "fast", "--every", "1ms", "--system", "x"), "at least 1s")
        assert call(d / "control.sock", "list")["result"] == []
    finally:
        h.stop()


async def test_two_sessions_yielding_on_each_other_are_refused(make_orch) -> None:
    orch = await make_orch()
    a = await orch.spawn(SpawnRequest(label="wait-a", argv=[PY, "-c", SLEEPER]))
    b = await orch.spawn(SpawnRequest(label="wait-b", argv=[PY, "-c", SLEEPER]))
    c = await orch.spawn(SpawnRequest(label="wait-c", argv=[PY, "-c", SLEEPER]))
    await orch.yield_(children=[b.key], parent=a.key, wait=False)  # a waits on b
    await orch.yield_(children=[c.key], parent=b.key, wait=False)  # b waits on c
    with pytest.raises(BadInput, match="wait forever"):
        await orch.yield_(children=[a.key], parent=c.key, wait=False)  # c on a: a loop
    assert orch.sessions[c.key].state.value == "running"
    await orch.kill(prefix="wait-")


async def test_an_exit_status_over_128_is_not_told_as_a_signal(make_orch) -> None:
    orch = await make_orch()
    s = await orch.spawn(SpawnRequest(label="ctrl-c", argv=[PY, "-c", "import sys; sys.exit(130)"]))
    await wait_for(lambda: orch.sessions[s.key].state.terminal, what="the end")
    end = orch.sessions[s.key]
    assert end.exit_code == 130 and end.reason is not None
    assert end.reason.startswith("exit code 130") and "(signal 2)" not in end.reason
    assert "or killed by SIGINT" in end.reason


async def test_an_exit_status_no_signal_can_give_is_only_the_agents_own(make_orch) -> None:
    """`exit 255` was told as "exit code 255 (or killed by signal 127)": Linux has 64 signals."""
    orch = await make_orch()
    s = await orch.spawn(SpawnRequest(label="minus-one", argv=[PY, "-c", "import sys; sys.exit(255)"]))
    await wait_for(lambda: orch.sessions[s.key].state.terminal, what="the end")
    end = orch.sessions[s.key]
    assert end.exit_code == 255 and end.reason == "exit code 255", end.reason


async def test_a_crew_agent_without_a_cwd_runs_where_the_runtime_was_started(
    make_orch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    crew = crew_from(f'[agents.pwd]\ncommand = [{json.dumps(PY)}, "-c", "import os; print(os.getcwd())"]\n')
    orch = await make_orch(crew)
    s = await orch.spawn(SpawnRequest(label="pwd", agent="pwd"))
    end = await orch.wait_ended(s.key, timeout=10)
    assert end.cwd == str(tmp_path) and (await orch.history(s.key)).lines == [str(tmp_path)]


# ---------------------------------------------------------------------------------- clear errors, not tracebacks


def test_data_dirs_a_socket_cannot_reach_are_one_line_not_a_traceback(tmp_path):
    deep = tmp_path / ("x" * 60) / ("y" * 60)  # control.sock would be over the 108-byte limit of a Unix socket
    deep.mkdir(parents=True)
    assert_one_line_error(ctl(deep, "list"), "no crewtui runtime is listening", str(deep))
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert_one_line_error(ctl(loop, "list"), "symbolic link loop")
    assert_one_line_error(crewtui("run", "--headless", "--data-dir", str(loop)), "symbolic link loop")


def test_two_runtimes_racing_for_a_new_data_dir_the_loser_names_the_winner(tmp_path):
    for attempt in range(5):  # the race is a matter of milliseconds: each round starts both at once
        d = tmp_path / f"race-{attempt}"
        args = [PY, "-m", "crewtui", "run", "--headless", "--data-dir", str(d)]
        procs = [subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)]
        deadline = time.time() + 30
        while all(p.poll() is None for p in procs) and time.time() < deadline:
            time.sleep(0.05)
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        err = loser.stderr.read()
        winner.send_signal(signal.SIGTERM)
        winner.communicate(timeout=20)
        assert loser.returncode == 2 and "Traceback" not in err, err
        assert "already served" in err and f"pid {winner.pid}" in err, err


def test_the_writability_probe_never_collides_with_another_runtimes(tmp_path):
    # What the race above comes down to: another starting runtime's probe file at the same moment. A fixed probe
    # name collides (its unlink finds the file gone: "not writable: No such file or directory").
    d = tmp_path / "data"
    d.mkdir()
    (d / ".write-probe").mkdir()  # a probe of a fixed name can never be written now
    DataDir(d).ensure()
