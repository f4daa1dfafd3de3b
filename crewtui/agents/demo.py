"""A real, stdlib-only demo agent: the stand-in for an AI agent session.

`python -m crewtui.agents.demo --task TEXT` behaves like one agent session so the runtime, the dashboard
and the tests can exercise every path without a model provider:

* it prints a progress line per ``--interval`` for ``--duration`` seconds, then one final JSON line (the
  session's result: the runtime takes the last stdout line that parses as JSON);
* it echoes every line written to its stdin as ``steered: <line>`` (steering) and lists them in the result;
* its fate is drawn once at start (``--hang-rate``, ``--rate-limit-rate``, ``--fail-rate``; ``--seed`` makes
  it reproducible): hang (a stuck model call: alive, silent, still echoing steers), rate limited (exit 75
  with a 429 on stderr, which pools retry with backoff), failure (exit ``--exit-code``) or success;
* ``--jitter`` varies the working time around ``--duration`` (drawn after the fate, from the same seed);
* ``--seed`` takes an integer or any text, e.g. the session's label (``"--seed", "{label}"`` in a crew file):
  then every session of an agent has a fate of its own, the same one in every run of the crew. A later try
  of the same session (a retry, or a relaunch after a rate limit: the runtime keeps each earlier try's files
  in ``$CREWTUI_OUTPUT_DIR/tries/N``) draws again, from the seed and the try number, so a retry can go
  differently and a session seeded into a 429 is not rate limited forever;
* with ``--children N`` (or "spawn N" in the task) it spawns N subagents through the real
  ``crewtui ctl spawn``, yields with ``crewtui ctl yield --no-wait`` and then sleeps until the runtime
  pushes the children's results as one ``{"type": "yield_result", ...}`` line on stdin: no polling.

It deliberately imports nothing from crewtui (nor pydantic/textual): a crew starts hundreds of these, so
start-up time and memory matter, and the file also runs as a plain script.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import stat
import subprocess
import sys
import threading
import time
from typing import Any, NoReturn

# Exit codes. 75 is EX_TEMPFAIL: the runtime's pools treat it as "rate limited, try later".
EXIT_RATE_LIMITED = 75
EXIT_USAGE = 2

# Verbs cycle through the progress lines so a transcript tail looks like work, not a counter.
_VERBS = ("researching", "reading sources for", "drafting", "checking facts in", "revising", "polishing")
_FAIL_REASONS = (
    "web_fetch timed out after 30s",
    "git push rejected (non-fast-forward)",
    "search API returned HTTP 500",
    "file write denied: read-only file system",
    "tool output was not valid JSON",
)
# "spawn 3" anywhere in the task asks for 3 subagents, so a crew file can request children via its task text.
_SPAWN_IN_TASK = re.compile(r"\bspawn\s+(\d+)\b", re.IGNORECASE)


# --------------------------------------------------------------------------------------------------- CLI


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # also rejects nan, since every comparison with nan is false
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {text!r}")
    return value


def _seconds(*, allow_zero: bool) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise argparse.ArgumentTypeError(f"expected a finite number of seconds {bound}, got {text!r}")
        return value

    return parse


def _seed(text: str) -> int | str:
    # An integer seeds as before; any other text seeds by its characters (random.Random hashes a str with
    # SHA-512: the same in every process, unlike hash()).
    try:
        return int(text)
    except ValueError:
        return text


def _int_in(low: int, high: int | None) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"expected an integer {span}, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m crewtui.agents.demo",
        description="A demo agent session: prints progress, echoes steering, may hang/fail/rate-limit, "
        "may spawn and yield on subagents, and ends with one JSON result line.",
    )
    parser.add_argument("--task", required=True, help="what the agent works on (echoed verbatim in the result)")
    parser.add_argument(
        "--duration", type=_seconds(allow_zero=True), default=10.0, help="total working time in seconds (default 10)"
    )
    parser.add_argument(
        "--interval", type=_seconds(allow_zero=False), default=1.0, help="seconds between progress lines (default 1.0)"
    )
    parser.add_argument("--fail-rate", type=_rate, default=0.0, help="probability of a tool failure")
    parser.add_argument("--hang-rate", type=_rate, default=0.0, help="probability of hanging (a stuck model call)")
    parser.add_argument(
        "--rate-limit-rate", type=_rate, default=0.0, help=f"probability of a 429 (exit {EXIT_RATE_LIMITED})"
    )
    parser.add_argument(
        "--seed",
        type=_seed,
        default=None,
        help="seed the fate: an integer or any text (e.g. the session's label); same seed and try, same outcome",
    )
    parser.add_argument(
        "--jitter",
        type=_rate,
        default=0.0,
        help="vary the duration by up to this fraction either way (0.5: from half to one and a half times)",
    )
    # 0 is refused: a failure that exits 0 would be a silent failure.
    parser.add_argument("--exit-code", type=_int_in(1, 255), default=1, help="exit code on failure (default 1)")
    parser.add_argument(
        "--children",
        type=_int_in(0, None),
        default=None,
        help='subagents to spawn via `crewtui ctl` (default: "spawn N" in the task, else 0)',
    )
    parser.add_argument(
        "--jsonl",
        action="store_true",
        help="also speak crewtui's jsonl protocol: activity, token usage, a permission request, the result",
    )
    parser.add_argument(
        "--ask-rate",
        type=_rate,
        default=0.0,
        help="with --jsonl: probability of asking a person's permission (to push) halfway, and waiting for it",
    )
    return parser


# ------------------------------------------------------------------------------------------------- fate


def decide_fate(rng: random.Random, *, hang_rate: float, rate_limit_rate: float, fail_rate: float) -> str:
    """Return "hang", "rate_limited", "fail" or "success".

    All three draws are always made, so the fate for a seed depends only on the seed and the rates,
    never on which branch happened to be taken first.
    """
    hang = rng.random() < hang_rate
    rate_limited = rng.random() < rate_limit_rate
    fail = rng.random() < fail_rate
    if hang:
        return "hang"
    if rate_limited:
        return "rate_limited"
    if fail:
        return "fail"
    return "success"


def try_number() -> int:
    """Which try of its session this process is: 1, plus the earlier tries the runtime moved aside into
    $CREWTUI_OUTPUT_DIR/tries/N (a retry, or a relaunch after a rate limit); 1 outside a runtime."""
    out = os.environ.get("CREWTUI_OUTPUT_DIR")
    if not out:
        return 1
    try:
        return 1 + sum(1 for name in os.listdir(os.path.join(out, "tries")) if name.isdigit())
    except OSError:
        return 1


def seeded_rng(seed: int | str | None, tries: int) -> random.Random:
    """The fate's random source: the seed alone for a first try, the seed and the try number after."""
    if seed is None:
        return random.Random()
    return random.Random(seed if tries == 1 else f"{seed}#try{tries}")


def children_requested(explicit: int | None, task: str) -> int:
    if explicit is not None:
        return explicit
    match = _SPAWN_IN_TASK.search(task)
    return int(match.group(1)) if match else 0


# ------------------------------------------------------------------------------------------- the agent


class Agent:
    """Shared state between the main (working) thread and the stdin (steering) thread."""

    # A plain class rather than a dataclass: importing dataclasses pulls in inspect (~6 ms per start).
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.steered: list[str] = []
        self.yield_result: dict[str, Any] | None = None
        # Set when the yield result arrives or stdin closes for good: the main thread sleeps on it, no polling.
        self.wake = threading.Event()
        self.finished = False
        self.jsonl = False
        # A jsonl answer to our permission request: set by the stdin thread, waited on by the main one.
        self.answer: dict[str, Any] | None = None
        self.answered = threading.Event()

    def emit(self, **event: Any) -> None:
        """One jsonl protocol line (only with --jsonl)."""
        if self.jsonl:
            self.say(json.dumps(event, ensure_ascii=False))

    def say(self, line: str) -> None:
        # One lock for both threads so a steer echo never splits a progress line.
        with self.lock:
            if not self.finished:
                _write(sys.stdout, line)

    def on_stdin_line(self, line: str) -> None:
        message = _parse_json_object(line)
        if message is not None and message.get("type") == "yield_result":
            with self.lock:
                self.yield_result = message
            self.wake.set()
            return
        if message is not None and message.get("type") == "answer":
            self.answer = message
            self.answered.set()
            return
        if message is not None and message.get("type") == "user" and isinstance(message.get("text"), str):
            line = message["text"]  # a steer in the jsonl protocol
        with self.lock:
            if self.finished:
                return
            self.steered.append(line)
            _write(sys.stdout, f"steered: {line}")

    def on_stdin_closed(self) -> None:
        # Wakes a yielded agent so it fails loudly: no result can ever arrive on a closed stdin (nor an answer).
        self.wake.set()
        self.answered.set()


def _write(stream: Any, line: str) -> None:
    try:
        print(line, file=stream, flush=True)
    except (BrokenPipeError, ValueError):
        # A reader that went away (`| head`) must not turn into a traceback.
        pass


def _parse_json_object(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _named_fifo_path(fd: int) -> str | None:
    """The path of the named FIFO behind `fd`, if it is one (Linux /proc); None for pipes, ttys, files."""
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return None
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    # Anonymous pipes read as "pipe:[1234]"; only a real path can be reopened.
    if not target.startswith("/") or not os.path.exists(target):
        return None
    return target


def _read_stdin(agent: Agent) -> None:
    """Feed stdin lines to the agent until stdin ends for good.

    Reads the raw fd with os.read rather than sys.stdin: a daemon thread blocked inside sys.stdin's
    buffered reader holds its lock, and interpreter shutdown then aborts with "could not acquire lock".
    """
    fd = 0
    pending = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if chunk:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", errors="replace").rstrip("\r")
                if line:
                    agent.on_stdin_line(line)
            continue
        if pending:
            agent.on_stdin_line(pending.decode("utf-8", errors="replace").rstrip("\r"))
            pending = b""
        # A named FIFO hits EOF whenever its last writer closes, yet a later writer may steer again. Reopened for
        # reading and writing: such an end never sees EOF again (it is a writer itself), so a read blocks (in the
        # kernel, not in a loop) until a line comes. Not O_RDONLY: that open blocks until a writer opens, and a
        # writer that opened, wrote and closed between our EOF and that open (our old end kept it from blocking)
        # left its line in the pipe with no one to read it. Any other stdin is done.
        fifo = _named_fifo_path(fd)
        if fifo is None:
            agent.on_stdin_closed()
            return
        try:
            new_fd = os.open(fifo, os.O_RDWR)  # before the old end closes: what is in the pipe stays there
        except OSError:
            agent.on_stdin_closed()
            return
        if fd != 0:
            os.close(fd)
        fd = new_fd


def _fail(message: str, code: int) -> NoReturn:
    _write(sys.stderr, message)
    sys.exit(code)


def _run_ctl(args: list[str]) -> str:
    """Run `crewtui ctl ARGS` (the real control CLI, same interpreter) and return its stdout; exit 1 loudly if it
    fails."""
    argv = [sys.executable, "-m", "crewtui", "ctl", *args]
    try:
        # No shell: the task text goes through as one argv element whatever it contains.
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _fail(f"error: crewtui ctl {args[0]} failed: {exc}", 1)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exited {proc.returncode} without a message"
        _fail(f"error: crewtui ctl {args[0]} failed (exit {proc.returncode}): {detail}", 1)
    return proc.stdout


def _spawn_and_yield(
    agent: Agent, *, n: int, label: str, task: str, duration: float, interval: float, seed: int | str | None
) -> list[dict[str, Any]]:
    keys: list[str] = []
    child_duration = round(duration / 2, 3)
    for i in range(1, n + 1):
        child_argv = [
            sys.executable,
            "-m",
            "crewtui.agents.demo",
            "--task",
            f"sub-task {i} of {task}",
            "--duration",
            str(child_duration),
            "--interval",
            str(interval),
            # The child's task quotes ours, "spawn N" included: without an explicit 0 every
            # generation would spawn another, a fork bomb through the runtime.
            "--children",
            "0",
        ]
        if seed is not None:
            child_argv += ["--seed", str(seed + i) if isinstance(seed, int) else f"{seed}-sub-{i}"]
        out = _run_ctl(["spawn", "--json", "--label", f"{label}-sub-{i}", "--", *child_argv])
        session = _parse_json_object(out) if out.strip() else None
        if session is None or not isinstance(session.get("key"), str):
            _fail(f"error: crewtui ctl spawn printed no session JSON with a key: {out.strip()[:200]!r}", 1)
        keys.append(session["key"])
        agent.say(f"spawned: {label}-sub-{i} ({session['key']})")
    _run_ctl(["yield", "--no-wait", "--children", *keys])
    agent.say(f"yielded: waiting for {n} children ({', '.join(keys)})")
    # The runtime pushes one yield_result line on stdin when every child has ended; sleep until then.
    agent.wake.wait()
    with agent.lock:
        result = agent.yield_result
    if result is None:
        _fail("error: stdin closed before the yield result arrived; the children's results are lost", 1)
    children = result.get("children")
    if not isinstance(children, list):
        _fail(f"error: yield_result without a children list: {json.dumps(result)[:200]}", 1)
    done = sum(1 for child in children if isinstance(child, dict) and child.get("state") == "done")
    agent.say(f"children done: {done}/{len(children)}")
    return children


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    task: str = args.task
    label = os.environ.get("CREWTUI_SESSION_LABEL") or None
    n_children = children_requested(args.children, task)
    if n_children and not os.environ.get("CREWTUI_SOCKET"):
        _fail("error: --children needs a crewtui runtime (CREWTUI_SOCKET is not set)", EXIT_USAGE)

    rng = seeded_rng(args.seed, try_number())
    fate = decide_fate(rng, hang_rate=args.hang_rate, rate_limit_rate=args.rate_limit_rate, fail_rate=args.fail_rate)
    # Drawn after the fate so adding reasons never changes which seeds fail; the duration after both.
    reason = rng.choice(_FAIL_REASONS)
    duration = args.duration * (1 + args.jitter * (2 * rng.random() - 1))
    steps = max(1, round(duration / args.interval))
    hang_after = min(2, steps)
    fail_after = max(1, steps // 2)

    agent = Agent()
    agent.jsonl = args.jsonl
    # Tokens and the permission request draw from their own source, so a fate never depends on --jsonl.
    extra = seeded_rng(f"{args.seed}/jsonl" if args.seed is not None else None, try_number())
    ask_at = max(1, steps // 2) if extra.random() < args.ask_rate else None
    quoted_task = json.dumps(task, ensure_ascii=False)  # quotes it and keeps a multi-line task on one line
    agent.emit(type="session", id=f"demo-{label or os.getpid()}-{try_number()}")
    agent.say(f"start: {quoted_task} ({steps} steps, label {label or '-'})")
    # Started after the start line so a steer queued before launch is echoed after it, not above it.
    threading.Thread(target=_read_stdin, args=(agent,), name="stdin-steering", daemon=True).start()
    children: list[dict[str, Any]] = []
    # duration/steps (~interval) keeps the total working time at the duration, and 0 means no waiting at all.
    pace = duration / steps
    # Deadline-based pacing keeps a steady rhythm however long printing or spawning takes.
    next_at = time.monotonic()
    for step in range(1, steps + 1):
        next_at += pace
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()  # fell behind (e.g. while yielded): resume the pace, don't burst
        verb = _VERBS[(step - 1) % len(_VERBS)]
        agent.emit(type="activity", text=f"{verb} {task}")
        agent.say(f"step {step}/{steps}: {verb} {quoted_task}")
        agent.emit(type="usage", input=extra.randint(800, 4000), output=extra.randint(50, 600))
        if step == 1 and fate == "rate_limited":
            agent.emit(type="rate_limited", attempt=3, max=3, status=429)
            _fail("error: 429 rate limit exceeded (model provider)", EXIT_RATE_LIMITED)
        if step == ask_at and agent.jsonl:
            if not _ask_permission(agent, label or "demo"):
                agent.emit(type="result", is_error=True, error="a person denied the push", text="stopped: push denied")
                return 1
            next_at = time.monotonic()
        if step == 1 and n_children:
            children = _spawn_and_yield(
                agent,
                n=n_children,
                label=label or "demo",
                task=task,
                duration=duration,
                interval=args.interval,
                seed=args.seed,
            )
            next_at = time.monotonic()
        if fate == "hang" and step == hang_after:
            # A hung model call: silent on stdout forever, yet the process and its steering thread live on.
            while True:
                time.sleep(3600)
        if fate == "fail" and step == fail_after:
            agent.emit(type="result", is_error=True, error=f"tool call failed: {reason}")
            _fail(f"error: tool call failed: {reason}", args.exit_code)

    with agent.lock:
        # Freeze the steer list and silence the echo so the result stays the last stdout line.
        agent.finished = True
        steered = list(agent.steered)
        summary = (
            f"completed {steps} steps on {quoted_task}"
            f" with {len(steered)} steer(s) and {len(children)} child session(s)"
        )
        result = {
            "task": task,
            "label": label,
            "steps": steps,
            "steered": steered,
            "children": children,
            "summary": summary,
        }
        if agent.jsonl:
            _write(sys.stdout, json.dumps({"type": "result", "result": result, "text": summary}, ensure_ascii=False))
        else:
            _write(sys.stdout, json.dumps(result, ensure_ascii=False))
    return 0


def _ask_permission(agent: Agent, label: str) -> bool:
    """Ask a person (jsonl `needs`) to let it push, and wait for the answer on stdin: True if allowed."""
    command = f"git push origin {label}"
    agent.emit(type="tool", name="Bash", input={"command": command})
    agent.emit(type="needs", kind="permission", id="push-1", tool="Bash", input={"command": command})
    agent.answered.wait()
    answer = agent.answer or {}
    allowed = bool(answer.get("allow"))
    agent.emit(type="tool_result", text="pushed" if allowed else f"denied: {answer.get('message') or 'no reason'}")
    return allowed


def main() -> NoReturn:
    # Stdout/stderr are files under the runtime: make every line reach them at once, and never crash on
    # a task the locale cannot encode.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True, errors="backslashreplace")
    try:
        code = run()
    except KeyboardInterrupt:
        code = 130  # Ctrl-C when run by hand: quiet, like a shell command
    sys.exit(code)


if __name__ == "__main__":
    main()
