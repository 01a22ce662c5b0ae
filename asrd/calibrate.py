"""`asrd calibrate`: measure one task's rate on this node, for the forecast of `asrd plan`.

A sample of the index, chosen across its duration range (rows at evenly spaced duration
quantiles, so short clips, which pack, and long recordings, which segment, are both in it), runs
as a one-shard run in RUN_DIR/calibration/ through the real pipeline, in a child process exactly
as a task would. The rate is the sample's audio seconds over the shard's wall time; the start-up
is the rest of the child's life (imports, Ray, engine load, shutdown). Run it on a node like the
task's (e.g. under `srun` with the task's CPUs and GPUs): the rate is this node's.
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
from asrd.forecast import ForecastError, Rate, calibration_path, rate_key
from asrd.plan import UNPROBED_WEIGHT_S
from asrd.rundir import RunDir
from hpc.commit import atomic_path, read_json, write_json


@dataclass(frozen=True)
class Calibration:
    rate: Rate
    rate_key: str
    sample_rows: int
    sample_audio_s: float
    shard_wall_s: float
    process_wall_s: float
    marker: dict  # the calibration shard's done-marker


def sample_rows(durations: np.ndarray, target_audio_s: float) -> np.ndarray:
    """Index rows at evenly spaced quantiles of duration, about `target_audio_s` of audio in all."""
    order = np.argsort(durations, kind="stable")
    n = int(np.clip(math.ceil(target_audio_s / max(durations.mean(), 1e-9)), 1, len(durations)))
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, n)).astype(np.int64))
    return np.sort(order[picks])


def write_sample(index: str, rows: np.ndarray, out: Path) -> None:
    """The chosen index rows, all columns, as a small index (reads only their row groups)."""
    pf = pq.ParquetFile(index)
    tables, offset = [], 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        mine = rows[(rows >= offset) & (rows < offset + n)] - offset
        if mine.size:
            tables.append(pf.read_row_group(g).take(pa.array(mine)))
        offset += n
    with atomic_path(out) as tmp:
        pq.write_table(pa.concat_tables(tables), tmp)


def calibrate(cfg: DictConfig, target_audio_s: float) -> Calibration:
    """Run the sample as one shard in a child process; write RUN_DIR/calibration.json."""
    index = config_mod.require_index(cfg)
    rd = RunDir(cfg.run.dir)
    cal_dir = rd.path / "calibration"
    durations = pq.read_table(index, columns=["duration_s"]).column(0).to_numpy(
        zero_copy_only=False).astype(np.float64)
    durations = np.where(np.isnan(durations), UNPROBED_WEIGHT_S, durations)
    if durations.size == 0:
        raise ForecastError(f"index {index} is empty")
    rows = sample_rows(durations, target_audio_s)
    sample_index = cal_dir / "sample.parquet"
    write_sample(index, rows, sample_index)
    run = cal_dir / f"run-{int(time.time())}"  # a fresh run: nothing resumed, nothing skipped
    cal_cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([
        f"run.dir={run}", f"run.index={sample_index}", "run.num_shards=1", "wandb.mode=disabled"]))
    cfg_file = cal_dir / "config.yaml"
    cfg_file.write_text(config_mod.to_yaml(cal_cfg))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "asrd.cli", "run", "-c", str(cfg_file)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "WANDB_MODE": "disabled"})
    process_wall = time.monotonic() - t0
    marker_path = RunDir(run).markers.path(0)
    if proc.returncode != 0 or not marker_path.is_file():
        raise ForecastError(f"the calibration run in {run} failed (exit {proc.returncode}): "
                            f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}")
    marker = read_json(marker_path)
    audio = float(durations[rows].sum())
    wall = float(marker["wall_s"])
    rate = Rate(audio / wall, max(0.0, process_wall - wall),
                f"calibration on {marker.get('host')}: {len(rows)} rows, {audio:.0f} audio s",
                1, audio)
    cal = Calibration(rate, rate_key(cfg), len(rows), audio, wall, process_wall, marker)
    write_json(calibration_path(rd), asdict(cal))
    shutil.rmtree(run, ignore_errors=True)
    return cal
