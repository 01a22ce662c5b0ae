"""Tracking: one W&B run per array task, one per merge, tqdm bars and one-line progress summaries.

Why: users watch a 1000-task run from W&B run pages and from SLURM log files; both show the same
few numbers, and tracking never costs the job (see `wandb_run`).

Modules, one job each:
  task       TaskTracker: the pipeline's per-shard metrics -> task metrics, logged and printed
             (the metric table is there)
  wandb_run  run ids, config without secrets, init with offline fallback, bounded finish
  steps      the W&B step file that keeps steps increasing across requeues
  rates      throughput and ETA between two `Progress` points
  console    tqdm bars, the one-line summary for SLURM logs, `asrd:` messages
  gpus       NVML readings of the visible GPUs
  merge_run  the merge's run: totals, failures, throughput per shard and host, samples
"""

from asrd.tracking.console import progress
from asrd.tracking.merge_run import log_merge, merge_totals
from asrd.tracking.task import TaskTracker
from asrd.tracking.wandb_run import redact, run_config, shard_label, task_run_id, wandb_root

__all__ = ["TaskTracker", "log_merge", "merge_totals", "progress", "redact", "run_config",
           "shard_label", "task_run_id", "wandb_root"]
