"""Done-markers and claims for sharded work on a shared POSIX store.

A shard is done iff its marker exists and still describes its output; the marker is committed
atomically after the shard's output is durable, and a marker found not to describe it any more is
invalidated: moved to `rejected/` with the reason (the evidence stays, the shard is no longer
done). A claim is an exclusive, non-blocking `filelock` on the store: two processes that get the
same shard (a duplicate submission, a requeue racing the original) never both work on it. The
kernel (or JuiceFS, when its client session ends) releases the lock of a process that dies, so a
crashed holder never blocks a retry. The holder also leaves a small record (host, pid) beside the
lock, so that `status` can say where a shard runs; the lock, not the record, decides.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from filelock import FileLock, Timeout

from hpc.commit import read_json, write_json
from hpc.marker_summary import MarkerSummary, UnreadableMarker
from hpc.process_ref import ProcessRef

# Markers per journal part: 10k shards make 100 parts of about 60 KB, each rewritten 100 times.
JOURNAL_PART_SHARDS = 100

__all__ = ["Markers", "UnreadableMarker", "exclusive", "exclusive_or_wait",
           "shard_name"]


def shard_name(shard: int) -> str:
    return f"shard-{shard:06d}"


def _shard_of(name: str, suffix: str) -> int | None:
    if name.startswith("shard-") and name.endswith(suffix):
        with contextlib.suppress(ValueError):
            return int(name[6:-len(suffix)])
    return None


@contextlib.contextmanager
def exclusive(lock_path: str | Path, blocking: bool = False) -> Iterator[bool]:
    """Yield True while this process holds the `filelock` at `lock_path`, False if another one
    does (with `blocking`, wait for it instead)."""
    lock = FileLock(lock_path, timeout=-1 if blocking else 0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


@contextlib.contextmanager
def exclusive_or_wait(lock_path: str | Path, on_wait: Callable[[], None]) -> Iterator[None]:
    """Hold the `filelock` at `lock_path`; if another process holds it, call `on_wait` (to say
    so) and wait for it."""
    Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
    with exclusive(lock_path) as mine:
        if mine:
            yield
            return
    on_wait()
    with exclusive(lock_path, blocking=True):
        yield


class Markers:
    """The `done/`, `rejected/` and `claims/` folders of a run directory."""

    def __init__(self, run_dir: str | Path):
        self.done_dir = Path(run_dir) / "done"
        self.rejected_dir = Path(run_dir) / "rejected"
        self.claims_dir = Path(run_dir) / "claims"

    def path(self, shard: int) -> Path:
        return self.done_dir / f"{shard_name(shard)}.json"

    def is_done(self, shard: int) -> bool:
        return self.path(shard).exists()

    def write(self, shard: int, marker: dict[str, Any]) -> None:
        """Commit the marker, then add it to its journal part, so that the first reader after
        many commits reads one part per JOURNAL_PART_SHARDS markers instead of each marker."""
        write_json(self.path(shard), marker)
        self._summary().record(self.path(shard).name, marker,
                               f"part-{shard // JOURNAL_PART_SHARDS:06d}")

    def _summary(self) -> MarkerSummary:
        return MarkerSummary(self.done_dir, self.done_dir.parent / "markers-summary.json",
                             journal_dir=self.done_dir.parent / "markers-journal")

    def read(self, shard: int) -> dict[str, Any] | UnreadableMarker:
        try:
            marker = read_json(self.path(shard))
        except ValueError as e:
            return UnreadableMarker(f"not valid JSON ({e})")
        return marker if isinstance(marker, dict) else UnreadableMarker("not a JSON object")

    def remove(self, shard: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(shard).unlink()

    def invalidate(self, shard: int, reason: str) -> None:
        """The shard is no longer done: its marker moves to `rejected/` with the reason. The
        caller holds the shard's claim, so no task is writing a new marker meanwhile."""
        try:
            raw = self.path(shard).read_bytes()
        except FileNotFoundError:
            return
        write_json(self.rejected_dir / f"{shard_name(shard)}.json",
                   {"shard": shard, "reason": reason, "rejected_at": time.time(),
                    "marker": raw.decode("utf-8", "replace")})
        self.remove(shard)

    def rejected(self, shard: int) -> dict[str, Any] | None:
        """The last rejection of this shard's marker, if any."""
        with contextlib.suppress(FileNotFoundError, ValueError):
            return read_json(self.rejected_dir / f"{shard_name(shard)}.json")
        return None

    def done_shards(self) -> set[int]:
        """Shards with a marker, from one directory scan (no per-shard stat), so 10k shards cost
        one readdir. Whether each marker still holds is asrd.verify's question."""
        if not self.done_dir.is_dir():
            return set()
        with os.scandir(self.done_dir) as it:
            return {s for e in it if (s := _shard_of(e.name, ".json")) is not None}

    def read_all(self) -> dict[int, dict[str, Any] | UnreadableMarker]:
        """Every marker, rereading only those new since the last call (a summary file beside
        `done/`), so that `status` on 10k shards on a shared store stays interactive."""
        summary = self._summary()
        return {s: m for name, m in summary.read_all().items()
                if (s := _shard_of(name, ".json")) is not None}

    def _holder_path(self, shard: int) -> Path:
        return self.claims_dir / f"{shard_name(shard)}.holder.json"

    @contextlib.contextmanager
    def claim(self, shard: int) -> Iterator[bool]:
        """Yield True while this process holds the shard's claim, False if another one does."""
        self.claims_dir.mkdir(parents=True, exist_ok=True)
        with exclusive(self.claims_dir / f"{shard_name(shard)}.lock") as mine:
            if not mine:
                yield False
                return
            holder = self._holder_path(shard)
            write_json(holder, ProcessRef.me().to_json())
            try:
                yield True
            finally:
                with contextlib.suppress(FileNotFoundError):
                    holder.unlink()

    def holders(self) -> dict[int, ProcessRef]:
        """The holder records in `claims/` (one scan): current ones, and those a killed holder
        left (`ProcessRef.alive_here` tells them apart on this host)."""
        if not self.claims_dir.is_dir():
            return {}
        out = {}
        with os.scandir(self.claims_dir) as it:
            for e in it:
                if (s := _shard_of(e.name, ".holder.json")) is None:
                    continue
                with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                    out[s] = ProcessRef.from_json(read_json(e.path))
        return out
