"""End to end on real Ray with the real Whisper-base (CPU): index -> 2 shards -> merge."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from asrd.demo import word_error_rate
from asrd.index import build_index
from asrd.merge import merge
from asrd.plan import make_plan
from asrd.shard_task import run_task
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
    markers = rd.markers.read_all()
    assert sum(m["ok"] for m in markers.values()) == 8
    assert not any(rd.parts_dir(s).exists() for s in range(2))


def test_sigkill_mid_shard_resumes_exactly_once(corpus_index, tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "asrd.cli", "run", f"run.index={corpus_index}",
            f"run.dir={run_dir}", "run.num_shards=1", "pipeline.part_rows=1",
            "pipeline.items_per_decode_task=1", "engine.batch_size=1"]
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    parts = run_dir / "shards" / "shard-000000.parts"
    deadline = time.monotonic() + 240
    while len(list(parts.glob("part-*.parquet"))) < 2 and proc.poll() is None:
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the task and its Ray workers
    proc.wait()
    assert not (run_dir / "done" / "shard-000000.json").exists()
    committed = len(list(parts.glob("part-*.parquet")))
    assert 2 <= committed < 8
    subprocess.run(args, check=True, capture_output=True)
    marker = json.loads((run_dir / "done" / "shard-000000.json").read_text())
    assert marker["resumed_rows"] >= committed and marker["rows"] == 8
    t = pq.read_table(run_dir / "shards" / "shard-000000.parquet")
    assert sorted(t.column("row").to_pylist()) == list(range(8))
