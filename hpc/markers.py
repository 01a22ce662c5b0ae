"""Done-markers and claims for sharded work on a shared POSIX store.

A shard is done iff its marker exists; the marker is committed atomically after the shard's
output is durable. A claim is an exclusive, non-blocking `filelock` on the store: two processes
that get the same shard (a duplicate submission, a requeue racing the original) never both work
on it. The kernel (or JuiceFS, when its client session ends) releases the lock of a process that
dies, so a crashed holder never blocks a retry.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from hpc.commit import read_json, write_json
from hpc.marker_summary import MarkerSummary


def shard_name(shard: int) -> str:
    return f"shard-{shard:06d}"


class Markers:
    """The `done/` and `claims/` folders of a run directory."""

    def __init__(self, run_dir: str | Path):
        self.done_dir = Path(run_dir) / "done"
        self.claims_dir = Path(run_dir) / "claims"

    def path(self, shard: int) -> Path:
        return self.done_dir / f"{shard_name(shard)}.json"

    def is_done(self, shard: int) -> bool:
        return self.path(shard).exists()

    def write(self, shard: int, marker: dict[str, Any]) -> None:
        write_json(self.path(shard), marker)

    def read(self, shard: int) -> dict[str, Any]:
        return read_json(self.path(shard))

    def remove(self, shard: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(shard).unlink()

    def done_shards(self) -> set[int]:
        """One directory scan (no per-shard stat), so 10k shards cost one readdir."""
        if not self.done_dir.is_dir():
            return set()
        out = set()
        with os.scandir(self.done_dir) as it:
            for entry in it:
                name = entry.name
                if name.startswith("shard-") and name.endswith(".json"):
                    out.add(int(name[6:-5]))
        return out

    def read_all(self) -> dict[int, dict[str, Any]]:
        """Every marker, rereading only those new since the last call (a summary file beside
        `done/`), so that `status` on 10k shards on a shared store stays interactive."""
        summary = MarkerSummary(self.done_dir, self.done_dir.parent / "markers-summary.json")
        return {int(name[6:-5]): m for name, m in summary.read_all().items()
                if name.startswith("shard-")}

    @contextlib.contextmanager
    def claim(self, shard: int) -> Iterator[bool]:
        """Yield True while this process holds the shard's claim, False if another one does."""
        self.claims_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.claims_dir / f"{shard_name(shard)}.lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()
