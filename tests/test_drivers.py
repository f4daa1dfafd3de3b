"""Session drivers against real processes: the shim, exit records, steering, process groups, termination,
re-adoption after a runtime restart (including pid reuse), argv safety and the shim's memory; and the
in-process CallableDriver."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from crewtui.errors import BadInput, Conflict, CrewError
from crewtui.locations import SessionDir
from crewtui.runtime import drivers
from crewtui.runtime.drivers import (
    AdoptSpec,
    CallableContext,
    CallableDriver,
    ExitInfo,
    LaunchInfo,
    LaunchSpec,
    ProcessDriver,
    ProcessHandle,
    pid_alive_with_start,
    proc_start_time,
)
from crewtui.runtime.drivers import process as process_driver
from crewtui.runtime.tail import find_result

PY = sys.executable


def spec(key: str, argv: list[str], out: Path, env: dict[str, str], cwd: Path | None = None) -> LaunchSpec:
    return LaunchSpec(key=key, label=key, attempt=1, dir=SessionDir(out), argv=argv, env=env, cwd=cwd)


def cspec(key: str, label: str, agent: str, out: Path) -> LaunchSpec:
    return LaunchSpec(key=key, label=label, attempt=1, dir=SessionDir(out), agent=agent)


def adopt_spec(key: str, out: Path, info: LaunchInfo | None) -> AdoptSpec:
    return AdoptSpec(key=key, attempt=1, dir=SessionDir(out), launch=info)


# Echoes every stdin line as "steered: X" and stops after the line "stop".
ECHO = (
    "import sys\n"
    "print('ready', flush=True)\n"
    "for line in sys.stdin:\n"
    "    line = line.rstrip('\\n')\n"
    "    print('steered: ' + line, flush=True)\n"
    "    if line == 'stop':\n"
    "        break\n"
)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return stat.rpartition(b") ")[2].decode().split()


def running(pid: int) -> bool:
    """Exists and is not a zombie (orphans are reaped by init whenever it gets round to it)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def live_group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry))
    return members


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Bounded polling for what a child prints: there is no event to await for a file's content."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def stdout_of(out: Path) -> str:
    try:
        return (out / "stdout.log").read_text()
    except FileNotFoundError:
        return ""


@pytest.fixture
async def driver() -> AsyncIterator[ProcessDriver]:
    drv = ProcessDriver()
    started: list[ProcessHandle] = []
    real_start, real_adopt = drv.start, drv.adopt_now

    async def start(*args, **kwargs):  # type: ignore[no-untyped-def]
        handle = await real_start(*args, **kwargs)
        started.append(handle)
        return handle

    def adopt(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = real_adopt(*args, **kwargs)
        if isinstance(result, ProcessHandle):
            started.append(result)
        return result

    drv.start, drv.adopt_now = start, adopt  # type: ignore[method-assign]
    yield drv
    for handle in started:
        if handle.alive():
            await handle.terminate(0)


# ------------------------------------------------------------------------------------------ ProcessDriver


async def test_runs_program_records_pids_and_exit_zero(driver: ProcessDriver, tmp_path: Path) -> None:
    out = tmp_path / "s1"
    prog = "import sys\nprint('one', flush=True)\nsys.stdin.readline()\nprint('two')\n"
    h = await driver.start(spec("s1", [PY, "-c", prog], out, {}))
    assert h.alive()
    await until(lambda: "one" in stdout_of(out))

    pid_json = json.loads((out / "pid.json").read_text())
    assert set(pid_json) == {"shim_pid", "agent_pid", "shim_start", "agent_start"}
    assert h.info == LaunchInfo(**pid_json)
    assert pid_json["shim_pid"] != pid_json["agent_pid"]
    assert proc_start_time(pid_json["shim_pid"]) == pid_json["shim_start"]
    assert proc_start_time(pid_json["agent_pid"]) == pid_json["agent_start"]
    assert Path(f"/proc/{pid_json['agent_pid']}/cmdline").read_bytes().split(b"\0")[0] == PY.encode()
    assert oct(out.stat().st_mode & 0o777) == oct(0o700)

    await h.send("go")
    ended = await h.wait()
    assert ended is not None and ended.code == 0 and ended.signal is None
    assert ended.ended_at is not None and abs(ended.ended_at - time.time()) < 10
    assert stdout_of(out).splitlines() == ["one", "two"]
    assert not h.alive()
    assert json.loads((out / "exit.json").read_text())["code"] == 0


async def test_exit_code_is_recorded(driver: ProcessDriver, tmp_path: Path) -> None:
    out = tmp_path / "s"
    h = await driver.start(spec("s", [PY, "-c", "import sys; print('bye', file=sys.stderr); sys.exit(3)"], out, {}))
    ended = await h.wait()
    assert ended == ExitInfo(code=3, signal=None, ended_at=ended.ended_at)
    assert "bye" in (out / "stderr.log").read_text()


async def test_steering_delivers_lines_in_order(driver: ProcessDriver, tmp_path: Path) -> None:
    out = tmp_path / "s"
    h = await driver.start(spec("s", [PY, "-c", ECHO], out, {}))
    await h.send("first message")
    await h.send("stop")
    ended = await h.wait()
    assert ended is not None and ended.code == 0
    assert stdout_of(out).splitlines() == ["ready", "steered: first message", "steered: stop"]
    with pytest.raises(Conflict):
        await h.send("too late")


async def test_send_refuses_oversized_line(driver: ProcessDriver, tmp_path: Path) -> None:
    h = await driver.start(spec("s", [PY, "-c", ECHO], tmp_path / "s", {}))
    with pytest.raises(BadInput):
        await h.send("x" * (64 * 1024 + 1))  # 64 KiB of text is the limit (issue "Hardening" item 17)
    await h.send("stop")
    assert (await h.wait()) is not None


async def test_agent_runs_in_its_own_session_not_as_our_child(driver: ProcessDriver, tmp_path: Path) -> None:
    out = tmp_path / "s"
    h = await driver.start(spec("s", [PY, "-c", ECHO], out, {}))
    assert h.info is not None
    shim, agent = h.info.shim_pid, h.info.agent_pid
    assert os.getsid(agent) != os.getsid(0)
    assert os.getpgid(agent) != os.getpgrp()
    assert os.getsid(agent) == os.getsid(shim) and os.getpgid(agent) == os.getpgid(shim)
    shim_ppid = int(_stat_fields(shim)[1])  # type: ignore[index]
    assert shim_ppid != os.getpid()
    # The agent gets the fifo, the logs and nothing else of ours.
    fds = {int(fd) for fd in os.listdir(f"/proc/{agent}/fd")}
    assert {0, 1, 2} <= fds
    assert os.readlink(f"/proc/{agent}/fd/0") == str(out / "stdin.fifo")
    await h.send("stop")
    await h.wait()


async def test_agent_gets_default_sigint(driver: ProcessDriver, tmp_path: Path) -> None:
    # A background job of sh would otherwise inherit SIGINT ignored, and Python would never raise
    # KeyboardInterrupt.
    out = tmp_path / "s"
    h = await driver.start(spec("s", [PY, "-c", "import signal; print(signal.getsignal(signal.SIGINT))"], out, {}))
    await h.wait()
    assert "default_int_handler" in stdout_of(out)


async def test_terminate_escalates_to_sigkill_and_kills_the_group(driver: ProcessDriver, tmp_path: Path) -> None:
    out = tmp_path / "s"
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    prog = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"child = subprocess.Popen([sys.executable, '-c', {stubborn!r}])\n"
        "print('grandchild', child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    h = await driver.start(spec("s", [PY, "-c", prog], out, {}))
    await until(lambda: "grandchild" in stdout_of(out))
    grandchild = int(stdout_of(out).split()[1])
    assert h.info is not None
    pgid = os.getpgid(h.info.shim_pid)
    assert os.getpgid(grandchild) == pgid
    # The grandchild needs a moment to install its SIGTERM handler.
    await asyncio.sleep(0.2)

    t0 = time.monotonic()
    await h.terminate(0.5)
    took = time.monotonic() - t0
    assert 0.45 <= took < 3
    assert not h.alive()
    assert await h.wait() is None  # the SIGKILLed shim could not write exit.json
    await until(lambda: not live_group_members(pgid))
    assert not running(grandchild) and not running(h.info.agent_pid)


async def test_terminate_cooperative_records_signal(driver: ProcessDriver, tmp_path: Path) -> None:
    out = tmp_path / "s"
    h = await driver.start(spec("s", [PY, "-c", ECHO], out, {}))
    await until(lambda: "ready" in stdout_of(out))
    t0 = time.monotonic()
    await h.terminate(5)
    assert time.monotonic() - t0 < 2
    ended = await h.wait()
    assert ended is not None and ended.code == 143 and ended.signal == 15
    assert json.loads((out / "exit.json").read_text())["signal"] == 15


async def test_shim_survives_sighup_to_the_group_and_records_it(driver: ProcessDriver, tmp_path: Path) -> None:
    out = tmp_path / "s"
    h = await driver.start(spec("s", ["sleep", "30"], out, {}))
    assert h.info is not None
    os.killpg(os.getpgid(h.info.shim_pid), signal.SIGHUP)
    ended = await asyncio.wait_for(h.wait(), 5)
    assert ended is not None and ended.code == 129 and ended.signal == 1


async def test_adopt_live_session_after_restart(driver: ProcessDriver, tmp_path: Path) -> None:
    out = tmp_path / "s"
    h = await driver.start(spec("s", [PY, "-c", ECHO], out, {}))
    info = h.info
    await until(lambda: "ready" in stdout_of(out))
    h.detach()  # the runtime goes away; the session must not notice
    del h

    # The orchestrator reconciles in a worker thread: the handle joins the loop when first awaited.
    adopted = await asyncio.to_thread(driver.adopt_now, adopt_spec("s", out, info))
    assert isinstance(adopted, ProcessHandle) and adopted.alive()
    await adopted.send("after restart")
    await until(lambda: "steered: after restart" in stdout_of(out))

    # Without stored info, pid.json is used.
    again = driver.adopt_now(adopt_spec("s", out, None))
    assert isinstance(again, ProcessHandle) and again.alive()
    again.detach()

    await adopted.terminate(2)
    ended = await adopted.wait()
    assert ended is not None and ended.signal == 15


async def test_adopt_after_exit_returns_exit_info(driver: ProcessDriver, tmp_path: Path) -> None:
    out = tmp_path / "s"
    h = await driver.start(spec("s", [PY, "-c", "raise SystemExit(7)"], out, {}))
    info = h.info
    await h.wait()
    adopted = driver.adopt_now(adopt_spec("s", out, info))
    assert isinstance(adopted, ExitInfo) and adopted.code == 7


async def test_adopt_refuses_reused_pid_and_never_signals_it(driver: ProcessDriver, tmp_path: Path) -> None:
    out = tmp_path / "s"
    watcher = (
        "import signal, sys, time\n"
        "def note(sig, frame):\n"
        "    print('signalled', sig, flush=True)\n"
        "for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR1):\n"
        "    signal.signal(s, note)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    h = await driver.start(spec("s", [PY, "-c", watcher], out, {}))
    assert h.info is not None
    await until(lambda: "ready" in stdout_of(out))
    real = h.info
    forged = LaunchInfo(real.shim_pid, real.agent_pid, real.shim_start + 1, real.agent_start + 1)

    assert driver.adopt_now(adopt_spec("s", out, forged)) is None
    assert driver.adopt_now(adopt_spec("s", out, LaunchInfo(real.agent_pid, real.agent_pid, 1, 1))) is None
    # Let any stray signal arrive before looking.
    await asyncio.sleep(0.2)
    assert pid_alive_with_start(real.shim_pid, real.shim_start)
    assert pid_alive_with_start(real.agent_pid, real.agent_start)
    assert "signalled" not in stdout_of(out)
    assert h.alive()
    await h.terminate(0.1)


async def test_adopt_dead_pid_without_exit_record_is_lost(driver: ProcessDriver, tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    start = proc_start_time(proc.pid)
    assert start is not None
    proc.kill()
    proc.wait()
    out = tmp_path / "gone"
    out.mkdir()
    assert driver.adopt_now(adopt_spec("s", out, LaunchInfo(proc.pid, proc.pid, start, start))) is None
    assert driver.adopt_now(adopt_spec("s", tmp_path / "never-started", None)) is None


async def test_sigkilled_shim_leaves_no_exit_record(driver: ProcessDriver, tmp_path: Path) -> None:
    out = tmp_path / "s"
    h = await driver.start(spec("s", ["sleep", "30"], out, {}))
    assert h.info is not None
    info = h.info
    os.killpg(os.getpgid(info.shim_pid), signal.SIGKILL)
    assert await asyncio.wait_for(h.wait(), 5) is None
    assert driver.adopt_now(adopt_spec("s", out, info)) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "empty argv"),
        (["crewtui-no-such-program-xyz", "--task", "x"], "program 'crewtui-no-such-program-xyz' not found on PATH"),
        (["./no-such-script.sh"], "program './no-such-script.sh' not found"),
    ],
)
async def test_bad_argv_is_refused_and_creates_nothing(
    driver: ProcessDriver, tmp_path: Path, argv: list[str], message: str
) -> None:
    out = tmp_path / "s"
    with pytest.raises(BadInput, match=message):
        await driver.start(spec("s", argv, out, {}, cwd=tmp_path))
    assert not out.exists()


async def test_task_text_is_one_argument_and_never_executed(driver: ProcessDriver, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    task = f"Write it; rm -rf {victim} $(touch pwned) `touch pwned2` ' \" \\ \n && touch pwned3 | * ~"
    out = tmp_path / "s"
    argv = [PY, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", task, "--flag=$HOME"]
    h = await driver.start(spec("s", argv, out, {}, cwd=tmp_path))
    ended = await h.wait()
    assert ended is not None and ended.code == 0
    assert json.loads(stdout_of(out)) == [task, "--flag=$HOME"]
    assert victim.is_dir()
    assert not any((tmp_path / name).exists() for name in ("pwned", "pwned2", "pwned3"))
    assert not any(p.name.startswith("pwned") for p in out.iterdir())


async def test_env_and_cwd_reach_the_agent(driver: ProcessDriver, tmp_path: Path) -> None:
    out = tmp_path / "s"
    prog = "import os; print(os.environ['CREWTUI_SESSION_KEY'], os.getcwd())"
    h = await driver.start(spec("s", [PY, "-c", prog], out, {"CREWTUI_SESSION_KEY": "s-abc"}, cwd=tmp_path))
    await h.wait()
    assert stdout_of(out).split() == ["s-abc", str(tmp_path)]


@pytest.mark.parametrize(("kind", "code"), [("missing", 127), ("not-executable", 126)])
async def test_shim_records_exec_failure(
    driver: ProcessDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, code: int
) -> None:
    # The driver refuses such argv up front; the shim must still cope if the program vanishes meanwhile.
    monkeypatch.setattr(process_driver, "validate_argv", lambda *a: None)
    prog = tmp_path / "prog.sh"
    if kind == "not-executable":
        prog.write_text("#!/bin/sh\necho hi\n")
        prog.chmod(0o644)
    out = tmp_path / "s"
    h = await driver.start(spec("s", [str(prog)], out, {}))
    ended = await h.wait()
    assert ended is not None and ended.code == code and ended.signal is None


async def test_shim_stays_under_2mb_resident(driver: ProcessDriver, tmp_path: Path) -> None:
    h = await driver.start(spec("s", ["sleep", "30"], tmp_path / "s", {}))
    assert h.info is not None
    status = Path(f"/proc/{h.info.shim_pid}/status").read_text()
    rss_kb = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    print(f"shim VmRSS: {rss_kb} kB")
    assert rss_kb < 2048


async def test_driver_raises_fd_limit() -> None:
    ProcessDriver()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard or hard == resource.RLIM_INFINITY


async def test_start_is_repeatable_in_the_same_dir(driver: ProcessDriver, tmp_path: Path) -> None:
    out = tmp_path / "s"
    first = await driver.start(spec("s", [PY, "-c", "print('attempt 1')"], out, {}))
    assert (await first.wait()).code == 0  # type: ignore[union-attr]
    second = await driver.start(spec("s", [PY, "-c", ECHO], out, {}))
    assert driver.adopt_now(adopt_spec("s", out, second.info)) is not None
    assert not (out / "exit.json").exists()
    await second.send("stop")
    assert (await second.wait()).code == 0  # type: ignore[union-attr]
    assert "attempt 1" not in stdout_of(out)


# ------------------------------------------------------------------------------------------ CallableDriver


async def _returns(ctx: CallableContext) -> dict[str, object]:
    ctx.output(f"hello from {ctx.label}")
    return {"ok": True, "key": ctx.key}


async def _raises(ctx: CallableContext) -> None:
    raise ValueError("boom went the agent")


async def _steered(ctx: CallableContext) -> list[str]:
    got = [await ctx.next_message(), await ctx.next_message()]
    ctx.output("got " + ", ".join(got))
    return got


async def _forever(ctx: CallableContext) -> None:
    await asyncio.Event().wait()


@pytest.fixture
def cdriver() -> CallableDriver:
    return CallableDriver({"returns": _returns, "raises": _raises, "steered": _steered, "forever": _forever})


async def test_callable_result(cdriver: CallableDriver, tmp_path: Path) -> None:
    assert cdriver.has("returns") and not cdriver.has("nope")
    h = await cdriver.start(cspec("c1", "writer-1", "returns", tmp_path / "c1"))
    assert h.info is None
    ended = await h.wait()
    assert ended is not None and ended.code == 0
    assert stdout_of(tmp_path / "c1") == "hello from writer-1\n"
    assert find_result(SessionDir(tmp_path / "c1")) == (True, {"ok": True, "key": "c1"})
    assert not h.alive()


async def test_callable_exception(cdriver: CallableDriver, tmp_path: Path) -> None:
    h = await cdriver.start(cspec("c1", "w", "raises", tmp_path / "c1"))
    ended = await h.wait()
    assert ended is not None and ended.code == 1
    assert "boom went the agent" in (tmp_path / "c1" / "stderr.log").read_text()
    assert json.loads((tmp_path / "c1" / "exit.json").read_text())["code"] == 1


async def test_callable_steering(cdriver: CallableDriver, tmp_path: Path) -> None:
    h = await cdriver.start(cspec("c1", "w", "steered", tmp_path / "c1"))
    await h.send("left")
    await h.send("right")
    ended = await h.wait()
    assert ended is not None and ended.code == 0
    assert find_result(SessionDir(tmp_path / "c1")) == (True, ["left", "right"])
    with pytest.raises(Conflict):
        await h.send("late")


async def test_callable_cancel(cdriver: CallableDriver, tmp_path: Path) -> None:
    h = await cdriver.start(cspec("c1", "w", "forever", tmp_path / "c1"))
    await asyncio.sleep(0)
    assert h.alive()
    # A waiter that gives up must not end the session.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(h.wait(), 0.01)
    assert h.alive()
    await h.terminate(1)
    assert not h.alive()
    ended = await h.wait()
    assert ended is not None and ended.code is None and ended.signal == 15


async def test_callable_unknown_name(cdriver: CallableDriver, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="unknown callable agent 'nope'"):
        await cdriver.start(cspec("c1", "w", "nope", tmp_path / "c1"))


async def test_failed_shim_start_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken-shim.sh"
    broken.write_text('echo "shim: cannot do it" >&2\nexit 1\n')
    with pytest.raises(CrewError, match="did not start: shim: cannot do it"):
        await ProcessDriver(shim=broken).start(spec("s", ["true"], tmp_path / "s", {}))


def test_validate_argv_resolves_against_env_and_cwd(tmp_path: Path) -> None:
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    drivers.validate_argv(["./agent.sh"], cwd=tmp_path)
    drivers.validate_argv(["agent.sh"], {"PATH": str(tmp_path)})
    with pytest.raises(BadInput, match="not found on PATH"):
        drivers.validate_argv(["agent.sh"], {"PATH": "/nonexistent"})
    with pytest.raises(BadInput):
        drivers.validate_argv(["sh", "nul\0byte"])


async def test_start_times_survive_odd_program_names(driver: ProcessDriver, tmp_path: Path) -> None:
    # comm is the program's file name: ") " inside it must not shift the /proc/PID/stat fields.
    odd = tmp_path / "a) b (c) 1 2"
    odd.symlink_to(shutil.which("sleep"))  # type: ignore[arg-type]
    h = await driver.start(spec("s", [str(odd), "30"], tmp_path / "s", {}))
    assert h.info is not None
    # The agent pid is forked first and execs the program a moment later: wait for the exec (bounded).
    comm = Path(f"/proc/{h.info.agent_pid}/comm")
    for _ in range(200):
        if comm.read_text().startswith("a) b (c)"):
            break
        await asyncio.sleep(0.01)
    assert comm.read_text().startswith("a) b (c)")
    assert h.info.agent_start == proc_start_time(h.info.agent_pid)
    assert h.info.shim_start <= h.info.agent_start
    await h.terminate(1)


async def test_output_dir_can_be_the_cwd(driver: ProcessDriver, tmp_path: Path) -> None:
    out = tmp_path / "sessions" / "s"
    h = await driver.start(spec("s", [PY, "-c", "import os; print(os.getcwd())"], out, {}, cwd=out))
    assert (await h.wait()).code == 0  # type: ignore[union-attr]
    assert stdout_of(out).strip() == str(out)
    with pytest.raises(BadInput, match="working directory"):
        await driver.start(spec("s2", ["true"], tmp_path / "s2", {}, cwd=tmp_path / "missing"))


async def test_shim_leads_its_own_process_group(driver: ProcessDriver, tmp_path: Path) -> None:
    h = await driver.start(spec("s", ["sleep", "30"], tmp_path / "s", {}))
    assert h.info is not None
    # So the whole session can be signalled as -shim_pid.
    assert os.getpgid(h.info.shim_pid) == h.info.shim_pid == os.getsid(h.info.shim_pid)
    assert os.getpgid(h.info.agent_pid) == h.info.shim_pid
    await h.terminate(1)


async def test_cancelled_start_leaves_nothing_running(driver: ProcessDriver, tmp_path: Path) -> None:
    out = tmp_path / "s"
    marker = f"crewtui-cancel-test-{os.getpid()}"
    task = asyncio.ensure_future(driver.start(spec("s", [PY, "-c", "import time; time.sleep(30)", marker], out, {})))
    await asyncio.sleep(0)  # it has forked and now waits for the shim
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    def leftovers() -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and running(int(entry)):
                try:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if marker.encode() in cmdline:
                    found.append(int(entry))
        return found

    await until(lambda: not leftovers())
