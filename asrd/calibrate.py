"""`asrd calibrate`: measure one task's rate on this node, for the forecast of `asrd plan`.

A sample of the index, chosen across its duration range (rows at evenly spaced duration
quantiles, so short clips, which pack, and long recordings, which segment, are both in it), runs
in RUN_DIR/calibration/ through the real pipeline, in a child process exactly as a task would,
as a few shards ordered by duration: the shortest clips in the first, the longest files in the
last. Their mixes differ, so the costs per row and per model window (asrd.workload) can be told
apart: they are fitted to the shards' wall times. The start-up is the rest of the child's life
(imports, Ray, engine load, shutdown). Run it on a node like the task's (e.g. under `srun` with
the task's CPUs and GPUs): the rate is this node's.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf

from asrd import config as config_mod
from asrd.forecast import ForecastError, IndexWork, Rate, calibration_path, fit_rate, rate_key
from asrd.plan import _durations, load_plan
from asrd.workload import WorkShape
from asrd.rundir import RunDir
from hpc.commit import atomic_path, read_json, write_json

# The sample runs as this many shards (fewer for a sample of fewer rows): short clips, middle,
# long files.
CALIBRATION_SHARDS = 3


@dataclass(frozen=True)
class Calibration:
    rate: Rate
    rate_key: str
    sample_rows: int
    sample_audio_s: float
    shard_wall_s: float  # the shards' work, summed
    process_wall_s: float
    markers: list[dict]  # the calibration shards' done-markers


def sample_rows(durations: np.ndarray, target_audio_s: float) -> np.ndarray:
    """Index rows at evenly spaced quantiles of duration, about `target_audio_s` of audio in all."""
    order = np.argsort(durations, kind="stable")
    n = int(np.clip(math.ceil(target_audio_s / max(durations.mean(), 1e-9)), 1, len(durations)))
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, n)).astype(np.int64))
    return np.sort(order[picks])


def write_sample(index: str, rows: np.ndarray, out: Path) -> None:
    """The chosen index rows, all columns, as a small index ordered by duration (reads only
    their row groups)."""
    pf = pq.ParquetFile(index)
    tables, offset = [], 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        mine = rows[(rows >= offset) & (rows < offset + n)] - offset
        if mine.size:
            tables.append(pf.read_row_group(g).take(pa.array(mine)))
        offset += n
    with atomic_path(out) as tmp:
        pq.write_table(pa.concat_tables(tables).sort_by("duration_s"), tmp)


def calibrate(cfg: DictConfig, target_audio_s: float) -> Calibration:
    """Run the sample as a few shards in a child process; write RUN_DIR/calibration.json."""
    index = config_mod.require_index(cfg)
    rd = RunDir(cfg.run.dir)
    cal_dir = rd.path / "calibration"
    durations = _durations(index)
    if durations.size == 0:
        raise ForecastError(f"index {index} is empty")
    rows = sample_rows(durations, target_audio_s)
    sample_index = cal_dir / "sample.parquet"
    write_sample(index, rows, sample_index)
    run = cal_dir / f"run-{int(time.time())}"  # a fresh run: nothing resumed, nothing skipped
    shards = min(CALIBRATION_SHARDS, len(rows))
    cal_cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([
        f"run.dir={run}", f"run.index={sample_index}", f"run.num_shards={shards}",
        "wandb.mode=disabled"]))
    cfg_file = cal_dir / "config.yaml"
    cfg_file.write_text(config_mod.to_yaml(cal_cfg))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "asrd.cli", "run", "-c", str(cfg_file)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "WANDB_MODE": "disabled"})
    process_wall = time.monotonic() - t0
    cal_run = RunDir(run)
    if proc.returncode != 0 or len(cal_run.markers.done_shards()) < shards:
        raise ForecastError(f"the calibration run in {run} failed (exit {proc.returncode}): "
                            f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}")
    plan = load_plan(cal_run)
    iw = IndexWork.of(_durations(str(sample_index)), WorkShape.of(cal_cfg))
    markers = [read_json(cal_run.markers.path(k)) for k in range(shards)]
    walls = [float(m["wall_s"]) for m in markers]
    audio = float(durations[rows].sum())
    rate = fit_rate([iw.work(spec) for spec in plan.shards], walls,
                    max(0.0, process_wall - sum(walls)),
                    f"calibration on {markers[0].get('host')}: {len(rows)} rows, {audio:.0f} "
                    f"audio s in {shards} shards")
    cal = Calibration(rate, rate_key(cfg), len(rows), audio, sum(walls), process_wall, markers)
    write_json(calibration_path(rd), asdict(cal))
    shutil.rmtree(run, ignore_errors=True)
    return cal
