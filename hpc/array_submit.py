"""Submitting idempotent work items to SLURM as job arrays through submitit, and surviving
preemption, time limits and requeues.

The work function must be idempotent (it skips finished items and resumes partial ones from what
it committed): then a requeued task simply runs it again, and no state travels in the pickle
(requeue re-reads the pickle, so state kept there would come back stale).

Signals inside a task go through hpc.stop (one stop path for every entry point); on SIGUSR2 the
task is requeued after the work has kept what it finished (submitit's checkpoint-and-requeue when
submitit runs it, else `scontrol requeue ARRAYJOB_TASK`).
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import submitit
from submitit.core.utils import FailedJobError
from submitit.helpers import Checkpointable

from hpc.arrays import ArrayChunk, split
from hpc.commit import read_json, write_json
from hpc.slurm_env import SlurmEnv
from hpc.stop import REQUEUE_SIGNAL, run_until_stopped

log = logging.getLogger("hpc.array_submit")


def requeue_self(max_restarts: int | None = None) -> bool:
    """`scontrol requeue` this task (ARRAYJOB_TASK for an array task, as SLURM requires)."""
    env = SlurmEnv.from_environ()
    if not env.in_slurm:
        log.warning("not in a SLURM job: nothing to requeue")
        return False
    if max_restarts is not None and env.restart_count >= max_restarts:
        log.warning("not requeued: task %s already restarted %d times (max %d)", env.task_key,
                    env.restart_count, max_restarts)
        return False
    try:
        subprocess.run(["scontrol", "requeue", env.task_key], check=True, timeout=60,
                       capture_output=True, text=True)
    except (OSError, subprocess.SubprocessError) as e:  # the stop goes on: the work is kept
        log.error("could not requeue %s: %s", env.task_key, getattr(e, "stderr", None) or e)
        return False
    log.warning("requeued %s (restart %d)", env.task_key, env.restart_count + 1)
    return True


class Resumable(Checkpointable):
    """A submitit callable that is requeued, not lost, when SLURM stops its task.

    submitit's checkpoint pickles this object with the same arguments; as the wrapped function
    resumes from what it committed, that is all a restart needs.
    """

    def __init__(self, fn: Callable[..., Any], max_requeues: int | None = None):
        self.fn = fn
        self.max_requeues = max_requeues

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        submitit_requeue = signal.getsignal(REQUEUE_SIGNAL)  # bound by submitit in a job

        def requeue() -> None:
            if callable(submitit_requeue):
                submitit_requeue(REQUEUE_SIGNAL, None)  # checkpoint, requeue, exit
            else:
                requeue_self(self.max_requeues)

        return run_until_stopped(self.fn, *args, on_requeue=requeue, **kwargs)


def make_executor(folder: str | Path, params: dict[str, Any], cluster: str | None = None,
                  max_requeues: int = 3) -> submitit.AutoExecutor:
    """A submitit executor whose jobs run this interpreter (the venv that has the code)."""
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster,
                                     slurm_max_num_timeout=max_requeues)
    executor.update_parameters(**params)
    return executor


def plan_arrays(n_tasks: int, max_array_size: int | None,
                parallelism: int | None) -> list[ArrayChunk]:
    """The arrays `submit_arrays` will make (no limit: one array)."""
    return split(n_tasks, max_array_size or max(n_tasks, 1), parallelism)


@dataclass(frozen=True)
class RecordedArray:
    """One array of a submission: queued (its job id and one SLURM key per task), or written
    into a script that `sbatch` submits later (its array spec; no job id yet)."""

    job_id: str | None
    offset: int  # its first task's position in the submission's tasks
    count: int
    parallelism: int | None
    task_keys: tuple[str, ...] | None = None  # "123_4", or "123" for a lone task
    spec: str | None = None  # the `--array` spec of a scripted array

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"job_id": self.job_id, "offset": self.offset, "count": self.count,
                               "parallelism": self.parallelism}
        if self.task_keys is not None:
            out["task_keys"] = list(self.task_keys)
        if self.spec is not None:
            out["spec"] = self.spec
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RecordedArray:
        keys = d.get("task_keys")
        return cls(d.get("job_id"), d["offset"], d["count"], d.get("parallelism"),
                   None if keys is None else tuple(keys), d.get("spec"))


@dataclass(frozen=True)
class SubmissionRecord:
    """What was submitted, when, by whom and from where: the join key for status and resubmit.
    `details` are the submitter's own fields (stored beside these, at the top level)."""

    kind: str
    created: str
    user: str
    host: str
    argv: list[str]
    tasks: list[Any]
    arrays: tuple[RecordedArray, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # the file it was read from (not stored)

    @classmethod
    def new(cls, kind: str, tasks: Sequence[Any], **details: Any) -> SubmissionRecord:
        return cls(kind, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                   getpass.getuser(), socket.gethostname(), list(sys.argv),
                   [list(t) if isinstance(t, (list, tuple)) else t for t in tasks],
                   details=details)

    def with_array(self, array: RecordedArray) -> SubmissionRecord:
        return replace(self, arrays=(*self.arrays, array))

    def with_details(self, **details: Any) -> SubmissionRecord:
        return replace(self, details={**self.details, **details})

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "created": self.created, "user": self.user, "host": self.host,
                "argv": self.argv, "tasks": self.tasks,
                "arrays": [a.to_json() for a in self.arrays], **self.details}

    @classmethod
    def from_json(cls, d: dict[str, Any], path: Path | None = None) -> SubmissionRecord:
        own = {"kind", "created", "user", "host", "argv", "tasks", "arrays"}
        return cls(d["kind"], d["created"], d["user"], d["host"], d["argv"], d["tasks"],
                   tuple(RecordedArray.from_json(a) for a in d["arrays"]),
                   {k: v for k, v in d.items() if k not in own}, path)


class ArraySubmitError(RuntimeError):
    """SLURM refused an array after `queued` ones were accepted (they stay queued)."""

    def __init__(self, queued: list[RecordedArray], refused: list[ArrayChunk], reason: str):
        self.queued, self.refused, self.reason = queued, refused, reason
        super().__init__(f"array {len(queued) + 1} of {len(queued) + len(refused)} was refused: "
                         f"{reason}")


def submit_arrays(executor: submitit.AutoExecutor, fn: Callable[[Any], Any], tasks: Sequence[Any],
                  chunks: Sequence[ArrayChunk],
                  on_queued: Callable[[RecordedArray], None] | None = None,
                  ) -> tuple[list[RecordedArray], list[submitit.Job]]:
    """One `map_array` per chunk; returns the queued arrays and the submitit jobs (a local
    executor's jobs end with them: wait on them).

    `on_queued` gets each array as soon as SLURM accepted it, so that a later refusal (a job
    limit, a controller restart) cannot lose track of it; a refusal raises ArraySubmitError."""
    arrays: list[RecordedArray] = []
    all_jobs: list[submitit.Job] = []
    for i, chunk in enumerate(chunks):
        items = list(tasks[chunk.offset:chunk.offset + chunk.count])
        if chunk.parallelism and executor.cluster == "slurm":
            executor.update_parameters(slurm_array_parallelism=chunk.parallelism)
        try:
            jobs = executor.map_array(fn, items)
        except FailedJobError as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            raise ArraySubmitError(arrays, list(chunks[i:]), reason) from e
        all_jobs += jobs
        arrays.append(RecordedArray(jobs[0].job_id.split("_")[0], chunk.offset, chunk.count,
                                  chunk.parallelism, tuple(job.job_id for job in jobs)))
        log.info("submitted array %s: %d tasks (%%%s)", arrays[-1].job_id, chunk.count,
                 chunk.parallelism)
        if on_queued is not None:
            on_queued(arrays[-1])
    return arrays, all_jobs


def record_path(directory: str | Path, name: str) -> Path:
    """Where a new record goes: DIR/<UTC time>-<name>.json (names sort oldest first)."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return Path(directory) / f"{stamp}-{name}.json"


def write_record(path: str | Path, record: SubmissionRecord) -> Path:
    """Commit a record atomically (again, as it grows: readers see the old or the new one)."""
    write_json(path, record.to_json())
    return Path(path)


def read_record(path: str | Path) -> SubmissionRecord:
    return SubmissionRecord.from_json(read_json(path), Path(path))


def read_records(directory: str | Path) -> list[SubmissionRecord]:
    """All records, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return [read_record(p) for p in sorted(p for p in d.glob("*.json")
                                            if not p.name.startswith("."))]


def export_lines(env: dict[str, str]) -> list[str]:
    """`export K=V` shell lines, values quoted; a key that is no shell name is refused."""
    lines = []
    for key, value in env.items():
        if not key.isidentifier() or not key.isascii():
            raise ValueError(f"environment variable name {key!r} is not a valid shell name")
        lines.append(f"export {key}={shlex.quote(str(value))}")
    return lines


def python_executable() -> str:
    """This interpreter: jobs must import the same installed code (the venv's python)."""
    return os.path.abspath(sys.executable)
