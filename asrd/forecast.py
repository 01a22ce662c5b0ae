"""The run's forecast: task wall times, shards that would outlive the time limit, node- and
GPU-hours and the wall-clock at the array's parallelism, from a measured rate.

A rate is what one task (one node) does: audio seconds per second of shard work, plus a fixed
start-up per task (process start, Ray, engine load: paid once per task, however many shards it
runs). It comes from a calibration (`asrd calibrate`: a sample of the index across its duration
range through one task's real pipeline on this node, written to RUN_DIR/calibration.json) or from
the done-markers of earlier runs with the same rate settings (the engine, audio and judge
sections and the task's CPUs and GPUs). Only measurements of the same settings are reused: a
forecast from another model or batch size would be a guess dressed as a number.

The arithmetic assumes a task starts as soon as an array slot frees (no queue wait) and that
shards take their audio seconds over the rate; `asrd status` shows an ETA from the rate so far.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from asrd.plan import Plan, ShardSpec, _durations, cut, load_plan
from asrd.rundir import RunDir, RunDirError
from hpc.arrays import group
from hpc.commit import read_json, write_json

# A task is planned to take at most this share of its time limit (less the USR2 warning): the
# forecast's measured error on the one-node cluster is within 20 % (bench/RESULTS.md).
FIT_SHARE = 0.8

# Settings that change how fast a task goes; a measured rate is reused only when they match.
RATE_SECTIONS = ("engine", "audio", "judge", "slurm.gpus_per_node", "slurm.cpus_per_task")


class ForecastError(ValueError):
    """No usable rate, or a calibration that cannot run; the message says what to do."""


@dataclass(frozen=True)
class Rate:
    audio_s_per_s: float  # audio seconds per second of shard work, one task (node)
    startup_s: float  # a task's fixed cost: from its process start to its first shard, and exit
    source: str  # where it was measured
    shards: int = 0  # measurements behind it
    audio_s: float = 0.0

    def task_wall_s(self, audio_s: float) -> float:
        return self.startup_s + audio_s / self.audio_s_per_s


@dataclass
class Forecast:
    rate: Rate
    total_audio_h: float
    num_shards: int
    shards_per_task: int
    time_limit_s: float  # slurm.time_min, less the USR2 warning (slurm.signal_delay_s)
    task_wall_s: list[float]  # per array task, start-up included
    over_limit: list[int]  # shards whose task would not end before the limit
    suggested_num_shards: int | None  # None: no shard count fits (start-up alone is too long)
    node_hours: float
    gpu_hours: float
    parallelism: int
    wall_clock_s: float  # the whole array at `parallelism`, no queue wait
    made_at: float = field(default_factory=time.time)

    @property
    def max_task_wall_s(self) -> float:
        return max(self.task_wall_s)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["max_task_wall_s"] = self.max_task_wall_s
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Forecast":
        d = {k: v for k, v in d.items() if k != "max_task_wall_s"}
        return cls(**{**d, "rate": Rate(**d["rate"])})


def rate_key(cfg: DictConfig) -> str:
    """A short hash of the settings that change a task's speed (RATE_SECTIONS)."""
    parts = {}
    for key in RATE_SECTIONS:
        v = OmegaConf.select(cfg, key)
        parts[key] = OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- the arithmetic ----------------------------------------------------------------------------

def array_wall_clock(task_walls: Sequence[float], parallelism: int) -> float:
    """The array's makespan: tasks start in array order as soon as one of `parallelism` slots
    frees (what SLURM does for `--array=...%P` without queue wait)."""
    slots = [0.0] * max(1, min(parallelism, len(task_walls)))
    for wall in task_walls:
        heapq.heapreplace(slots, slots[0] + wall)
    return max(slots)


def task_walls(shards: Sequence[ShardSpec], rate: Rate, shards_per_task: int) -> list[float]:
    return [rate.task_wall_s(sum(s.audio_s for s in task)) for task in group(shards, shards_per_task)]


def fewest_shards(durations: np.ndarray, rate: Rate, shards_per_task: int, budget_s: float
                  ) -> int | None:
    """The fewest shards whose every task ends within `budget_s`; None when none can."""
    audio_budget = (budget_s - rate.startup_s) * rate.audio_s_per_s / shards_per_task
    if audio_budget <= 0 or durations.max() > audio_budget:
        return None
    n = max(1, math.ceil(durations.sum() / audio_budget))
    while n < len(durations):
        if max(task_walls(cut(durations, n), rate, shards_per_task)) <= budget_s:
            return n
        n = max(n + 1, math.ceil(n * 1.02))  # a contiguous cut overshoots by < one recording
    return len(durations)


def make_forecast(plan: Plan, durations: np.ndarray, cfg: DictConfig, rate: Rate) -> Forecast:
    per_task = int(cfg.slurm.shards_per_task)
    limit_s = 60.0 * cfg.slurm.time_min - cfg.slurm.signal_delay_s
    walls = task_walls(plan.shards, rate, per_task)
    over = [s.shard for task, wall in zip(group(plan.shards, per_task), walls) if wall > limit_s
            for s in task]
    fit = fewest_shards(durations, rate, per_task, FIT_SHARE * limit_s)
    parallelism = int(cfg.slurm.array_parallelism)
    suggested = None if fit is None else min(len(durations), max(fit, parallelism * per_task))
    node_hours = sum(walls) * cfg.slurm.nodes / 3600.0
    return Forecast(rate, float(durations.sum()) / 3600.0, plan.num_shards, per_task, limit_s,
                    walls, over, suggested, node_hours, node_hours * cfg.slurm.gpus_per_node,
                    parallelism, array_wall_clock(walls, parallelism))


def _hours(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def format_forecast(fc: Forecast) -> str:
    walls = fc.task_wall_s
    lines = [
        f"rate: {fc.rate.audio_s_per_s:.1f} audio s/s per task, start-up {fc.rate.startup_s:.0f} s "
        f"({fc.rate.source})",
        f"audio: {fc.total_audio_h:.2f} h in {fc.num_shards} shards, {len(walls)} tasks",
        f"task wall time (start-up included): {_hours(min(walls))} - {_hours(max(walls))} "
        f"(median {_hours(statistics.median(walls))}) against a limit of {_hours(fc.time_limit_s)} "
        "(slurm.time_min less slurm.signal_delay_s)",
    ]
    if fc.over_limit:
        shown = ",".join(map(str, fc.over_limit[:20])) + (" ..." if len(fc.over_limit) > 20 else "")
        lines.append(f"OVER THE LIMIT: {len(fc.over_limit)} shards ({shown}) would be requeued "
                     "mid-shard; plan more shards")
    if fc.suggested_num_shards is None:
        lines.append("no shard count fits: a task's start-up, or one recording, is longer than the "
                     "limit allows; raise slurm.time_min")
    else:
        lines.append(f"suggested run.num_shards={fc.suggested_num_shards} (the fewest whose tasks "
                     f"take at most {FIT_SHARE:.0%} of the limit, and enough to fill "
                     f"slurm.array_parallelism={fc.parallelism})")
    lines.append(f"cost: {fc.node_hours:.2f} node-hours, {fc.gpu_hours:.2f} GPU-hours")
    lines.append(f"wall-clock at slurm.array_parallelism={fc.parallelism}: "
                 f"{_hours(fc.wall_clock_s)} (no queue wait)")
    return "\n".join(lines)


# --- where rates come from ---------------------------------------------------------------------

def calibration_path(rd: RunDir) -> Path:
    return rd.path / "calibration.json"


def forecast_path(rd: RunDir) -> Path:
    return rd.path / "forecast.json"


def rate_from_calibration(rd: RunDir, cfg: DictConfig) -> Rate | None:
    """This run directory's calibration, if it was measured with the same rate settings."""
    path = calibration_path(rd)
    if not path.is_file():
        return None
    d = read_json(path)
    if d.get("rate_key") != rate_key(cfg):
        return None
    return Rate(**d["rate"])


def rate_from_markers(run_dirs: Sequence[str | Path], cfg: DictConfig) -> Rate | None:
    """The rate of earlier runs' done shards with the same rate settings: their planned audio
    seconds over their shard wall time; start-up the median of what their tasks recorded.
    Resumed shards are left out (their wall time covers only part of the shard)."""
    key = rate_key(cfg)
    audio = wall = 0.0
    startups: list[float] = []
    used: list[str] = []
    shards = 0
    for d in run_dirs:
        rd = RunDir(d)
        try:
            if rate_key(rd.frozen_config()) != key:
                continue
            plan = load_plan(rd)
        except (RunDirError, OSError, ValueError):
            continue
        n = 0
        for s, m in rd.markers.read_all().items():
            if (not isinstance(m, dict) or s >= plan.num_shards or m.get("resumed_rows")
                    or not m.get("wall_s")):
                continue
            audio += plan.shards[s].audio_s
            wall += m["wall_s"]
            if m.get("task_startup_s") is not None:
                startups.append(float(m["task_startup_s"]))
            n += 1
        if n:
            used.append(str(rd.path))
            shards += n
    if not shards or wall <= 0:
        return None
    startup = statistics.median(startups) if startups else 0.0
    return Rate(audio / wall, startup, f"markers of {shards} shards in {', '.join(used)}",
                shards, audio)


def sibling_runs(rd: RunDir) -> list[Path]:
    """Other run directories beside this one (the usual place of earlier runs)."""
    parent = rd.path.resolve().parent
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir()
                  if p.is_dir() and p.resolve() != rd.path.resolve() and (p / "done").is_dir()
                  and (p / "config.yaml").is_file())


def find_rate(rd: RunDir, cfg: DictConfig, rates_from: Sequence[str] = ()) -> Rate | None:
    """Earlier runs named by the user, else this run's calibration, else runs beside this one."""
    if rates_from:
        return rate_from_markers(rates_from, cfg)
    return rate_from_calibration(rd, cfg) or rate_from_markers(sibling_runs(rd), cfg)


def forecast_run(rd: RunDir, cfg: DictConfig, rates_from: Sequence[str] = ()) -> Forecast | None:
    """The forecast of a planned run, written to RUN_DIR/forecast.json; None without a rate."""
    rate = find_rate(rd, cfg, rates_from)
    if rate is None:
        return None
    plan = load_plan(rd)
    fc = make_forecast(plan, _durations(plan.index), cfg, rate)
    write_json(forecast_path(rd), fc.to_json())
    return fc


# --- progress of a running run -----------------------------------------------------------------

@dataclass(frozen=True)
class Eta:
    elapsed_s: float  # since the first done shard's task started
    audio_done_s: float  # planned audio seconds of the done shards
    audio_left_s: float
    eta_s: float | None  # None until a shard is done
    forecast_wall_clock_s: float | None  # what `asrd plan` forecast, if it did


def eta(rd: RunDir, plan: Plan, markers: dict[int, dict[str, Any]], now: float | None = None
        ) -> Eta:
    """Time left at the run's throughput so far: planned audio of the done shards over the time
    since the earliest of their tasks started (so the array's parallelism is in the rate)."""
    now = time.time() if now is None else now
    done = {s: m for s, m in markers.items() if s < plan.num_shards and isinstance(m, dict)}
    audio_done = sum(plan.shards[s].audio_s for s in done)
    audio_left = sum(s.audio_s for s in plan.shards) - audio_done
    starts = [m["finished_at"] - m.get("wall_s", 0.0) - (m.get("task_startup_s") or 0.0)
              for m in done.values() if m.get("finished_at")]
    if starts and audio_left <= 0:  # finished: until the last shard, however long ago
        now = max(m["finished_at"] for m in done.values() if m.get("finished_at"))
    elapsed = now - min(starts) if starts else 0.0
    left = None
    if audio_done > 0 and elapsed > 0:
        left = audio_left / (audio_done / elapsed)
    fc_path = forecast_path(rd)
    planned = read_json(fc_path).get("wall_clock_s") if fc_path.is_file() else None
    return Eta(elapsed, audio_done, audio_left, left, planned)


def format_eta(e: Eta) -> str:
    fc = f"; forecast {_hours(e.forecast_wall_clock_s)} in all" if e.forecast_wall_clock_s else ""
    if e.eta_s is None:
        return f"eta: none yet (no shard done){fc}"
    if e.audio_left_s <= 0:  # forecast vs actual
        return f"done: {_hours(e.elapsed_s)} from the first task's start to the last shard{fc}"
    return (f"eta: {_hours(e.eta_s)} left at the rate so far "
            f"({e.audio_done_s / max(e.elapsed_s, 1e-9):.1f} audio s/s over {_hours(e.elapsed_s)})"
            f"{fc}")
