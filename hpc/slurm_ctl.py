"""Questions to the SLURM controller through its command-line clients (scontrol, squeue, sacct).

Job states come from sacct where accounting exists (it remembers finished jobs for good) and from
`scontrol show job` otherwise (it knows finished jobs for MinJobAge, 300 s by default). Keys are
SLURM's own: "ARRAYJOB_TASK" for an array task, the plain job id otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterable

from hpc.arrays import ArraySpecError, parse_array

SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001


class SlurmError(RuntimeError):
    """A SLURM client is missing or failed; the message carries its stderr."""


def available() -> bool:
    return shutil.which("sbatch") is not None


def _run(cmd: list[str], timeout: float = 60, stdin: str | None = None
         ) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise SlurmError(f"{cmd[0]} not found: run this on a SLURM login node (or start the local "
                         "cluster with hpc/scripts/slurm_local.sh start)")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin)


def _check(proc: subprocess.CompletedProcess) -> str:
    if proc.returncode != 0:
        raise SlurmError(f"{' '.join(proc.args)} failed ({proc.returncode}): "
                         f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def show_config() -> dict[str, str]:
    """`scontrol show config` as a dict ("MaxArraySize" -> "1001")."""
    out = _check(_run(["scontrol", "show", "config"]))
    config = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            config[key.strip()] = value.strip()
    return config


def sinfo_nodes(fields: str, timeout: float = 60) -> str:
    """`sinfo -h -N -o FIELDS`: one line per node and partition."""
    try:
        return _check(_run(["sinfo", "-h", "-N", "-o", fields], timeout=timeout))
    except subprocess.TimeoutExpired:
        raise SlurmError(f"sinfo did not answer in {timeout:g} s") from None


def max_array_size() -> int:
    value = show_config().get("MaxArraySize", "")
    return int(value) if value.isdigit() else SLURM_DEFAULT_MAX_ARRAY_SIZE


def _job_arg(job_ids: Iterable[str]) -> str:
    return ",".join(sorted({str(j) for j in job_ids}))


@dataclass(frozen=True)
class TaskState:
    """One task's state as SLURM reports it."""

    state: str  # SLURM's job state: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...
    started: bool  # it was given a node (False: it ended, e.g. was cancelled, while pending)


def _started(nodes: str, restarts: int = 0) -> bool:
    return restarts > 0 or nodes.strip() not in ("", "(null)", "None assigned")


def queue_states(job_ids: Iterable[str]) -> dict[str, TaskState]:
    """Pending and running tasks of these jobs, one key per array task (`squeue -r`)."""
    ids = _job_arg(job_ids)
    if not ids:
        return {}
    proc = _run(["squeue", "-h", "-r", "-o", "%i|%T|%N", "-j", ids])
    if proc.returncode != 0 and "Invalid job id" in proc.stderr:
        return {}  # none of them is known any more
    states = {}
    for line in _check(proc).splitlines():
        key, state, nodes = (line.split("|") + ["", ""])[:3]
        if key:
            states[key.strip()] = TaskState(state.strip(), _started(nodes))
    return states


def accounting_states(job_ids: Iterable[str]) -> dict[str, TaskState] | None:
    """States from sacct, or None where accounting is disabled (no slurmdbd)."""
    ids = _job_arg(job_ids)
    if not ids:
        return {}
    proc = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,NodeList", "-j", ids])
    if proc.returncode != 0:
        return None
    states: dict[str, TaskState] = {}
    for line in proc.stdout.splitlines():
        key, state, nodes = (line.split("|") + ["", ""])[:3]
        task = TaskState(state.split(" ")[0], _started(nodes))  # "CANCELLED by 0"
        states.update({k: task for k in _expand_key(key.strip())})
    return states


def _show_job_lines(args: list[str]) -> list[dict[str, str]]:
    proc = _run(["scontrol", "show", "job", "-o", *args])
    if proc.returncode != 0 and "Invalid job id" in proc.stderr:
        return []  # purged after MinJobAge, or never existed
    _check(proc)  # e.g. the controller is down: say so once, not once per job
    return [dict(f.split("=", 1) for f in line.split() if "=" in f)
            for line in proc.stdout.splitlines() if line.strip()]


def controller_states(job_ids: Iterable[str]) -> dict[str, TaskState]:
    """States from `scontrol show job` (what slurmctld still holds in memory)."""
    states: dict[str, TaskState] = {}
    for job_id in sorted({str(j).split("_")[0] for j in job_ids}):
        for fields in _show_job_lines([job_id]):
            task = TaskState(fields.get("JobState", "UNKNOWN"),
                             _started(fields.get("NodeList", ""),
                                      int(fields.get("Restarts", "0") or 0)))
            array_id, index = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
            if array_id and index:
                states.update({k: task for k in _expand_key(f"{array_id}_[{index}]")})
            elif "JobId" in fields:
                states[fields["JobId"]] = task
    return states


def job_states(job_ids: Iterable[str]) -> dict[str, TaskState]:
    """The best known state of every task of these jobs: accounting, else the controller."""
    ids = list(job_ids)
    live = queue_states(ids)  # first: it fails fast when the controller is unreachable
    states = accounting_states(ids)
    if states is None:
        states = controller_states(ids)
    states.update(live)  # live state wins (a requeued task is PENDING again)
    return states


def jobs_named(name: str) -> dict[str, str]:
    """Array (or plain) job id -> comment of the jobs called `name` that SLURM still lists,
    finished ones included while the controller keeps them (`squeue --states=all`)."""
    proc = _run(["squeue", "-h", "--states=all", "--name", name, "-o", "%F|%k"])
    jobs: dict[str, str] = {}
    for line in _check(proc).splitlines():
        job_id, _, comment = line.partition("|")
        if job_id.strip():
            jobs[job_id.strip()] = comment.strip()
    return jobs


def _expand_key(key: str) -> list[str]:
    """"12_[3-5%2]" -> ["12_3", "12_4", "12_5"]; "12_4" and "12" stay as they are."""
    base, sep, rest = key.partition("_[")
    if not sep:
        return [key] if key else []
    try:
        indices = parse_array(rest.rstrip("]")).indices
    except ArraySpecError:
        return []
    return [f"{base}_{i}" for i in indices]


def sbatch(args: list[str], script: str) -> str:
    """`sbatch ARGS` with the batch script on stdin; returns sbatch's output (the job id with
    --parsable). A refusal raises SlurmError with SLURM's reason."""
    return _check(_run(["sbatch", *args], stdin=script)).strip()


def cancel(job_ids: Iterable[str]) -> None:
    ids = sorted({str(j) for j in job_ids})
    if ids:
        _check(_run(["scancel", *ids]))
