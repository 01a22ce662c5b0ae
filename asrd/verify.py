"""Is a done-marker still true? Every reader of markers (status, merge, run, resubmit, re-plan)
asks here, so that a shard whose file was changed, truncated or deleted, or whose marker belongs to
another plan or does not parse, stops being "done" everywhere at once, and the commands that redo
shards without a marker (`asrd resubmit`, `asrd run`) redo exactly it.

A marker records its shard file's size, mtime and sha256, the run's config hash and the shard's
key under the plan (`Plan.shard_key`: index, config, rows). Two depths of check:
- quick (status, resubmit, submit, re-plan): one directory scan of `shards/` gives every file's
  size and mtime; a file whose size differs, or that is gone, fails; one whose mtime changed but
  whose size did not is hashed (a copy that lost mtimes is not thrown away for that alone).
- full (merge; a task before it skips a shard as done): sha256 of every file against its marker,
  in threads (hashing releases the GIL; on a shared store the reads overlap).

A marker that fails is looked at again (marker, then file: a shard redone while `done/` and
`shards/` were listed is then seen whole), and if it still fails it is invalidated
(`Markers.invalidate`: moved to `rejected/` with the reason), under the shard's claim, after a
last look: a task that is redoing the shard at that moment holds the claim, and its new marker is
never the one removed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from asrd.done_marker import DoneMarker
from asrd.plan_record import Plan
from asrd.rundir import RunDir
from hpc.markers import UnreadableMarker

log = logging.getLogger("asrd.verify")

HASH_THREADS = 8


@dataclass
class ShardVerdicts:
    good: dict[int, DoneMarker] = field(default_factory=dict)  # shard -> its verified marker
    bad: dict[int, str] = field(default_factory=dict)  # shard -> why its marker is not believed

    @property
    def done(self) -> set[int]:
        return set(self.good)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _stats(rd: RunDir) -> dict[str, os.stat_result]:
    """Size and mtime of every shard file, from one directory scan."""
    if not rd.shards_dir.is_dir():
        return {}
    out = {}
    with os.scandir(rd.shards_dir) as it:
        for e in it:
            if e.name.endswith(".parquet") and not e.name.startswith("."):
                try:
                    out[e.name] = e.stat()
                except FileNotFoundError:
                    continue
    return out


def _marker_problem(plan: Plan, shard: int, marker: DoneMarker | UnreadableMarker
                    ) -> str | None:
    """Why the marker cannot stand for this plan's shard, judged from the marker alone."""
    if isinstance(marker, UnreadableMarker):
        return f"its marker is unreadable: {marker.reason}"
    if not 0 <= shard < plan.num_shards:
        return f"not in the plan (it has shards 0-{plan.num_shards - 1})"
    if marker.config_hash != plan.config_hash:
        return f"config hash {marker.config_hash} differs from the run's {plan.config_hash}"
    if marker.shard_key != plan.shard_key(shard):
        return "its marker was made for another plan (the index or the shards changed since)"
    return None


def _needs_hash(marker: DoneMarker, st: os.stat_result | None, full: bool) -> bool:
    """Whether only the file's sha256 can tell (its size is right; full depth, or a new mtime)."""
    return st is not None and st.st_size == marker.bytes and (full or
                                                               st.st_mtime_ns != marker.mtime_ns)


def _size_problem(name: str, marker: DoneMarker, st: os.stat_result | None) -> str | None:
    """Why the shard file `name` is not the one its marker describes, from its listing alone."""
    if st is None:
        return f"{name} is missing"
    if st.st_size != marker.bytes:
        return f"{name} has {st.st_size} bytes, its marker says {marker.bytes}"
    return None


def _file_problem(path: Path, marker: DoneMarker, st: os.stat_result | None,
                  full: bool) -> str | None:
    """Why the shard file is not the one its marker describes."""
    why = _size_problem(path.name, marker, st)
    if why is None and _needs_hash(marker, st, full):
        try:
            digest = sha256_file(path)
        except FileNotFoundError:
            return f"{path.name} is missing"
        if digest != marker.sha256:
            return (f"{path.name} does not match its marker's sha256 (changed or corrupted "
                    "since it was committed)")
    return why


def _markers_and_stats(rd: RunDir) -> tuple[dict[int, DoneMarker | UnreadableMarker],
                                            dict[str, os.stat_result]]:
    """Every marker, and the shard files' sizes and mtimes: the two folders are listed at once
    (on a shared store each listing of 10,000 files is hundreds of round trips). A shard redone
    between the two listings can look wrong, never right: a marker that fails is looked at
    again, in commit order, before anything is concluded (`_second_look`)."""
    with ThreadPoolExecutor(1) as lister:
        stats = lister.submit(_stats, rd)
        return rd.done_markers(), stats.result()


def verify_shards(rd: RunDir, plan: Plan, full: bool = False,
                  shards: Iterable[int] | None = None) -> ShardVerdicts:
    """Check the markers of `shards` (default: every marker) against the plan and their files;
    invalidate those that fail (where the store lets this process write)."""
    markers, stats = _markers_and_stats(rd)
    if shards is not None:
        wanted = set(shards)
        markers = {s: m for s, m in markers.items() if s in wanted}
    return _judge(rd, plan, markers, stats, full)


def _judge(rd: RunDir, plan: Plan, markers: dict[int, DoneMarker | UnreadableMarker],
           stats: dict[str, os.stat_result], full: bool) -> ShardVerdicts:
    """The verdicts on `markers`, their files as `stats` listed them; each failure settled by a
    second look."""
    verdicts = ShardVerdicts()
    to_check: dict[int, DoneMarker] = {}
    for s, m in markers.items():
        why = _marker_problem(plan, s, m)
        if why is None and isinstance(m, DoneMarker):
            to_check[s] = m
        else:
            verdicts.bad[s] = why or "its marker is unreadable"

    problems: dict[int, str | None] = {}
    hashed: list[int] = []  # only these read their files: in threads, the rest here
    for s, m in to_check.items():
        name = rd.shard_file_name(s)
        if _needs_hash(m, stats.get(name), full):
            hashed.append(s)
        else:
            problems[s] = _size_problem(name, m, stats.get(name))
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        problems.update(zip(hashed, pool.map(
            lambda s: _file_problem(rd.shard_file(s), to_check[s],
                                    stats.get(rd.shard_file_name(s)), full), hashed)))
    for s, m in to_check.items():
        if problems[s] is None:
            verdicts.good[s] = m
        else:
            verdicts.bad[s] = problems[s]
    for s in sorted(verdicts.bad):
        marker = _second_look(rd, plan, s, full)
        if marker is not None:
            verdicts.good[s] = marker
            del verdicts.bad[s]
    return verdicts


def _look(rd: RunDir, plan: Plan, shard: int, full: bool) -> tuple[DoneMarker | None, str | None]:
    """(the marker, None) if it holds, read afresh in commit order: the marker, then its file;
    (None, why) if it does not; (None, None) if it is gone."""
    try:
        marker = rd.done_marker(shard)
    except FileNotFoundError:  # removed since: the shard is being redone
        return None, None
    why = _marker_problem(plan, shard, marker)
    if why is not None or not isinstance(marker, DoneMarker):
        return None, why or "its marker is unreadable"
    path = rd.shard_file(shard)
    try:
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        st = None
    why = _file_problem(path, marker, st, full)
    return (marker, None) if why is None else (None, why)


def _second_look(rd: RunDir, plan: Plan, shard: int, full: bool) -> DoneMarker | None:
    """The marker, if it holds when looked at again; if it still fails, it is invalidated under
    the shard's claim, after a last look. A claim held by another process means the shard is
    being redone: its marker is left to it."""
    marker, why = _look(rd, plan, shard, full)
    if why is None:
        return marker
    try:
        with rd.markers.claim(shard) as mine:
            if not mine:
                return None
            marker, why = _look(rd, plan, shard, full)
            if why is not None:
                rd.markers.invalidate(shard, why)
                log.warning("shard %d is no longer done: %s (marker moved to %s)", shard, why,
                            rd.markers.rejected_dir)
            return marker
    except OSError:  # a read-only view of another user's run: report, change nothing
        return None
