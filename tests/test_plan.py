import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asrd.plan import PlanError, cut, make_plan, read_rows
from asrd.rundir import RunDirError
from tests.conftest import make_cfg


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
