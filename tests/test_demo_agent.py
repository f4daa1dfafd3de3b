"""Tests for the demo agent, run as a real program (`python -m crewtui.agents.demo`) in subprocesses.

The agent is what every runtime test and the demo crew start, so its contract (progress lines, steering
echo, fates and their exit codes, one final JSON line, the ctl calls for children) is checked end to end
rather than by calling functions. The children path runs against a fake `crewtui ctl` put first on
PYTHONPATH, which records its argv, so the contract with the control CLI is pinned without a runtime.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

DEMO = [sys.executable, "-m", "crewtui.agents.demo"]
DEMO_FILE = Path(__file__).resolve().parents[1] / "crewtui" / "agents" / "demo.py"
FAST = ["--duration", "0.3", "--interval", "0.05"]


def _env(**extra: str) -> dict[str, str]:
    # Runs must not inherit a real runtime's session from whoever runs the tests.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREWTUI_")}
    env.update(extra)
    return env


def run_demo(
    *args: str, stdin: str = "", cwd: Path | None = None, timeout: float = 10, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEMO, *args], input=stdin, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env or _env()
    )


def final_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


class LineReader:
    """Collects a pipe's lines on a thread so a test can wait for a line with a timeout instead of blocking."""

    def __init__(self, stream: Any) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, predicate: Any, timeout: float = 5) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching line within {timeout}s; saw {self.seen!r}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(line)
            if predicate(line):
                return line


def test_success_prints_progress_then_one_final_json_line() -> None:
    proc = run_demo("--task", "write the superada article", *FAST)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    progress = [line for line in lines if line.startswith("step ")]
    assert len(progress) == 6
    assert progress[0] == 'step 1/6: researching "write the superada article"'
    assert progress[-1].startswith("step 6/6: ")
    result = final_json(proc.stdout)
    assert result == {
        "task": "write the superada article",
        "label": None,
        "steps": 6,
        "steered": [],
        "children": [],
        "summary": result["summary"],
    }
    assert proc.stderr == ""


def test_label_comes_from_the_runtime_env() -> None:
    proc = run_demo("--task", "t", "--duration", "0", env=_env(CREWTUI_SESSION_LABEL="scout-1"))
    assert proc.returncode == 0, proc.stderr
    assert final_json(proc.stdout)["label"] == "scout-1"


def test_steering_lines_are_echoed_and_listed_in_the_result() -> None:
    proc = subprocess.Popen(
        [*DEMO, "--task", "steer me", "--duration", "0.8", "--interval", "0.05"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    out = LineReader(proc.stdout)
    out.wait_for(lambda line: line.startswith("step 1/"))
    proc.stdin.write("hello\n")
    proc.stdin.flush()
    # Echoed at once, while the agent is still working (not only at the end).
    out.wait_for(lambda line: line == "steered: hello", timeout=1)
    proc.stdin.write("focus on pricing\n")
    proc.stdin.close()  # EOF is fine: the agent keeps working
    out.wait_for(lambda line: line == "steered: focus on pricing", timeout=1)
    last = out.wait_for(lambda line: line.startswith("{"))
    assert proc.wait(timeout=5) == 0
    assert json.loads(last)["steered"] == ["hello", "focus on pricing"]


def test_steering_through_a_named_fifo_survives_writers_coming_and_going(tmp_path: Path) -> None:
    # The runtime's shim hands the agent DIR/stdin.fifo; each steer may open, write and close it, which
    # is EOF for the reader. The agent must keep listening for the next writer.
    fifo = tmp_path / "stdin.fifo"
    os.mkfifo(fifo)
    keeper = os.open(fifo, os.O_RDWR)  # lets the read end open without blocking
    reader = os.open(fifo, os.O_RDONLY)
    proc = subprocess.Popen(
        # Long enough that both steers land while it runs, even on a busy machine (0.8 s was not: it ended first).
        [*DEMO, "--task", "t", "--duration", "3", "--interval", "0.05"],
        stdin=reader,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    os.close(reader)
    os.close(keeper)
    assert proc.stdout is not None
    out = LineReader(proc.stdout)
    for word in ("one", "two"):
        with open(fifo, "w") as writer:
            writer.write(word + "\n")
        out.wait_for(lambda line, word=word: line == f"steered: {word}", timeout=2)
    last = out.wait_for(lambda line: line.startswith("{"))
    assert proc.wait(timeout=5) == 0
    assert json.loads(last)["steered"] == ["one", "two"]


def test_fail_rate_one_exits_with_error_and_no_result() -> None:
    proc = run_demo("--task", "t", *FAST, "--fail-rate", "1")
    assert proc.returncode == 1
    assert "error: tool call failed: " in proc.stderr
    assert "step 3/6" in proc.stdout and "step 4/6" not in proc.stdout  # about half the steps
    assert not any(line.startswith("{") for line in proc.stdout.splitlines())


def test_exit_code_flag_sets_the_failure_code() -> None:
    proc = run_demo("--task", "t", *FAST, "--fail-rate", "1", "--exit-code", "9")
    assert proc.returncode == 9


def test_rate_limited_exits_75_with_429() -> None:
    proc = run_demo("--task", "t", *FAST, "--rate-limit-rate", "1")
    assert proc.returncode == 75
    assert "error: 429 rate limit exceeded (model provider)" in proc.stderr
    assert "step 1/6" in proc.stdout and "step 2/6" not in proc.stdout


def test_hang_stops_printing_but_stays_alive_and_still_echoes_steering(tmp_path: Path) -> None:
    out_file = tmp_path / "stdout.log"
    with out_file.open("w") as out:
        proc = subprocess.Popen(
            [*DEMO, "--task", "t", *FAST, "--hang-rate", "1"],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
    assert proc.stdin is not None
    try:
        deadline = time.monotonic() + 5
        while "step 2/6" not in out_file.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.4)  # longer than the whole run would take
        text = out_file.read_text()
        assert "step 2/6" in text and "step 3/6" not in text
        assert proc.poll() is None, "a hung agent must stay alive"
        proc.stdin.write("are you there\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 2
        while "steered: are you there" not in out_file.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "steered: are you there" in out_file.read_text()
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) != 0
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()


def test_same_seed_same_fate_and_both_fates_across_seeds() -> None:
    def start(seed: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                *DEMO,
                "--task",
                "coin",
                "--duration",
                "0.05",
                "--interval",
                "0.05",
                "--fail-rate",
                "0.5",
                "--seed",
                str(seed),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_env(),
        )

    # Started together: 25 interpreters in parallel keep this test well under a second or two.
    same = [start(7) for _ in range(5)]
    across = [start(seed) for seed in range(20)]
    same_codes = {p.wait(timeout=10) for p in same}
    across_codes = {p.wait(timeout=10) for p in across}
    assert len(same_codes) == 1
    assert across_codes == {0, 1}


def test_children_without_runtime_exit_2_with_a_clear_message() -> None:
    for args in (["--task", "t", "--children", "2"], ["--task", "synthesize scouts; spawn 3"]):
        proc = run_demo(*args, *FAST)
        assert proc.returncode == 2
        assert "error: --children needs a crewtui runtime (CREWTUI_SOCKET is not set)" in proc.stderr
        assert proc.stdout == ""


@pytest.mark.parametrize(
    "flag",
    [
        ["--fail-rate", "1.5"],
        ["--interval", "0"],
        ["--duration", "soon"],
        ["--exit-code", "0"],
        ["--children", "-1"],
        ["--bogus"],
        [],
    ],
)
def test_bad_flag_exits_2_with_one_line_error(flag: list[str]) -> None:
    args = flag if flag == [] else ["--task", "t", *flag]
    proc = run_demo(*args)
    assert proc.returncode == 2
    # argparse's shape: a usage line, then one "prog: error: ..." line; never a traceback.
    assert ": error: " in proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr


def test_shell_metacharacters_in_the_task_are_inert(tmp_path: Path) -> None:
    task = "$(touch pwned); rm -rf x `touch pwned2` \"quoted\" 'single'"
    (tmp_path / "x").mkdir()
    proc = run_demo("--task", task, "--duration", "0.1", "--interval", "0.05", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert final_json(proc.stdout)["task"] == task
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, crewtui.agents.demo; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'textual', 'aiosqlite', 'click')"
        " or m.startswith(('crewtui.runtime', 'crewtui.control', 'crewtui.ui', 'crewtui.model'))); "
        "print(heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=10, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ------------------------------------------------------------------- children, against a fake `crewtui ctl`

FAKE_MAIN = textwrap.dedent('''
    """Fake `python -m crewtui` for tests: records each ctl call, answers like the real one."""
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_CTL_LOG"], "a") as log:
        log.write(json.dumps({"argv": args, "parent": os.environ.get("CREWTUI_SESSION_KEY")}) + "\\n")
    if os.environ.get("FAKE_CTL_FAIL"):
        print("error: no runtime is listening on /tmp/nowhere/control.sock", file=sys.stderr)
        sys.exit(2)
    if args[:2] == ["ctl", "spawn"]:
        label = args[args.index("--label") + 1]
        print(json.dumps({"key": "s-" + label, "label": label, "state": "running"}))
    elif args[:2] == ["ctl", "yield"]:
        pass  # --no-wait: returns at once; the runtime pushes the result on the parent's stdin later
    else:
        sys.exit(3)
''')


@pytest.fixture
def fake_ctl(tmp_path: Path) -> dict[str, str]:
    pkg = tmp_path / "fake" / "crewtui"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(FAKE_MAIN)
    # The parent runs as a script (it imports nothing from crewtui), so the fake package on PYTHONPATH
    # only replaces what `python -m crewtui ctl` resolves to.
    return _env(
        PYTHONPATH=str(tmp_path / "fake"),
        FAKE_CTL_LOG=str(tmp_path / "ctl.log"),
        CREWTUI_SOCKET=str(tmp_path / "control.sock"),
        CREWTUI_SESSION_KEY="s-parent",
        CREWTUI_SESSION_LABEL="synth",
    )


def test_children_spawn_via_ctl_yield_and_wake_on_the_pushed_result(tmp_path: Path, fake_ctl: dict[str, str]) -> None:
    task = "synthesize scouts; spawn 2"
    proc = subprocess.Popen(
        [sys.executable, str(DEMO_FILE), "--task", task, "--duration", "0.2", "--interval", "0.05", "--seed", "3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=fake_ctl,
    )
    assert proc.stdin is not None and proc.stdout is not None
    out = LineReader(proc.stdout)
    out.wait_for(lambda line: line.startswith("yielded: "))
    time.sleep(0.3)
    # Yielded means asleep: no progress while the children work.
    assert not any(line.startswith("step 2/") for line in out.seen + list(out.lines.queue))
    children = [
        {"key": "s-synth-sub-1", "label": "synth-sub-1", "state": "done", "exit_code": 0, "result": {"summary": "ok"}},
        {"key": "s-synth-sub-2", "label": "synth-sub-2", "state": "failed", "exit_code": 1, "result": None},
    ]
    proc.stdin.write(json.dumps({"type": "yield_result", "parent": "s-parent", "children": children}) + "\n")
    proc.stdin.flush()
    out.wait_for(lambda line: line == "children done: 1/2")
    last = out.wait_for(lambda line: line.startswith("{"))
    assert proc.wait(timeout=5) == 0
    result = json.loads(last)
    assert result["children"] == children and result["steered"] == [] and result["label"] == "synth"
    assert not any(line.startswith("steered: {") for line in out.seen)

    calls = [json.loads(line) for line in (tmp_path / "ctl.log").read_text().splitlines()]
    assert [c["parent"] for c in calls] == ["s-parent"] * 3
    spawn1 = calls[0]["argv"]
    assert spawn1[:6] == ["ctl", "spawn", "--json", "--label", "synth-sub-1", "--"]
    child = spawn1[6:]
    assert child[:3] == [sys.executable, "-m", "crewtui.agents.demo"]
    assert child[child.index("--task") + 1] == f"sub-task 1 of {task}"
    assert child[child.index("--duration") + 1] == "0.1"
    assert child[child.index("--children") + 1] == "0"  # the child's task says "spawn 2" too: no recursion
    assert calls[1]["argv"][4] == "synth-sub-2"
    assert calls[2]["argv"] == ["ctl", "yield", "--no-wait", "--children", "s-synth-sub-1", "s-synth-sub-2"]


def test_failing_ctl_is_a_loud_failure(tmp_path: Path, fake_ctl: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(DEMO_FILE), "--task", "t", "--children", "1", *FAST],
        capture_output=True,
        text=True,
        timeout=10,
        cwd=tmp_path,
        env={**fake_ctl, "FAKE_CTL_FAIL": "1"},
    )
    assert proc.returncode == 1
    assert "no runtime is listening on /tmp/nowhere/control.sock" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_stdin_closing_while_yielded_fails_instead_of_sleeping_forever(
    tmp_path: Path, fake_ctl: dict[str, str]
) -> None:
    proc = subprocess.run(
        [sys.executable, str(DEMO_FILE), "--task", "t", "--children", "1", *FAST],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=10,
        cwd=tmp_path,
        env=fake_ctl,
    )
    assert proc.returncode == 1
    assert "stdin closed before the yield result arrived" in proc.stderr


# ------------------------------------------------------------------- text seeds, tries and jitter


def test_a_text_seed_gives_each_label_its_own_fate_and_duration_and_a_later_try_draws_again(tmp_path: Path) -> None:
    """The demo crew passes `--seed {label}`: each session's fate and duration come from its label, the same in
    every run; a later try of the session (tries/N in $CREWTUI_OUTPUT_DIR, as the runtime keeps them) draws
    again, so a retry can go differently and a 429 is not forever."""
    first, later = tmp_path / "first", tmp_path / "later"
    first.mkdir()
    (later / "tries" / "1").mkdir(parents=True)
    seeds = [f"inbox-triage-item{i}-r1" for i in range(8)]

    def start(seed: str, out: Path) -> subprocess.Popen[str]:
        argv = ["--task", "coin", "--duration", "0.5", "--jitter", "0.5", "--interval", "0.05", "--fail-rate", "0.5"]
        return subprocess.Popen(
            [*DEMO, *argv, "--seed", seed],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=_env(CREWTUI_OUTPUT_DIR=str(out)),
        )

    # Started together (32 interpreters), then collected: (exit code, steps from the start line).
    procs = {(seed, out.name, n): start(seed, out) for seed in seeds for out in (first, later) for n in (1, 2)}
    outcome: dict[tuple[str, str, int], tuple[int, int]] = {}
    for key, proc in procs.items():
        stdout, _ = proc.communicate(timeout=30)
        steps = int(stdout.split(" steps, ", 1)[0].rsplit("(", 1)[1])
        outcome[key] = (proc.returncode, steps)
    for seed in seeds:
        for out in ("first", "later"):
            assert outcome[(seed, out, 1)] == outcome[(seed, out, 2)], (seed, out)  # same seed, same try: same draw
    firsts = [outcome[(seed, "first", 1)] for seed in seeds]
    assert {code for code, _ in firsts} == {0, 1}
    assert len({steps for _, steps in firsts}) > 2 and all(5 <= steps <= 15 for _, steps in firsts)  # 0.25-0.75 s
    assert any(outcome[(seed, "first", 1)] != outcome[(seed, "later", 1)] for seed in seeds)


def test_children_of_a_text_seeded_parent_get_text_seeds_of_their_own(tmp_path: Path, fake_ctl: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(DEMO_FILE), "--task", "t", "--children", "1", *FAST, "--seed", "synthesis-lead-r1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=fake_ctl,
    )
    assert proc.stdin is not None and proc.stdout is not None
    LineReader(proc.stdout).wait_for(lambda line: line.startswith("yielded: "))
    proc.stdin.write(json.dumps({"type": "yield_result", "children": []}) + "\n")
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0
    child = json.loads((tmp_path / "ctl.log").read_text().splitlines()[0])["argv"]
    assert child[child.index("--seed") + 1] == "synthesis-lead-r1-sub-1"


@pytest.mark.parametrize("flag", [["--jitter", "2"], ["--jitter", "-0.1"]])
def test_bad_jitter_exits_2(flag: list[str]) -> None:
    proc = run_demo("--task", "t", *flag)
    assert proc.returncode == 2 and ": error: " in proc.stderr.strip().splitlines()[-1]
