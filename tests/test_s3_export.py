"""`asrd export -o s3://bucket/prefix`: every format written to a real S3 server (`juicefs
gateway` serving the test JuiceFS volume, hpc/scripts/s3_gateway.sh) and read back from it; an
export killed at each step resumes with every row once and nothing left under the prefix but
the export; a bad bucket or bad keys are one `asrd: error:` line."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import tarfile
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from asrd import cli
from asrd.audio.source import s3_filesystem, s3_key
from asrd.index import build_index
from tests.test_export import (KILLS, ROW_A_SHARD, _check_progress, _export_cmd,  # noqa: F401
                               lhotse, merged, merged_run)
from tests.juicefs_fixtures import jfs_volume, sh  # noqa: F401  (fixture)
from tests.runs import running, wait_until
from tests.test_tar_input import GATEWAY_SH, _free_port, s3_gateway  # noqa: F401  (fixture)

pytestmark = pytest.mark.juicefs


def _fs() -> pafs.S3FileSystem:
    return s3_filesystem()


def _names(url: str) -> list[str]:
    """The names directly under an s3:// prefix."""
    infos = _fs().get_file_info(pafs.FileSelector(s3_key(url), allow_not_found=True))
    return sorted(i.base_name for i in infos)


def _keys(url: str) -> list[str]:
    """Every object under an s3:// prefix, relative to it."""
    infos = _fs().get_file_info(pafs.FileSelector(s3_key(url), recursive=True,
                                                  allow_not_found=True))
    return sorted(i.path[len(s3_key(url)) + 1:] for i in infos if i.type == pafs.FileType.File)


def _read(url: str) -> bytes:
    with _fs().open_input_stream(s3_key(url)) as f:
        return f.read()


def _progress(url: str) -> dict:
    return json.loads(_read(f"{url}/export.json"))


def _owned(progress: dict) -> list[str]:
    return sorted([n for s in progress["shards"] for n in s["names"]] + ["export.json"])


def s3_export(run: Path, url: str, *args: str) -> dict:
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    flags = [a for a in args if a not in overrides]
    assert cli.main(["export", f"run.dir={run}", *overrides, "-o", url, *flags]) == 0
    return _progress(url)


def test_the_s3_client_uploads_to_the_gateway(s3_gateway):  # noqa: F811
    """A small object (one PUT) and one of 12 MiB (a multipart upload) go up whole: the SDK's
    default aws-chunked uploads were refused with HTTP 411 by the gateway."""
    _, bucket = s3_gateway
    for size in (10, 12 * 2**20):
        data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        with _fs().open_output_stream(s3_key(f"{bucket}/upload/{size}")) as f:
            f.write(data)
        assert _read(f"{bucket}/upload/{size}") == data


def test_hf_export_to_s3_reads_back(merged, s3_gateway):  # noqa: F811
    run, ok = merged
    _, bucket = s3_gateway
    url = f"{bucket}/exports/hf"
    progress = s3_export(run, url, "--format", "hf", "export.shard_mb=0.05")
    _check_progress(progress, len(ok))
    assert len(progress["shards"]) > 1 and _names(url) == _owned(progress)
    rows = [r for s in progress["shards"] for r in
            pq.read_table(s3_key(f"{url}/{s['names'][0]}"), filesystem=_fs()).to_pylist()]
    assert sorted(r["id"] for r in rows) == sorted(ok)
    for r in rows:
        x, rate = sf.read(io.BytesIO(r["audio"]["bytes"]))
        assert rate == 16000 and len(x) / rate == pytest.approx(ok[r["id"]]["duration_s"], abs=0.05)
        assert r["text"] == ok[r["id"]]["text"]


def test_webdataset_export_to_s3_indexes_back_from_s3(merged, s3_gateway, tmp_path):  # noqa: F811
    """The tars on S3 index back (asrd index s3://...) into the exported rows: the same ids, the
    text as the reference, every audio member probed."""
    run, ok = merged
    _, bucket = s3_gateway
    url = f"{bucket}/exports/wds"
    progress = s3_export(run, url, "--format", "webdataset", "export.shard_mb=0.05")
    _check_progress(progress, len(ok))
    assert len(progress["shards"]) > 1 and _names(url) == _owned(progress)
    build_index(f"{url}/", tmp_path / "back.parquet")
    back = {r["id"]: r for r in pq.read_table(tmp_path / "back.parquet").to_pylist()}
    assert sorted(back) == sorted(ok)
    for ident, r in back.items():
        assert r["probe_error"] is None
        assert r["duration_s"] == pytest.approx(ok[ident]["duration_s"], abs=0.05)
        assert r["reference"] == ok[ident]["text"]
    assert _tar_ids(url) == sorted(ok)  # and each tar, read from S3, holds them once


def test_lhotse_export_to_s3_points_at_its_objects(merged, s3_gateway, tmp_path):  # noqa: F811
    run, ok = merged
    _, bucket = s3_gateway
    url = f"{bucket}/exports/lhotse"
    progress = s3_export(run, url, "--format", "lhotse")
    _check_progress(progress, len(ok))
    assert _names(url) == _owned(progress)
    for name in _keys(url):  # the manifests, read by Lhotse from local copies
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(_read(f"{url}/{name}"))
    recs = lhotse.load_manifest(tmp_path / "recordings-00000.jsonl.gz")
    sups = lhotse.load_manifest(tmp_path / "supervisions-00000.jsonl.gz")
    lhotse.validate_recordings_and_supervisions(recs, sups)
    assert sorted(r.id for r in recs) == sorted(ok)
    for rec in recs:
        (source,) = rec.sources
        assert source.type == "url" and source.source.startswith(f"{url}/audio-00000/")
        x, rate = sf.read(io.BytesIO(_read(source.source)))
        assert rate == rec.sampling_rate == 16000 and len(x) == rec.num_samples


def _tar_ids(url: str) -> list[str]:
    """The ids in the prefix's shard tars, each tar read to its end (a partial one fails)."""
    ids = []
    for name in _names(url):
        if re.fullmatch(r"shard-\d{5}\.tar", name):
            with tarfile.open(fileobj=io.BytesIO(_read(f"{url}/{name}"))) as tf:
                ids += [json.loads(tf.extractfile(m).read())["id"] for m in tf.getmembers()
                        if m.name.endswith(".json")]
    return sorted(ids)


def _staging() -> list[Path]:
    import tempfile

    return list(Path(tempfile.gettempdir()).glob("asrd-export-*"))


@pytest.mark.parametrize("fault", KILLS)
def test_an_s3_export_killed_at_any_step_resumes_cleanly(merged, s3_gateway, fault):  # noqa: F811
    """Killed at each step (or mid-shard), an s3:// export leaves under a final name only whole
    objects that its record lists; run again, it resumes, leaves no temporary keys or local
    staging, and holds every row once."""
    run, ok = merged
    _, bucket = s3_gateway
    url = f"{bucket}/killed/{re.sub(r'[^a-z0-9]+', '-', fault)}"
    before = _staging()
    killed = subprocess.run(_export_cmd(run, url, ROW_A_SHARD, fault), capture_output=True,
                            text=True)
    assert killed.returncode in (-signal.SIGKILL, 137), killed.stderr
    names = _names(url)
    if "export.json" in names:
        progress = _progress(url)
        assert set(n for n in names if n.startswith("shard-")) <= \
            set(_owned(progress) + progress["uncommitted"])
    assert sorted(set(_tar_ids(url))) == _tar_ids(url)  # every placed tar whole, no row twice
    if fault.endswith("file_moved"):  # the shard's upload is under its temporary key
        assert ".shard-00000.tmp" in names and "shard-00000.tar" in names
    resumed = subprocess.run(_export_cmd(run, url, ROW_A_SHARD), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    progress = _progress(url)
    _check_progress(progress, len(ok))
    assert _names(url) == _owned(progress)  # nothing left over
    assert _tar_ids(url) == sorted(ok)  # each row exactly once
    assert _staging() == before  # the local staging removed
    if fault.endswith("=5"):
        assert "resumed at merged row" in resumed.stdout
    again = subprocess.run(_export_cmd(run, url, ROW_A_SHARD), capture_output=True, text=True)
    assert "already complete: nothing written" in again.stdout
    assert _progress(url) == progress


def _fails(run: Path, url: str, capsys) -> str:
    assert cli.main(["export", f"run.dir={run}", "-o", url, "--format", "webdataset"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asrd: error:") and len(err.strip().splitlines()) == 1, err
    return err


def test_bad_s3_targets_are_one_line_errors(merged, s3_gateway, monkeypatch,  # noqa: F811
                                            capsys, tmp_path):
    run, _ = merged
    _, bucket = s3_gateway
    assert "bucket no-such-bucket of s3://no-such-bucket/x does not exist" in \
        _fails(run, "s3://no-such-bucket/x", capsys)
    with _fs().open_output_stream(s3_key(f"{bucket}/theirs/a.txt")) as f:
        f.write(b"a")
    assert "holds files that are not an export (a.txt)" in _fails(run, f"{bucket}/theirs", capsys)
    assert _names(f"{bucket}/theirs") == ["a.txt"]
    assert "is an object" in _fails(run, f"{bucket}/theirs/a.txt", capsys)
    assert cli.main(["export", f"run.dir={run}", "export.shard_mb=6000", "-o",
                     f"{bucket}/big"]) == 2
    assert "export.shard_mb=6000 is over 5120" in capsys.readouterr().err
    for wrong in ("key", "none"):  # a wrong secret; no keys at all
        if wrong == "key":
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        else:
            monkeypatch.delenv("AWS_ACCESS_KEY_ID")
            monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
            monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws/credentials either
        s3_filesystem.cache_clear()
        try:
            err = _fails(run, f"{bucket}/wrong-{wrong}", capsys)
        finally:
            monkeypatch.undo()
            s3_filesystem.cache_clear()
        assert f"{bucket}/wrong-{wrong} failed" in err and "AWS_SECRET_ACCESS_KEY" in err
        assert _names(f"{bucket}/wrong-{wrong}") == []


def test_an_export_whose_s3_server_goes_away_resumes_when_it_is_back(merged, s3_gateway,  # noqa: F811
                                                                    jfs_volume, tmp_path,  # noqa: F811
                                                                    monkeypatch):
    """A second gateway on the volume serves the export, which is held with its first shard
    written locally; the gateway is stopped and the export let go: it ends with one `asrd:
    error:` line, nothing under a final name; with the gateway back, the same command
    finishes the export with every row once."""
    run, ok = merged
    _, bucket = s3_gateway
    url = f"{bucket}/gone"
    state, faults = tmp_path / "gw2", tmp_path / "faults"
    faults.mkdir()
    address = f"127.0.0.1:{_free_port()}"
    keys = {"MINIO_ROOT_USER": os.environ["AWS_ACCESS_KEY_ID"],
            "MINIO_ROOT_PASSWORD": os.environ["AWS_SECRET_ACCESS_KEY"]}
    start = ("start", "--meta", jfs_volume.meta, "--state", str(state), "--address", address)
    sh(GATEWAY_SH, *start, env=keys)
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://{address}"}
    hold = ["faults.hold_at=export.shard_closed", f"faults.state_dir={faults}",
            f"faults.release_file={faults / 'go'}"]
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", env["AWS_ENDPOINT_URL"])  # for the child only
        with running(_export_cmd(run, url, ROW_A_SHARD, *hold), tmp_path / "a.log") as proc:
            monkeypatch.undo()
            wait_until(lambda: (faults / "held-export.shard_closed").exists(), proc,
                       "the export held", tmp_path / "a.log")
            sh(GATEWAY_SH, "stop", "--state", str(state))
            (faults / "go").touch()
            assert proc.wait(timeout=300) == 2
        err = (tmp_path / "a.log").read_text().strip().splitlines()
        assert len(err) == 1 and err[0].startswith("asrd: error: ") and f"{url} failed" in err[0]
        assert _names(url) == ["export.json"] and _progress(url)["shards"] == []
        sh(GATEWAY_SH, *start, env=keys)
        done = subprocess.run(_export_cmd(run, url, ROW_A_SHARD), capture_output=True,
                              text=True, env=env)
        assert done.returncode == 0, done.stderr
    finally:
        sh(GATEWAY_SH, "stop", "--state", str(state))
    progress = _progress(url)
    _check_progress(progress, len(ok))
    assert _names(url) == _owned(progress) and _tar_ids(url) == sorted(ok)


def test_a_run_read_from_s3_tars_exports_to_s3(corpus, s3_gateway, tmp_path):  # noqa: F811
    """Object storage both ways: a run indexed from tar shards on S3 exports its members'
    bytes (read by byte range) as WebDataset tars under another prefix, which index back into
    the same ids with the same audio bytes."""
    from tests.test_tar_input import make_shards

    mount, bucket = s3_gateway
    want = make_shards(corpus, mount / "s3in")
    build_index(f"{bucket}/s3in/", tmp_path / "i.parquet")
    rd = merged_run(tmp_path / "i.parquet", tmp_path / "run")
    url = f"{bucket}/s3out"
    progress = s3_export(rd.path, url, "--format", "webdataset", "--audio", "original")
    good = {k: w["file"].read_bytes() for k, w in want.items() if w["file"] is not None}
    assert progress["items"] == len(good) and progress["skipped"] == {"error row": 1}
    build_index(f"{url}/", tmp_path / "back.parquet")
    back = pq.read_table(tmp_path / "back.parquet").to_pylist()
    assert sorted(r["id"] for r in back) == sorted(good)
    got = {}
    for name in _names(url):
        if name.endswith(".tar"):
            with tarfile.open(fileobj=io.BytesIO(_read(f"{url}/{name}"))) as tf:
                members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
            for key in {n.split(".", 1)[0] for n in members}:
                (audio,) = [d for n, d in members.items()
                            if n.startswith(key + ".") and not n.endswith(".json")]
                got[json.loads(members[f"{key}.json"])["id"]] = audio
    assert got == good
