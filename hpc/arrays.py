"""SLURM job-array syntax and the bookkeeping between array tasks and work items.

`--array` strings ("0-999%64", "1,3,5-9", "0-15:4") are parsed into sorted indices and formatted
back compactly. MaxArraySize caps the largest index, not only the count (so `--array=1001-2000`
fails on a default cluster): work beyond it is split into several arrays, each with
indices from 0 and an offset into the task list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence, TypeVar

T = TypeVar("T")

_ITEM = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


class ArraySpecError(ValueError):
    """A `--array` string SLURM would reject, or one that selects nothing."""


@dataclass(frozen=True)
class ArraySpec:
    indices: list[int]  # sorted, unique
    parallelism: int | None  # the `%P` suffix


def parse_array(spec: str) -> ArraySpec:
    """Parse SLURM's `--array` syntax: comma-separated `N`, `A-B` or `A-B:STEP`, optional `%P`."""
    text = spec.strip().replace(" ", "")
    if not text:
        raise ArraySpecError("empty --array specification")
    body, sep, par = text.partition("%")
    parallelism = None
    if sep:
        if not par.isdigit() or int(par) < 1:
            raise ArraySpecError(f"--array {spec!r}: '%' must be followed by a number >= 1")
        parallelism = int(par)
    indices: set[int] = set()
    for item in body.split(","):
        m = _ITEM.match(item)
        if not m:
            raise ArraySpecError(
                f"--array {spec!r}: cannot read {item!r} (expected N, A-B or A-B:STEP)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        step = int(m.group(3)) if m.group(3) is not None else 1
        if hi < lo:
            raise ArraySpecError(f"--array {spec!r}: range {item!r} ends before it starts")
        if step < 1:
            raise ArraySpecError(f"--array {spec!r}: step in {item!r} must be >= 1")
        indices.update(range(lo, hi + 1, step))
    return ArraySpec(sorted(indices), parallelism)


def format_array(indices: Sequence[int], parallelism: int | None = None) -> str:
    """The shortest range list for `indices` ("0-3,7,9-12"), with `%P` when given."""
    values = sorted(set(indices))
    if not values:
        raise ArraySpecError("cannot format an empty array")
    if values[0] < 0:
        raise ArraySpecError(f"array indices must be >= 0, got {values[0]}")
    runs: list[str] = []
    start = prev = values[0]
    for v in values[1:] + [None]:  # type: ignore[list-item]
        if v is not None and v == prev + 1:
            prev = v
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    text = ",".join(runs)
    return f"{text}%{parallelism}" if parallelism else text


def group(items: Sequence[T], per_task: int) -> list[list[T]]:
    """Consecutive groups of `per_task` items: the work of each array task."""
    if per_task < 1:
        raise ValueError(f"per_task must be >= 1, got {per_task}")
    return [list(items[i:i + per_task]) for i in range(0, len(items), per_task)]


@dataclass(frozen=True)
class ArrayChunk:
    """One SLURM array: its tasks are `tasks[offset : offset + count]` at indices 0..count-1."""
    offset: int
    count: int
    parallelism: int | None

    @property
    def spec(self) -> str:
        return format_array(range(self.count), self.parallelism)


def split(n_tasks: int, max_array_size: int, parallelism: int | None = None) -> list[ArrayChunk]:
    """Cut `n_tasks` into arrays of near-equal size whose indices stay below `max_array_size`.

    SLURM's `%P` limits each array on its own, so the parallelism is shared out among the arrays
    (each gets at least 1): all arrays together never run more than max(P, number of arrays) tasks.
    Near-equal sizes make the arrays finish together, so no share sits idle for long.
    """
    if n_tasks < 1:
        return []
    if max_array_size < 1:
        raise ArraySpecError(f"MaxArraySize is {max_array_size}: job arrays are disabled here")
    n_arrays = -(-n_tasks // max_array_size)
    base, extra = divmod(n_tasks, n_arrays)
    sizes = [base + (1 if i < extra else 0) for i in range(n_arrays)]
    shares = _share(parallelism, sizes) if parallelism else [None] * n_arrays
    chunks, offset = [], 0
    for size, share in zip(sizes, shares):
        chunks.append(ArrayChunk(offset, size, min(share, size) if share else None))
        offset += size
    return chunks


def _share(total: int, sizes: list[int]) -> list[int]:
    """Split `total` among arrays in proportion to their sizes, at least 1 each."""
    n = len(sizes)
    if total <= n:
        return [1] * n
    whole, spare = sum(sizes), total - n
    shares = [1 + spare * s // whole for s in sizes]
    for i in range(total - sum(shares)):  # hand out what rounding down left over
        shares[i % n] += 1
    return shares


def task_items(tasks: Sequence[Sequence[T]], task_index: int, offset: int = 0) -> list[T]:
    """The items of array task `task_index` of the array that starts at `offset`."""
    i = offset + task_index
    if not 0 <= i < len(tasks):
        raise IndexError(f"array task {task_index} (+ offset {offset}) is outside the "
                         f"{len(tasks)} tasks of this submission")
    return list(tasks[i])
