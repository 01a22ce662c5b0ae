"""`asrd export`: each format loaded back by its own library (datasets, webdataset, lhotse);
training windows; a killed export resumes with every row once.

The merged run is made without Ray or a model (rows copied from the index with made-up segments),
since the export reads only the merged files and the audio."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from asrd import cli
from asrd.export.items import plan_windows
from asrd.index import build_index
from asrd.merge import merge
from asrd.plan import make_plan, read_rows
from asrd.runtime.write import ShardWriter
from asrd.schema import output_schema
from tests.conftest import make_cfg

datasets = pytest.importorskip("datasets")
wds = pytest.importorskip("webdataset")
lhotse = pytest.importorskip("lhotse")


def _segments(duration: float, text: str) -> list[dict]:
    """Two segments, halves of the recording, each with half the words."""
    words = text.split()
    half = len(words) // 2
    return [{"start": 0.0, "end": duration / 2, "text": " " + " ".join(words[:half])},
            {"start": duration / 2, "end": duration, "text": " " + " ".join(words[half:])}]


@pytest.fixture(scope="module")
def merged(corpus, tmp_path_factory):
    """A merged run of the corpus plus a row whose file never existed (an error row) and one
    whose file is removed after the merge (its audio is gone at export time)."""
    tmp = tmp_path_factory.mktemp("export")
    rows = [json.loads(x) for x in (corpus / "manifest.jsonl").read_text().splitlines()]
    for r in rows:
        r["path"] = str(corpus / r["path"])
    shutil.copy(rows[0]["path"], tmp / "gone.wav")
    rows += [{"path": str(tmp / "gone.wav"), "reference": "gone", "language": "en"},
             {"path": str(tmp / "never.wav"), "reference": "never", "language": "en"}]
    (tmp / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    index = tmp / "index.parquet"
    build_index(tmp / "manifest.jsonl", index)
    rd = merged_run(index, tmp / "run")
    (tmp / "gone.wav").unlink()
    ok = {r["id"]: r for r in pq.ParquetDataset(rd.merged_files()).read().to_pylist()
          if r["error"] is None and not r["path"].endswith("gone.wav")}
    return rd.path, ok


def merged_run(index: Path, run: Path):
    """Rows copied from the index, with the reference as text, two segments each; merged."""
    cfg = make_cfg(index, run, "merge.target_file_mb=0.0001")
    rd, plan = make_plan(cfg)
    schema = output_schema(pq.read_schema(plan.index))
    for spec in plan.shards:
        w = ShardWriter(rd, spec, schema, part_rows=2, shard_key=plan.shard_key(spec.shard))
        for r in (r for b in read_rows(plan.index, spec.start, spec.stop) for r in b.to_pylist()):
            err = r["probe_error"]
            w.add({**r, "text": None if err else r["reference"], "error": err, "model": "copy",
                   "engine": "copy", "segments": None if err else _segments(r["duration_s"],
                                                                           r["reference"])})
        w.finalize(1.0, plan.config_hash, "copy")
    merge(cfg, track=False)
    return rd


def export(run: Path, out: Path, *args: str) -> dict:
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    flags = [a for a in args if a not in overrides]
    assert cli.main(["export", f"run.dir={run}", *overrides, "-o", str(out), *flags]) == 0
    return json.loads((out / "export.json").read_text())


def _check_progress(progress: dict, n: int) -> None:
    assert progress["complete"] and progress["items"] == n
    assert progress["skipped"] == {"error row": 1, "audio: missing file": 1}


def test_hf_parquet_loads_with_an_audio_column(merged, tmp_path):
    run, ok = merged
    progress = export(run, tmp_path / "hf", "--format", "hf", "export.shard_mb=0.05")
    _check_progress(progress, len(ok))
    assert len(progress["shards"]) > 1  # the target size cut the rows into several shards
    ds = datasets.load_dataset(str(tmp_path / "hf"), split="train",
                                cache_dir=str(tmp_path / "cache"))
    assert isinstance(ds.features["audio"], datasets.Audio)
    assert ds.features["audio"].sampling_rate == 16000
    assert sorted(ds["id"]) == sorted(ok)  # every row once, in whatever shard
    assert "reference" in ds.column_names and "segments" in ds.column_names
    raw = ds.cast_column("audio", datasets.Audio(decode=False))
    for r in raw:
        x, rate = sf.read(io.BytesIO(r["audio"]["bytes"]))
        assert rate == 16000 and x.ndim == 1
        assert len(x) / rate == pytest.approx(ok[r["id"]]["duration_s"], abs=0.05)
        assert r["text"] == ok[r["id"]]["text"]


def test_hf_original_bytes(merged, tmp_path):
    run, ok = merged
    export(run, tmp_path / "hf", "--format", "hf", "--audio", "original")
    raw = datasets.load_dataset(str(tmp_path / "hf"), split="train",
                                cache_dir=str(tmp_path / "cache")).cast_column(
        "audio", datasets.Audio(decode=False))
    for r in raw:
        assert r["audio"]["bytes"] == Path(ok[r["id"]]["path"]).read_bytes()


def test_audio_embedded_in_the_index(corpus, tmp_path):
    """An index built from Parquet with audio bytes: the merged rows have no path; the export
    takes the bytes from the index, by row."""
    files = sorted(p for p in corpus.iterdir() if p.suffix != ".jsonl")[:4]
    pq.write_table(pa.table({"id": [p.name for p in files],
                             "audio": [p.read_bytes() for p in files],
                             "reference": ["one two three four"] * len(files)}),
                   tmp_path / "bytes.parquet")
    build_index(tmp_path / "bytes.parquet", tmp_path / "index.parquet")
    rd = merged_run(tmp_path / "index.parquet", tmp_path / "run")
    export(rd.path, tmp_path / "hf", "--format", "hf", "--audio", "original")
    raw = datasets.load_dataset(str(tmp_path / "hf"), split="train",
                                cache_dir=str(tmp_path / "cache")).cast_column(
        "audio", datasets.Audio(decode=False))
    got = {r["id"]: r["audio"]["bytes"] for r in raw}
    assert got == {p.name: p.read_bytes() for p in files}


def test_webdataset_tars_load_with_webdataset(merged, tmp_path):
    run, ok = merged
    progress = export(run, tmp_path / "wds", "--format", "webdataset", "export.shard_mb=0.05")
    _check_progress(progress, len(ok))
    tars = sorted(str(p) for p in (tmp_path / "wds").glob("shard-*.tar"))
    assert len(tars) == len(progress["shards"]) > 1
    seen = []
    for sample in wds.WebDataset(tars, shardshuffle=False):
        meta = json.loads(sample["json"])
        seen.append(meta["id"])
        assert meta["text"] == ok[meta["id"]]["text"]
        assert sf.info(io.BytesIO(sample["flac"])).samplerate == 16000
    assert sorted(seen) == sorted(ok)


def test_lhotse_manifests_load_and_cut_audio(merged, tmp_path):
    run, ok = merged
    progress = export(run, tmp_path / "lh", "--format", "lhotse")
    _check_progress(progress, len(ok))
    out = tmp_path / "lh"
    recs = lhotse.combine(lhotse.RecordingSet.from_file(p) for p in sorted(out.glob("recordings-*")))
    sups = lhotse.combine(lhotse.SupervisionSet.from_file(p)
                          for p in sorted(out.glob("supervisions-*")))
    lhotse.validate_recordings_and_supervisions(recs, sups)
    assert sorted(r.id for r in recs) == sorted(ok)
    assert len(sups) == 2 * len(ok)  # one supervision per segment
    cuts = lhotse.CutSet.from_manifests(recordings=recs, supervisions=sups).trim_to_supervisions()
    for cut in cuts:
        row = ok[cut.supervisions[0].recording_id]
        assert cut.load_audio().shape[1] == pytest.approx(cut.duration * 16000, abs=2)
        assert cut.supervisions[0].text in row["text"]
        assert cut.supervisions[0].custom["reference"] == row["reference"]


def test_plan_windows_packs_consecutive_segments():
    segs = [{"start": s, "end": e, "text": t} for s, e, t in
            [(11, 25, "b"), (0.5, 10, "a"), (26, 31, "c"), (31.5, 40, "d"), (41, 80, "long"),
             (81, 82, "e")]]
    windows, too_long = plan_windows(segs, 30.0)
    assert [[s["text"] for s in w] for w in windows] == [["a", "b"], ["c", "d"], ["e"]]
    assert too_long == 1
    assert all(w[-1]["end"] - w[0]["start"] <= 30.0 for w in windows)


def test_training_windows_with_timestamps(merged, tmp_path):
    run, ok = merged
    # a window a little over half of the longest recording: each recording's two halves fit
    # together only when it is short enough
    longest = max(r["duration_s"] for r in ok.values())
    window = round(longest * 0.6, 2)
    progress = export(run, tmp_path / "w", "--format", "hf", "--windows",
                      f"export.window_s={window}")
    ds = datasets.load_dataset(str(tmp_path / "w"), split="train",
                                cache_dir=str(tmp_path / "cache")).cast_column(
        "audio", datasets.Audio(decode=False))
    by_source: dict[str, list[dict]] = {}
    for r in ds:
        by_source.setdefault(r["source_id"], []).append(r)
        x, rate = sf.read(io.BytesIO(r["audio"]["bytes"]))
        assert len(x) / rate == pytest.approx(r["end_s"] - r["start_s"], abs=0.01)
        assert r["end_s"] - r["start_s"] <= window
        assert r["text_timestamped"].startswith("<|0.00|>")
        assert r["reference"] == ok[r["source_id"]]["reference"]  # the source's columns travel
    assert sorted(by_source) == sorted(ok)
    for sid, ws in by_source.items():
        fits = ok[sid]["duration_s"] <= window
        assert len(ws) == (1 if fits else 2)
        assert " ".join(w["text"] for w in sorted(ws, key=lambda w: w["start_s"])) == \
            " ".join(ok[sid]["text"].split())
    assert progress["items"] == sum(len(w) for w in by_source.values())


def test_killed_export_resumes_with_every_row_once(merged, tmp_path):
    run, ok = merged
    out = tmp_path / "wds"
    args = [sys.executable, "-m", "asrd.cli", "export", f"run.dir={run}",
            "export.shard_mb=0.000001", "-o", str(out), "--format", "webdataset"]  # a row a shard
    killed = subprocess.run([*args[:5], "faults.export_exit_after_items=5", *args[5:]],
                            capture_output=True, text=True)
    assert killed.returncode == 137, killed.stderr
    first = json.loads((out / "export.json").read_text())
    assert not first["complete"] and len(first["shards"]) == 4  # the 5th died before its commit
    assert list(out.glob(".shard-00004.tmp"))  # ... half written
    resumed = subprocess.run(args, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at merged row" in resumed.stdout
    progress = json.loads((out / "export.json").read_text())
    _check_progress(progress, len(ok))
    assert not list(out.glob(".*tmp"))
    tars = sorted(str(p) for p in out.glob("shard-*.tar"))
    ids = [json.loads(s["json"])["id"] for s in wds.WebDataset(tars, shardshuffle=False)]
    assert sorted(ids) == sorted(ok)  # each row exactly once
    again = subprocess.run(args, capture_output=True, text=True)
    assert "already complete: nothing written" in again.stdout
    assert json.loads((out / "export.json").read_text()) == progress


def test_export_of_other_options_into_the_same_folder_is_refused(merged, tmp_path, capsys):
    run, _ = merged
    export(run, tmp_path / "x", "--format", "webdataset")
    assert cli.main(["export", f"run.dir={run}", "-o", str(tmp_path / "x"), "--format", "hf"]) == 2
    assert "holds an export of other options" in capsys.readouterr().err
