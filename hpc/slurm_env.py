"""What SLURM tells a task about itself, read from the environment (nothing here talks to slurmctld).

Outside SLURM every field falls back to this machine, so the same code sizes a laptop run and an
array task.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


def _int(name: str) -> int | None:
    value = os.environ.get(name, "")
    head = value.split("(")[0].split(",")[0]  # "4(x2)" and "4,4" forms
    return int(head) if head.isdigit() else None


def _gpus() -> int | None:
    for name in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
        value = os.environ.get(name, "")
        tail = value.rsplit(":", 1)[-1]  # "h200:8" form
        if tail.isdigit():
            return int(tail)
    devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    if devices is not None:
        return len([d for d in devices.split(",") if d.strip()])
    try:  # outside SLURM with no CUDA_VISIBLE_DEVICES: ask the driver
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML library or no driver: no GPU
        return None


@dataclass(frozen=True)
class SlurmEnv:
    job_id: str | None
    array_job_id: str | None
    array_task_id: int | None
    restart_count: int
    cpus: int
    gpus: int
    mem_mb: int | None
    tmpdir: str
    node: str

    @property
    def in_slurm(self) -> bool:
        return self.job_id is not None

    @property
    def task_key(self) -> str:
        """`ARRAYJOB_TASK` (what `scontrol requeue` and W&B run ids key on), else the job id or pid."""
        if self.array_job_id and self.array_task_id is not None:
            return f"{self.array_job_id}_{self.array_task_id}"
        return self.job_id or f"local-{os.getpid()}"

    @classmethod
    def from_environ(cls) -> "SlurmEnv":
        cpus = _int("SLURM_CPUS_PER_TASK") or _int("SLURM_CPUS_ON_NODE") or len(
            os.sched_getaffinity(0))
        mem = _int("SLURM_MEM_PER_NODE")
        if mem is None and _int("SLURM_MEM_PER_CPU") is not None:
            mem = _int("SLURM_MEM_PER_CPU") * cpus
        return cls(
            job_id=os.environ.get("SLURM_JOB_ID"),
            array_job_id=os.environ.get("SLURM_ARRAY_JOB_ID"),
            array_task_id=_int("SLURM_ARRAY_TASK_ID"),
            restart_count=_int("SLURM_RESTART_COUNT") or 0,
            cpus=cpus,
            gpus=_gpus() or 0,
            mem_mb=mem,
            tmpdir=os.environ.get("SLURM_TMPDIR") or os.environ.get("TMPDIR") or "/tmp",
            node=os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
        )
