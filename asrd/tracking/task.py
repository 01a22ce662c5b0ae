"""Progress of one array task: a W&B run (unless disabled), a tqdm bar or periodic log lines.

Why: users watch a 1000-task run from W&B run pages and from SLURM log files; both show the same
few numbers. The pipeline reports the shard it is on; the tracker turns that into task totals
that only grow, rates, fractions and an ETA, and logs them at most every `wandb.log_every_s`
(lines every `pipeline.log_every_s`).

Metrics. `TaskTracker.update` takes the pipeline's metrics of the shard it is on, already under
their logged names (all optional):

  progress/shard                          the shard being worked on; tells shards apart
  progress/items_done, progress/items_total, progress/items_failed, progress/items_cut_again
                                          per shard, restarting at each one; logged as sums
                                          over the task's shards (cut again: rows transcribed
                                          a second time in shorter segments)
  progress/audio_s_done                   audio seconds done, summed likewise
  failures/<reason>                       failed items by reason, summed likewise
  progress/shard_elapsed_s                the pipeline's shard clock
  latency/decode_ms_p50, latency/decode_ms_p90, latency/engine_ms_p50, latency/engine_ms_p90
  queue/decode, queue/engine, queue/judge items waiting before that stage
  engine/calls_in_flight, engine/starved_s
  any other key                           logged unchanged (current shard's value)

and derives:

  throughput/items_per_s                  items finished per wall second, since the last log
  throughput/audio_s_per_s                audio seconds per wall second, since the last log
  throughput/rtf                          real-time factor since the last log: wall seconds per
                                          audio second (0.002 = 500x faster than real time)
  throughput/items_per_s_avg, throughput/audio_s_per_s_avg, throughput/rtf_avg
                                          the same since this process's first update
  progress/elapsed_s                      seconds since this process's first update
  progress/shard_fraction                 current shard: items_done / items_total
  progress/fraction                       task: (shards moved past + shard_fraction) / shards
  progress/eta_s                          seconds left at the average progress rate
  gpu/<i>/util_pct, gpu/<i>/mem_used_gib, gpu/<i>/mem_total_gib
                                          NVML, the GPUs in CUDA_VISIBLE_DEVICES; absent
                                          without NVML
  memory/used_gib, memory/limit_gib       the task's memory working set and the limit it counts
                                          against: its cgroup's (SLURM's), else the node's
  slurm/restart_count                     SLURM_RESTART_COUNT (requeues so far)

With `monitoring.textfile_dir` or `monitoring.port` set, the same metrics go to Prometheus
(asrd.tracking.prometheus) at most every `monitoring.every_s`, with each shard's counters apart
and the time of the last finished row.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from asrd.tracking import console, rates, wandb_run
from asrd.tracking.gpus import Gpus
from asrd.tracking.memory import memory_use
from asrd.tracking.prometheus import Reading, TaskExporter
from asrd.tracking.rates import Progress
from asrd.tracking.steps import Steps
from asrd.tracking.wandb_run import shard_label
from hpc.slurm_env import SlurmEnv

SHARD = "progress/shard"
ITEMS_DONE, ITEMS_TOTAL = "progress/items_done", "progress/items_total"
AUDIO_S_DONE = "progress/audio_s_done"
SUMMED = (ITEMS_DONE, ITEMS_TOTAL, "progress/items_failed", "progress/items_cut_again",
          AUDIO_S_DONE)
SUMMED_PREFIX = "failures/"

Metrics = dict[str, float | int]


class TaskTracker:
    """Progress of one array task: a W&B run (unless disabled), a tqdm bar or periodic lines."""

    clock: Callable[[], float] = staticmethod(time.monotonic)  # rates and intervals

    def __init__(self, cfg: DictConfig, shards: list[int], env: SlurmEnv, run: Any = None,
                 steps: Steps | None = None, reopen: Callable[[], Any] | None = None):
        self.cfg, self.shards, self.env, self.run = cfg, list(shards), env, run
        self.steps = steps or Steps(None)
        self.reopen = reopen  # the same run resumed, through a fresh W&B service
        self.service = wandb_run.service_pid() if run is not None else None
        self.label = f"{env.task_key} {shard_label(self.shards)}"
        self.gpus = Gpus()
        self.bar = console.task_bar(self.label)
        self.tty = not self.bar.disable
        self.by_shard: dict[Any, Metrics] = {}  # latest metrics of each shard, in order seen
        self.latest: Metrics = {}  # current shard's metrics + task sums
        self.latest_logged: Metrics = {}
        self.first: Progress | None = None  # at this process's first update
        self.window: Progress | None = None  # at the last log
        self.last_log = self.last_line = self.last_export = -math.inf
        self.broken = False
        self.rows_seen, self.progress_at = 0, time.time()  # rows done, and when they last grew
        self.exporter = TaskExporter.start(cfg, env, ",".join(map(str, self.shards)))
        if self.exporter is not None:  # running from the start: a hung start-up shows too
            self.exporter.publish(Reading({}, {}, self.progress_at))

    @classmethod
    def start(cls, cfg: DictConfig, run_dir: Path, shards: list[int]) -> TaskTracker:
        """`shards`: those this process will work on (its array task's shards not yet done)."""
        env = SlurmEnv.from_environ()
        if cfg.wandb.mode == "disabled":
            return cls(cfg, shards, env)
        run_id = wandb_run.task_run_id(cfg, run_dir, env)
        root = wandb_run.wandb_root(cfg, run_dir)
        reopen = functools.partial(wandb_run.init, cfg, root, id=run_id, resume="allow",
                                   job_type="shard", name=f"{cfg.run.name}-{shard_label(shards)}")
        try:
            run = reopen(
                config=wandb_run.run_config(cfg, {"shards": list(shards), "slurm": {
                    "task_key": env.task_key, "job_id": env.job_id,
                    "array_job_id": env.array_job_id, "array_task_id": env.array_task_id,
                    "cpus": env.cpus, "gpus": env.gpus, "mem_mb": env.mem_mb}}))
        except Exception as e:  # noqa: BLE001 - tracking is not worth a failed task
            console.say(f"W&B init failed ({type(e).__name__}: {e}); continuing without W&B")
            return cls(cfg, shards, env)
        steps = Steps(root / "wandb" / f"asrd-{run_id}.json")
        steps.save()
        wandb_run.announce(run)
        run.summary.update({"slurm/restart_count": env.restart_count, "slurm/node": env.node})
        return cls(cfg, shards, env, run, steps, reopen)

    # --- the pipeline's calls ---------------------------------------------------------------------
    def update(self, metrics: Mapping[str, float | int]) -> None:
        """Record the pipeline's metrics; logs and prints only when their interval has passed."""
        now = self.clock()
        shard = metrics.get(SHARD)
        self.by_shard.setdefault(shard, {}).update(metrics)
        self.latest = {**self.by_shard[shard], **self._sums()}
        if self.latest.get(ITEMS_DONE, 0) > self.rows_seen:
            self.rows_seen, self.progress_at = self.latest[ITEMS_DONE], time.time()
        if self.first is None:
            self.first = self.window = self._progress(now)
        if self.tty:
            fractions = self._fractions()
            console.show_on_bar(self.bar, fractions[1] if fractions else None, self.latest)
        if now - self.last_log >= self.cfg.wandb.log_every_s:
            self._log(now)
        if not self.tty and now - self.last_line >= self.cfg.pipeline.log_every_s:
            self.last_line = now
            print(self.line(self._snapshot_at(now)), file=sys.stderr, flush=True)
        if self.exporter is not None and now - self.last_export >= self.cfg.monitoring.every_s:
            self.last_export = now
            self.exporter.publish(self._reading(self._snapshot_at(now)))

    def finish(self, summary: Mapping[str, Any] | None = None, requeued: bool = False,
               timeout_s: float = wandb_run.FINISH_TIMEOUT_S, exit_code: int = 0) -> None:
        """Log the final state and close the W&B run with `exit_code`; `requeued` marks it as
        preempting (it will continue). Returns within about `timeout_s` even if the W&B service
        is dead or hung; where SLURM's signal ended the service, the run is ended through a
        fresh one, the final metrics in its summary."""
        run = self.run
        lost = self.service is not None and wandb_run.service_exited(self.service)
        if lost:  # nothing more reaches the old service: log the last state with the ending
            self.run = None
        if self.first is not None:
            self._log(self.clock())
            if not self.tty:
                print(self.line(self.latest_logged), file=sys.stderr, flush=True)
        self.bar.close()
        if self.exporter is not None:
            self.exporter.publish(self._reading(self.latest_logged, exit_code))
            self.exporter.close()
        self.run = None
        if run is None:
            return
        try:
            self.steps.save()
        except OSError as e:  # the task's own exit matters more than the next run's steps
            console.say(f"W&B step file not saved ({e})")
        final = {**self.latest_logged, **(summary or {})} if lost else summary
        wandb_run.close(run, final, requeued, timeout_s, exit_code, self.service, self.reopen)

    def snapshot(self, now: float) -> Metrics:
        """The logged metrics now (names in the module docstring)."""
        assert self.first is not None and self.window is not None
        point = self._progress(now)
        out = dict(self.latest)
        out.update(rates.rates(self.window, point))
        out.update(rates.rates(self.first, point, "_avg"))
        out["progress/elapsed_s"] = now - self.first.clock
        fractions = self._fractions()
        if fractions is not None:
            out["progress/shard_fraction"], out["progress/fraction"] = fractions
            eta = rates.eta_s(self.first, point)
            if eta is not None:
                out["progress/eta_s"] = eta
        out.update(self.gpus.sample())
        memory = memory_use()
        out["memory/used_gib"] = memory.used_bytes / 2**30
        out["memory/limit_gib"] = memory.limit_bytes / 2**30
        out["slurm/restart_count"] = self.env.restart_count
        return out

    def line(self, m: Mapping[str, Any]) -> str:
        """One line for a SLURM log from a snapshot `m`."""
        return console.summary_line(self.label, self._current(), len(self.by_shard), m)

    # --- internals --------------------------------------------------------------------------------
    def _snapshot_at(self, now: float) -> Metrics:
        """The snapshot logged at `now`, else a fresh one."""
        return self.latest_logged if self.last_log == now else self.snapshot(now)

    def _reading(self, m: Metrics, exit_code: int | None = None) -> Reading:
        """What Prometheus gets: a copy, as the endpoint's thread reads it while shards go on."""
        return Reading(m, {s: dict(v) for s, v in self.by_shard.items()}, self.progress_at,
                       exit_code)

    def _current(self) -> Metrics:
        """The current shard's own metrics (the last shard seen)."""
        return next(reversed(self.by_shard.values()), {})

    def _sums(self) -> Metrics:
        """Counters that restart at each shard, summed over the shards seen."""
        out: Metrics = {}
        for m in self.by_shard.values():
            for k, v in m.items():
                if k in SUMMED or k.startswith(SUMMED_PREFIX):
                    out[k] = out.get(k, 0) + v
        return out

    def _fractions(self) -> tuple[float, float] | None:
        """(current shard's, task's) fraction done; None until the pipeline gives items_total."""
        cur = self._current()
        if ITEMS_TOTAL not in cur:
            return None
        total = cur[ITEMS_TOTAL]
        shard_f = cur.get(ITEMS_DONE, 0) / total if total else 1.0
        n = max(len(self.shards), len(self.by_shard))
        return shard_f, min(1.0, (len(self.by_shard) - 1 + shard_f) / n)

    def _progress(self, now: float) -> Progress:
        fractions = self._fractions()
        return Progress(clock=now, items=float(self.latest.get(ITEMS_DONE, 0)),
                        audio_s=float(self.latest.get(AUDIO_S_DONE, 0.0)),
                        fraction=fractions[1] if fractions else 0.0)

    def _log(self, now: float) -> None:
        self.last_log = now
        self.latest_logged = self.snapshot(now)
        self.window = self._progress(now)
        if self.run is None or self.broken:
            return
        try:
            self.run.log(self.latest_logged, step=self.steps.next())
        except Exception as e:  # noqa: BLE001 - one warning, then tracking stays off
            self.broken = True
            console.say(f"W&B log failed ({type(e).__name__}: {e}); "
                        "W&B logging off for this task")
