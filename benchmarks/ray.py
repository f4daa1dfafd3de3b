"""Benchmark: the Ray backend (host mode, and actor mode on request) against the local one, on this machine.

Run by hand: `python benchmarks/ray.py [N ...] [--lines LINES] [--actor]` (defaults: 100 and 1,000 sessions,
200,000 output lines; `--actor` adds actor mode, for the first N only: a Python worker per session is heavy).
Needs the ray extra (`pip install -e '.[ray]'`). It starts its own one-node Ray cluster (`ray start --head`) and
stops it at the end (`ray stop`, which stops every Ray cluster on this machine).

For each backend it reports:
- spawn: N sessions spawned at once until all are running (each runs `sleep`), and the time per session;
- memory: what the sessions cost on the node besides their agents (RSS, and PSS, which shares a page among the
  processes that map it): local, the shims; host mode, the shims and what the node's host grew by; actor mode,
  the actor processes (one Python worker per session);
- kill: killing the N sessions;
- output: one session printing LINES lines, from spawn until every line is in the local `stdout.log`, and for
  Ray the remote calls that carried them (lines travel in batches).
The Ray overhead per session and per line is the difference to the local backend in the same run.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and this file would shadow the `ray` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from crewtui.config import parse_crew  # noqa: E402
from crewtui.model import SessionState, SpawnRequest  # noqa: E402
from crewtui.runtime.drivers.ray_hosts import RayHostsDriver  # noqa: E402
from crewtui.runtime.orchestrator import Orchestrator  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in kB."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def pids_with(*needles: bytes) -> list[int]:
    """Processes whose command line holds every needle."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmdline = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if all(n in cmdline for n in needles):
                pids.append(int(d.name))
    return pids


def total_kb(pids: list[int]) -> tuple[int, int]:
    sizes = [memory_kb(p) for p in pids]
    return sum(r for r, _ in sizes), sum(p for _, p in sizes)


async def until(predicate: Any, timeout: float = 1200.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish")
        await asyncio.sleep(0.01)


async def host_info(orch: Orchestrator) -> dict[str, Any]:
    """The one host's pid and node-local dir (the cluster has one node)."""
    driver = orch.drivers.ray
    assert isinstance(driver, RayHostsDriver)
    (link,) = driver.links.values()
    info: dict[str, Any] = await link.actor.info.remote()
    return info


async def measure(kind: str, address: str, n: int, lines: int, root: Path) -> dict[str, float]:
    """One backend: `local`, `host` (Ray, a host per node) or `actor` (Ray, an actor per session)."""
    backend = ""
    if kind != "local":
        backend = (
            f'[backend]\nkind = "ray"\naddress = "{address}"\nmode = "{kind}"\nnamespace = "bench"\n'
            'start_timeout = "20m"\n'
        )
    crew = parse_crew(
        f"[crew]\nname = 'bench'\nmax_concurrent = {n + 10}\nkill_grace = '1s'\n{backend}", source="bench.toml"
    )
    orch = await Orchestrator.open(root / f"{kind}-{n}", crew)
    try:
        await orch.start()
    except BaseException:
        await orch.store.close()
        raise
    out: dict[str, float] = {}
    try:
        warm = await orch.spawn(SpawnRequest(label="warm", argv=[sys.executable, "-c", "print('warm')"]))
        await until(lambda: orch.sessions[warm.key].state.terminal)
        host = await host_info(orch) if kind == "host" else {}
        host_before = memory_kb(host["pid"]) if host else (0, 0)
        # The shims of these sessions (not those of other crews on this machine): by their session dirs.
        where = (host["root"] if host else str(orch.data_dir.root)).encode()

        t0 = time.perf_counter()
        spawned = await asyncio.gather(
            *(orch.spawn(SpawnRequest(label=f"bench-{i:04d}", argv=["sleep", "600"])) for i in range(n))
        )
        await until(lambda: all(orch.sessions[s.key].state == SessionState.RUNNING for s in spawned))
        out["spawn_s"] = time.perf_counter() - t0
        await asyncio.sleep(2.0)  # every output poll made once at least: the host's bookkeeping is all there
        if kind == "actor":
            rss, pss = total_kb(pids_with(b"SessionActor"))
        else:
            shims = pids_with(b"shim.sh", b"--supervise", where)
            rss, pss = total_kb(shims)
            out["shims"] = len(shims)
            if kind == "host":
                grown = memory_kb(host["pid"])
                out["host_rss_mb"] = grown[0] / 1024
                out["host_grew_mb"] = (grown[0] - host_before[0]) / 1024
                rss += grown[0] - host_before[0]
                pss += grown[1] - host_before[1]
        out["rss_mb"], out["pss_mb"] = rss / 1024, pss / 1024

        t1 = time.perf_counter()
        await orch.kill(prefix="bench-")
        out["kill_s"] = time.perf_counter() - t1

        if lines:
            ray = orch.drivers.ray
            batches0 = ray.batches if ray else 0
            t2 = time.perf_counter()
            chatty = await orch.spawn(
                SpawnRequest(
                    label="chatty",
                    argv=[sys.executable, "-c", f"for i in range({lines}): print(f'line {{i}} of output')"],
                )
            )
            await until(lambda: orch.sessions[chatty.key].state.terminal)
            out["output_s"] = time.perf_counter() - t2
            log = orch.data_dir.session_dir(chatty.key) / "stdout.log"
            got = log.read_text().count("\n")
            assert got == lines, f"{got} lines arrived, {lines} printed"
            if ray:
                out["batches"] = ray.batches - batches0
    finally:
        await orch.stop(kill_sessions=True)
    return out


def report(n: int, lines: int, results: dict[str, dict[str, float]]) -> None:
    kinds = list(results)
    local = results["local"]
    print(f"\n{n} sessions" + (f", {lines:,} output lines" if lines else ""))
    print(f"{'':36}" + "".join(f"{k:>14}" for k in kinds))

    def row(name: str, cell: Any) -> None:
        print(f"{name:36}" + "".join(f"{cell(results[k]):>14}" for k in kinds))

    row(f"spawn {n} until all running", lambda r: f"{r['spawn_s']:.2f}s")
    row("  per session", lambda r: f"{r['spawn_s'] / n * 1000:.1f}ms")
    row("  overhead over local, per session", lambda r: f"{(r['spawn_s'] - local['spawn_s']) / n * 1000:.1f}ms")
    row("memory besides the agents, RSS", lambda r: f"{r['rss_mb']:.0f}MB")
    row("  per session, RSS", lambda r: f"{r['rss_mb'] / n:.2f}MB")
    row("  per session, PSS", lambda r: f"{r['pss_mb'] / n:.2f}MB")
    if "host" in results:  # the host's fixed cost too, shared by the node's sessions
        host = results["host"]
        whole = (host["rss_mb"] - host["host_grew_mb"] + host["host_rss_mb"]) / n
        print(f"{'  per session with the whole host, RSS':36}{'':>14}{f'{whole:.2f}MB':>14}")
    row(f"kill {n}", lambda r: f"{r['kill_s']:.2f}s")
    if lines:
        row(f"{lines:,} lines until all local", lambda r: f"{r['output_s']:.2f}s")
        row("  per line", lambda r: f"{r['output_s'] / lines * 1e6:.2f}us")
        row("  remote calls", lambda r: f"{r.get('batches', 0):.0f}")
    if "host" in results:
        print(f"(the host process: {results['host']['host_rss_mb']:.0f} MB RSS with {n} sessions)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="*", type=int, default=[100, 1000])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--actor", action="store_true", help="also actor mode (for the first N only)")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="crb-ray-", dir="/tmp")
    subprocess.run(
        [
            RAY,
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
        ],
        check=True,
        capture_output=True,
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i, n in enumerate(args.n):
                lines = args.lines if i == 0 else 0
                kinds = ["local", "host"] + (["actor"] if args.actor and i == 0 else [])
                results = {k: asyncio.run(measure(k, f"127.0.0.1:{port}", n, lines, Path(tmp))) for k in kinds}
                report(n, lines, results)
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)
        for left in Path(tempfile.gettempdir(), "crewtui-bench").glob("*"):
            shutil.rmtree(left, ignore_errors=True)


if __name__ == "__main__":
    main()
