"""A real Ray cluster on this machine for the Ray tests and benchmarks/ray.py: started as a user starts one, and
stopped without touching any other Ray cluster here (a developer's own, another test worker's)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

RAY_BIN = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_pids(temp: str) -> set[int]:
    """The processes of the Ray cluster whose temp dir is `temp`: those that name it on their command line (GCS,
    raylets, monitors; a node that joined takes the head's session dir) and all their descendants (workers and
    agents, which rename themselves `ray::...`)."""
    parents: dict[int, int] = {}
    roots: set[int] = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes()
            stat = (d / "stat").read_text()
        except OSError:
            continue
        parents[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        if temp.encode() in cmdline:
            roots.add(int(d.name))
    found = set(roots)
    while True:
        more = {pid for pid, ppid in parents.items() if ppid in found} - found
        if not more:
            return found
        found |= more


def stop_cluster(temp: str) -> None:
    """Kill the cluster of temp dir `temp` (or the sessions under a host dir), and only it: `ray stop --force`
    would end every Ray cluster on the machine (a developer's own, another test worker's)."""
    deadline = time.monotonic() + 30
    while (pids := cluster_pids(temp) - {os.getpid()}) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    assert not pids, f"processes of {temp} outlived SIGKILL: {sorted(pids)}"


@contextlib.contextmanager
def local_cluster(gpus: int = 0, cpus: int = 4, crew: str = "crewtui") -> Iterator[str]:
    """A real one-node Ray cluster, started the way a user starts one (with `gpus` GPUs Ray counts, none of them
    real); its address. At the end it is stopped, with what sessions of crew `crew` left on its hosts."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="crt-ray-", dir="/tmp")  # Ray's socket paths must stay short
    started = subprocess.run(
        [
            RAY_BIN,
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={cpus}",
            f"--num-gpus={gpus}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr[-2000:]
    hosts = Path(tempfile.gettempdir()) / f"crewtui-{crew}"  # the node-local dirs of host mode's hosts
    before = set(hosts.iterdir()) if hosts.is_dir() else set()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)
        for left in set(hosts.iterdir()) - before if hosts.is_dir() else ():
            stop_cluster(str(left))  # sessions a test left on a host: their shims outlive Ray (their dir is in argv)
            shutil.rmtree(left, ignore_errors=True)
