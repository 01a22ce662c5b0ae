"""Tar shards (WebDataset's layout) as `asrd index` input, locally and on a real S3 server:
`juicefs gateway` serving the test JuiceFS volume, started by hpc/scripts/s3_gateway.sh."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq
import pytest

from asrd.audio import decode
from asrd.audio.cache import AudioCache
from asrd.audio.source import audio_source, s3_filesystem, tar_member
from asrd.index import IndexInputError, build_index
from asrd.rundir import RunDir
from tests.runs import assert_exactly_once, cli_args, part_rows, running
from tests.juicefs_fixtures import ROOT, jfs_volume, sh  # noqa: F401  (the session's volume)
from tests.test_slurm import cancel_after, slurm_cluster  # noqa: F401  (fixtures)

GATEWAY_SH = ROOT / "hpc" / "scripts" / "s3_gateway.sh"
CORRUPT = b"RIFF\x10\x00\x00\x00WAVEthis is not audio" * 4


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def make_shards(corpus: Path, out: Path) -> dict[str, dict]:
    """Two shards of the corpus: each sample an audio member, a `.txt` (its reference) and a
    `.json` (a speaker); plus one sample whose audio bytes are not audio. Returns what each
    sample's row must hold, by id."""
    rows = [json.loads(x) for x in (corpus / "manifest.jsonl").read_text().splitlines()]
    out.mkdir(parents=True, exist_ok=True)
    want: dict[str, dict] = {}
    for shard in range(2):
        with tarfile.open(out / f"train-{shard:06d}.tar", "w") as tf:
            for n, r in enumerate(rows[shard::2]):
                key = f"s{shard}/{n:04d}"
                ext = Path(r["path"]).suffix.lstrip(".")
                _add(tf, f"{key}.{ext}", (corpus / r["path"]).read_bytes())
                _add(tf, f"{key}.txt", r["reference"].encode())
                _add(tf, f"{key}.json", json.dumps({"speaker": f"spk{n}"}).encode())
                want[key] = {"reference": r["reference"], "speaker": f"spk{n}",
                             "file": corpus / r["path"]}
            if shard == 1:
                _add(tf, "bad/0000.wav", CORRUPT)
                _add(tf, "bad/0000.txt", b"corrupt")
                want["bad/0000"] = {"reference": "corrupt", "speaker": None, "file": None}
    return want


def check_rows(rows: list[dict], want: dict[str, dict]) -> None:
    assert sorted(r["id"] for r in rows) == sorted(want)  # every member exactly once
    for r in rows:
        w = want[r["id"]]
        assert r["reference"] == w["reference"] and r["speaker"] == w["speaker"]
        member = tar_member(r["path"])
        assert member is not None and member.tar.endswith(".tar")
        if w["file"] is None:
            assert r["probe_error"] and r["duration_s"] is None
        else:
            assert r["probe_error"] is None and r["duration_s"] > 0.5
            assert member.size == w["file"].stat().st_size


@pytest.fixture(scope="module")
def shards(corpus, tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    out = tmp_path_factory.mktemp("tars") / "shards"
    return out, make_shards(corpus, out)


@pytest.mark.parametrize("form", ["pattern", "folder"])
def test_tar_shards_index_every_member_once(shards, tmp_path, form):
    folder, want = shards
    source = f"{folder}/train-{{000000..000001}}.tar" if form == "pattern" else str(folder)
    report = build_index(source, tmp_path / "i.parquet")
    rows = pq.read_table(tmp_path / "i.parquet").to_pylist()
    check_rows(rows, want)
    assert report.rows == len(want) and sum(report.failed.values()) == 1


def test_a_member_is_decoded_by_byte_range_as_its_file(shards, tmp_path):
    folder, want = shards
    build_index(str(folder), tmp_path / "i.parquet")
    cache = AudioCache(tmp_path / "cache", 10**8)
    good = [r for r in pq.read_table(tmp_path / "i.parquet").to_pylist()
            if want[r["id"]]["file"] is not None]
    for r in good:
        src = audio_source(r["path"], cache)
        assert isinstance(src, bytes)
        np.testing.assert_array_equal(decode(src), decode(str(want[r["id"]]["file"])))
    assert cache.stats.misses == len(good) == len(want) - 1
    assert audio_source(good[0]["path"], cache) == audio_source(good[0]["path"])
    assert cache.stats.hits == 1


def test_a_tar_that_is_not_a_tar_is_a_one_line_error(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"no tar here" * 100)
    with pytest.raises(IndexInputError, match="not a readable tar"):
        build_index(str(tmp_path / "x.tar"), tmp_path / "i.parquet")


def test_a_webdataset_export_indexes_back_into_the_same_rows(corpus, tmp_path):
    """`asrd export --format webdataset` writes tars that index back into its rows: the same
    ids, the exported text as the reference, the audio members probed."""
    from tests.test_export import export, merged_run

    build_index(corpus / "manifest.jsonl", tmp_path / "i.parquet")
    rd = merged_run(tmp_path / "i.parquet", tmp_path / "run")
    export(rd.path, tmp_path / "wds", "--format", "webdataset", "export.shard_mb=0.05")
    assert len(list((tmp_path / "wds").glob("shard-*.tar"))) > 1
    build_index(str(tmp_path / "wds"), tmp_path / "back.parquet")
    back = {r["id"]: r for r in pq.read_table(tmp_path / "back.parquet").to_pylist()}
    merged = {r["id"]: r for r in pq.ParquetDataset(rd.merged_files()).read().to_pylist()}
    assert sorted(back) == sorted(merged)
    for ident, r in back.items():
        assert r["probe_error"] is None and r["duration_s"] > 0.5
        assert r["text"] == merged[ident]["text"] and r["reference"] == merged[ident]["reference"]
        # the audio is the exported member, not the file it was first read from
        assert r["path"].startswith(str(tmp_path / "wds" / "shard-")) and "#" in r["path"]
        assert r["source_path"] == merged[ident]["path"]


# --- a real S3 server -------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_gateway(jfs_volume, tmp_path_factory) -> Iterator[tuple[Path, str]]:  # noqa: F811
    """The session's JuiceFS volume served over S3 by hpc/scripts/s3_gateway.sh; the client's
    AWS_* variables set from its `env`. Yields the volume's mount and the bucket's URL."""
    state = tmp_path_factory.mktemp("s3gw")
    keys = {"MINIO_ROOT_USER": "asrdtest", "MINIO_ROOT_PASSWORD": "asrd-test-secret"}
    sh(GATEWAY_SH, "start", "--meta", jfs_volume.meta, "--state", str(state),
       "--address", f"127.0.0.1:{_free_port()}", env=keys)
    saved = dict(os.environ)
    try:
        for line in sh(GATEWAY_SH, "env", "--state", str(state)).stdout.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            os.environ[name] = value
        s3_filesystem.cache_clear()
        yield jfs_volume.root, f"s3://{jfs_volume.name}"
    finally:
        os.environ.clear()
        os.environ.update(saved)
        s3_filesystem.cache_clear()
        sh(GATEWAY_SH, "stop", "--state", str(state))


@pytest.mark.juicefs
def test_tar_shards_on_s3_index_and_decode(s3_gateway, shards, tmp_path):
    mount, bucket = s3_gateway
    folder, want = shards
    shutil.copytree(folder, mount / "s3tars", dirs_exist_ok=True)
    for source in (f"{bucket}/s3tars/train-{{000000..000001}}.tar", f"{bucket}/s3tars/"):
        build_index(source, tmp_path / "i.parquet")
        rows = pq.read_table(tmp_path / "i.parquet").to_pylist()
        check_rows(rows, want)
        assert all(r["path"].startswith(f"{bucket}/s3tars/train-") for r in rows)
    ok = next(r for r in rows if r["probe_error"] is None)
    np.testing.assert_array_equal(decode(audio_source(ok["path"])),
                                  decode(str(want[ok["id"]]["file"])))


@pytest.mark.juicefs
def test_s3_paths_in_a_manifest(s3_gateway, corpus, tmp_path):
    mount, bucket = s3_gateway
    (mount / "s3files").mkdir(exist_ok=True)
    rows = [json.loads(x) for x in (corpus / "manifest.jsonl").read_text().splitlines()][:3]
    for r in rows:
        shutil.copy(corpus / r["path"], mount / "s3files" / Path(r["path"]).name)
        r["path"] = f"{bucket}/s3files/{Path(r['path']).name}"
    rows.append({"path": f"{bucket}/s3files/never.wav", "reference": "never"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_index(tmp_path / "m.jsonl", tmp_path / "i.parquet")
    got = pq.read_table(tmp_path / "i.parquet").to_pylist()
    assert [g["path"] for g in got] == [r["path"] for r in rows]
    assert [g["probe_error"] is None for g in got] == [True, True, True, False]
    assert got[3]["probe_error"].startswith("missing file")


@pytest.mark.juicefs
@pytest.mark.slow
def test_asrd_run_on_tar_shards_on_s3(s3_gateway, shards, tmp_path):
    """`asrd run` (real Ray, the CPU Whisper) and `asrd merge` on an index of tar shards read
    from the S3 gateway: every member once, the corrupt member an error row with its reason."""
    mount, bucket = s3_gateway
    folder, want = shards
    shutil.copytree(folder, mount / "runtars", dirs_exist_ok=True)
    build_index(f"{bucket}/runtars/", tmp_path / "i.parquet")
    run_dir = tmp_path / "run"
    res = subprocess.run(cli_args(tmp_path / "i.parquet", run_dir, "pipeline.part_rows=2",
                                  "merge.preset=none", "store.cache_dir=" + str(tmp_path / "c")),
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    res = subprocess.run([sys.executable, "-m", "asrd.cli", "merge", f"run.dir={run_dir}",
                          "merge.preset=none"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = pq.ParquetDataset(RunDir(run_dir).merged_files()).read().to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(want)
    by_id = {r["id"]: r for r in rows}
    assert by_id["bad/0000"]["error"].startswith("corrupt audio")
    good = [r for r in rows if r["id"] != "bad/0000"]
    assert all(r["error"] is None and r["text"] for r in good)


@pytest.mark.slow
def test_a_run_on_tar_members_resumes_from_its_committed_parts(shards, tmp_path):
    """The task kills itself once its first part (2 rows) is durable; the same command again
    resumes from that part: every member once, the corrupt one an error row."""
    from tests.test_faults import ONE_ROW_PER_CALL, fault_args

    folder, want = shards
    build_index(str(folder), tmp_path / "i.parquet")
    run_dir = tmp_path / "run"
    args = cli_args(tmp_path / "i.parquet", run_dir, *fault_args(
        tmp_path / "faults", "faults.kill_at=task.part_committed", "faults.kill_times=1",
        "pipeline.part_rows=2", *ONE_ROW_PER_CALL))
    with running(args, tmp_path / "first.log") as proc:
        assert proc.wait(timeout=600) == -signal.SIGKILL
    assert len(part_rows(run_dir)) == 2
    subprocess.run(args, check=True, capture_output=True, timeout=600)
    m = assert_exactly_once(run_dir, len(want))
    assert m["resumed_rows"] == 2 and m["failed"] == 1
    rows = pq.read_table(run_dir / "shards" / "shard-000000.parquet").to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(want)
    assert next(r for r in rows if r["id"] == "bad/0000")["error"].startswith("corrupt audio")


def test_an_s3_manifest_is_a_one_line_error_and_patterns_give_absolute_paths(shards, tmp_path,
                                                                           monkeypatch):
    with pytest.raises(IndexInputError, match="must be local"):
        build_index("s3://bucket/manifest.jsonl", tmp_path / "i.parquet")
    folder, want = shards
    monkeypatch.chdir(folder.parent)
    build_index(f"{folder.name}/train-{{000000..000001}}.tar", tmp_path / "i.parquet")
    paths = pq.read_table(tmp_path / "i.parquet", columns=["path"]).column(0).to_pylist()
    assert len(paths) == len(want) and all(p.startswith(str(folder) + "/") for p in paths)


@pytest.mark.slurm
@pytest.mark.juicefs
def test_tar_shards_on_s3_run_as_a_slurm_array(slurm_cluster, s3_gateway, shards, tmp_path,
                                               cancel_after):
    """The tar shards on the S3 gateway, planned into 2 shards and run as an array on the
    one-node SLURM: each task reads its members by byte range from object storage (the AWS_*
    environment reaches it through sbatch); after merge every member is there once and the
    corrupt member is an error row."""
    from tests.test_slurm import TASK, asrd, done, plan, wait_for

    mount, bucket = s3_gateway
    folder, want = shards
    shutil.copytree(folder, mount / "slurmtars", dirs_exist_ok=True)
    index = tmp_path / "i.parquet"
    build_index(f"{bucket}/slurmtars/", index)
    run = tmp_path / "run"
    cancel_after[1].append(run)
    plan(index, run, 2)
    asrd("submit", f"run.dir={run}", *TASK)
    wait_for(lambda: done(run) == {0, 1}, 600, "both shards' markers", run)
    asrd("merge", "--preset", "none", f"run.dir={run}")
    rows = pq.ParquetDataset(RunDir(run).merged_files()).read(columns=["id", "error"]).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(want)
    errors = {r["id"]: r["error"] for r in rows if r["error"]}
    assert list(errors) == ["bad/0000"] and errors["bad/0000"].startswith("corrupt audio")
