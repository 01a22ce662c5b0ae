import json
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asrd.index import IndexError_, build_index


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
    with pytest.raises(IndexError_, match="duplicate id 'x'"):
        build_index(m, tmp_path / "i.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexError_, match="no audio entries"):
        build_index(tmp_path / "empty", tmp_path / "i2.parquet")
    assert not (tmp_path / "i2.parquet").exists()


def test_cli_index(corpus, tmp_path):
    out = subprocess.run([".venv/bin/asrd", "index", str(corpus), "-o", str(tmp_path / "i.parquet")],
                         capture_output=True, text=True, check=True)
    assert "indexed 8 entries" in out.stdout
