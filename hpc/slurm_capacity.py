"""How many tasks of one shape a SLURM partition can run at once, from what SLURM says of its
nodes (`sinfo`: CPUs, memory, GPUs, features, state).

Why: an array's `%N` is only an upper bound. A 2-CPU node runs two 1-CPU tasks however large N
is, and a forecast that assumes N slots is wrong by the ratio. This is the partition's size, not
its current load: other users' jobs and queue wait are not counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from hpc.slurm_ctl import SlurmError, sinfo_nodes

# Node states (sinfo's compact %t, suffixes such as "~" for powered down stripped) whose nodes
# take new jobs; down, drained, draining, failed and maintenance nodes do not.
USABLE_STATES = frozenset({"idle", "mix", "alloc", "comp", "plnd", "resv"})
SINFO_FORMAT = "%P|%N|%c|%m|%G|%f|%t"


@dataclass(frozen=True)
class NodeResources:
    name: str
    cpus: int
    mem_mb: int
    gpus: int
    features: frozenset[str]
    state: str  # compact, without suffixes

    @property
    def usable(self) -> bool:
        return self.state in USABLE_STATES


@dataclass(frozen=True)
class TaskShape:
    """What one array task asks for (`--cpus-per-task`, `--mem`, `--gpus-per-node`, ...)."""

    cpus: int
    mem_mb: int
    gpus_per_node: int = 0
    nodes: int = 1
    exclusive: bool = False
    constraint: str | None = None


@dataclass(frozen=True)
class Capacity:
    partition: str
    nodes: int  # usable nodes that match the constraint
    slots: int  # tasks of the shape that fit at once
    limited_by: str  # what bounds a node's tasks: "CPUs", "memory", "GPUs", "exclusive" or ""

    def describe(self) -> str:
        why = f" (by {self.limited_by})" if self.limited_by else ""
        return (f"partition {self.partition}: {self.nodes} usable nodes run {self.slots} such "
                f"tasks at once{why}")


def parse_gpus(gres: str) -> int:
    """GPUs in a node's GRES string: "gpu:h200:8(S:0-1)", "gpu:4,shard:8", "(null)"."""
    total = 0
    for entry in gres.split(","):
        parts = entry.split("(")[0].split(":")
        if parts[0] == "gpu" and len(parts) > 1 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def parse_sinfo(text: str, partition: str | None) -> tuple[str, list[NodeResources]]:
    """The nodes of `partition` (None: the default one, marked "*") in `sinfo -N -o SINFO_FORMAT`
    output, and the partition's name."""
    nodes: dict[str, NodeResources] = {}
    name = partition
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 7:
            continue
        part, node, cpus, mem, gres, features, state = fields
        is_default = part.endswith("*")
        part = part.rstrip("*")
        if (partition is None and not is_default) or (partition is not None and part != partition):
            continue
        name = part
        nodes[node] = NodeResources(
            node, int(cpus), int(re.sub(r"\D", "", mem) or 0), parse_gpus(gres),
            frozenset(f for f in features.split(",") if f and f != "(null)"),
            re.sub(r"[^a-z]", "", state.lower()))
    return name or "(default)", list(nodes.values())


def node_slots(node: NodeResources, shape: TaskShape) -> tuple[int, str]:
    """Tasks of `shape` that fit on one node at once, and the resource that bounds them."""
    if shape.exclusive:
        return 1, "exclusive"
    bounds = {"CPUs": node.cpus // max(1, shape.cpus)}
    if shape.mem_mb > 0 and node.mem_mb > 0:
        bounds["memory"] = node.mem_mb // shape.mem_mb
    if shape.gpus_per_node > 0:
        bounds["GPUs"] = node.gpus // shape.gpus_per_node
    limit = min(bounds, key=lambda k: bounds[k])
    return bounds[limit], limit


def matches(node: NodeResources, constraint: str | None) -> bool:
    """A plain feature name must be among the node's features; an expression (`a&b`, `a|b`,
    counts) is not evaluated here and matches every node."""
    if not constraint or not re.fullmatch(r"[\w.-]+", constraint):
        return True
    return constraint in node.features


def slots_for(per_node: Sequence[int], nodes_per_task: int) -> int:
    """Tasks that run at once when each takes a slot on `nodes_per_task` different nodes: the
    largest k with sum(min(c, k)) >= k * nodes_per_task."""
    lo, hi = 0, sum(per_node) // nodes_per_task  # feasible, and an upper bound
    while lo < hi:
        k = (lo + hi + 1) // 2
        if sum(min(c, k) for c in per_node) >= k * nodes_per_task:
            lo = k
        else:
            hi = k - 1
    return lo


def capacity(nodes: Sequence[NodeResources], shape: TaskShape, partition: str) -> Capacity:
    fit = [node_slots(n, shape) for n in nodes if n.usable and matches(n, shape.constraint)]
    per_node = [c for c, _ in fit]
    limits = {why for c, why in fit if c == min(per_node)} if fit else set()
    limited_by = sorted(limits)[0] if len(limits) == 1 else ", ".join(sorted(limits))
    return Capacity(partition, len(fit), slots_for(per_node, max(1, shape.nodes)), limited_by)


def partition_capacity(partition: str | None, shape: TaskShape, timeout: float = 10
                       ) -> Capacity:
    """What the controller says `partition` (None: the default) can run of `shape`; raises
    SlurmError when sinfo is missing, fails or does not answer in `timeout` seconds."""
    name, nodes = parse_sinfo(sinfo_nodes(SINFO_FORMAT, timeout), partition)
    if not nodes:
        raise SlurmError(f"sinfo lists no nodes in partition {partition or '(default)'}")
    return capacity(nodes, shape, name)
