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
from pathlib import Path
from typing import Any, Callable, Sequence

import submitit
from submitit.core.utils import FailedJobError
from submitit.helpers import Checkpointable

from hpc.arrays import ArrayChunk, split
from hpc.commit import read_json, write_json
from hpc.slurm_env import SlurmEnv
from hpc.stop import REQUEUE_SIGNAL, run_until_stopped

log = logging.getLogger("hpc.launch")

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


class ArraySubmitError(RuntimeError):
    """SLURM refused an array after `queued` ones were accepted (they stay queued)."""

    def __init__(self, queued: list[dict[str, Any]], refused: list[ArrayChunk], reason: str):
        self.queued, self.refused, self.reason = queued, refused, reason
        super().__init__(f"array {len(queued) + 1} of {len(queued) + len(refused)} was refused: "
                         f"{reason}")


def submit_arrays(executor: submitit.AutoExecutor, fn: Callable[[Any], Any], tasks: Sequence[Any],
                  chunks: Sequence[ArrayChunk],
                  on_queued: Callable[[dict[str, Any]], None] | None = None,
                  ) -> tuple[list[dict[str, Any]], list[submitit.Job]]:
    """One `map_array` per chunk; returns, per array, its job id and one SLURM key per task,
    and the submitit jobs (a local executor's jobs end with them: wait on them).

    `on_queued` gets each array as soon as SLURM accepted it, so that a later refusal (a job
    limit, a controller restart) cannot lose track of it; a refusal raises ArraySubmitError."""
    arrays, all_jobs = [], []
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
        arrays.append({
            "job_id": jobs[0].job_id.split("_")[0],
            "offset": chunk.offset,
            "count": chunk.count,
            "parallelism": chunk.parallelism,
            "task_keys": [job.job_id for job in jobs],  # "123_4", or "123" for a lone task
        })
        log.info("submitted array %s: %d tasks (%%%s)", arrays[-1]["job_id"], chunk.count,
                 chunk.parallelism)
        if on_queued is not None:
            on_queued(arrays[-1])
    return arrays, all_jobs


def new_record(kind: str, tasks: Sequence[Any], arrays: list[dict[str, Any]],
               **extra: Any) -> dict[str, Any]:
    """What was submitted, when, by whom and from where: the join key for status and resubmit."""
    return {
        "kind": kind,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "argv": sys.argv,
        "tasks": [list(t) if isinstance(t, (list, tuple)) else t for t in tasks],
        "arrays": arrays,
        **extra,
    }


def record_path(directory: str | Path, name: str) -> Path:
    """Where a new record goes: DIR/<UTC time>-<name>.json (names sort oldest first)."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return Path(directory) / f"{stamp}-{name}.json"


def write_record(path: str | Path, record: dict[str, Any]) -> Path:
    """Commit a record atomically (again, as it grows: readers see the old or the new one)."""
    write_json(path, record)
    return Path(path)


def read_records(directory: str | Path) -> list[dict[str, Any]]:
    """All records, oldest first (each with its `path`)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    records = []
    for path in sorted(p for p in d.glob("*.json") if not p.name.startswith(".")):
        record = read_json(path)
        record["path"] = str(path)
        records.append(record)
    return records


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
