"""An index edited after the run: a label column (a corrected reference) needs only a re-merge,
which shows the new reference and its WER; a work column voids the shards."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asrd.cli import main
from asrd.index import build_index
from asrd.index_identity import ColumnHasher, compute_identity, index_identity
from asrd.merge import merge
from asrd.plan import make_plan
from asrd.quality.reference import score
from asrd.rundir import RunDirError
from asrd.runtime.task import run_task
from asrd.speech_samples import speak
from tests.conftest import make_cfg

SAID = {"fox": "the quick brown fox jumps over the lazy dog",
        "box": "pack my box with five dozen liquor jugs"}
WRONG = "the quick brown fox jumps over the lazy cat"  # what a typist wrote: same length


def write_manifest(folder: Path, fox_reference: str) -> Path:
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"id": k, "path": f"{k}.wav", "reference": ref}) + "\n"
                                for k, ref in (("fox", fox_reference), ("box", SAID["box"]))))
    return manifest


def merged_rows(rd) -> dict[str, dict]:
    return {r["id"]: r for r in pq.ParquetDataset(rd.merged_files()).read().to_pylist()}


def test_a_corrected_reference_needs_only_a_merge_which_shows_it_and_its_wer(tmp_path, caplog):
    audio = tmp_path / "audio"
    for key, text in SAID.items():
        speak(text, audio / f"{key}.wav")
    index = tmp_path / "index.parquet"
    assert len(WRONG) == len(SAID["fox"])
    build_index(write_manifest(audio, WRONG), index)
    overrides = ["run.num_shards=1"]
    cfg = make_cfg(index, tmp_path / "run", *overrides)
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0]  # the real Whisper-base
    merge(cfg)
    first = merged_rows(rd)
    before = first["fox"]
    assert before["reference"] == WRONG
    marker = rd.markers.read(0)

    build_index(write_manifest(audio, SAID["fox"]), index)  # the typo corrected, indexed again
    with caplog.at_level(logging.WARNING, logger="asrd.plan"):  # `asrd run` in this process
        assert main(["run", f"run.index={index}", f"run.dir={rd.path}", "pipeline.part_rows=2",
                     "merge.preset=none", *overrides]) == 0
    assert "changed since the plan in label columns only (reference): no shard is redone" \
        in caplog.text
    assert rd.markers.read(0) == marker  # no engine work: the shard stands as it was

    summary = merge(cfg)
    after = merged_rows(rd)
    fox = after["fox"]
    assert fox["reference"] == SAID["fox"] and fox["text"] == before["text"]
    expected = score(fox["text"], SAID["fox"], "en")
    assert (fox["wer"], fox["cer"]) == (expected.wer, expected.cer)
    assert fox["wer"] != before["wer"]  # "cat" for "dog" is one word in nine
    assert ("reference_cer" in fox["flags"]) == (fox["cer"] >= 0.3)
    assert summary.reference_rescored == 1  # "box" kept its reference: not scored again
    assert after["box"] == first["box"]


def test_a_changed_path_voids_the_run_naming_the_column(tmp_path):
    audio = tmp_path / "audio"
    for key, text in SAID.items():
        speak(text, audio / f"{key}.wav")
    index = tmp_path / "index.parquet"
    build_index(write_manifest(audio, SAID["fox"]), index)
    cfg = make_cfg(index, tmp_path / "run", "run.num_shards=1", "engine.kind=fault")
    rd, _ = make_plan(cfg)
    (audio / "fox.wav").rename(audio / "fax.wav")  # same size: only the path column differs
    (audio / "manifest.jsonl").write_text((audio / "manifest.jsonl").read_text().replace(
        '"fox.wav"', '"fax.wav"'))
    build_index(audio / "manifest.jsonl", index)
    with pytest.raises(RunDirError, match=r"changed since this run was planned \(columns path\)"):
        run_task(rd.path)


def test_column_hashes_do_not_depend_on_batches_and_match_the_footer(tmp_path):
    """The identity `asrd index` stores while writing equals the one hashed from the file's
    data (an index written by another tool), whatever the batch sizes; any edit of any column
    shows in that column alone."""
    table = pa.table({
        "id": [f"r{i}" for i in range(1000)],
        "duration_s": [i / 7 if i % 11 else None for i in range(1000)],
        "ok": [i % 3 == 0 for i in range(1000)],
        "reference": [None if i % 5 == 0 else "words " * (i % 4) for i in range(1000)],
        "tags": [[i, i + 1] if i % 2 else None for i in range(1000)],
    })
    whole = ColumnHasher(table.schema)
    whole.add(table)
    pieces = ColumnHasher(table.schema)
    for batch in table.to_batches(max_chunksize=97):
        pieces.add(batch)
    assert whole.identity() == pieces.identity()
    path = tmp_path / "other-tool.parquet"
    pq.write_table(table, path, row_group_size=300)  # no footer record
    assert compute_identity(path) == index_identity(path) == whole.identity()
    refs = table.column("reference").to_pylist()
    refs[1] = refs[1][::-1]  # same length, same bytes, other order
    edited = table.set_column(3, "reference", pa.array(refs))
    pq.write_table(edited, path)
    assert whole.identity().changed(index_identity(path)) == ([], ["reference"])
    pq.write_table(edited.set_column(1, "duration_s", pa.array([1.0] * 1000)), path)
    assert whole.identity().changed(index_identity(path)) == (["duration_s"], ["reference"])
