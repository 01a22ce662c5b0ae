"""Submitting a Submission through submitit, recorded in RUN_DIR/submissions/ as it goes.

The record is written before the first `sbatch` and again as soon as each array is queued, so a
refusal part-way (a job limit, a controller restart) leaves the queued arrays on record: `asrd
status` shows them pending and `asrd resubmit` leaves them out. The tasks run the record's
resolved config (frozen <- `-c` file <- overrides), so resources edited after `plan` reach them.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from asrd.launch.errors import LaunchError
from asrd.launch.selection import Submission
from asrd.launch.slurm_params import submitit_params
from hpc.array_submit import (ArraySubmitError, RecordedArray, Resumable, SubmissionRecord,
                              make_executor, read_record, record_path, submit_arrays,
                              write_record)
from hpc.arrays import format_array
from hpc.slurm_env import SlurmEnv

log = logging.getLogger("asrd.launch.submit")


@dataclass(frozen=True)
class RecordedRun:
    """What asrd records in a submission beside its arrays: the run its tasks work on, and how."""

    run_dir: str
    config: dict[str, Any] | None  # the resolved config the tasks run (None: the frozen one)
    force: bool
    overrides: list[str] | None
    max_requeues: int | None

    @classmethod
    def of(cls, record: SubmissionRecord) -> RecordedRun:
        d = record.details
        return cls(d["run_dir"], d.get("config"), d["force"], d.get("overrides"),
                   d.get("max_requeues"))


def new_submission_record(sub: Submission, kind: str, command: str,
                          **extra: Any) -> SubmissionRecord:
    """A record of `sub` (kind "slurm", "local" or "sbatch"), carrying the config its tasks run."""
    return SubmissionRecord.new(kind, sub.tasks, command=command, run_dir=str(sub.run_dir.path),
                                config=OmegaConf.to_container(sub.cfg, resolve=True),
                                force=sub.force, max_array_size=sub.max_array_size,
                                max_requeues=int(sub.cfg.slurm.max_requeues), skipped=sub.skipped,
                                **extra)


def run_recorded_task(record: SubmissionRecord, shards: list[int]) -> list[int]:
    """Run `shards` with the config and force of the submission that holds them."""
    from asrd.runtime.task import run_task

    run = RecordedRun.of(record)
    return run_task(run.run_dir, shards, run.overrides, force=run.force, config=run.config)


def _task_main(record_file: str, shards: list[int]) -> list[int]:
    """What one submitit array task runs (pickled by reference: asrd must be importable there)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.info("task %s: shards %s", SlurmEnv.from_environ().task_key, shards)
    return run_recorded_task(read_record(record_file), shards)


def submit(sub: Submission, command: str = "submit") -> Path | None:
    """Submit through submitit, recording each array once queued; returns the record's path
    (None: nothing to do). A refusal part-way raises LaunchError saying what is queued."""
    if not sub.tasks:
        return None
    cfg = sub.cfg
    params = submitit_params(cfg)
    record = new_submission_record(sub, cfg.slurm.executor, command, params=params)
    path = write_record(record_path(sub.run_dir.submissions_dir, command), record)

    def queued(array: RecordedArray) -> None:
        nonlocal record
        record = record.with_array(array)
        write_record(path, record)

    executor = make_executor(sub.run_dir.logs_dir / "submitit" / "%j", params,
                             cluster=cfg.slurm.executor, max_requeues=int(cfg.slurm.max_requeues))
    fn = Resumable(functools.partial(_task_main, str(path)),
                   max_requeues=int(cfg.slurm.max_requeues))
    try:
        _, jobs = submit_arrays(executor, fn, sub.tasks, sub.chunks, on_queued=queued)
    except ArraySubmitError as e:
        _forget_if_empty(path, record)
        if record.arrays:
            write_record(path, record.with_details(
                refused={"reason": e.reason, "arrays": [c.spec for c in e.refused]}))
        raise LaunchError(f"SLURM refused array {len(e.queued) + 1} of {len(sub.chunks)}: "
                          f"{e.reason}", _partial_summary(sub, e, path)) from None
    except BaseException:
        _forget_if_empty(path, record)
        raise
    if cfg.slurm.executor == "local":  # its tasks are children of this process: see them through
        for job in jobs:
            error = job.exception()
            if error is not None:
                log.error("local task %s failed: %s", job.job_id, error)
    return path


def _forget_if_empty(path: Path, record: SubmissionRecord) -> None:
    """A submission of which nothing was queued leaves no record."""
    if not record.arrays:
        path.unlink(missing_ok=True)


def _partial_summary(sub: Submission, e: ArraySubmitError, path: Path) -> list[str]:
    lines = [f"queued: job {a.job_id}, shards "
             f"{format_array(sub.chunk_shards(sub.chunks[i]))}" for i, a in enumerate(e.queued)]
    missing = sorted(s for c in e.refused for s in sub.chunk_shards(c))
    lines.append(f"not queued: shards {format_array(missing)}")
    if e.queued:
        lines.append(f"record: {path}; `asrd resubmit` submits the shards that are not queued "
                     "(it leaves out those SLURM still holds)")
    return lines
