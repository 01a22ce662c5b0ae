"""`asrd export`: each format loaded back by its own library (datasets, webdataset, lhotse), as
the README's read-back lines do, with ids that break naive file names; training windows; an
export killed at any step resumes with every row once; --force removes only the export's files;
an export of another merge is refused.

The merged run is made without Ray or a model (rows copied from the index with made-up segments),
since the export reads only the merged files and the audio."""

from __future__ import annotations

import ast
import io
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from asrd import cli
from asrd.audio import decode
from asrd.export.items import plan_training_windows
from asrd.index import build_index
from asrd.merge import merge
from asrd.plan import make_plan, read_rows
from asrd.runtime.write import ShardWriter
from asrd.schema import output_schema
from asrd.testing.faults import POINTS
from tests.conftest import make_cfg
from tests.runs import running, wait_until

datasets = pytest.importorskip("datasets")
wds = pytest.importorskip("webdataset")
lhotse = pytest.importorskip("lhotse")

README = Path(__file__).resolve().parents[1] / "README.md"
# Ids that break file names made naively from them: `/` and `_` (and case, on a
# case-insensitive disk) collide, 300 characters are too long, NUL cannot be in a name, a
# newline or tab hides in listings, `..` climbs out of the folder.
TOUGH_IDS = ["spk/a", "spk_a", "SPK_A", "long/" + "x" * 295, "nul\x00byte", "new\nline\ttab",
             "../../escape", "日本語 音声.wav"]


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


def merged_run(index: Path, run: Path, model: str = "copy"):
    """Rows copied from the index, with the reference as text, two segments each; merged (again,
    over the same run: its shards are written anew)."""
    cfg = make_cfg(index, run, "merge.target_file_mb=0.0001")
    rd, plan = make_plan(cfg)
    schema = output_schema(pq.read_schema(plan.index))
    for spec in plan.shards:
        w = ShardWriter(rd, spec, schema, part_rows=2, shard_key=plan.shard_key(spec.shard))
        for r in (r for b in read_rows(plan.index, spec.start, spec.stop) for r in b.to_pylist()):
            err = r["probe_error"]
            w.add({**r, "text": None if err else r["reference"], "error": err, "model": model,
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


def test_plan_training_windows_packs_consecutive_segments():
    segs = [{"start": s, "end": e, "text": t} for s, e, t in
            [(11, 25, "b"), (0.5, 10, "a"), (26, 31, "c"), (31.5, 40, "d"), (41, 80, "long"),
             (81, 82, "e")]]
    windows, too_long = plan_training_windows(segs, 30.0)
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


def test_export_of_other_options_into_the_same_folder_is_refused(merged, tmp_path, capsys):
    run, _ = merged
    export(run, tmp_path / "x", "--format", "webdataset")
    assert cli.main(["export", f"run.dir={run}", "-o", str(tmp_path / "x"), "--format", "hf"]) == 2
    assert "holds an export of other options" in capsys.readouterr().err


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _owned(progress: dict) -> list[str]:
    """What an export folder holds when nothing is left over: the recorded shards, the record,
    the lock."""
    return sorted([n for s in progress["shards"] for n in s["names"]] +
                  ["export.json", ".export.lock"])


def readme_read_back(fmt: str, folder: Path):
    """What the README's read-back lines for `fmt` give, run as written with DIR replaced."""
    block = re.search(r"```python\n(import glob, datasets.*?)```", README.read_text(), re.S)
    assert block, "the README's read-back block"
    imports, *lines = block.group(1).splitlines()
    sections: dict[str, list[str]] = {}
    for line in lines:
        if (label := re.match(r"# ([a-z]+): ", line)):
            sections[label.group(1)] = []
        else:
            sections[list(sections)[-1]].append(line)
    code = "\n".join(sections[fmt]).replace("DIR", str(folder))
    namespace: dict = {}
    exec(f"{imports}\n{code}", namespace)
    return namespace[ast.parse(code).body[-1].targets[0].id]


def _audio_by_id(fmt: str, loaded) -> list[tuple[str, np.ndarray, int]]:
    """(id, samples, rate) of every item the format's reader gave."""
    if fmt == "hf":  # decoded by datasets (torchcodec)
        return [(r["id"], np.asarray(r["audio"]["array"]), r["audio"]["sampling_rate"])
                for r in loaded]
    if fmt == "webdataset":
        out = []
        for sample in loaded:
            assert "." not in sample["__key__"]
            x, rate = sf.read(io.BytesIO(sample["flac"]))
            out.append((json.loads(sample["json"])["id"], x, rate))
        return out
    return [(cut.recording_id, cut.load_audio()[0], cut.sampling_rate) for cut in loaded]


@pytest.fixture(scope="module")
def tough(corpus, tmp_path_factory):
    """A merged run of the corpus under TOUGH_IDS, and each id's source file. The index is made
    by hand from one `asrd index` wrote (which refuses the control characters), as a user may."""
    tmp = tmp_path_factory.mktemp("tough")
    build_index(corpus / "manifest.jsonl", tmp / "built.parquet")
    table = pq.read_table(tmp / "built.parquet")
    assert table.num_rows == len(TOUGH_IDS)
    assert table.column("probe_error").null_count == len(TOUGH_IDS)  # every file reads
    table = table.set_column(table.schema.get_field_index("id"), "id", pa.array(TOUGH_IDS))
    pq.write_table(table, tmp / "index.parquet")
    rd = merged_run(tmp / "index.parquet", tmp / "run")
    return rd.path, dict(zip(TOUGH_IDS, table.column("path").to_pylist()))


@pytest.mark.parametrize("fmt", ["hf", "webdataset", "lhotse"])
def test_the_readme_reads_back_each_tough_id_with_its_own_audio(tough, tmp_path, monkeypatch,
                                                                 fmt):
    run, paths = tough
    out = tmp_path / fmt
    progress = export(run, out, "--format", fmt)
    assert progress["complete"] and progress["items"] == len(paths)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    got = _audio_by_id(fmt, readme_read_back(fmt, out))
    assert sorted(i for i, _, _ in got) == sorted(paths)  # each id once
    for item_id, x, rate in got:
        want = decode(paths[item_id], 16000)  # the id's own recording, as the export decoded it
        assert rate == 16000 and x.shape == want.shape, item_id
        assert np.abs(x - want).max() < 1e-3, item_id  # 16-bit FLAC of the same samples
    if fmt == "lhotse":  # a file per id, none outside its shard's folder
        assert len([p for p in out.rglob("*") if p.is_file() and p.suffix == ".flac"]) == len(paths)
        assert all(p.parent.name == "audio-00000" for p in out.rglob("*.flac"))


def test_index_refuses_an_id_with_a_control_character(corpus, tmp_path, capsys):
    wav = str(next(corpus.glob("*.wav")))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "ok", "path": wav}) + "\n" +
                        json.dumps({"id": "a\x00b", "path": wav}) + "\n")
    assert cli.main(["index", str(manifest), "-o", str(tmp_path / "i.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asrd: error:") and len(err.strip().splitlines()) == 1
    assert "row 1" in err and "U+0000" in err
    assert not (tmp_path / "i.parquet").exists()
    tree = tmp_path / "tree"  # a folder: the file so named is an error row, the others are kept
    tree.mkdir()
    shutil.copy(wav, tree / "ok.wav")
    shutil.copy(wav, tree / "new\nline.wav")
    build_index(tree, tmp_path / "tree.parquet")
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "tree.parquet").to_pylist()}
    assert sorted(rows) == ["new\\x0aline.wav", "ok.wav"]
    assert "control character U+000A" in rows["new\\x0aline.wav"]["probe_error"]
    assert rows["ok.wav"]["probe_error"] is None


ROW_A_SHARD = "export.shard_mb=0.000001"
KILLS = {  # the fault, and a name the kill leaves in the folder that no finished export has
    "faults.kill_at=export.progress_written": r"\.export\.json\.tmp-.*",
    "faults.kill_at=export.shard_closed": r"\.shard-00000\.tmp",
    "faults.kill_at=export.file_moved": r"shard-00000\.tar",
    "faults.export_exit_after_items=1": r"\.shard-00000\.tmp",  # in its first shard
    "faults.export_exit_after_items=5": r"\.shard-00004\.tmp",
}
assert {f"faults.kill_at={p}" for p in POINTS if p.startswith("export.")} - set(KILLS) == \
    {"faults.kill_at=export.discarding"}  # that one needs an earlier export: tested apart


def _export_cmd(run: Path, out: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "asrd.cli", "export", f"run.dir={run}", *overrides, "-o",
            str(out), "--format", "webdataset"]


def _wds_ids(out: Path) -> list[str]:
    tars = sorted(str(p) for p in out.glob("shard-*.tar"))
    return sorted(json.loads(s["json"])["id"] for s in wds.WebDataset(tars, shardshuffle=False))


@pytest.mark.parametrize("fault", KILLS)
def test_an_export_killed_at_any_step_resumes_cleanly(merged, tmp_path, fault, capsys):
    """Killed before its first shard is recorded (all but the last) or mid-shard, the export run
    again resumes, leaves none of its temporaries, and holds every row once. (The killed export
    is a process of its own; the runs after it, in this one.)"""
    run, ok = merged
    out = tmp_path / "wds"
    killed = subprocess.run(_export_cmd(run, out, ROW_A_SHARD, fault), capture_output=True,
                            text=True)
    assert killed.returncode in (-signal.SIGKILL, 137), killed.stderr
    assert any(re.fullmatch(KILLS[fault], n) for n in _names(out)), _names(out)
    capsys.readouterr()
    progress = export(run, out, ROW_A_SHARD, "--format", "webdataset")
    resumed = capsys.readouterr().out
    _check_progress(progress, len(ok))
    assert _names(out) == _owned(progress)  # nothing left over
    assert _wds_ids(out) == sorted(ok)  # each row exactly once
    if fault.endswith("=5"):
        assert "resumed at merged row" in resumed
    assert export(run, out, ROW_A_SHARD, "--format", "webdataset") == progress
    assert "already complete: nothing written" in capsys.readouterr().out


def test_a_forced_restart_killed_before_it_removed_the_old_export_finishes_it(merged, tmp_path):
    run, ok = merged
    out = tmp_path / "wds"
    export(run, out, "--format", "webdataset")  # one shard, shard-00000.tar
    killed = subprocess.run([*_export_cmd(run, out, ROW_A_SHARD,
                                          "faults.kill_at=export.discarding"), "--force"],
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert json.loads((out / "export.json").read_text())["uncommitted"] == ["shard-00000.tar"]
    progress = export(run, out, ROW_A_SHARD, "--format", "webdataset")
    _check_progress(progress, len(ok))
    assert len(progress["shards"]) == len(ok) and _names(out) == _owned(progress)
    assert _wds_ids(out) == sorted(ok)


def test_force_removes_only_what_the_export_wrote(merged, tmp_path, capsys):
    run, ok = merged
    out = tmp_path / "out"
    export(run, out, "--format", "webdataset", "export.shard_mb=0.05")
    (out / "notes.txt").write_text("mine")
    (out / "mine").mkdir()
    (out / "mine" / "shard-00000.tar").write_text("mine too")
    second = export(run, out, "--format", "hf", "--force")
    assert _names(out) == sorted(_owned(second) + ["notes.txt", "mine"])  # no tar left
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "mine" / "shard-00000.tar").read_text() == "mine too"
    # a file of the user's under a name the export writes: never replaced
    (out / "shard-00000.tar").write_text("the user's")
    assert cli.main(["export", f"run.dir={run}", "-o", str(out), "--format", "webdataset",
                     "--force"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asrd: error:")
    assert "shard-00000.tar, which this export did not write" in err
    assert (out / "shard-00000.tar").read_text() == "the user's"
    (out / "shard-00000.tar").unlink()  # moved away: the export resumes
    _check_progress(export(run, out, "--format", "webdataset"), len(ok))
    # a folder of the user's that holds no export is never written into
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "a.txt").write_text("a")
    assert cli.main(["export", f"run.dir={run}", "-o", str(tmp_path / "theirs"), "--force"]) == 2
    assert "holds files that are not an export (a.txt)" in capsys.readouterr().err
    assert _names(tmp_path / "theirs") == ["a.txt"]  # not even a lock file


@pytest.mark.parametrize("where", ["merged/train", ".", "exports/hf"])
def test_an_export_folder_inside_the_run_directory_is_refused(merged, where, capsys):
    run, _ = merged
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    assert cli.main(["export", f"run.dir={run}", "-o", str(run / where)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asrd: error:") and "inside the run directory" in err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_an_export_of_another_merge_is_neither_resumed_nor_complete(corpus_index, tmp_path,
                                                                   capsys):
    """A re-merge of other rows (another model's, same-length name) writes files of the same
    names and sizes: the export knows it by the merge id."""
    rd = merged_run(corpus_index, tmp_path / "run")
    summary = rd.merged_dir / "summary.json"
    merge_id = json.loads(summary.read_text())["merge_id"]
    sizes = [(f.name, f.stat().st_size) for f in rd.merged_files()]
    done, part = tmp_path / "done", tmp_path / "part"
    export(rd.path, done, "--format", "webdataset")
    killed = subprocess.run(_export_cmd(rd.path, part, ROW_A_SHARD,
                                        "faults.export_exit_after_items=2"), capture_output=True,
                            text=True)
    assert killed.returncode == 137, killed.stderr
    merged_run(corpus_index, rd.path)  # the same rows again: the same merge
    assert json.loads(summary.read_text())["merge_id"] == merge_id
    capsys.readouterr()
    export(rd.path, done, "--format", "webdataset")
    assert "already complete" in capsys.readouterr().out
    merged_run(corpus_index, rd.path, model="cop2")
    assert [(f.name, f.stat().st_size) for f in rd.merged_files()] == sizes
    assert json.loads(summary.read_text())["merge_id"] != merge_id
    for out, overrides in ((done, []), (part, [ROW_A_SHARD])):
        assert cli.main(["export", f"run.dir={rd.path}", *overrides, "-o", str(out),
                         "--format", "webdataset"]) == 2
        assert "of another merge" in capsys.readouterr().err
    export(rd.path, done, "--format", "webdataset", "--force")
    tars = sorted(str(p) for p in done.glob("shard-*.tar"))
    assert {json.loads(s["json"])["model"] for s in wds.WebDataset(tars, shardshuffle=False)} \
        == {"cop2"}


def test_a_merge_during_an_export_is_never_recorded_and_a_second_export_is_refused(
        corpus_index, tmp_path, capsys):
    """Export A is held (a hook) with its first shard read; a second export into its folder is
    refused; the run is merged again with other rows; A, released, records nothing."""
    rd = merged_run(corpus_index, tmp_path / "run")
    out, state = tmp_path / "out", tmp_path / "state"
    hold = ["faults.hold_at=export.shard_closed", f"faults.state_dir={state}",
            f"faults.release_file={state / 'go'}"]
    with running(_export_cmd(rd.path, out, *hold), tmp_path / "a.log") as a:
        wait_until(lambda: (state / "held-export.shard_closed").exists(), a, "export A held",
                   tmp_path / "a.log")
        assert cli.main(["export", f"run.dir={rd.path}", "-o", str(out), "--format",
                         "webdataset"]) == 2
        assert f"another `asrd export` is writing {out}" in capsys.readouterr().err
        merged_run(corpus_index, rd.path, model="cop2")
        (state / "go").touch()
        assert a.wait(timeout=300) == 2
    assert "replaced" in (tmp_path / "a.log").read_text()
    progress = json.loads((out / "export.json").read_text())
    assert progress["shards"] == [] and not list(out.glob("shard-*.tar"))
    export(rd.path, out, "--format", "webdataset", "--force")
    assert {json.loads(s["json"])["model"] for s in wds.WebDataset(
        sorted(str(p) for p in out.glob("shard-*.tar")), shardshuffle=False)} == {"cop2"}


@pytest.mark.parametrize("fmt", ["webdataset", "lhotse"])
def test_a_run_indexed_from_tar_shards_exports_each_member(corpus, tmp_path, fmt):
    """Rows whose `path` names a tar shard's member (`asrd index` of WebDataset tars) export
    with the member's bytes, read by byte range as the decode actors read them (they were all
    skipped as `audio: missing file` when the export opened the path as a file); Lhotse's
    recordings point at the bytes written out, since a member is no file of its own."""
    from tests.test_tar_input import make_shards

    want = make_shards(corpus, tmp_path / "tars")
    build_index(str(tmp_path / "tars"), tmp_path / "i.parquet")
    rd = merged_run(tmp_path / "i.parquet", tmp_path / "run")
    out = tmp_path / fmt
    progress = export(rd.path, out, "--format", fmt, "--audio", "original")
    good = {k: w["file"].read_bytes() for k, w in want.items() if w["file"] is not None}
    assert progress["complete"] and progress["items"] == len(good)
    assert progress["skipped"] == {"error row": 1}  # the member that is not audio
    if fmt == "webdataset":
        got = {}
        for sample in wds.WebDataset(sorted(str(p) for p in out.glob("shard-*.tar")),
                                     shardshuffle=False):
            (ext,) = set(sample) - {"__key__", "__url__", "__local_path__", "json"}
            got[json.loads(sample["json"])["id"]] = sample[ext]
    else:
        recs = lhotse.load_manifest(out / "recordings-00000.jsonl.gz")
        got = {r.id: Path(r.sources[0].source).read_bytes() for r in recs}
        assert all(Path(r.sources[0].source).parent == out / "audio-00000" for r in recs)
    assert got == good
