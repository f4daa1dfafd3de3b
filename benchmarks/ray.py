"""Benchmark: the Ray backend against the local one, on this machine.

Run by hand: `python benchmarks/ray.py [N] [LINES]` (defaults 100 sessions, 200,000 output lines); needs the
ray extra (`pip install -e '.[ray]'`). It starts its own one-node Ray cluster (`ray start --head`) and stops
it at the end (`ray stop`, which stops every Ray cluster on this machine).

For each backend it reports:
- spawn: N sessions spawned at once until all are running (each runs `sleep`), and the time per session;
- output: one session printing LINES lines, from spawn until every line is in the local `stdout.log`, and
  for Ray the remote calls that carried them (lines travel in batches);
- memory: for Ray, the RSS of the actor processes (one Python worker per session).
The Ray overhead per session and per line is the difference between the two backends.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and this file would shadow the `ray` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import asyncio  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from crewtui.config import parse_crew  # noqa: E402
from crewtui.model import SessionState, SpawnRequest  # noqa: E402
from crewtui.runtime.orchestrator import Orchestrator  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def actor_pids() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if b"SessionActor" in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


async def until(predicate, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish")
        await asyncio.sleep(0.01)


async def measure(kind: str, address: str, n: int, lines: int, root: Path) -> dict[str, float]:
    backend = f'[backend]\nkind = "ray"\naddress = "{address}"\nstart_timeout = "10m"\n' if kind == "ray" else ""
    crew = parse_crew(
        f"[crew]\nname = 'bench'\nmax_concurrent = {n + 10}\nkill_grace = '1s'\n{backend}", source="bench.toml"
    )
    orch = await Orchestrator.open(root / kind, crew)
    try:
        await orch.start()
    except BaseException:
        await orch.store.close()
        raise
    out: dict[str, float] = {}
    try:
        warm = await orch.spawn(SpawnRequest(label="warm", argv=[sys.executable, "-c", "print('warm')"]))
        await until(lambda: orch.sessions[warm.key].state.terminal)

        t0 = time.perf_counter()
        spawned = await asyncio.gather(
            *(orch.spawn(SpawnRequest(label=f"bench-{i:04d}", argv=["sleep", "600"])) for i in range(n))
        )
        await until(lambda: all(orch.sessions[s.key].state == SessionState.RUNNING for s in spawned))
        out["spawn_s"] = time.perf_counter() - t0
        if kind == "ray":
            out["actor_rss_mb"] = sum(rss_kb(p) for p in actor_pids()) / 1024
        t1 = time.perf_counter()
        await orch.kill(prefix="bench-")
        out["kill_s"] = time.perf_counter() - t1

        batches0 = orch.drivers.ray.batches if orch.drivers.ray else 0
        t2 = time.perf_counter()
        chatty = await orch.spawn(
            SpawnRequest(
                label="chatty", argv=[sys.executable, "-c", f"for i in range({lines}): print(f'line {{i}} of output')"]
            )
        )
        await until(lambda: orch.sessions[chatty.key].state.terminal)
        out["output_s"] = time.perf_counter() - t2
        log = orch.data_dir.session_dir(chatty.key) / "stdout.log"
        got = log.read_text().count("\n")
        assert got == lines, f"{got} lines arrived, {lines} printed"
        if orch.drivers.ray:
            out["batches"] = orch.drivers.ray.batches - batches0
    finally:
        await orch.stop(kill_sessions=True)
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    lines = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
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
            local = asyncio.run(measure("local", "", n, lines, Path(tmp)))
            ray = asyncio.run(measure("ray", f"127.0.0.1:{port}", n, lines, Path(tmp)))
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)
    print(f"{'':34}{'local':>12}{'ray':>12}")
    print(f"{f'spawn {n} until all running':34}{local['spawn_s']:>11.2f}s{ray['spawn_s']:>11.2f}s")
    print(f"{'  per session':34}{local['spawn_s'] / n * 1000:>10.1f}ms{ray['spawn_s'] / n * 1000:>10.1f}ms")
    print(f"{f'kill {n}':34}{local['kill_s']:>11.2f}s{ray['kill_s']:>11.2f}s")
    print(f"{f'{lines:,} lines until all local':34}{local['output_s']:>11.2f}s{ray['output_s']:>11.2f}s")
    print(f"{'  per line':34}{local['output_s'] / lines * 1e6:>10.2f}us{ray['output_s'] / lines * 1e6:>10.2f}us")
    print(f"ray overhead per session:         {(ray['spawn_s'] - local['spawn_s']) / n * 1000:.1f} ms")
    print(
        f"ray overhead per output line:     {(ray['output_s'] - local['output_s']) / lines * 1e6:.2f} us "
        f"({ray['batches']:.0f} remote calls for {lines:,} lines)"
    )
    print(
        f"ray actor memory:                 {ray['actor_rss_mb']:.0f} MB RSS for {n} sessions "
        f"({ray['actor_rss_mb'] / n:.1f} MB each)"
    )


if __name__ == "__main__":
    main()
