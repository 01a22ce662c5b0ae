import signal
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asrd.config import config_hash
from asrd.plan import PlanError, cut, load_plan, make_plan, read_rows
from asrd.rundir import RunDir, RunDirError
from tests.conftest import make_cfg
from tests.runs import running, wait_until


def test_cut_balances_audio_seconds_not_counts():
    rng = np.random.default_rng(0)
    durations = np.concatenate([rng.uniform(1, 20, 5000), rng.uniform(600, 3600, 20)])
    rng.shuffle(durations)
    shards = cut(durations, 16)
    assert [s.start for s in shards][0] == 0 and shards[-1].stop == len(durations)
    assert all(a.stop == b.start for a, b in zip(shards, shards[1:]))
    secs = np.array([s.audio_s for s in shards])
    assert abs(secs.sum() - durations.sum()) < 1e-6
    # a contiguous cut is within one recording of the mean
    assert np.all(np.abs(secs - secs.mean()) <= durations.max())
    rows = np.array([s.rows for s in shards])
    assert rows.max() > 1.5 * rows.min()  # so it really balanced seconds, not counts


def test_cut_more_shards_than_rows_and_deterministic():
    d = np.array([5.0, 1.0, 1.0])
    assert [s.rows for s in cut(d, 10)] == [1, 1, 1]
    assert cut(d, 2) == cut(d, 2)


def _index(path, ids, durations):
    pq.write_table(pa.table({"id": ids, "path": [f"/a/{i}" for i in ids], "duration_s": durations}),
                   path, row_group_size=7)
    return path


def test_duplicate_ids_rejected_and_listed(tmp_path):
    idx = _index(tmp_path / "i.parquet", ["a", "b", "a", "c", "c"], [1.0] * 5)
    with pytest.raises(PlanError, match="'a'.*'c'|'c'.*'a'"):
        make_plan(make_cfg(idx, tmp_path / "run"))


def test_plan_frozen_and_drift_refused(tmp_path):
    idx = _index(tmp_path / "i.parquet", [f"x{i}" for i in range(50)], list(np.linspace(1, 9, 50)))
    rd, plan = make_plan(make_cfg(idx, tmp_path / "run"))
    assert rd.config_path.is_file() and plan.num_shards == 2 and plan.index_rows == 50
    assert make_plan(make_cfg(idx, tmp_path / "run", "slurm.mem_gb=64"))[1] == plan
    with pytest.raises(RunDirError, match="engine.beam_size"):
        make_plan(make_cfg(idx, tmp_path / "run", "engine.beam_size=5"))


def test_read_rows_spans_row_groups(tmp_path):
    idx = _index(tmp_path / "i.parquet", [f"x{i}" for i in range(50)], [1.0] * 50)
    got = pa.Table.from_batches(list(read_rows(str(idx), 5, 23, batch_rows=4)))
    assert got.column("row").to_pylist() == list(range(5, 23))
    assert got.column("id").to_pylist() == [f"x{i}" for i in range(5, 23)]


def _plan_args(idx, run_dir, *extra, force=False):
    return [sys.executable, "-m", "asrd.cli", "plan", *(["--force"] if force else []),
            f"run.index={idx}", f"run.dir={run_dir}", "run.num_shards=2", *extra]


def test_two_concurrent_plans_one_wins_and_its_files_agree(tmp_path):
    """Plan A holds the plan lock between writing config.yaml and plan.json (a hook); plan B,
    with another config, starts then and must wait for A, then be refused."""
    idx = _index(tmp_path / "i.parquet", [f"x{i}" for i in range(20)], [1.0] * 20)
    run_dir, state = tmp_path / "run", tmp_path / "state"
    hold = ["faults.hold_at=plan.config_frozen", f"faults.state_dir={state}",
            f"faults.release_file={state / 'go'}"]
    with running(_plan_args(idx, run_dir, *hold), tmp_path / "a.log") as a:
        wait_until(lambda: (state / "held-plan.config_frozen").exists(), a, "plan A held",
                   tmp_path / "a.log")
        with running(_plan_args(idx, run_dir, "engine.beam_size=5"), tmp_path / "b.log") as b:
            wait_until(lambda: "another `asrd plan` is planning" in
                       (tmp_path / "b.log").read_text(), b, "plan B waited for A",
                       tmp_path / "b.log")
            (state / "go").touch()
            assert a.wait(timeout=120) == 0
            assert b.wait(timeout=120) == 2
    assert "asrd: error: config drift" in (tmp_path / "b.log").read_text()
    rd = RunDir(run_dir)
    assert rd.frozen_config().engine.beam_size != 5
    assert load_plan(rd).config_hash == config_hash(rd.frozen_config())


def test_a_plan_killed_between_its_files_is_refused_then_planned_again(tmp_path):
    idx = _index(tmp_path / "i.parquet", [f"x{i}" for i in range(20)], [1.0] * 20)
    run_dir = tmp_path / "run"
    make_plan(make_cfg(idx, run_dir))
    killed = subprocess.run(_plan_args(idx, run_dir, "engine.beam_size=5",
                                       "faults.kill_at=plan.config_frozen", force=True),
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL
    with pytest.raises(RunDirError, match="from different plans"):
        load_plan(RunDir(run_dir))
    rd, plan = make_plan(make_cfg(idx, run_dir, "engine.beam_size=5"))
    assert load_plan(rd) == plan and rd.frozen_config().engine.beam_size == 5
    rd.plan_path.write_bytes(b'{"index": \xff')  # a plan.json that does not parse
    with pytest.raises(RunDirError, match="plan.json does not parse.*run `asrd plan` again"):
        load_plan(rd)
    assert make_plan(make_cfg(idx, run_dir, "engine.beam_size=5"))[1] == plan
