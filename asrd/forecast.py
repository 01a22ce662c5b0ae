"""The run's forecast: task wall times, shards that would outlive the time limit, node- and
GPU-hours and the wall-clock at the array's parallelism, from a measured rate.

A rate is what one task (one node) does: seconds of shard work per row and per model window
(asrd.workload: short clips share windows, long files take one per 30 s, every row costs its
own), plus a fixed start-up per task (process start, Ray, engine load: paid once per task,
however many shards it runs). The two costs are fitted by least squares to shards of different
mixes: a calibration (`asrd calibrate`: a sample of the index across its duration range run as
a few shards, short clips to long files, through one task's real pipeline on this node, written
to RUN_DIR/calibration.json) or the done-markers of earlier runs with the same rate settings
(the engine, audio and judge sections and the task's CPUs and GPUs). Only measurements of the
same settings are reused: a forecast from another model or batch size would be a guess dressed
as a number.

The array runs at `slurm.array_parallelism` tasks at once, or fewer where the partition's nodes
hold fewer tasks of this shape (hpc.slurm_capacity: what sinfo says of their CPUs, memory and
GPUs). The arithmetic assumes a task starts as soon as a slot frees (no queue wait); `asrd
status` shows an ETA from the rate so far.
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

from asrd import shard_size
from asrd.done_marker import DoneMarker
from asrd.plan import Plan, ShardSpec, _durations, cut, load_plan
from asrd.rundir import RunDir, RunDirError
from asrd.workload import Work, WorkShape, cumulative, work_of
from hpc.arrays import group
from hpc.commit import read_json, write_json
from hpc.marker_summary import UnreadableMarker
from hpc.slurm_capacity import TaskShape, partition_capacity
from hpc.slurm_ctl import SlurmError

# A task is planned to take at most this share of its time limit (less the USR2 warning): the
# forecast's measured error on the one-node cluster is within 20 % (bench/RESULTS.md).
FIT_SHARE = 0.8

# Settings that change how fast a task goes; a measured rate is reused only when they match.
RATE_SECTIONS = ("engine", "audio", "judge", "slurm.gpus_per_node", "slurm.cpus_per_task")


class ForecastError(ValueError):
    """No usable rate, or a calibration that cannot run; the message says what to do."""


@dataclass(frozen=True)
class Rate:
    s_per_row: float  # seconds of shard work per row, one task (node)
    s_per_window: float  # ... and per model window
    startup_s: float  # a task's fixed cost: from its process start to its first shard, and exit
    source: str  # where it was measured
    shards: int = 0  # measurements behind it
    audio_s: float = 0.0  # their audio seconds
    wall_s: float = 0.0  # their shard work, seconds

    @property
    def audio_s_per_s(self) -> float:
        """The measured shards' own audio seconds per second (true of their mix only)."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def work_s(self, work: Work) -> float:
        return self.s_per_row * work.rows + self.s_per_window * work.windows


def fit_rate(works: Sequence[Work], walls: Sequence[float], startup_s: float, source: str
             ) -> Rate:
    """Seconds per row and per window, least squares over the measured shards; a fit that needs
    a negative cost (noise on shards of one mix) keeps the better of the two costs alone."""
    x = np.array([[w.rows, w.windows] for w in works], dtype=np.float64)
    y = np.asarray(walls, dtype=np.float64)
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    if (coef < 0).any():
        alone = []
        for j in (0, 1):
            c = float(x[:, j] @ y / (x[:, j] @ x[:, j]))
            alone.append((float(np.sum((y - c * x[:, j]) ** 2)), j, c))
        _, j, c = min(alone)
        coef = np.array([c, 0.0]) if j == 0 else np.array([0.0, c])
    return Rate(float(coef[0]), float(coef[1]), startup_s, source, len(works),
                float(sum(w.audio_s for w in works)), float(y.sum()))


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
    parallelism: int  # tasks at once: slurm.array_parallelism, or what the partition holds
    wall_clock_s: float  # the whole array at `parallelism`, no queue wait
    slots: str = ""  # where `parallelism` came from (the partition's size, or why not asked)
    worth_num_shards: int | None = None  # the most shards worth their start-up
    small_shards: str | None = None  # the warning when shards are far below that size
    made_at: float = field(default_factory=time.time)

    @property
    def max_task_wall_s(self) -> float:
        return max(self.task_wall_s)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["max_task_wall_s"] = self.max_task_wall_s
        d["rate"]["audio_s_per_s"] = self.rate.audio_s_per_s
        return d


@dataclass(frozen=True)
class Slots:
    """Array tasks at once, and where that number came from."""

    tasks: int
    source: str


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


@dataclass(frozen=True)
class IndexWork:
    """The index's durations and running sums of its audio and windows (asrd.workload)."""

    durations: np.ndarray
    cum_audio: np.ndarray
    cum_windows: np.ndarray

    @classmethod
    def of(cls, durations: np.ndarray, shape: WorkShape) -> IndexWork:
        return cls(durations, np.concatenate([[0.0], np.cumsum(durations)]),
                   cumulative(durations, shape))

    def work(self, spec: ShardSpec) -> Work:
        return work_of(self.cum_windows, self.cum_audio, spec.start, spec.stop)


def task_walls(shards: Sequence[ShardSpec], rate: Rate, shards_per_task: int, iw: IndexWork
               ) -> list[float]:
    return [rate.startup_s + sum(rate.work_s(iw.work(s)) for s in task)
            for task in group(shards, shards_per_task)]


def fewest_shards(iw: IndexWork, rate: Rate, shards_per_task: int, budget_s: float) -> int | None:
    """The fewest shards whose every task ends within `budget_s`; None when none can."""
    durations = iw.durations
    work_budget = (budget_s - rate.startup_s) / shards_per_task
    one_row = rate.s_per_row + rate.s_per_window * np.diff(iw.cum_windows)
    if work_budget <= 0 or one_row.max() > work_budget:
        return None
    n = max(1, math.ceil(float(one_row.sum()) / work_budget))
    while n < len(durations):
        if max(task_walls(cut(durations, n), rate, shards_per_task, iw)) <= budget_s:
            return n
        n = max(n + 1, math.ceil(n * 1.02))  # a contiguous cut overshoots by < one recording
    return len(durations)


def array_slots(cfg: DictConfig) -> Slots:
    """slurm.array_parallelism, or fewer where the partition's usable nodes hold fewer tasks of
    this shape (CPUs, memory, GPUs); the configured value where SLURM cannot be asked."""
    s = cfg.slurm
    configured = int(s.array_parallelism)
    if s.executor != "slurm":
        return Slots(configured, f"slurm.executor={s.executor}: slurm.array_parallelism")
    shape = TaskShape(int(s.cpus_per_task), int(float(s.mem_gb) * 1024), int(s.gpus_per_node),
                      int(s.nodes), bool(s.exclusive), s.constraint)
    try:
        cap = partition_capacity(s.partition, shape)
    except SlurmError as e:
        return Slots(configured, f"SLURM not asked ({e}): slurm.array_parallelism")
    if cap.slots == 0:
        return Slots(configured, f"NO NODE FITS a task ({s.cpus_per_task} CPUs, {s.mem_gb} GB, "
                                 f"{s.gpus_per_node} GPUs per node) in {cap.describe()}; "
                                 "slurm.array_parallelism assumed")
    if cap.slots < configured:
        return Slots(cap.slots, f"{cap.describe()}, fewer than "
                                f"slurm.array_parallelism={configured}")
    return Slots(configured, f"slurm.array_parallelism; {cap.describe()}")


def make_forecast(plan: Plan, iw: IndexWork, cfg: DictConfig, rate: Rate, slots: Slots
                  ) -> Forecast:
    per_task = int(cfg.slurm.shards_per_task)
    limit_s = 60.0 * cfg.slurm.time_min - cfg.slurm.signal_delay_s
    walls = task_walls(plan.shards, rate, per_task, iw)
    over = [s.shard for task, wall in zip(group(plan.shards, per_task), walls) if wall > limit_s
            for s in task]
    total_work = sum(walls) - rate.startup_s * len(walls)
    worth = shard_size.worth_num_shards(total_work, rate.startup_s, per_task)
    fit = fewest_shards(iw, rate, per_task, FIT_SHARE * limit_s)
    fill = slots.tasks * per_task  # enough to fill the slots, but not below start-up's worth
    suggested = None if fit is None else min(len(iw.durations),
                                             max(fit, min(fill, worth or fill)))
    node_hours = sum(walls) * cfg.slurm.nodes / 3600.0
    return Forecast(rate, float(iw.durations.sum()) / 3600.0, plan.num_shards, per_task, limit_s,
                    walls, over, suggested, node_hours, node_hours * cfg.slurm.gpus_per_node,
                    slots.tasks, array_wall_clock(walls, slots.tasks), slots.source, worth,
                    shard_size.advice_from_rate(walls, rate.startup_s, worth, plan.num_shards))


def _hours(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def format_forecast(fc: Forecast) -> str:
    walls = fc.task_wall_s
    r = fc.rate
    lines = [
        f"rate: {r.s_per_row:.3g} s per row + {r.s_per_window:.3g} s per model window, start-up "
        f"{r.startup_s:.0f} s ({r.audio_s_per_s:.1f} audio s/s on its mix; {r.source})",
        f"audio: {fc.total_audio_h:.2f} h in {fc.num_shards} shards, {len(walls)} tasks",
        f"task wall time (start-up included): {_hours(min(walls))} - {_hours(max(walls))} "
        f"(median {_hours(statistics.median(walls))}) against a limit of {_hours(fc.time_limit_s)} "
        "(slurm.time_min less slurm.signal_delay_s)",
    ]
    if fc.over_limit:
        shown = ",".join(map(str, fc.over_limit[:20])) + (" ..." if len(fc.over_limit) > 20 else "")
        lines.append(f"OVER THE LIMIT: {len(fc.over_limit)} shards ({shown}) would be requeued "
                     "mid-shard; plan more shards")
    if fc.small_shards:
        lines.append(fc.small_shards)
    if fc.suggested_num_shards is None:
        lines.append("no shard count fits: a task's start-up, or one recording, is longer than the "
                     "limit allows; raise slurm.time_min")
    else:
        lines.append(f"suggested run.num_shards={fc.suggested_num_shards} (the fewest whose tasks "
                     f"take at most {FIT_SHARE:.0%} of the limit, and enough to fill "
                     f"{fc.parallelism} slots while shards stay worth their start-up)")
    lines.append(f"cost: {fc.node_hours:.2f} node-hours, {fc.gpu_hours:.2f} GPU-hours")
    lines.append(f"wall-clock at {fc.parallelism} tasks at once: {_hours(fc.wall_clock_s)} "
                 f"(no queue wait; {fc.slots})")
    return "\n".join(lines)


# --- where rates come from ---------------------------------------------------------------------

def calibration_path(rd: RunDir) -> Path:
    return rd.path / "calibration.json"


def forecast_path(rd: RunDir) -> Path:
    return rd.path / "forecast.json"


def rate_from_calibration(rd: RunDir, cfg: DictConfig) -> Rate | None:
    """This run directory's calibration, if it was measured with the same rate settings (and
    per row and window: one from before those costs is measured again)."""
    path = calibration_path(rd)
    if not path.is_file():
        return None
    d = read_json(path)
    if d.get("rate_key") != rate_key(cfg) or "s_per_window" not in d.get("rate", {}):
        return None
    return Rate(**d["rate"])


def measured_shards(rd: RunDir) -> list[tuple[Work, float, float | None]]:
    """(work, shard wall time, its task's start-up) of a run's done shards, by its own plan,
    index and settings. Resumed shards are left out (their wall time covers part of the shard),
    and so is a run whose index is gone (its shards' work cannot be told)."""
    plan = load_plan(rd)
    if not Path(plan.index).is_file():
        return []
    iw = IndexWork.of(_durations(plan.index), WorkShape.of(rd.frozen_config()))
    out = []
    for s, m in sorted(rd.done_markers().items()):
        if (not isinstance(m, DoneMarker) or s >= plan.num_shards or m.resumed_rows
                or not m.wall_s):
            continue
        out.append((iw.work(plan.shards[s]), m.wall_s, m.task_startup_s))
    return out


def rate_from_markers(run_dirs: Sequence[str | Path], cfg: DictConfig) -> Rate | None:
    """The costs fitted to earlier runs' done shards with the same rate settings; start-up the
    median of what their tasks recorded."""
    key = rate_key(cfg)
    measured: list[tuple[Work, float, float | None]] = []
    used: list[str] = []
    for d in run_dirs:
        rd = RunDir(d)
        try:
            if rate_key(rd.frozen_config()) != key:
                continue
            mine = measured_shards(rd)
        except (RunDirError, OSError, ValueError):
            continue
        if mine:
            used.append(str(rd.path))
            measured += mine
    if not measured or sum(wall for _, wall, _ in measured) <= 0:
        return None
    startups = [s for _, _, s in measured if s is not None]
    return fit_rate([w for w, _, _ in measured], [wall for _, wall, _ in measured],
                    statistics.median(startups) if startups else 0.0,
                    f"markers of {len(measured)} shards in {', '.join(used)}")


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
    iw = IndexWork.of(_durations(plan.index), WorkShape.of(cfg))
    fc = make_forecast(plan, iw, cfg, rate, array_slots(cfg))
    write_json(forecast_path(rd), fc.to_json())
    return fc


def small_shards_without_rate(plan: Plan) -> str | None:
    """The warning on shard size a plan without a measured rate can give: from audio seconds."""
    return shard_size.advice_from_audio([s.audio_s for s in plan.shards], plan.num_shards)


# --- progress of a running run -----------------------------------------------------------------

@dataclass(frozen=True)
class Eta:
    busy_s: float  # time in which at least one task of a done shard ran (union of intervals)
    span_s: float  # from the first done shard's task start to the last shard's end (or now)
    audio_done_s: float  # planned audio seconds of the done shards
    audio_left_s: float
    eta_s: float | None  # None until a shard is done
    forecast_wall_clock_s: float | None  # what `asrd plan` forecast, if it did


def task_interval(marker: DoneMarker) -> tuple[float, float] | None:
    """When a done shard's task worked on it: from its start-up (the first shard of a task
    records it) to the shard's end; None for a marker without an end time."""
    end = marker.finished_at
    if not end:
        return None
    return end - marker.wall_s - (marker.task_startup_s or 0.0), end


def covered_s(intervals: Sequence[tuple[float, float]]) -> float:
    """Seconds covered by the union of intervals: time with at least one task running, so that
    a run resumed an hour later is not charged for the hour nobody worked."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def eta(rd: RunDir, plan: Plan, markers: dict[int, DoneMarker | UnreadableMarker], now: float | None = None
        ) -> Eta:
    """Time left at the run's throughput so far: planned audio of the done shards over the time
    their tasks ran (the union of their intervals: parallel tasks count once, idle gaps not at
    all; so the array's parallelism is in the rate)."""
    now = time.time() if now is None else now
    done = {s: m for s, m in markers.items() if s < plan.num_shards and isinstance(m, DoneMarker)}
    audio_done = sum(plan.shards[s].audio_s for s in done)
    audio_left = sum(s.audio_s for s in plan.shards) - audio_done
    intervals = [iv for iv in map(task_interval, done.values()) if iv is not None]
    busy = covered_s(intervals)
    span = 0.0
    if intervals:
        last = max(e for _, e in intervals) if audio_left <= 0 else now
        span = last - min(s for s, _ in intervals)
    left = None
    if audio_done > 0 and busy > 0:
        left = audio_left / (audio_done / busy)
    fc_path = forecast_path(rd)
    planned = read_json(fc_path).get("wall_clock_s") if fc_path.is_file() else None
    return Eta(busy, span, audio_done, audio_left, left, planned)


def format_eta(e: Eta) -> str:
    fc = f"; forecast {_hours(e.forecast_wall_clock_s)} in all" if e.forecast_wall_clock_s else ""
    if e.eta_s is None:
        return f"eta: none yet (no shard done){fc}"
    idle = e.span_s - e.busy_s
    gaps = (f", {_hours(idle)} without a running task left out" if idle >= max(1.0, 0.01 * e.span_s)
            else "")
    if e.audio_left_s <= 0:  # forecast vs actual
        return f"done: {_hours(e.busy_s)} with tasks running{gaps}{fc}"
    return (f"eta: {_hours(e.eta_s)} left at the rate so far "
            f"({e.audio_done_s / max(e.busy_s, 1e-9):.1f} audio s/s over {_hours(e.busy_s)} "
            f"with tasks running{gaps}){fc}")
