"""Soak: many short sessions through crons with watchdogs and random failures, then an audit of the store.

Run by hand: `python benchmarks/soak.py` (1,000 sessions over 10 minutes), or `--short` (about 150 sessions
over 40 s, the whole run under 2 minutes; `tests/faults/test_soak_short.py` runs it in CI).

A real headless runtime (`crewtui run --headless`) serves a crew whose agent is the demo agent with random
fates: a tool failure (10%), a hang (5%, which its watchdog kills and retries), a rate limit (5%, exit 75,
retried by its pool with backoff). Five `every` jobs added through the control socket fire batches of four
sessions, with a watchdog (6 s, two attempts), until N sessions have been spawned; a sweep job runs
alongside. Then the jobs are removed, the crew drains, the runtime stops and the store is audited:

- every session ended, with exactly one terminal state per attempt and its last event matching its row;
- every cron run is final and unique per (job, nominal time); it lists each of its sessions once, and its
  counts and completion rate agree with the sessions' final states (summed over runs: done == the sessions
  done with a cron run, spawned == the sessions with a cron run);
- the event log has no gap and no duplicate; no session process is left running.

Reported: sessions, outcomes, retries, completion rate, runtime RSS over time (sampled from
/proc/PID/status; growth after warm-up, target flat) and the size of the event log. Exit code 1 if an audit
check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crewtui.control.client import RemoteRuntime
from crewtui.locations import DataDir
from crewtui.runtime.drivers import pid_alive_with_start, read_launch

JOBS = 5
ITEMS = 4
TERMINAL = {"done", "failed", "timed_out", "killed", "lost"}
LIVE = ("pending", "running", "yielded")

CREW = """
[crew]
name = "soak"
max_concurrent = 60
stale_after = "30s"
kill_grace = "1s"

[agents.worker]
command = ["{python}", "-m", "crewtui.agents.demo", "--task", "{task}", "--duration", "1.5", "--interval", "0.5",
           "--fail-rate", "0.1", "--hang-rate", "0.05", "--rate-limit-rate", "0.05"]
pool = "model"

[pools.model]
max_concurrent = 40
rate = "20/s"
retry_on_exit = [75]
backoff = { base = "200ms", max = "2s" }

[[cron]]
name = "sweep-stale"
schedule = { kind = "every", every = "10s" }
action = "sweep"
"""


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rpartition(b") ")[2][:1] == b"Z"
    except OSError:
        return False


def start_runtime(data_dir: Path, crew: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREWTUI_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crewtui", "run", str(crew), "--headless", "--data-dir", str(data_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )  # a terminal's SIGINT/SIGHUP must not stop it mid-soak
    sock = DataDir(data_dir).socket
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"runtime exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        if sock.exists() and asyncio.run(RemoteRuntime(sock, data_dir).ping()):
            return proc
        if time.monotonic() > deadline:
            raise SystemExit("runtime did not start")
        time.sleep(0.1)


async def drive(rt: RemoteRuntime, pid: int, sessions: int, seconds: float, log: Any) -> dict[str, Any]:
    """Add the jobs, remove each after its last fire, sample RSS; return the samples and timings."""
    per_fire = ITEMS
    fires_per_job = max(1, math.ceil(sessions / (JOBS * per_fire)))
    every = max(1.0, seconds / fires_per_job)
    now = time.time()
    for j in range(JOBS):
        anchor = datetime.fromtimestamp(math.ceil(now) + 2 + j * every / JOBS, tz=UTC).isoformat()
        await rt.cron_add(
            {
                "name": f"soak{j}",
                "schedule": {"kind": "every", "every": f"{every:g}s", "anchor": anchor},
                "overlap": "allow",
                "misfire": "run_all",
                "watchdog_after": "6s",
                "max_attempts": 2,
                "spawn": {
                    "agent": "worker",
                    "label": f"soak{j}-{{item}}-{{run}}",
                    "task": f"job {j} item {{item}} run {{run}}",
                    "items": [f"i{n}" for n in range(per_fire)],
                },
            }
        )
    log(
        f"{JOBS} jobs x {per_fire} sessions every {every:g}s, {fires_per_job} fires each "
        f"(~{JOBS * per_fire * fires_per_job} sessions over ~{fires_per_job * every:.0f}s)"
    )
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    live_jobs = {f"soak{j}" for j in range(JOBS)}
    next_sample = t0
    while live_jobs:
        if time.monotonic() >= next_sample:
            samples.append((time.monotonic() - t0, rss_kb(pid)))
            next_sample += 5
        for job in sorted(live_jobs):
            runs = await rt.runs(job, limit=fires_per_job + 5)
            if len(runs) >= fires_per_job:
                await rt.cron_remove(job)
                live_jobs.discard(job)
        await asyncio.sleep(0.5)
    fired_for = time.monotonic() - t0
    at_last_fire = rss_kb(pid)
    log(f"all fires done after {fired_for:.0f}s; draining")
    deadline = time.monotonic() + 180
    while True:
        # Only the live states: listing all 1,000 sessions twice a second would measure this loop, not the runtime.
        live = [s for st in LIVE for s in await rt.list(state=st)]
        open_runs = [r for r in await rt.runs(limit=10_000) if not r.final]
        if not live and not open_runs:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"did not drain: {len(live)} live sessions, {len(open_runs)} open runs")
        if time.monotonic() >= next_sample:
            samples.append((time.monotonic() - t0, rss_kb(pid)))
            next_sample += 5
        await asyncio.sleep(0.5)
    samples.append((time.monotonic() - t0, rss_kb(pid)))
    return {
        "samples": samples,
        "fired_for": fired_for,
        "drained_at": time.monotonic() - t0,
        "at_last_fire": at_last_fire,
    }


def audit(data_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """Read the store as another process would and check the invariants; (figures, problems)."""
    db = DataDir(data_dir).store
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    problems: list[str] = []
    sessions = {k: json.loads(d) for k, d in conn.execute("SELECT key, data FROM sessions")}
    runs = [json.loads(d) for (d,) in conn.execute("SELECT data FROM cron_runs")]
    seqs = [s for (s,) in conn.execute("SELECT seq FROM events ORDER BY seq")]
    events = [json.loads(d) for (d,) in conn.execute("SELECT data FROM events ORDER BY seq")]
    pairs = conn.execute("SELECT job, nominal FROM cron_runs").fetchall()
    conn.close()

    if seqs != list(range(1, len(seqs) + 1)):
        problems.append(f"event log has gaps or duplicates ({len(seqs)} rows, max seq {seqs[-1] if seqs else 0})")
    if len(pairs) != len(set(pairs)):
        problems.append("a cron fire was recorded twice")

    # Exactly one terminal state per attempt, and the last state event matches the row.
    by_session: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["kind"] == "session_state_changed":
            by_session[e["session"]].append(e)
    for key, s in sessions.items():
        if s["state"] not in TERMINAL:
            problems.append(f"{s['label']} ({key}) did not end: {s['state']}")
            continue
        changes = by_session.get(key, [])
        per_attempt = Counter(e["attempt"] for e in changes if e["new"] in TERMINAL)
        started = {e["attempt"] for e in changes}
        bad = {a: n for a, n in per_attempt.items() if n != 1} | {a: 0 for a in started if a not in per_attempt}
        if bad:
            problems.append(
                f"{s['label']}: terminal states per attempt {dict(per_attempt)} (attempts {sorted(started)})"
            )
        if not changes or changes[-1]["new"] != s["state"]:
            problems.append(f"{s['label']}: last event {changes[-1]['new'] if changes else None} != row {s['state']}")

    # Completion rates add up.
    in_runs: Counter[str] = Counter()
    for r in runs:
        if not r["final"]:
            problems.append(f"run {r['id']} is not final")
        in_runs.update(r["sessions"])
        states = Counter(sessions[k]["state"] for k in r["sessions"] if k in sessions)
        missing = [k for k in r["sessions"] if k not in sessions]
        if missing:
            problems.append(f"run {r['id']} lists unknown sessions {missing}")
        c = r["counts"]
        spawned = len(r["sessions"]) + len(r["refused"])
        if c.get("spawned") != spawned or c.get("done") != states["done"]:
            problems.append(f"run {r['id']}: counts {c} disagree with its sessions {dict(states)}")
        rate = states["done"] / spawned if spawned else None
        if (rate is None) != (r["rate"] is None) or (rate is not None and abs(rate - r["rate"]) > 1e-9):
            problems.append(f"run {r['id']}: rate {r['rate']} but {states['done']}/{spawned} done")
        for st in ("failed", "timed_out", "killed", "lost"):
            if c.get(st, 0) != states[st] + (len(r["refused"]) if st == "failed" else 0):
                problems.append(f"run {r['id']}: {st} {c.get(st)} but sessions say {states[st]}")
    with_run = {k: s for k, s in sessions.items() if s.get("cron_run")}
    if any(n != 1 for n in in_runs.values()):
        problems.append("a session is listed by more than one run")
    if set(in_runs) != set(with_run):
        problems.append(f"{len(set(with_run) - set(in_runs))} sessions name a run that does not list them")
    for k, s in with_run.items():
        if k not in {x for r in runs if r["id"] == s["cron_run"] for x in r["sessions"]}:
            problems.append(f"{s['label']} names run {s['cron_run']}, which does not list it")
    done_by_runs = sum(r["counts"].get("done", 0) for r in runs)
    done_sessions = sum(1 for s in with_run.values() if s["state"] == "done")
    spawned_by_runs = sum(len(r["sessions"]) for r in runs)
    if done_by_runs != done_sessions:
        problems.append(f"sum of done over runs {done_by_runs} != sessions done with a cron run {done_sessions}")
    if spawned_by_runs != len(with_run):
        problems.append(f"sum of spawned over runs {spawned_by_runs} != sessions with a cron run {len(with_run)}")

    # No session process left behind (a zombie has ended: it only waits for init to reap it).
    dd = DataDir(data_dir)
    running = []
    for key in sessions:
        info = read_launch(dd.session(key))
        if info is not None and pid_alive_with_start(info.shim_pid, info.shim_start) and not zombie(info.shim_pid):
            running.append(key)
    if running:
        problems.append(f"{len(running)} session processes still running after the crew ended")

    kinds = Counter(e["kind"] for e in events)
    retries = Counter(e["cause"] for e in events if e["kind"] == "session_retried")
    wd = Counter(e["outcome"] for e in events if e["kind"] == "watchdog_fired")
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    figures = {
        "sessions": len(sessions),
        "with_cron_run": len(with_run),
        "states": dict(Counter(s["state"] for s in sessions.values())),
        "attempts_over_1": sum(1 for s in sessions.values() if s["attempt"] > 1),
        "retries": dict(retries),
        "watchdogs": dict(wd),
        "runs": len(runs),
        "completion_rate": done_by_runs / spawned_by_runs if spawned_by_runs else None,
        "events": len(events),
        "event_kinds": dict(kinds),
        "store_bytes": size,
        "bytes_per_session": size / len(sessions) if sessions else 0,
    }
    return figures, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=None, help="sessions to spawn (default 1000; 150 with --short)")
    parser.add_argument("--minutes", type=float, default=None, help="firing time (default 10; 0.67 with --short)")
    parser.add_argument("--short", action="store_true", help="the CI variant: ~150 sessions, under 2 minutes in all")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep the data here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    sessions = args.sessions or (150 if args.short else 1000)
    minutes = args.minutes or (0.67 if args.short else 10.0)
    log = (lambda *a: None) if args.quiet else (lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True))

    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="crewtui-soak-")
        base = Path(tmp.name)
    else:
        base = args.data_dir
        base.mkdir(parents=True, exist_ok=True)
    data_dir = base / "data"
    crew = base / "soak.toml"
    crew.write_text(CREW)
    started = time.monotonic()
    proc = start_runtime(data_dir, crew)
    log(f"runtime pid {proc.pid} on {data_dir}; {sessions} sessions over {minutes:g} min")
    rt = RemoteRuntime(DataDir(data_dir).socket, data_dir)
    try:
        run = asyncio.run(drive(rt, proc.pid, sessions, minutes * 60, log))
    except BaseException:
        print(f"runtime exit code {proc.poll()}", file=sys.stderr)
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1].decode(errors="replace")
        if err.strip():
            log(f"runtime said: {err.strip()[-2000:]}")
    if proc.returncode != 0:
        print(f"runtime exited {proc.returncode}: {err}", file=sys.stderr)
    figures, problems = audit(data_dir)
    if proc.returncode != 0:
        problems.append(f"runtime exited {proc.returncode}")

    samples = run["samples"]
    warm = [kb for t, kb in samples if t >= min(60.0, run["fired_for"] * 0.25)] or [samples[-1][1]]
    figures.update(
        {
            "wall_seconds": round(time.monotonic() - started, 1),
            "firing_seconds": round(run["fired_for"], 1),
            "rss_kb": {
                "start": samples[0][1],
                "after_warmup": warm[0],
                "at_last_fire": run["at_last_fire"],
                "peak": max(kb for _, kb in samples),
                "end": samples[-1][1],
                "growth_after_warmup": samples[-1][1] - warm[0],
            },
            "rss_samples": samples,
            "problems": problems,
        }
    )
    r = figures["rss_kb"]
    print(f"sessions spawned:      {figures['sessions']} ({figures['with_cron_run']} by {figures['runs']} cron runs)")
    print(f"final states:          {figures['states']}")
    print(f"retries:               {figures['retries']}; watchdogs {figures['watchdogs']}")
    print(f"completion rate:       {figures['completion_rate']:.1%} (done / spawned over all runs)")
    print(
        f"runtime RSS:           start {r['start'] / 1024:.1f} MB, after warm-up {r['after_warmup'] / 1024:.1f} MB, "
        f"at the last fire {r['at_last_fire'] / 1024:.1f} MB, peak {r['peak'] / 1024:.1f} MB, "
        f"end {r['end'] / 1024:.1f} MB "
        f"(growth after warm-up {r['growth_after_warmup'] / 1024:+.1f} MB)"
    )
    print(
        f"event log:             {figures['events']} events, store {figures['store_bytes'] / 1e6:.2f} MB "
        f"({figures['bytes_per_session'] / 1024:.1f} kB per session)"
    )
    print(f"wall time:             {figures['wall_seconds']} s ({figures['firing_seconds']} s firing)")
    print("audit:                 " + ("OK" if not problems else f"{len(problems)} problem(s)"))
    for p in problems[:30]:
        print(f"  - {p}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
