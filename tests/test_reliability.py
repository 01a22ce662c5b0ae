"""Config drift is refused before anything runs; corrupted shard files are refused by merge and
redone. (Crashes and signals: tests/test_faults.py.)"""

import pyarrow.parquet as pq
import pytest

from asrd.cli import main as asrd_main
from asrd.merge import MergeError, merge
from asrd.plan import make_plan
from asrd.runtime.task import run_task
from tests.conftest import make_cfg
from tests.runs import flip_bytes


def test_run_with_drifted_config_is_refused(corpus_index, tmp_path, capsys):
    cfg = make_cfg(corpus_index, tmp_path / "run")
    make_plan(cfg)
    base = [f"run.index={corpus_index}", f"run.dir={tmp_path / 'run'}", "run.num_shards=2",
            "pipeline.part_rows=2"]
    assert asrd_main(["run-shard", "--shard", "0", *base, "engine.beam_size=5"]) == 2
    assert "config drift" in capsys.readouterr().err
    assert asrd_main(["run-shard", "--shard", "7", *base]) == 2
    assert not (tmp_path / "run" / "done").exists()


def test_corrupted_shard_files_are_refused_by_merge_and_exactly_they_are_rerun(corpus_index,
                                                                                 tmp_path):
    """Bytes flipped inside two of three committed shard files (same size; one keeps its mtime):
    merge names both and changes nothing; `asrd run` redoes exactly those two; the merged data
    then equals the clean run's."""
    cfg = make_cfg(corpus_index, tmp_path / "run", "run.num_shards=3", "engine.kind=fault",
                   "audio.pack.enabled=false")
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0, 1, 2]
    merge(cfg)
    clean = _merged(rd)
    flip_bytes(rd.shard_file(0), keep_mtime=True)
    flip_bytes(rd.shard_file(2))
    with pytest.raises(MergeError, match="shard 0 rejected: .*sha256.*shard 2 rejected: .*sha256"):
        merge(cfg)
    assert _merged(rd).equals(clean)  # the last merge is untouched
    assert run_task(rd.path) == [0, 2]
    merge(cfg)
    assert _merged(rd).equals(clean)


def _merged(rd):
    """The merged rows, without the columns that time the work."""
    return pq.ParquetDataset(rd.merged_files()).read().drop(["decode_s", "engine_s"]).sort_by("row")
