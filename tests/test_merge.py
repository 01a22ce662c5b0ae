"""Writer + merge without Ray or a model: a shard "worker" that copies index rows into the output
schema, so the exactly-once bookkeeping is tested on its own."""

import json

import pyarrow.parquet as pq
import pytest

from asrd.merge import MergeError, merge
from asrd.plan import make_plan, read_rows
from asrd.schema import output_schema
from asrd.status import format_status, run_status
from asrd.runtime.write import ShardIncomplete, ShardWriter
from tests.conftest import make_cfg


def copy_worker(rd, plan, shard, skip=(), config_hash=None, dup=False):
    spec = plan.shards[shard]
    w = ShardWriter(rd, spec, output_schema(pq.read_schema(plan.index)), part_rows=2)
    rows = [r for b in read_rows(plan.index, spec.start, spec.stop) for r in b.to_pylist()]
    for r in rows:
        if r["row"] in skip:
            continue
        err = r["probe_error"]
        w.add({**r, "text": None if err else "copied", "error": err, "model": "copy",
               "engine": "copy"})
    if dup:
        w.add({**rows[0], "text": "again", "error": None, "model": "copy", "engine": "copy"})
    return w.finalize(1.0, config_hash or plan.config_hash, "copy")


@pytest.fixture
def planned(corpus_index, tmp_path):
    cfg = make_cfg(corpus_index, tmp_path / "run", "run.num_shards=3", "merge.target_file_mb=0.0001")
    rd, plan = make_plan(cfg)
    return cfg, rd, plan


def test_merge_exactly_once_and_sized_files(planned):
    cfg, rd, plan = planned
    for s in range(plan.num_shards):
        m = copy_worker(rd, plan, s)
        assert m["rows"] == plan.shards[s].rows and not rd.parts_dir(s).exists()
    summary = merge(cfg)
    assert summary.rows == plan.index_rows == 8 and summary.shards_merged == 3
    files = rd.merged_files()
    assert len(files) == len(summary.files) > 1  # the tiny target size forced several files
    table = pq.ParquetDataset(files).read()
    assert sorted(table.column("row").to_pylist()) == list(range(8))
    assert len(table.column("id").unique()) == 8
    assert "reference" in table.column_names  # passthrough kept, audio bytes never copied
    saved = json.loads((rd.merged_dir / "summary.json").read_text())
    assert saved["rows"] == 8 and saved["files"] == summary.files
    st = run_status(str(rd.path))
    assert st.count("done") == 3 and st.rows_ok == 8
    assert "3 done" in format_status(st)


def test_missing_shard_refused_unless_allowed(planned):
    cfg, rd, plan = planned
    copy_worker(rd, plan, 0)
    copy_worker(rd, plan, 2)
    with pytest.raises(MergeError, match="1 of 3 shards have no marker: 1"):
        merge(cfg)
    s = merge(cfg, allow_incomplete=True)
    assert s.missing_shards == [1] and s.rows == plan.shards[0].rows + plan.shards[2].rows
    assert run_status(str(rd.path)).states[1] == "missing"


def test_writer_refuses_incomplete_and_duplicate_shards(planned):
    cfg, rd, plan = planned
    with pytest.raises(ShardIncomplete, match="rows missing"):
        copy_worker(rd, plan, 0, skip={plan.shards[0].start})
    assert not rd.markers.is_done(0)
    rd2 = rd.__class__(rd.path)
    import shutil

    shutil.rmtree(rd.parts_dir(1), ignore_errors=True)
    with pytest.raises(ShardIncomplete, match="repeats rows"):
        copy_worker(rd2, plan, 1, dup=True)
    assert not rd.markers.is_done(1)


def test_merge_rejects_other_config_and_tampered_files(planned):
    cfg, rd, plan = planned
    copy_worker(rd, plan, 0, config_hash="0123456789abcdef")
    copy_worker(rd, plan, 1)
    copy_worker(rd, plan, 2)
    with pytest.raises(MergeError, match="shard 0 rejected: config hash 0123456789abcdef"):
        merge(cfg)
    copy_worker(rd, plan, 0)
    with open(rd.shard_file(2), "ab") as f:
        f.write(b"x")
    with pytest.raises(MergeError, match="shard 2 rejected: .* bytes"):
        merge(cfg)


def test_resume_from_committed_parts(planned):
    cfg, rd, plan = planned
    spec = plan.shards[0]
    w = ShardWriter(rd, spec, output_schema(pq.read_schema(plan.index)), part_rows=1)
    first = next(read_rows(plan.index, spec.start, spec.stop)).to_pylist()[0]
    w.add({**first, "text": "t", "error": None, "model": "m", "engine": "e"})
    w2 = ShardWriter(rd, spec, w.schema, part_rows=1)  # a restarted task
    assert w2.done_rows().tolist() == [spec.start] and w2.next_part == 1


def test_merge_filter_keeps_matching_rows_and_counts_drops(planned):
    cfg, rd, plan = planned
    for s in range(plan.num_shards):
        copy_worker(rd, plan, s)
    durations = pq.read_table(plan.index, columns=["duration_s"]).column(0).to_pylist()
    cut = sorted(durations)[4]
    summary = merge(cfg, row_filter=f"duration_s < {cut} and error is null")
    kept = pq.ParquetDataset(rd.merged_files()).read()
    assert kept.num_rows == summary.kept == sum(d < cut for d in durations) == 4
    assert summary.dropped_by_filter == 4 and summary.rows == 8
    from asrd.filters import FilterError

    with pytest.raises(FilterError, match="nope"):
        merge(cfg, row_filter="nope >= 3")
