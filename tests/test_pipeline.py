"""End to end on real Ray with the real Whisper-base (CPU): index -> 2 shards -> merge."""

import json
import os

import pyarrow.parquet as pq
import pytest

from asrd.demo import word_error_rate
from asrd.index import build_index
from asrd.merge import merge
from asrd.plan import make_plan
from asrd.runtime.task import run_task
from tests.conftest import make_cfg


@pytest.fixture(scope="module")
def mixed_index(corpus, tmp_path_factory):
    """The corpus plus one corrupt and one missing file, in a manifest with reference texts."""
    (corpus / "corrupt.flac").write_bytes(b"fLaC" + os.urandom(4000))
    lines = corpus.joinpath("manifest.jsonl").read_text()
    lines += json.dumps({"path": "corrupt.flac", "reference": ""}) + "\n"
    lines += json.dumps({"path": "gone.wav", "reference": ""}) + "\n"
    (corpus / "mixed.jsonl").write_text(lines)
    out = tmp_path_factory.mktemp("mixed") / "index.parquet"
    build_index(corpus / "mixed.jsonl", out)
    return out


def test_two_shards_real_model_every_id_once(mixed_index, tmp_path):
    cfg = make_cfg(mixed_index, tmp_path / "run")
    rd, plan = make_plan(cfg)
    assert run_task(rd.path) == [0, 1]
    assert run_task(rd.path) == []  # done shards are never redone
    summary = merge(cfg)
    t = pq.ParquetDataset(rd.merged_files()).read().sort_by("row")
    assert t.num_rows == summary.rows == 10 and len(t.column("id").unique()) == 10
    rows = {r["id"]: r for r in t.to_pylist()}
    assert rows["corrupt.flac"]["error"].startswith("corrupt audio")
    assert rows["gone.wav"]["error"].startswith("missing file")
    assert summary.failures_by_reason == {"corrupt audio": 1, "missing file": 1}
    good = [r for r in rows.values() if r["error"] is None]
    assert len(good) == 8 and all(r["model"] == "whisper-base" for r in good)
    assert all(r["segments"] and r["segments"][0]["start"] == 0.0 for r in good)
    wer = word_error_rate([r["reference"] for r in good], [r["text"] for r in good])
    assert wer < 0.6, wer  # espeak speech at 8-48 kHz through 6 codecs; a broken path gives ~1.0
    markers = rd.done_markers()
    assert sum(m.ok for m in markers.values()) == 8
    assert not any(rd.parts_dir(s).exists() for s in range(2))
