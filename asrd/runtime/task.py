"""What one task runs: its shards, through one on-node Ray cluster and one set of actors.

For each shard: skip it if its marker exists and still holds (asrd.verify: a marker whose file
changed, or that belongs to another plan, is invalidated here and the shard redone); claim it (a second process holding the claim means a
duplicate submission or a requeue racing the original: skip); resume from its committed parts;
run the pipeline over the remaining rows; finalize (shard file, then marker).

Stopping (hpc.stop): the stop handler is in place before Ray or W&B start. On SIGTERM, SIGUSR2 or
SIGINT the pipeline commits the rows it finished, the actors are not waited for (they end with
Ray), W&B gets a bounded time to finish, Ray's session folder is removed, and the process exits
with 128 + signal.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
from omegaconf import DictConfig

from asrd import hooks
from asrd.plan import Plan, PlanError, check_index_unchanged, load_plan, read_rows
from asrd.rundir import ConfigLayer, RunDir
from asrd.runtime.partial import PartialRows
from asrd.runtime.pipeline import Pipeline
from asrd.runtime.records import IndexRow
from asrd.runtime.write import ShardWriter
from asrd.schema import output_schema
from asrd.tracking import TaskTracker
from asrd.verify import verify_shards
from hpc.ray_node import local_ray
from hpc.stop import GracefulStop, graceful_stop
from hpc.store import check_root

log = logging.getLogger("asrd.task")

FINISH_S = 60.0  # W&B's finish (uploads, or writing the offline files) gets this long at most
STOP_FINISH_S = 5.0  # ... and this long when stopping on a signal (SLURM's KillWait is short)


def run_task(run_dir: str | Path, shards: list[int] | None = None,
             overrides: list[str] | None = None, force: bool = False,
             config: ConfigLayer | None = None) -> list[int]:
    """Run `shards` (all planned shards if None); returns those this call finished.

    `config` is a layer over the frozen config: a `-c` file, or a submission's resolved config
    (so that resources edited after `plan` reach the task)."""
    with graceful_stop() as stop:
        try:
            return _run_task(RunDir(run_dir), shards, overrides, force, config, stop)
        except SystemExit:
            if stop.stopping:
                log.warning("stopped by signal %d; finished rows are committed", stop.signum)
            stop.reraise()


def _run_task(rd: RunDir, shards: list[int] | None, overrides: list[str] | None, force: bool,
              config: ConfigLayer | None, stop: GracefulStop) -> list[int]:
    cfg = rd.config(config, overrides, force=force)
    check_root(rd.path, cfg.store.require_mount)  # a missing mount is an error, not a new dir
    plan = load_plan(rd)
    check_index_unchanged(plan)
    wanted = range(plan.num_shards) if shards is None else shards
    bad = [s for s in wanted if not 0 <= s < plan.num_shards]
    if bad:
        raise PlanError(f"shards {bad} are not in the plan (0..{plan.num_shards - 1})")
    done = verify_shards(rd, plan, full=True, shards=wanted).done
    todo = [s for s in wanted if s not in done]
    if not todo:
        log.info("all %d shards already done", len(wanted))
        return []
    schema = output_schema(pq.read_schema(plan.index), judge=cfg.judge.enabled,
                           language=cfg.language_id.enabled)
    finished: list[int] = []
    with local_ray(object_store_mb=cfg.pipeline.ray_object_store_mb,
                   tmp_root=cfg.pipeline.ray_tmp) as res:
        tracker = TaskTracker.start(cfg, rd.path, todo)
        pipe: Pipeline | None = None
        try:
            pipe = Pipeline(cfg, res["cpus"], res["gpus"])
            startup_s: float | None = time.time() - psutil.Process().create_time()
            for s in todo:
                if _run_shard(cfg, rd, plan, s, schema, pipe, tracker, startup_s):
                    finished.append(s)
                    startup_s = None  # paid once per task: recorded with its first shard
        finally:
            if pipe is not None:
                pipe.close(wait=not stop.stopping)
            tracker.finish({"shards_finished": finished}, requeued=stop.stopping,
                           timeout_s=STOP_FINISH_S if stop.stopping else FINISH_S,
                           exit_code=128 + stop.signum if stop.signum is not None else 0)
    return finished


def _run_shard(cfg: DictConfig, rd: RunDir, plan: Plan, shard: int, schema, pipe: Pipeline,
               tracker: TaskTracker, startup_s: float | None) -> bool:
    spec = plan.shards[shard]
    with rd.markers.claim(spec.shard) as mine:
        if not mine:
            log.warning("shard %d is claimed by another process: skipping", spec.shard)
            return False
        if rd.markers.is_done(spec.shard):  # finished by another task while we waited
            return False
        t0 = time.monotonic()
        writer = ShardWriter(rd, spec, schema, cfg.pipeline.part_rows, cfg.pipeline.part_seconds,
                             shard_key=plan.shard_key(shard), on_commit=lambda: hooks.at(
                                 "task.part_committed", cfg.faults, shard=spec.shard))
        done = set(writer.done_rows().tolist())
        todo = spec.rows - len(done)
        log.info("shard %d: %d rows, %d already committed", spec.shard, spec.rows, len(done))
        partial = PartialRows(rd.partial_dir(spec.shard), plan.config_hash,
                              cfg.pipeline.part_seconds)
        rows = (IndexRow.of(columns) for batch in read_rows(plan.index, spec.start, spec.stop)
                for columns in batch.to_pylist() if columns["row"] not in done)
        stats = pipe.run(spec, rows, writer, partial, todo, on_metrics=tracker.update)
        marker = writer.finalize(time.monotonic() - t0, plan.config_hash, pipe.model_name,
                                 resumed_rows=len(done), segments_reused=stats.segments_reused,
                                 task_startup_s=startup_s, placement=pipe.placement)
        partial.clear()
        log.info("shard %d done: %d ok, %d failed, %.0f audio s in %.1f s", spec.shard,
                 marker.ok, marker.failed, marker.audio_s, marker.wall_s)
        return True
