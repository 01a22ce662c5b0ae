"""The forecast's arithmetic, the work model it rests on, the partition's slots, rates read back
from earlier runs' done-markers, shard-size warnings and the ETA (no timing)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asrd import cli
from asrd.calibrate import sample_rows
from asrd.forecast import (FIT_SHARE, IndexWork, Rate, Slots, array_wall_clock, eta, find_rate,
                           fit_rate, format_eta, format_forecast, make_forecast,
                           rate_from_markers, task_walls)
from asrd.plan import cut, make_plan
from asrd.rundir import RunDir
from asrd.workload import Work, WorkShape, row_windows
from hpc.commit import read_json
from hpc.slurm_capacity import (NodeResources, TaskShape, capacity, parse_gpus, parse_sinfo,
                                slots_for)
from tests.conftest import make_cfg
from tests.runs import done_marker


def _index(path, durations):
    ids = [f"x{i}" for i in range(len(durations))]
    pq.write_table(pa.table({"id": ids, "path": [f"/a/{i}" for i in ids],
                             "duration_s": np.asarray(durations, dtype=np.float64)}), path)
    return path


def _iw(cfg, durations) -> IndexWork:
    return IndexWork.of(np.asarray(durations, dtype=np.float64), WorkShape.of(cfg))


def test_array_wall_clock_fills_free_slots_in_array_order():
    assert array_wall_clock([10, 10, 10, 10], 2) == 20
    assert array_wall_clock([30, 10, 10, 10], 2) == 30  # the short ones share the other slot
    assert array_wall_clock([10, 30, 10, 10], 1) == 60
    assert array_wall_clock([5, 7], 256) == 7


def test_short_clips_share_windows_and_long_files_take_one_per_window(tmp_path):
    cfg = make_cfg(tmp_path / "i.parquet", tmp_path / "run")  # faster-whisper: it packs
    shape = WorkShape.of(cfg)
    assert shape.pack is not None and shape.chunk_rows == 8 and shape.window_s == 30.0
    # 3+1+3+1+3+1+3+1+3 = 19 s: five clips in one window; 100 s: four windows; 20 s: one, alone
    assert row_windows(np.array([3, 3, 3, 3, 100, 3, 20.0]), shape).tolist() == pytest.approx(
        [0.2, 0.2, 0.2, 0.2, 4.0, 0.2, 1.0])
    # packing stops at a decode call's rows (8) and at a full window
    windows = row_windows(np.full(16, 9.0), shape)
    assert windows.tolist() == pytest.approx([1 / 3] * 6 + [0.5] * 2 + [1 / 3] * 6 + [0.5] * 2)
    off = WorkShape.of(make_cfg(tmp_path / "i.parquet", tmp_path / "run", "audio.pack.enabled=false"))
    assert row_windows(np.array([3, 3, 100.0]), off).tolist() == [1.0, 1.0, 4.0]


def test_costs_per_row_and_window_are_fitted_to_shards_of_different_mixes():
    works = [Work(100, 12.0, 300.0), Work(20, 20.0, 450.0), Work(1, 20.0, 580.0)]
    walls = [0.25 * w.rows + 2.0 * w.windows for w in works]
    rate = fit_rate(works, walls, startup_s=12.0, source="t")
    assert (rate.s_per_row, rate.s_per_window) == pytest.approx((0.25, 2.0))
    assert rate.audio_s_per_s == pytest.approx(1330.0 / sum(walls))
    # one audio rate from these shards errs on each mix; the fitted costs do not
    for w, wall in zip(works, walls):
        assert rate.work_s(w) == pytest.approx(wall)
    assert abs(w.audio_s / rate.audio_s_per_s - wall) / wall > 0.3  # e.g. the long file
    # noise that would need a negative cost: the better single cost is kept
    noisy = fit_rate([Work(10, 5.0, 100), Work(20, 10.5, 200)], [10.0, 19.0], 0.0, "t")
    assert min(noisy.s_per_row, noisy.s_per_window) == 0.0
    assert noisy.work_s(Work(10, 5.0, 100)) == pytest.approx(10.0, rel=0.1)


def test_task_wall_counts_start_up_once_per_task(tmp_path):
    cfg = make_cfg(tmp_path / "i.parquet", tmp_path / "run", "audio.pack.enabled=false")
    durations = np.full(8, 100.0)  # 4 windows each
    rate = Rate(s_per_row=1.0, s_per_window=4.0, startup_s=30.0, source="t")
    shards = cut(durations, 4)  # 2 rows, 8 windows each: 34 s of work
    iw = _iw(cfg, durations)
    assert task_walls(shards, rate, 1, iw) == [64.0] * 4
    assert task_walls(shards, rate, 2, iw) == [98.0, 98.0]  # 30 + 2 * 34


def test_forecast_flags_shards_over_the_limit_and_suggests_a_count_that_fits(tmp_path):
    rng = np.random.default_rng(1)
    durations = rng.uniform(1, 30, 4000)  # ~ 17.6 h
    idx = _index(tmp_path / "i.parquet", durations)
    cfg = make_cfg(idx, tmp_path / "run", "run.num_shards=4", "slurm.time_min=60",
                   "slurm.signal_delay_s=120", "slurm.gpus_per_node=4", "slurm.nodes=1",
                   "slurm.array_parallelism=3")
    _, plan = make_plan(cfg)
    rate = Rate(s_per_row=2.0, s_per_window=6.0, startup_s=60.0, source="t")
    iw = _iw(cfg, durations)
    fc = make_forecast(plan, iw, cfg, rate, Slots(3, "t"))
    limit = 3600 - 120
    assert fc.time_limit_s == limit
    assert fc.total_audio_h == pytest.approx(durations.sum() / 3600)
    expected = [60 + rate.work_s(iw.work(s)) for s in plan.shards]  # ~ 2 h each: all over
    assert fc.task_wall_s == pytest.approx(expected)
    assert fc.over_limit == [0, 1, 2, 3]
    assert fc.node_hours == pytest.approx(sum(expected) / 3600)
    assert fc.gpu_hours == pytest.approx(4 * fc.node_hours)
    assert fc.wall_clock_s == pytest.approx(array_wall_clock(expected, 3))
    n = fc.suggested_num_shards
    walls = task_walls(cut(durations, n), rate, 1, iw)
    assert max(walls) <= FIT_SHARE * limit
    assert max(task_walls(cut(durations, n - 1), rate, 1, iw)) > FIT_SHARE * limit  # the fewest
    assert n > 3  # more than the parallelism: that bound did not decide it
    assert fc.small_shards is None


def test_no_shard_count_fits_when_start_up_eats_the_limit(tmp_path):
    durations = np.full(10, 5.0)
    idx = _index(tmp_path / "i.parquet", durations)
    cfg = make_cfg(idx, tmp_path / "run", "slurm.time_min=3", "slurm.signal_delay_s=0",
                   "audio.pack.enabled=false")
    _, plan = make_plan(cfg)
    fc = make_forecast(plan, _iw(cfg, durations), cfg,
                       Rate(s_per_row=0.0, s_per_window=5.0, startup_s=170.0, source="t"),
                       Slots(256, "t"))
    assert fc.over_limit == [0, 1]  # 170 + 25 s > 180 s
    assert fc.suggested_num_shards is None


def test_tiny_shards_are_named_with_a_count_worth_their_start_up(tmp_path):
    """600 shards of 3 s clips on a CPU: each task 12 s of start-up for 2 s of work. The plan
    says so and names a count whose tasks spend about 10% starting up; the suggestion does not
    fill 256 slots with tasks that would mostly start up."""
    durations = np.full(600, 3.0)
    idx = _index(tmp_path / "i.parquet", durations)
    cfg = make_cfg(idx, tmp_path / "run", "run.num_shards=600", "audio.pack.enabled=false")
    _, plan = make_plan(cfg)
    rate = Rate(s_per_row=0.5, s_per_window=1.5, startup_s=12.0, source="t")
    fc = make_forecast(plan, _iw(cfg, durations), cfg, rate, Slots(256, "t"))
    assert fc.worth_num_shards == 11  # 1200 s of work in tasks of 108 s work + 12 s start-up
    assert fc.small_shards.startswith("SHARDS TOO SMALL: start-up (12 s) is 86% of a median "
                                      "task's wall time (14 s); run.num_shards=11")
    assert fc.suggested_num_shards == 11
    assert "SHARDS TOO SMALL" in format_forecast(fc)
    _, big = make_plan(make_cfg(idx, tmp_path / "run2", "run.num_shards=11",
                                "audio.pack.enabled=false"))
    assert make_forecast(big, _iw(cfg, durations), cfg, rate, Slots(256, "t")).small_shards is None


def test_plan_without_a_rate_warns_of_shards_with_little_audio(tmp_path, capsys):
    idx = _index(tmp_path / "i.parquet", np.full(100, 3.0))  # 300 audio s
    assert cli.main(["plan", f"run.index={idx}", f"run.dir={tmp_path / 'run'}",
                     "run.num_shards=100"]) == 0
    out = capsys.readouterr().out
    assert "no measured rate" in out
    assert ("SHARDS LIKELY TOO SMALL: the median shard holds 3 audio s, under 600 s" in out
            and "run.num_shards=1 (300 audio s each)" in out), out
    assert cli.main(["plan", f"run.index={idx}", f"run.dir={tmp_path / 'one'}",
                     "run.num_shards=1"]) == 0
    assert "TOO SMALL" not in capsys.readouterr().out


# --- the partition's slots ---------------------------------------------------------------------

SINFO = """gpu|g1|64|512000|gpu:h200:8(S:0-1)|h200,ib|mix
gpu|g2|64|512000|gpu:h200:8(S:0-1)|h200,ib|idle~
gpu|g3|64|512000|gpu:h200:8(S:0-1)|h200,ib|drain
gpu|g4|32|256000|gpu:a100:4,shard:8|a100|alloc
cpu*|c1|2|22057|(null)|(null)|idle
"""


def test_partition_nodes_from_sinfo():
    assert parse_gpus("gpu:h200:8(S:0-1)") == 8 and parse_gpus("gpu:4,shard:8") == 4
    assert parse_gpus("(null)") == 0
    name, nodes = parse_sinfo(SINFO, None)
    assert name == "cpu" and [n.name for n in nodes] == ["c1"]
    name, nodes = parse_sinfo(SINFO, "gpu")
    assert [(n.name, n.gpus, n.state, n.usable) for n in nodes] == [
        ("g1", 8, "mix", True), ("g2", 8, "idle", True), ("g3", 8, "drain", False),
        ("g4", 4, "alloc", True)]


def test_slots_are_what_the_usable_nodes_hold_of_the_task():
    _, gpu = parse_sinfo(SINFO, "gpu")
    two_gpus = TaskShape(cpus=8, mem_mb=50_000, gpus_per_node=2)
    cap = capacity(gpu, two_gpus, "gpu")  # 4 + 4 + 2 (the drained node does not count)
    assert (cap.nodes, cap.slots, cap.limited_by) == (3, 10, "GPUs")
    assert capacity(gpu, TaskShape(8, 50_000, 2, constraint="h200"), "gpu").slots == 8
    assert capacity(gpu, TaskShape(16, 100_000, 8, nodes=2), "gpu").slots == 1  # g4 has 4 GPUs
    assert capacity(gpu, TaskShape(1, 1024, exclusive=True), "gpu").slots == 3
    assert capacity(gpu, TaskShape(8, 300_000), "gpu").limited_by == "memory"
    _, cpu = parse_sinfo(SINFO, None)
    assert capacity(cpu, TaskShape(1, 1536), "cpu").slots == 2  # the one-node cluster: 2 CPUs
    assert capacity(cpu, TaskShape(4, 1536), "cpu").slots == 0
    node = NodeResources("n", 8, 64000, 0, frozenset(), "idle")
    assert slots_for([3, 3, 1], 2) == 3 and slots_for([5, 0, 0], 2) == 0
    assert capacity([node] * 4, TaskShape(2, 16000, nodes=4), "p").slots == 4


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
        rd.markers.write(shard, done_marker(shard, plan.shards[shard].rows, **m).to_json())
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
    one_shard = Work(10, 5.0, 100.0)  # 10 clips of 10 s, packed two to a window
    assert rate.work_s(one_shard) == pytest.approx(100.0 / 3)  # their mean, for this mix
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
                     "run.num_shards=2", "pipeline.part_rows=2", "slurm.executor=local",
                     "--rates-from", str(rd1.path)]) == 0
    out = capsys.readouterr().out
    assert "start-up 5 s (10.0 audio s/s on its mix; markers of 1 shards" in out, out
    assert "wall-clock at 256 tasks at once: 20 s (no queue wait; slurm.executor=local" in out
    fc = read_json(new / "forecast.json")
    assert fc["task_wall_s"] == pytest.approx([5 + 150 / 10.0] * 2)
    assert cli.main(["status", f"run.dir={new}"]) == 0
    assert "eta: none yet (no shard done); forecast 20 s in all" in capsys.readouterr().out
    assert cli.main(["plan", f"run.dir={tmp_path / 'x'}", f"run.index={tmp_path / 'a.parquet'}"]) == 0
    assert "no measured rate" in capsys.readouterr().out


def test_eta_from_the_run_so_far(tmp_path):
    durations = np.full(40, 10.0)  # 4 shards of 100 audio s
    rd, plan = _earlier_run(tmp_path, "a", durations, {}, "run.num_shards=4")
    markers = {0: done_marker(0, 10, finished_at=1000.0, wall_s=40.0, task_startup_s=10.0),
               1: done_marker(1, 10, finished_at=1100.0, wall_s=40.0)}
    e = eta(rd, plan, markers, now=1150.0)
    assert e.busy_s == 90.0  # 950-1000 and 1060-1100: the 60 s between them ran nothing
    assert e.span_s == 200.0  # since shard 0's task started at 950
    assert e.audio_done_s == 200.0 and e.audio_left_s == 200.0
    assert e.eta_s == pytest.approx(90.0)  # 200 audio s at 200/90 audio s/s
    assert "over 90 s with tasks running, 110 s without a running task left out" in format_eta(e)
    assert eta(rd, plan, {}, now=1150.0).eta_s is None
    markers.update({2: done_marker(2, 10, finished_at=1200.0, wall_s=40.0),
                    3: done_marker(3, 10, finished_at=1300.0, wall_s=40.0)})
    done = eta(rd, plan, markers, now=5000.0)
    assert done.eta_s == 0 and done.busy_s == 170.0 and done.span_s == 350.0  # not to now
    assert format_eta(done).startswith("done: 2.8 min with tasks running, 3.0 min without")


def test_done_counts_the_work_not_the_wait_for_a_late_repair(tmp_path):
    """Three tasks in parallel for 3 minutes, one shard repaired 10 minutes later in 12 s: the
    run took 3.2 minutes of work, not the 13.2 from its first start to the repair's end."""
    durations = np.full(40, 10.0)
    rd, plan = _earlier_run(tmp_path, "a", durations, {}, "run.num_shards=4")
    markers = {s: done_marker(s, 10, finished_at=1180.0 + s, wall_s=170.0 - s, task_startup_s=10.0)
               for s in range(3)}  # tasks started at 1000; parallel intervals count once
    markers[3] = done_marker(3, 10, finished_at=1792.0, wall_s=4.0, task_startup_s=8.0)
    done = eta(rd, plan, markers, now=9000.0)
    assert done.busy_s == pytest.approx(182.0 + 12.0)
    assert done.span_s == pytest.approx(792.0)
    line = format_eta(done)
    assert line.startswith("done: 3.2 min with tasks running, 10.0 min without a running task")
    assert "13.2 min" not in line
    # while the repair runs, its idle wait does not slow the rate: 300 audio s in 182 s
    running = eta(rd, plan, {s: markers[s] for s in range(3)}, now=1790.0)
    assert running.eta_s == pytest.approx(100.0 / (300.0 / 182.0))


def test_calibration_runs_the_sample_as_shards_short_to_long(corpus_index, tmp_path, capsys):
    """`asrd plan --calibrate` through the real pipeline (Whisper-base on this CPU): the sample
    runs as three shards ordered by duration, the costs are fitted to them and the forecast uses
    them."""
    run = tmp_path / "run"
    assert cli.main(["plan", f"run.index={corpus_index}", f"run.dir={run}", "run.num_shards=2",
                     "slurm.executor=local", "--calibrate", "--calibrate-audio-s", "1000"]) == 0
    out = capsys.readouterr().out
    cal = read_json(run / "calibration.json")
    assert cal["sample_rows"] == 8 and len(cal["markers"]) == 3
    rows = [m["rows"] for m in cal["markers"]]
    audio = [m["audio_s"] for m in cal["markers"]]
    assert sum(rows) == 8 and audio[0] / rows[0] < audio[-1] / rows[-1]  # short clips first
    rate = Rate(**cal["rate"])
    assert rate.s_per_row >= 0 and rate.s_per_window >= 0 and rate.startup_s > 0
    assert rate.wall_s == pytest.approx(sum(m["wall_s"] for m in cal["markers"]))
    assert f"start-up {rate.startup_s:.0f} s" in out and "calibration on" in out
    assert read_json(run / "forecast.json")["rate"]["s_per_window"] == rate.s_per_window
    assert not list((run / "calibration").glob("run-*"))  # the calibration run is removed
