"""A follow-up job: a small SLURM job that runs a command once other jobs have ended, however they
ended (`--dependency=afterany`: completed, failed, cancelled, preempted, timed out).

It lives in SLURM's queue, so it outlasts the shell that submitted it: a chain of follow-ups can
check what a job array left undone and submit it again with nobody logged in. A job that SLURM
requeues (PreemptMode=REQUEUE) has not ended, so the follow-up waits for its rerun; one that
SLURM cancels (PreemptMode=CANCEL) has, so the follow-up runs and finds its work undone.

Submitting from inside a job: the job's own SLURM_* variables would leak into the new job's
submission (its task count, memory, GPUs), so every submission from here runs in an environment
without them (`submit_env`), keeping only SLURM_CONF, which names the cluster.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from pathlib import Path
from typing import Iterator, Sequence

from submitit.helpers import clean_env

from hpc import slurm_ctl

KEEP = ("SLURM_CONF",)  # the cluster's config file: a submission needs it wherever it runs


@contextlib.contextmanager
def submit_env() -> Iterator[None]:
    """The environment of a submission made inside a job: the job's SLURM_* (and submitit's)
    variables hidden, SLURM_CONF kept."""
    kept = {k: os.environ[k] for k in KEEP if k in os.environ}
    with clean_env():
        os.environ.update(kept)
        yield


def follow_up_script(command: Sequence[str], setup: Sequence[str] = ()) -> str:
    """The batch script: the setup lines (a mount, exports), then `command`, quoted."""
    return "\n".join(["#!/bin/bash", "set -eo pipefail", *setup,
                      "exec " + shlex.join(command), ""])


def submit_follow_up(after: Sequence[str], command: Sequence[str], *, name: str, output: Path,
                     options: Sequence[str] = (), setup: Sequence[str] = ()) -> str:
    """Queue `command` to run once every job in `after` has ended (at once if `after` is empty);
    returns its job id. `options` are sbatch words ("--partition=cpu"); the job is requeued,
    not lost, if its own node goes away."""
    args = ["--parsable", f"--job-name={name}", f"--output={output}",
            "--open-mode=append", "--requeue", *options]
    if after:
        args.append("--dependency=afterany:" + ":".join(sorted(set(after), key=_job_order)))
    output.parent.mkdir(parents=True, exist_ok=True)
    with submit_env():
        out = slurm_ctl.sbatch(args, follow_up_script(command, setup))
    return out.split(";")[0]  # "123" or "123;cluster"


def _job_order(job_id: str) -> tuple[int, str]:
    return (int(job_id), "") if job_id.isdigit() else (0, job_id)
