"""The task's memory against its limit: its cgroup's where one is set, else the node's.

Why the cgroup: SLURM confines each job's memory with a cgroup, and the kernel's OOM killer ends a
task at that limit long before a shared node runs out. "Used" is the working set, the cgroup's
usage less its inactive page cache (what the kernel cannot simply take back), as cAdvisor and the
kubelet count it. Both cgroup versions are read: v1's memory controller where it is mounted,
else v2's unified hierarchy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CgroupFiles:
    """Where one cgroup version keeps a cgroup's memory figures."""

    usage: str
    limit: str  # a number, or "max" (v2) / a number above the node's memory (v1): no limit
    inactive: str  # the line of memory.stat that counts inactive page cache


V1 = CgroupFiles("memory.usage_in_bytes", "memory.limit_in_bytes", "total_inactive_file")
V2 = CgroupFiles("memory.current", "memory.max", "inactive_file")


@dataclass(frozen=True)
class MemoryUse:
    """Bytes in use and the limit they count against; `scope` is `cgroup` or `node`."""

    used_bytes: int
    limit_bytes: int
    scope: str


def memory_use(proc_cgroup: Path = Path("/proc/self/cgroup"),
               root: Path = CGROUP_ROOT) -> MemoryUse:
    """This process's memory use against the nearest cgroup at or above its own that sets a
    limit below the node's memory; the node's use and size where none does."""
    node = psutil.virtual_memory()
    with contextlib.suppress(OSError, ValueError):
        for mount, leaf, files in _hierarchies(proc_cgroup, root):
            for folder in (leaf, *leaf.parents):
                if not folder.is_relative_to(mount):
                    break
                limit = _read_int(folder / files.limit)
                if limit is not None and limit < node.total:
                    return MemoryUse(_working_set(folder, files), limit, "cgroup")
    return MemoryUse(node.total - node.available, node.total, "node")


def _hierarchies(proc_cgroup: Path, root: Path) -> Iterator[tuple[Path, Path, CgroupFiles]]:
    """(mount, this process's cgroup folder, files) of v1's memory controller, then of v2's
    unified hierarchy where it has the memory controller."""
    lines = [line.split(":", 2) for line in proc_cgroup.read_text().splitlines()]
    for _, controllers, path in lines:
        if "memory" in controllers.split(","):
            yield root / "memory", root / "memory" / path.lstrip("/"), V1
    unified = root / "cgroup.controllers"
    if unified.exists() and "memory" in unified.read_text().split():
        for _, controllers, path in lines:
            if controllers == "":
                yield root, root / path.lstrip("/"), V2


def _working_set(folder: Path, files: CgroupFiles) -> int:
    usage = _read_int(folder / files.usage) or 0
    for line in (folder / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == files.inactive:
            return max(0, usage - int(value))
    return usage


def _read_int(path: Path) -> int | None:
    """A number from a cgroup file; None for "max" or a file that is not there."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
