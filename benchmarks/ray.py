"""Benchmark: the Ray backend (host mode, and actor mode on request) against the local one, on this machine.

Run by hand: `python benchmarks/ray.py [N ...] [--lines LINES] [--actor]` (defaults: 100 and 1,000 sessions,
200,000 output lines; `--actor` adds actor mode, for the first N only: a Python worker per session is heavy), or
`python benchmarks/ray.py --gateway REQUESTS` for the model gateway's door on a node (below) alone.
Needs the ray extra (`pip install -e '.[ray]'`). It starts its own one-node Ray cluster (`ray start --head`) and
stops it at the end (its own processes only: other Ray clusters on this machine go on).

For each backend it reports:
- spawn: N sessions spawned at once until all are running (each runs `sleep`), and the time per session;
- memory: what the sessions cost on the node besides their agents (RSS, and PSS, which shares a page among the
  processes that map it): local, the shims; host mode, the shims and what the node's host grew by; actor mode,
  the actor processes (one Python worker per session);
- kill: killing the N sessions;
- output: one session printing LINES lines, from spawn until every line is in the local `stdout.log`, and for
  Ray the remote calls that carried them (lines travel in batches).
The Ray overhead per session and per line is the difference to the local backend in the same run.

`--gateway REQUESTS`: one session makes REQUESTS model requests one after another (non-streamed, on one
keep-alive connection) to the fake Anthropic upstream of benchmarks/gateway.py, three ways in the same run:
straight to the upstream (a local session with no pool: the baseline), through the runtime's gateway (a local
session of a gateway pool), and through the gateway's door on its Ray node (a session of that pool on the
cluster: each request is admitted by the runtime's gateway over the host's link before it goes). p50 and p99
per request, and what each way adds.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and this file would shadow the `ray` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests.raycluster

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from crewtui.config import parse_crew  # noqa: E402
from crewtui.model import SessionState, SpawnRequest  # noqa: E402
from crewtui.runtime.drivers.ray_hosts import RayHostsDriver  # noqa: E402
from crewtui.runtime.orchestrator import Orchestrator  # noqa: E402
from tests.raycluster import local_cluster  # noqa: E402


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


# A session that times its model requests: REQUESTS sequential POSTs on one keep-alive connection to
# $ANTHROPIC_BASE_URL/v1/messages; its result is each request's milliseconds. (No braces: the crew file's
# command templates take {task} and the like.)
TIMED_CLIENT = """
import http.client, json, os, sys, time, urllib.parse
base = urllib.parse.urlsplit(os.environ["ANTHROPIC_BASE_URL"])
conn = http.client.HTTPConnection(base.hostname, base.port, timeout=60)
body = json.dumps(dict(model="m", max_tokens=64, messages=[dict(role="user", content="hi")]))
headers = dict([("content-type", "application/json"), ("x-api-key", "sk-bench"), ("anthropic-version", "2023-06-01")])
ms = []
for i in range(int(sys.argv[1]) + 20):  # the first 20 warm the way up, and are not counted
    t = time.perf_counter()
    conn.request("POST", base.path + "/v1/messages", body=body, headers=headers)
    reply = conn.getresponse()
    reply.read()
    if reply.status != 200:
        sys.exit("request %d: HTTP %d" % (i, reply.status))
    ms.append((time.perf_counter() - t) * 1000.0)
print(json.dumps(dict(ms=ms[20:])))
"""


async def timed(crew_text: str, root: Path, agent: str, requests: int) -> list[float]:
    """One session of `agent` that times its requests; their milliseconds."""
    orch = await Orchestrator.open(root, parse_crew(crew_text, source="bench.toml"))
    await orch.start()
    try:
        s = await orch.spawn(SpawnRequest(label=f"timed-{agent}", agent=agent, task="x"))
        await until(lambda: orch.sessions[s.key].state.terminal, 600)
        done = orch.sessions[s.key]
        if not isinstance(done.result, dict) or "ms" not in done.result:
            raise RuntimeError(f"{agent}: {done.state.value}: {done.reason}")
        return [float(x) for x in done.result["ms"]]
    finally:
        await orch.stop(kill_sessions=True)


async def gateway_door(address: str, requests: int, root: Path) -> None:
    gateway_bench = Path(__file__).resolve().with_name("gateway.py")
    upstream = await asyncio.create_subprocess_exec(
        sys.executable, str(gateway_bench), "--role", "upstream", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert upstream.stdout is not None and upstream.stdin is not None
    port = json.loads(await upstream.stdout.readline())["port"]
    url = f"http://127.0.0.1:{port}"
    command = f"command = [{json.dumps(sys.executable)}, '-c', {json.dumps(TIMED_CLIENT)}, '{requests}']"
    pool = f'[pools.anthropic]\nprovider = "anthropic"\nupstream = "{url}"\n'
    local = (
        f"[crew]\nname = 'bench'\n{pool}"
        f'[agents.direct]\n{command}\nenv = {{ ANTHROPIC_BASE_URL = "{url}" }}\n'
        f'[agents.gateway]\n{command}\npool = "anthropic"\n'
    )
    on_ray = (
        f'[crew]\nname = \'bench\'\n[backend]\nkind = "ray"\naddress = "{address}"\nnamespace = "bench"\n{pool}'
        f'[agents.door]\n{command}\npool = "anthropic"\n'
    )
    try:
        results = {
            "direct to the upstream": await timed(local, root / "direct", "direct", requests),
            "through the runtime's gateway": await timed(local, root / "gateway", "gateway", requests),
            "through its node's door": await timed(on_ray, root / "door", "door", requests),
        }
    finally:
        upstream.stdin.close()
        await upstream.wait()
    base = statistics.median(results["direct to the upstream"])
    print(f"\nmodel requests, {requests} one after another per way (non-streamed, keep-alive), in ms")
    print(f"{'':32}{'p50':>9}{'p99':>9}{'added p50':>12}")
    for name, ms in results.items():
        ms.sort()
        p50, p99 = statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        print(f"{name:32}{p50:9.2f}{p99:9.2f}{p50 - base:+12.2f}")


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
    parser.add_argument("--gateway", type=int, default=0, metavar="REQUESTS", help="only the gateway door comparison")
    args = parser.parse_args()
    with local_cluster(cpus=2, crew="bench") as address, tempfile.TemporaryDirectory() as tmp:
        if args.gateway:
            asyncio.run(gateway_door(address, args.gateway, Path(tmp)))
            return
        for i, n in enumerate(args.n):
            lines = args.lines if i == 0 else 0
            kinds = ["local", "host"] + (["actor"] if args.actor and i == 0 else [])
            results = {k: asyncio.run(measure(k, address, n, lines, Path(tmp))) for k in kinds}
            report(n, lines, results)


if __name__ == "__main__":
    main()
