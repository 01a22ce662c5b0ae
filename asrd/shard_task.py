"""What one task runs: its shards, through one on-node Ray cluster and one set of engines.

For each shard: skip it if its marker exists; claim it (a second process holding the claim means a
duplicate submission or a requeue racing the original: skip); resume from its committed parts;
run the pipeline over the remaining rows; finalize (shard file, then marker).
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
from omegaconf import DictConfig

from asrd import config as config_mod
from asrd.pipeline import Pipeline
from asrd.plan import PlanError, ShardSpec, load_plan, read_rows
from asrd.rundir import RunDir
from asrd.schema import output_schema
from asrd.tracking import TaskTracker
from asrd.writer import ShardWriter
from hpc.ray_node import local_ray
from hpc.store import check_root

log = logging.getLogger("asrd.task")


class Terminated(SystemExit):
    """SIGTERM: stop, keep what is committed, exit 143 (SLURM's scancel and preemption send it)."""


_received: list[int] = []


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    # Ray's wait() turns an exception raised here into SystemExit(1); remember the signal so
    # that run_task exits with SLURM's conventional 128 + signal.
    _received.append(signum)
    raise Terminated(128 + signum)


def task_config(run_dir: RunDir, overrides: list[str] | None, force: bool) -> DictConfig:
    """The frozen config plus this task's overrides; drift in output-relevant keys is refused."""
    cfg = config_mod.load(run_dir.config_path, overrides)
    run_dir.check_config(cfg, force=force)
    return cfg


def run_task(run_dir: str | Path, shards: list[int] | None = None,
             overrides: list[str] | None = None, force: bool = False) -> list[int]:
    """Run `shards` (all planned shards if None); returns those this call finished."""
    rd = RunDir(run_dir)
    cfg = task_config(rd, overrides, force)
    check_root(rd.path, cfg.store.require_mount)  # a missing mount is an error, not a new dir
    plan = load_plan(rd)
    wanted = range(plan.num_shards) if shards is None else shards
    bad = [s for s in wanted if not 0 <= s < plan.num_shards]
    if bad:
        raise PlanError(f"shards {bad} are not in the plan (0..{plan.num_shards - 1})")
    todo = [s for s in wanted if not rd.markers.is_done(s)]
    if not todo:
        log.info("all %d shards already done", len(wanted))
        return []
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    schema = output_schema(pq.read_schema(plan.index), judge=cfg.judge.enabled)
    finished = []
    with local_ray(object_store_mb=cfg.pipeline.ray_object_store_mb,
                   tmp_root=cfg.pipeline.ray_tmp) as res:
        tracker = TaskTracker.start(cfg, rd.path, todo)
        completed = False
        pipe = Pipeline(cfg, res["cpus"], res["gpus"])
        try:
            for s in todo:
                if _run_shard(cfg, rd, plan.shards[s], plan.index, plan.config_hash, schema, pipe,
                              tracker):
                    finished.append(s)
            completed = True
        except SystemExit:
            if _received:
                log.warning("signal %d: committed what was finished; exiting", _received[-1])
                raise Terminated(128 + _received[-1]) from None
            raise
        finally:
            pipe.close()
            tracker.finish({"shards_finished": finished}, requeued=not completed)
    return finished


def _run_shard(cfg: DictConfig, rd: RunDir, spec: ShardSpec, index: str, config_hash: str,
               schema, pipe: Pipeline, tracker: TaskTracker) -> bool:
    with rd.markers.claim(spec.shard) as mine:
        if not mine:
            log.warning("shard %d is claimed by another process: skipping", spec.shard)
            return False
        if rd.markers.is_done(spec.shard):  # finished by another task while we waited
            return False
        t0 = time.monotonic()
        writer = ShardWriter(rd, spec, schema, cfg.pipeline.part_rows, cfg.pipeline.part_seconds)
        done = set(writer.done_rows().tolist())
        todo = spec.rows - len(done)
        log.info("shard %d: %d rows, %d already committed", spec.shard, spec.rows, len(done))
        items = (row for batch in read_rows(index, spec.start, spec.stop)
                 for row in batch.to_pylist() if row["row"] not in done)
        pipe.run(spec, items, writer, todo, on_metrics=tracker.update)
        marker = writer.finalize(time.monotonic() - t0, config_hash, pipe.model_name,
                                 extra={"resumed_rows": len(done)})
        log.info("shard %d done: %d ok, %d failed, %.0f audio s in %.1f s", spec.shard,
                 marker["ok"], marker["failed"], marker["audio_s"], marker["wall_s"])
        return True
