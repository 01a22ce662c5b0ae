"""The forecast's arithmetic, and rates read back from earlier runs' done-markers (no timing)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asrd import cli
from asrd.calibrate import sample_rows
from asrd.forecast import (FIT_SHARE, Rate, array_wall_clock, eta, find_rate, format_eta,
                           make_forecast, rate_from_markers, task_walls)
from asrd.plan import cut, make_plan
from asrd.rundir import RunDir
from hpc.commit import read_json
from tests.conftest import make_cfg


def _index(path, durations):
    ids = [f"x{i}" for i in range(len(durations))]
    pq.write_table(pa.table({"id": ids, "path": [f"/a/{i}" for i in ids],
                             "duration_s": np.asarray(durations, dtype=np.float64)}), path)
    return path


def test_array_wall_clock_fills_free_slots_in_array_order():
    assert array_wall_clock([10, 10, 10, 10], 2) == 20
    assert array_wall_clock([30, 10, 10, 10], 2) == 30  # the short ones share the other slot
    assert array_wall_clock([10, 30, 10, 10], 1) == 60
    assert array_wall_clock([5, 7], 256) == 7


def test_task_wall_counts_start_up_once_per_task(tmp_path):
    rate = Rate(audio_s_per_s=10.0, startup_s=30.0, source="t")
    shards = cut(np.full(8, 100.0), 4)  # 200 audio s each
    assert task_walls(shards, rate, 1) == [50.0] * 4
    assert task_walls(shards, rate, 2) == [70.0, 70.0]  # 30 + 400 / 10


def test_forecast_flags_shards_over_the_limit_and_suggests_a_count_that_fits(tmp_path):
    rng = np.random.default_rng(1)
    durations = rng.uniform(1, 30, 4000)  # ~ 17.6 h
    idx = _index(tmp_path / "i.parquet", durations)
    cfg = make_cfg(idx, tmp_path / "run", "run.num_shards=4", "slurm.time_min=60",
                   "slurm.signal_delay_s=120", "slurm.gpus_per_node=4", "slurm.nodes=1",
                   "slurm.array_parallelism=3")
    _, plan = make_plan(cfg)
    rate = Rate(audio_s_per_s=2.0, startup_s=60.0, source="t")
    fc = make_forecast(plan, durations, cfg, rate)
    limit = 3600 - 120
    assert fc.time_limit_s == limit
    assert fc.total_audio_h == pytest.approx(durations.sum() / 3600)
    expected = [60 + s.audio_s / 2.0 for s in plan.shards]  # ~ 2.2 h each: all over
    assert fc.task_wall_s == pytest.approx(expected)
    assert fc.over_limit == [0, 1, 2, 3]
    assert fc.node_hours == pytest.approx(sum(expected) / 3600)
    assert fc.gpu_hours == pytest.approx(4 * fc.node_hours)
    assert fc.wall_clock_s == pytest.approx(array_wall_clock(expected, 3))
    n = fc.suggested_num_shards
    walls = task_walls(cut(durations, n), rate, 1)
    assert max(walls) <= FIT_SHARE * limit
    assert max(task_walls(cut(durations, n - 1), rate, 1)) > FIT_SHARE * limit  # the fewest
    assert n > 3  # more than the parallelism: that bound did not decide it


def test_no_shard_count_fits_when_start_up_eats_the_limit(tmp_path):
    durations = np.full(10, 5.0)
    idx = _index(tmp_path / "i.parquet", durations)
    cfg = make_cfg(idx, tmp_path / "run", "slurm.time_min=3", "slurm.signal_delay_s=0")
    _, plan = make_plan(cfg)
    fc = make_forecast(plan, durations, cfg, Rate(audio_s_per_s=1.0, startup_s=170.0, source="t"))
    assert fc.over_limit == [0, 1]  # 170 + 25 s > 180 s
    assert fc.suggested_num_shards is None


def test_sample_spans_the_duration_range():
    durations = np.array([1.0] * 90 + [100.0] * 10)
    rows = sample_rows(durations, target_audio_s=100.0)
    picked = durations[rows]
    assert picked.min() == 1.0 and picked.max() == 100.0
    assert list(rows) == sorted(set(rows.tolist()))


def _earlier_run(tmp_path, name, durations, markers, *overrides):
    idx = _index(tmp_path / f"{name}.parquet", durations)
    rd, plan = make_plan(make_cfg(idx, tmp_path / "runs" / name, "run.num_shards=3", *overrides))
    for shard, m in markers.items():
        rd.markers.write(shard, {"shard": shard, "rows": plan.shards[shard].rows, **m})
    return rd, plan


def test_rate_from_markers_of_runs_with_the_same_engine_settings(tmp_path):
    durations = np.full(30, 10.0)  # 100 audio s per shard
    rd1, _ = _earlier_run(tmp_path, "a", durations, {
        0: {"wall_s": 20.0, "task_startup_s": 12.0, "resumed_rows": 0},
        1: {"wall_s": 30.0, "task_startup_s": 14.0, "resumed_rows": 0},
        2: {"wall_s": 5.0, "resumed_rows": 4},  # resumed: covers part of the shard only
    })
    rd2, _ = _earlier_run(tmp_path, "b", durations, {0: {"wall_s": 50.0, "task_startup_s": 40.0}})
    other, _ = _earlier_run(tmp_path, "c", durations, {0: {"wall_s": 1.0, "task_startup_s": 1.0}},
                            "engine.batch_size=3")
    cfg = make_cfg(tmp_path / "a.parquet", tmp_path / "runs" / "new")
    rate = rate_from_markers([rd1.path, rd2.path, other.path], cfg)
    assert rate.shards == 3
    assert rate.audio_s_per_s == pytest.approx(300.0 / 100.0)
    assert rate.startup_s == 14.0  # the median of 12, 14, 40
    assert str(other.path) not in rate.source
    # the same runs found as siblings of a new run directory
    assert find_rate(RunDir(tmp_path / "runs" / "new"), cfg) == rate
    assert rate_from_markers([other.path], cfg) is None


def test_plan_prints_and_writes_the_forecast_from_earlier_markers(tmp_path, capsys):
    durations = np.full(30, 10.0)
    rd1, _ = _earlier_run(tmp_path, "a", durations, {0: {"wall_s": 10.0, "task_startup_s": 5.0}})
    new = tmp_path / "elsewhere" / "new"
    assert cli.main(["plan", f"run.index={tmp_path / 'a.parquet'}", f"run.dir={new}",
                     "run.num_shards=2", "pipeline.part_rows=2", "--rates-from",
                     str(rd1.path)]) == 0
    out = capsys.readouterr().out
    assert "10.0 audio s/s per task, start-up 5 s" in out
    fc = read_json(new / "forecast.json")
    assert fc["task_wall_s"] == pytest.approx([5 + 150 / 10.0] * 2)
    assert cli.main(["status", f"run.dir={new}"]) == 0
    assert "eta: none yet (no shard done); forecast 20 s in all" in capsys.readouterr().out
    assert cli.main(["plan", f"run.dir={tmp_path / 'x'}", f"run.index={tmp_path / 'a.parquet'}"]) == 0
    assert "no measured rate" in capsys.readouterr().out


def test_eta_from_the_run_so_far(tmp_path):
    durations = np.full(40, 10.0)  # 4 shards of 100 audio s
    rd, plan = _earlier_run(tmp_path, "a", durations, {}, "run.num_shards=4")
    markers = {0: {"finished_at": 1000.0, "wall_s": 40.0, "task_startup_s": 10.0},
               1: {"finished_at": 1100.0, "wall_s": 40.0}}
    e = eta(rd, plan, markers, now=1150.0)
    assert e.elapsed_s == 200.0  # since shard 0's task started at 950
    assert e.audio_done_s == 200.0 and e.audio_left_s == 200.0
    assert e.eta_s == pytest.approx(200.0)  # 200 audio s at 1 audio s/s
    assert eta(rd, plan, {}, now=1150.0).eta_s is None
    markers.update({2: {"finished_at": 1200.0, "wall_s": 40.0}, 3: {"finished_at": 1300.0,
                                                                   "wall_s": 40.0}})
    done = eta(rd, plan, markers, now=5000.0)
    assert done.eta_s == 0 and done.elapsed_s == 350.0  # 950 to 1300, not to now
    assert format_eta(done).startswith("done: 5.8 min from the first task's start")
