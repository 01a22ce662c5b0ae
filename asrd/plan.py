"""`asrd plan`: freeze the config and cut the index into N shards balanced by audio seconds.

A shard is a contiguous range of index rows. Cutting the running sum of durations at N equal
targets balances shards to within one recording's duration (a 3-hour file in a 1000-hour shard is
0.3 %), needs one streaming pass over a single column, and lets a task read its rows by row-group
seeks instead of scanning a multi-million-row index. Deterministic: the same index and N give the
same plan. Duplicate ids are refused here, with the offending ids listed, because exactly-once
cannot be checked against an index where one id names two rows.

Planning is exclusive: it holds the run's plan lock (a `filelock` on the store, like a shard's
claim) from its first look at the run directory until config.yaml and plan.json are both written,
so two plans never interleave; a second one waits, then finds the run planned (and is refused if
its config differs). A re-plan invalidates the done-markers it no longer matches (asrd.verify).
A plan killed between its two files leaves them disagreeing (plan.json records the sha256 of the
config.yaml written with it): `load_plan` refuses such a directory and the next `asrd plan` plans
it again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig

from asrd import config as config_mod
from asrd import hooks
from asrd.index import check_index
from asrd.index_identity import IndexIdentity, index_identity
from asrd.plan_record import Plan, ShardSpec
from asrd.rundir import RunDir, RunDirError
from asrd.verify import verify_shards
from hpc.commit import read_json, write_bytes, write_json
from hpc.markers import exclusive_or_wait

log = logging.getLogger("asrd.plan")

# Rows whose probe failed have no duration; they still cost a little work (an error row).
UNPROBED_WEIGHT_S = 0.1


class PlanError(ValueError):
    pass


def footer_fingerprint(index_path: str | Path) -> str:
    """The index identity of plans made before column hashes (sizes, counts and schema only):
    still checked for them, so that a run planned then is not voided by an upgrade."""
    pf = pq.ParquetFile(index_path)
    meta = pf.metadata
    blob = f"{os.path.getsize(index_path)}:{meta.num_rows}:{meta.num_row_groups}:{meta.serialized_size}"
    return hashlib.sha256(blob.encode() + str(pf.schema_arrow).encode()).hexdigest()[:16]


def _durations(index_path: str) -> np.ndarray:
    col = pq.read_table(index_path, columns=["duration_s"]).column(0)
    d = col.to_numpy(zero_copy_only=False).astype(np.float64)
    return np.where(np.isnan(d), UNPROBED_WEIGHT_S, d)


def _check_unique_ids(index_path: str) -> None:
    ids = pq.read_table(index_path, columns=["id"]).column(0)
    counts = pa.compute.value_counts(ids)
    dup = counts.filter(pa.compute.greater(counts.field("counts"), 1))
    if len(dup):
        shown = ", ".join(repr(v["values"]) for v in dup.to_pylist()[:20])
        raise PlanError(f"index {index_path} has {len(dup)} duplicate ids (first: {shown}); "
                        "ids must be unique: rebuild the index or make the ids unique")


def cut(durations: np.ndarray, num_shards: int) -> list[ShardSpec]:
    """Contiguous ranges whose audio seconds are as equal as a contiguous cut allows."""
    n = len(durations)
    num_shards = max(1, min(num_shards, n))
    cum = np.concatenate([[0.0], np.cumsum(durations)])
    targets = cum[-1] * np.arange(1, num_shards) / num_shards
    bounds = np.searchsorted(cum, targets, side="left")
    # Snap each bound to the nearer side of the target and keep every shard non-empty.
    edges = [0]
    for k, (b, t) in enumerate(zip(bounds, targets), start=1):
        b = int(b) if b > 0 and cum[b] - t < t - cum[b - 1] else int(b) - 1
        edges.append(min(max(b, edges[-1] + 1), n - (num_shards - k)))
    edges.append(n)
    return [ShardSpec(i, a, b, float(cum[b] - cum[a])) for i, (a, b) in
            enumerate(zip(edges[:-1], edges[1:]))]


def make_plan(cfg: DictConfig, force: bool = False) -> tuple[RunDir, Plan]:
    """Freeze `cfg` into its run directory and write the plan; re-planning the same config is a
    no-op (an index whose label columns changed is still the same plan)."""
    index = config_mod.require_index(cfg)
    if not Path(index).is_file():
        raise PlanError(f"index not found: {index} (make it with `asrd index`)")
    check_index(index)
    run_dir = RunDir(cfg.run.dir)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    lock = run_dir.markers.claims_dir / "plan.lock"
    with exclusive_or_wait(lock, lambda: log.warning(
            "another `asrd plan` is planning %s: waiting for it", run_dir.path)):
        hooks.at("plan.locked", cfg.faults)
        old = _whole_plan(run_dir)
        identity = index_identity(index)
        if old is not None:
            run_dir.check_config(cfg, force=force)
            work, labels = _index_change(old, identity, index)
            if work and not force:
                raise RunDirError(f"the index {index} changed since {run_dir.path} was planned "
                                  f"({_named(work)}); plan into a new run.dir, or --force")
            if not force:
                _notice_labels(index, labels)
                return run_dir, old
        _check_unique_ids(index)
        durations = _durations(index)
        if len(durations) == 0:
            raise PlanError(f"index {index} is empty")
        frozen = config_mod.to_yaml(cfg).encode()
        plan = Plan(str(Path(index).resolve()), len(durations), identity.work_fingerprint,
                    config_mod.config_hash(cfg), cut(durations, cfg.run.num_shards),
                    hashlib.sha256(frozen).hexdigest(), identity.columns)
        write_bytes(run_dir.config_path, frozen)
        hooks.at("plan.config_frozen", cfg.faults)
        write_json(run_dir.plan_path, plan.to_json())
        if run_dir.markers.done_shards():
            verify_shards(run_dir, plan)  # void the markers the new plan does not match
    return run_dir, plan


def _whole_plan(run_dir: RunDir) -> Plan | None:
    """The run's plan, or None if it has none, or plan.json does not parse, or its two files
    disagree (an interrupted plan): then planning again is the repair."""
    if not run_dir.exists():
        return None
    try:
        plan = Plan.from_json(read_json(run_dir.plan_path))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not plan.config_file_sha256:
        return plan
    frozen = hashlib.sha256(run_dir.config_path.read_bytes()).hexdigest()
    return plan if plan.config_file_sha256 == frozen else None


def load_plan(run_dir: RunDir) -> Plan:
    if not run_dir.plan_path.is_file():
        raise RunDirError(f"{run_dir.path} has no plan.json: run `asrd plan` first")
    plan = _whole_plan(run_dir)
    if plan is None:
        raise RunDirError(f"{run_dir.path}: plan.json does not parse, or it and config.yaml are "
                          "from different plans (a plan was interrupted, or a file was edited): "
                          "run `asrd plan` again")
    return plan


def check_index_unchanged(plan: Plan) -> None:
    """Refuse to run or merge against an index that is gone or whose work columns changed since
    the plan was cut: the shards' rows no longer say what was transcribed. Label columns that
    changed are said in a log line: they need no shard redone, only a merge."""
    if not Path(plan.index).is_file():
        raise RunDirError(f"the index {plan.index} of this run is gone: put it back, or re-plan "
                          "onto another with `asrd plan --force run.index=...`")
    work, labels = _index_change(plan, index_identity(plan.index), plan.index)
    if work:
        raise RunDirError(f"the index {plan.index} changed since this run was planned "
                          f"({_named(work)}): `asrd plan --force` re-plans the run (its shards "
                          "are then redone)")
    _notice_labels(plan.index, labels)


def _index_change(plan: Plan, identity: IndexIdentity, index: str | Path
                  ) -> tuple[list[str], list[str]]:
    """(work columns, label columns) of the index at `index` that differ from the plan's."""
    if plan.identity is None:  # planned before column hashes: the footer is all there is
        same = footer_fingerprint(index) == plan.index_fingerprint
        return ([] if same else ["the file differs"]), []
    return identity.changed(plan.identity)


def _named(work: list[str]) -> str:
    return work[0] if len(work) == 1 and " " in work[0] else "columns " + ", ".join(work)


def _notice_labels(index: str, labels: list[str]) -> None:
    if labels:
        log.warning("the index %s changed since the plan in label columns only (%s): no shard "
                    "is redone; `asrd merge` writes the index's current values, and the WER, "
                    "CER and flags against a changed reference", index, ", ".join(labels))


def read_rows(index: str | Path | pq.ParquetFile, start: int, stop: int,
              columns: list[str] | None = None, batch_rows: int = 512
              ) -> Iterator[pa.RecordBatch]:
    """Index rows [start, stop) as record batches, reading only the row groups that hold them.
    `index`: its path, or the index opened once by a caller that reads many shards' rows (on a
    shared store each open costs round trips, and its footer is parsed again)."""
    pf = index if isinstance(index, pq.ParquetFile) else pq.ParquetFile(index)
    offset = 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        lo, hi = max(start, offset), min(stop, offset + n)
        if lo < hi:
            table = pf.read_row_group(g, columns=columns).slice(lo - offset, hi - lo)
            table = table.append_column("row", pa.array(np.arange(lo, hi, dtype=np.int64)))
            yield from table.to_batches(max_chunksize=batch_rows)
        offset += n
        if offset >= stop:
            break
