"""The judge stage end to end: real Ray, the real ASR engine, a tiny judge LLM built offline."""

import pyarrow.parquet as pq

from asrd.merge import merge
from asrd.plan import make_plan
from asrd.runtime.task import run_task
from asrd.testing.tiny_models import build_text_lm
from tests.conftest import make_cfg


def test_judge_scores_every_row_and_merge_filters(corpus_index, tmp_path):
    lm = build_text_lm(tmp_path / "judge")
    cfg = make_cfg(corpus_index, tmp_path / "run", "run.num_shards=1", "judge.enabled=true",
                   f"judge.model={lm}", "judge.batch_size=3")
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0]
    shard = pq.read_table(rd.shard_file(0))
    scores = shard.column("score").to_pylist()
    assert len(scores) == 8 and all(s in (1.0, 2.0, 3.0, 4.0, 5.0) for s in scores)
    assert shard.column("judge_error").null_count == 8
    summary = merge(cfg, row_filter=["score >= 3"])
    kept = pq.ParquetDataset(rd.merged_files()).read()
    assert kept.num_rows == summary.kept == sum(s >= 3 for s in scores)
    assert summary.dropped_by_filter == 8 - kept.num_rows
