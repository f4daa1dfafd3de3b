"""Admitting a host-mode session against Ray's accounting: one placement group of one bundle per session.

A session that asks for resources (`AgentResources`: CPUs, GPUs, memory, custom resources, node labels) holds
a detached placement group named after its runtime, key and attempt while it runs, so Ray's view of each
node stays true for every other user of the cluster, and Ray, not crewtui, decides the node: the session then
runs on that node's host. The group is removed when the session's end is recorded (or it is lost); a restarted
runtime finds it again by name, and removes those of sessions it no longer runs.

A session that asks for nothing (or only for node labels) takes no reservation, as a local process would not.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from crewtui.errors import CrewError, first_line

if TYPE_CHECKING:
    from crewtui.config import AgentResources

log = logging.getLogger("crewtui.ray.place")

PREFIX = "crewtui-"


def group_name(tag: str, key: str, attempt: int) -> str:
    """The placement group of one session attempt (`tag`: its runtime's `owner_tag`)."""
    return f"{PREFIX}{tag}-{key}-{attempt}"


def bundle(resources: AgentResources | None) -> dict[str, float] | None:
    """The one bundle a session reserves, in Ray's resource names; None if it asks for nothing countable."""
    if resources is None:
        return None
    wanted: dict[str, float] = {}
    for name, amount in (("CPU", resources.num_cpus), ("GPU", resources.num_gpus), ("memory", resources.memory)):
        if amount:
            wanted[name] = float(amount)
    wanted.update({name: float(amount) for name, amount in resources.custom.items() if amount})
    return wanted or None


def labels(resources: AgentResources | None) -> dict[str, str]:
    return dict(resources.node_labels) if resources is not None else {}


def matches(node_labels: dict[str, str], wanted: dict[str, str]) -> bool:
    """Whether a node's labels satisfy a session's (exact values)."""
    return all(node_labels.get(k) == v for k, v in wanted.items())


async def reserve(
    ray: Any, name: str, key: str, resources: AgentResources, wanted: dict[str, float], timeout: float, said: float
) -> tuple[Any, str]:
    """Create the session's placement group and wait until Ray has placed it; (group, node id), or CrewError saying
    which resources nobody has (or that those who have them are busy) after `timeout` seconds (of `said`, the
    start timeout)."""
    selector = labels(resources)
    pg = await asyncio.to_thread(
        ray.util.placement_group,
        [wanted],
        strategy="STRICT_PACK",
        name=name,
        lifetime="detached",
        bundle_label_selector=[selector] if selector else None,
    )
    try:
        await asyncio.wait_for(pg.ready(), max(0.1, timeout))
        table = await asyncio.to_thread(ray.util.placement_group_table, pg)
    except BaseException as exc:
        await remove(ray, pg)
        if not isinstance(exc, TimeoutError):
            raise
        why = await asyncio.to_thread(nobody_has, ray, wanted, selector)
        raise CrewError(
            f"session {key} did not start: no Ray node took it within {said:g}s "
            f"(asked for {resources.ray_options()}; {why})"
        ) from None
    node_id = (table.get("bundles_to_node_id") or {}).get(0)
    if not node_id:
        await remove(ray, pg)
        raise CrewError(f"session {key} did not start: Ray placed its resources on no node")
    return pg, str(node_id)


def nobody_has(ray: Any, wanted: dict[str, float], selector: dict[str, str]) -> str:
    """Why a bundle waits: the first resource no live node has that much of, else that the nodes are busy."""
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
    except Exception as exc:
        return f"the cluster's nodes could not be listed: {exc}"
    fitting = [n for n in nodes if matches(n.get("Labels") or {}, selector)]
    if selector and not fitting:
        return f"no live node has the labels {selector}"
    for name, amount in wanted.items():
        most = max((float((n.get("Resources") or {}).get(name, 0.0)) for n in fitting), default=0.0)
        if most < amount:
            return f"no live node has {name} {amount:g}" + (f" (at most {most:g})" if most else "")
    return "the nodes that have them are busy with other work"


def _gpu_ids() -> list[str]:
    """(Run as a Ray task inside a session's bundle.) The GPU ids Ray gave the bundle."""
    import ray

    return [str(i) for i in ray.get_gpu_ids()]


async def gpu_ids(ray: Any, pg: Any, key: str, gpus: float, timeout: float) -> str:
    """The ids of the GPUs Ray reserved in the session's placement group, as `CUDA_VISIBLE_DEVICES` wants them:
    a task that asks for all the bundle's GPUs is given exactly those (Ray ties a bundle to particular GPUs when
    it places it), so two sessions on one node never share a GPU they did not ask to share."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    task = ray.remote(_gpu_ids).options(
        num_cpus=0, num_gpus=gpus, scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0), max_retries=0
    )
    try:
        ids = await asyncio.wait_for(asyncio.wrap_future(task.remote().future()), max(1.0, timeout))
    except Exception as exc:
        why = "no answer in time" if isinstance(exc, TimeoutError) else first_line(exc)
        raise CrewError(f"session {key} did not start: Ray did not say which GPUs it reserved for it ({why})") from None
    return ",".join(ids)


def find(ray: Any, name: str) -> Any | None:
    """A placement group by name, if it still exists."""
    try:
        return ray.util.get_placement_group(name)
    except ValueError:
        return None


async def remove(ray: Any, pg: Any) -> None:
    try:
        await asyncio.to_thread(ray.util.remove_placement_group, pg)
    except Exception as exc:  # already gone
        log.info("remove placement group: %s", exc)


def names_of(ray: Any, tag: str) -> list[str]:
    """The names of this runtime's placement groups that still hold resources (for the orphan sweep)."""
    try:
        table = ray.util.placement_group_table()
    except Exception as exc:
        log.warning("cannot list placement groups: %s", exc)
        return []
    rows = table.values()
    return [
        row["name"]
        for row in rows
        if str(row.get("name") or "").startswith(f"{PREFIX}{tag}-") and row.get("state") != "REMOVED"
    ]
