"""SLURM's view of a run's shards: the recorded submissions joined to SLURM's task states.

A shard's task is running, pending, or ended; an ended task is "never started" when SLURM never
gave it a node (an array cancelled while pending), "cancelled" when it was cancelled or
preempted (PreemptMode=CANCEL) while running, else "failed" (with no marker the shard did not finish: an error, a time limit, an
out-of-memory kill, a lost node). Shards SLURM knows nothing of are left out ("missing").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from asrd.launch.sbatch import parse_comment, started_dir
from asrd.launch.slurm_params import job_name
from asrd.launch.submit import RecordedRun
from asrd.rundir import RunDir
from hpc import slurm_ctl
from hpc.array_submit import SubmissionRecord, read_records
from hpc.commit import read_json

log = logging.getLogger("asrd.launch.slurm_view")

PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING",
                  "RESIZING"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}
LABELS = ("running", "pending", "failed", "cancelled", "never started")
_RANK = {"running": 2, "pending": 1}  # most active first; ended states: the latest submission


@dataclass(frozen=True)
class ShardJob:
    """The SLURM task that holds (or held) a shard."""

    label: str  # one of LABELS
    job_id: str
    task_id: str | None  # the array index, None for a lone job
    state: str  # SLURM's own state name
    log: Path  # the task's log file (its stderr for submitit tasks)


@dataclass(frozen=True)
class _RecordedTask:
    key: str  # SLURM's "JOBID_INDEX"
    shards: list[int]
    log: Path


def label(task: slurm_ctl.TaskState) -> str:
    if task.state in PENDING_STATES:
        return "pending"
    if task.state in RUNNING_STATES:
        return "running"
    if not task.started:
        return "never started"
    return "cancelled" if task.state in ("CANCELLED", "PREEMPTED") else "failed"


def _submitit_tasks(rd: RunDir, record: SubmissionRecord) -> list[_RecordedTask]:
    tasks = record.tasks
    return [_RecordedTask(key, list(tasks[a.offset + i]),
                          rd.logs_dir / "submitit" / key / f"{key}_0_log.err")
            for a in record.arrays for i, key in enumerate(a.task_keys or ())]


def _sbatch_tasks(rd: RunDir, record: SubmissionRecord,
                  named: dict[str, str]) -> list[_RecordedTask]:
    """Tasks that started (they noted their key) and arrays SLURM lists under the record's
    comment (pending ones too)."""
    tasks, name = record.tasks, record.path.name
    found: dict[str, list[int]] = {}
    started = started_dir(record.path)
    if started.is_dir():
        for p in sorted(started.glob("*.json")):
            info = read_json(p)
            found[info["task_key"]] = list(info["shards"])
    counts = {a.offset: a.count for a in record.arrays}
    for job_id, comment in named.items():
        ours = parse_comment(comment)
        if ours is None or ours[0] != name or ours[1] not in counts:
            continue
        offset = ours[1]
        for i in range(counts[offset]):
            found.setdefault(f"{job_id}_{i}", list(tasks[offset + i]))
    return [_RecordedTask(key, shards, rd.logs_dir / "sbatch" / f"{key}.log")
            for key, shards in found.items()]


def slurm_states(run_dir: str | Path | RunDir, strict: bool = False) -> dict[int, ShardJob]:
    """Shard -> the SLURM task that holds or held it, for the shards SLURM knows of.

    A shard submitted several times takes its most active task (running, then pending), else its
    latest submission's. SLURM unreadable: {} with a warning, or SlurmError when `strict` (a
    caller about to submit must not take "unknown" for "not queued")."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    records = [r for r in read_records(rd.submissions_dir) if r.kind in ("slurm", "sbatch")]
    if not records:
        return {}
    try:
        if not slurm_ctl.available():
            raise slurm_ctl.SlurmError("SLURM's clients (sbatch, squeue) are not on PATH")
        keyed: list[_RecordedTask] = []
        named_cache: dict[str, dict[str, str]] = {}
        for r in records:
            if r.kind == "slurm":
                keyed += _submitit_tasks(rd, r)
                continue
            config = RecordedRun.of(r).config
            name = job_name(config["run"]["name"]) if config else None
            if name is not None and name not in named_cache:
                named_cache[name] = slurm_ctl.jobs_named(name)
            keyed += _sbatch_tasks(rd, r, named_cache.get(name, {}))
        if not keyed:
            return {}
        states = slurm_ctl.job_states({t.key.split("_")[0] for t in keyed})
    except slurm_ctl.SlurmError as e:
        if strict:
            raise slurm_ctl.SlurmError(f"cannot tell which shards SLURM still holds: {e}") from e
        log.warning("SLURM states unavailable: %s", e)
        return {}
    out: dict[int, ShardJob] = {}
    for task in keyed:  # oldest first: a later submission's ended state replaces
        state = states.get(task.key)
        if state is None:
            continue
        job_id, _, index = task.key.partition("_")
        job = ShardJob(label(state), job_id, index or None, state.state, task.log)
        for s in task.shards:
            old = out.get(s)
            if old is None or _RANK.get(job.label, 0) >= _RANK.get(old.label, 0):
                out[s] = job
    return out


def active_shards(rd: RunDir) -> set[int]:
    """Shards SLURM runs or holds pending (raises when SLURM cannot say)."""
    return {s for s, j in slurm_states(rd, strict=True).items()
            if j.label in ("running", "pending")}
