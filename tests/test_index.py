import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asrd.cli import main
from asrd.index import IndexInputError, build_index

HANG_GUARD_S = 300  # only a guard against a hang; the work takes a second


def test_directory_index_probes_every_format(corpus, tmp_path):
    (corpus / "notes.txt").write_text("not audio")  # ignored: not an audio extension
    report = build_index(corpus, tmp_path / "i.parquet")
    t = pq.read_table(tmp_path / "i.parquet")
    assert report.rows == t.num_rows == 8 and not report.failed
    rows = {r["id"]: r for r in t.to_pylist()}
    assert set(rows) == {p.name for p in corpus.iterdir() if p.suffix != ".jsonl" and p.suffix != ".txt"}
    assert rows["utt001.flac"]["sample_rate"] == 48000 and rows["utt001.flac"]["channels"] == 2
    assert rows["utt005.wav"]["sample_rate"] == 8000
    for r in rows.values():
        assert 1.0 < r["duration_s"] < 10.0 and r["num_bytes"] > 0 and r["probe_error"] is None


def test_manifest_passthrough_and_reported_failures(corpus, tmp_path):
    lines = corpus.joinpath("manifest.jsonl").read_text().splitlines()
    lines.append(json.dumps({"path": "nope.wav", "reference": "gone", "language": "en"}))
    m = corpus / "m2.jsonl"
    m.write_text("\n".join(lines) + "\n")
    report = build_index(m, tmp_path / "i.parquet")
    t = pq.read_table(tmp_path / "i.parquet")
    assert t.num_rows == 9 and report.failed == {"missing file": 1}
    bad = t.filter(pa.compute.equal(t.column("id"), "nope.wav")).to_pylist()[0]
    assert bad["probe_error"].startswith("missing file") and bad["reference"] == "gone"
    assert set(t.column_names) >= {"reference", "language", "duration_s", "path"}


def test_csv_manifest(corpus, tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("path,reference\n" + "".join(f"{corpus}/utt00{i}.wav,x\n" for i in (0, 5)))
    build_index(m, tmp_path / "i.parquet")
    assert pq.read_table(tmp_path / "i.parquet").column("reference").to_pylist() == ["x", "x"]


def test_parquet_with_embedded_bytes_common_voice_layout(corpus, tmp_path):
    files = sorted(p for p in corpus.iterdir() if p.suffix in (".mp3", ".flac"))
    src = pa.table({
        "client_id": ["c1"] * len(files),
        "path": [f.name for f in files],
        "audio": pa.array([{"bytes": f.read_bytes(), "path": f.name} for f in files]),
        "sentence": ["s"] * len(files)})
    pq.write_table(src, tmp_path / "cv.parquet")
    report = build_index(tmp_path / "cv.parquet", tmp_path / "i.parquet")
    t = pq.read_table(tmp_path / "i.parquet")
    assert report.rows == len(files) and not report.failed
    assert t.column("id").to_pylist() == [f.name for f in files]
    assert t.column("audio").to_pylist()[0] == files[0].read_bytes()
    assert t.column("sentence").to_pylist() == ["s"] * len(files)


def test_duplicate_ids_in_source_and_empty_source(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"path": "a.wav", "id": "x"}\n{"path": "b.wav", "id": "x"}\n')
    with pytest.raises(IndexInputError, match="duplicate id 'x'"):
        build_index(m, tmp_path / "i.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexInputError, match="no audio entries"):
        build_index(tmp_path / "empty", tmp_path / "i2.parquet")
    assert not (tmp_path / "i2.parquet").exists()


def test_cli_index(corpus, tmp_path):
    out = subprocess.run([sys.executable, "-m", "asrd.cli", "index", str(corpus), "-o", str(tmp_path / "i.parquet")],
                         capture_output=True, text=True, check=True)
    assert "indexed 8 entries" in out.stdout


def _index(tmp_path, lines: list[dict], **kw) -> list[dict]:
    m = tmp_path / "m.jsonl"
    m.write_text("".join(json.dumps(x) + "\n" for x in lines))
    build_index(m, tmp_path / "i.parquet", **kw)
    return pq.read_table(tmp_path / "i.parquet").to_pylist()


def test_columns_that_appear_only_in_a_later_batch_are_kept(corpus, tmp_path):
    wav = str(corpus / "utt000.wav")
    lines = [{"path": wav, "id": f"r{i}", "n": i} for i in range(5)]
    lines[3]["speaker"] = "bob"  # only in the second batch of 2
    lines[4].update(language="de", n=2.5)  # only in the third batch; n becomes a float column
    rows = _index(tmp_path, lines, batch_rows=2)
    assert [r["speaker"] for r in rows] == [None, None, None, "bob", None]
    assert [r["language"] for r in rows] == [None] * 4 + ["de"]
    assert [r["n"] for r in rows] == [0.0, 1.0, 2.0, 3.0, 2.5]
    assert all(r["probe_error"] is None for r in rows)


def test_a_column_of_mixed_types_is_refused_by_name(corpus, tmp_path):
    wav = str(corpus / "utt000.wav")
    with pytest.raises(IndexInputError, match="column 'speaker'"):
        _index(tmp_path, [{"path": wav, "id": "a", "speaker": 7},
                          {"path": wav, "id": "b", "speaker": "bob"}], batch_rows=1)
    assert not (tmp_path / "i.parquet").exists()


def test_ids_are_kept_as_given(corpus, tmp_path):
    wav = str(corpus / "utt000.wav")
    rows = _index(tmp_path, [{"path": wav, "id": 0}, {"path": wav, "id": "00"}, {"path": wav}])
    assert [r["id"] for r in rows] == ["0", "00", wav]
    csv_m = tmp_path / "m.csv"
    csv_m.write_text(f"id,path\n0,{wav}\n")
    build_index(csv_m, tmp_path / "c.parquet")
    assert pq.read_table(tmp_path / "c.parquet").column("id").to_pylist() == ["0"]
    pq.write_table(pa.table({"id": [0, 1], "path": [wav, wav]}), tmp_path / "src.parquet")
    build_index(tmp_path / "src.parquet", tmp_path / "p.parquet")
    assert pq.read_table(tmp_path / "p.parquet").column("id").to_pylist() == ["0", "1"]
    with pytest.raises(IndexInputError, match="row 1: empty id"):
        _index(tmp_path, [{"path": wav, "id": "a"}, {"path": wav, "id": ""}])


def test_relative_paths_resolve_against_the_manifest_folder(corpus, tmp_path, monkeypatch):
    """The manifest named by a relative path from another folder: every path is absolute and
    names the file beside the manifest, whatever folder the run later starts in."""
    data = tmp_path / "data"
    (data / "audio").mkdir(parents=True)
    (data / "audio" / "a.wav").write_bytes((corpus / "utt000.wav").read_bytes())
    (data / "m.jsonl").write_text(json.dumps({"path": "audio/a.wav"}) + "\n"
                                  + json.dumps({"path": "./audio/../audio/a.wav", "id": "b"}) + "\n")
    monkeypatch.chdir(tmp_path)
    build_index("data/m.jsonl", "i.parquet")
    rows = pq.read_table(tmp_path / "i.parquet").to_pylist()
    assert [r["path"] for r in rows] == [str(data / "audio" / "a.wav")] * 2
    assert [r["id"] for r in rows] == ["audio/a.wav", "b"]  # no id: the path as written
    assert all(r["probe_error"] is None for r in rows)


def test_a_file_name_that_is_not_utf8_is_an_error_row(corpus, tmp_path):
    (tmp_path / "a.wav").write_bytes((corpus / "utt000.wav").read_bytes())
    (tmp_path / os.fsdecode(b"caf\xe9.wav")).write_bytes((corpus / "utt000.wav").read_bytes())
    report = build_index(tmp_path, tmp_path / "i.parquet")
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "i.parquet").to_pylist()}
    assert report.rows == 2 and report.failed == {"invalid file name": 1}
    assert rows["a.wav"]["probe_error"] is None
    assert rows["caf\\xe9.wav"]["probe_error"].startswith("invalid file name: not valid UTF-8")


def test_fifo_and_folder_named_wav_are_error_rows_not_a_hang(corpus, tmp_path):
    """Opening a FIFO blocks until a writer comes: the probe must look at the file type first
    (run as a process, so that a hang fails the test instead of stalling the suite)."""
    os.mkfifo(tmp_path / "fifo.wav")
    (tmp_path / "folder.wav").mkdir()
    m = tmp_path / "m.jsonl"
    m.write_text("".join(json.dumps({"path": p}) + "\n" for p in
                         (str(corpus / "utt000.wav"), "fifo.wav", "folder.wav")))
    subprocess.run([sys.executable, "-m", "asrd.cli", "index", str(m), "-o",
                    str(tmp_path / "i.parquet")], check=True, timeout=HANG_GUARD_S)
    errors = {r["id"]: r["probe_error"] for r in pq.read_table(tmp_path / "i.parquet").to_pylist()}
    assert errors["fifo.wav"].startswith("unreadable:") and "(a FIFO)" in errors["fifo.wav"]
    assert errors["folder.wav"].startswith("unreadable:") and "(a directory)" in errors["folder.wav"]
    assert errors[str(corpus / "utt000.wav")] is None


def test_index_in_one_folder_run_from_another(corpus, tmp_path, monkeypatch):
    """`asrd index` started beside the manifest (in this process), `asrd run` from elsewhere (a
    process started there: its Ray session starts in that folder too): every row ok; the
    FIFO named `.wav` (made after indexing, so only decode meets it) is an unreadable row."""
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    (data / "audio").mkdir(parents=True)
    elsewhere.mkdir()
    names = ["utt000.wav", "utt001.flac", "utt002.mp3"]
    for name in names:
        (data / "audio" / name).write_bytes((corpus / name).read_bytes())
    (data / "m.jsonl").write_text("".join(json.dumps({"path": f"audio/{n}", "id": i}) + "\n"
                                          for i, n in enumerate(names + ["late.wav"])))
    with monkeypatch.context() as here:
        here.chdir(data)
        assert main(["index", "m.jsonl", "-o", "index.parquet"]) == 0
    os.mkfifo(data / "audio" / "late.wav")
    subprocess.run([sys.executable, "-m", "asrd.cli", "run", f"run.index={data / 'index.parquet'}",
                    "run.dir=run", "run.num_shards=1", "engine.kind=fault"], cwd=elsewhere,
                   check=True, timeout=HANG_GUARD_S, capture_output=True)
    rows = {r["id"]: r for r in pq.read_table(
        elsewhere / "run" / "shards" / "shard-000000.parquet").to_pylist()}
    assert sorted(rows) == ["0", "1", "2", "3"]
    assert [rows[k]["error"] for k in ("0", "1", "2")] == [None] * 3
    assert rows["3"]["error"].startswith("unreadable:") and "(a FIFO)" in rows["3"]["error"]
