"""The store on a real JuiceFS mount, made by the project's own hpc/scripts/juicefs.sh: the script's
idempotent mount and dead-mount recovery, the store check, and the whole local pipeline with its
audio and run directory on the mount."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from hpc.commit import write_json
from hpc.markers import Markers
from hpc.store import StoreError, check_root
from tests.juicefs_fixtures import (JUICEFS_SH, client_pids, jfs_dir, jfs_volume,  # noqa: F401
                                    redis_volume, sh)

pytestmark = pytest.mark.juicefs


def test_mount_is_idempotent_and_status_says_mounted(jfs_volume):
    again = sh(JUICEFS_SH, "mount", "--meta", jfs_volume.meta, "--mount", str(jfs_volume.root))
    assert "already mounted" in again.stderr
    status = sh(JUICEFS_SH, "status", "--mount", str(jfs_volume.root))
    assert status.stdout.startswith("mounted:") and "fuse.juicefs" in status.stdout


def test_the_mount_settings_come_from_the_environment(jfs_volume):
    env = {"ASRD_JFS_META": jfs_volume.meta, "ASRD_JFS_MOUNT": str(jfs_volume.root)}
    assert "already mounted" in sh(JUICEFS_SH, "mount", env=env).stderr
    missing = sh(JUICEFS_SH, "mount", check=False, env={"ASRD_JFS_META": "", "ASRD_JFS_MOUNT": ""})
    assert missing.returncode != 0 and "--meta is not set" in missing.stderr


def test_check_root_on_the_mount(jfs_volume, jfs_dir):
    mount = check_root(jfs_dir, require_mount=jfs_volume.root, fstype="fuse.juicefs")
    assert mount.fstype == "fuse.juicefs" and mount.point == str(jfs_volume.root)


def test_a_dead_client_is_a_clear_error_and_mount_recovers_it(jfs_volume, tmp_path):
    """A second client of the same volume dies (as when a node's juicefs process is OOM-killed):
    the store check names it, and the mount script clears the dead mount and mounts again."""
    point = jfs_volume.mount(tmp_path / "second")
    write_json(point / "probe.json", {"ok": True})
    for pid in client_pids(jfs_volume, point):
        os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.statvfs(point)
        except OSError:
            break
        time.sleep(0.1)
    with pytest.raises(StoreError, match="does not answer.*client died"):
        check_root(point, require_mount=point)
    assert sh(JUICEFS_SH, "status", "--mount", str(point), check=False).stdout.startswith("dead:")
    again = sh(JUICEFS_SH, "mount", "--meta", jfs_volume.meta, "--mount", str(point))
    assert "clearing dead mount" in again.stderr
    assert json.loads((point / "probe.json").read_text()) == {"ok": True}
    jfs_volume.umount(point)
    assert not os.path.ismount(point)


def test_markers_scan_and_commit_on_the_mount(jfs_dir):
    markers = Markers(jfs_dir)
    for s in range(50):
        markers.write(s, {"shard": s})
    assert markers.done_shards() == set(range(50))
    assert markers.read_all()[49] == {"shard": 49}
    assert not [p for p in (jfs_dir / "done").iterdir() if p.name.startswith(".")]  # no temp left


def test_a_fresh_reader_on_the_mount_reads_journal_parts_not_markers(jfs_dir):
    markers = Markers(jfs_dir)
    for s in range(150):
        markers.write(s, {"shard": s})
    summary = markers._summary()  # a fresh reader: no summary file yet
    assert len(summary.read_all()) == 150
    assert summary.reads == 0 and summary.journal_reads == 2


@pytest.mark.redis
def test_redis_metadata_two_clients_see_one_store(redis_volume):
    node_a, node_b = redis_volume.mounts[:2]
    for point in (node_a, node_b):
        assert check_root(point, require_mount=point, fstype="fuse.juicefs").fstype == "fuse.juicefs"
    Markers(node_a / "redis-run").write(3, {"by": "a"})
    deadline = time.time() + 10  # close-to-open: B sees A's committed file once its caches expire
    while Markers(node_b / "redis-run").done_shards() != {3}:
        assert time.time() < deadline
        time.sleep(0.1)
    assert Markers(node_b / "redis-run").read(3) == {"by": "a"}
    status = sh(JUICEFS_SH, "status", "--mount", str(node_a), "--meta", redis_volume.meta)
    assert status.stdout.startswith("mounted:") and str(node_b) in status.stdout  # both sessions


# --- the pipeline on the mount ------------------------------------------------------------------

def asrd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asrd.cli", *args], capture_output=True,
                          text=True, timeout=600)


def test_pipeline_with_audio_and_run_dir_on_the_mount(corpus, jfs_volume, jfs_dir, tmp_path):
    audio = jfs_dir / "audio"  # the shared store holds the audio ...
    audio.mkdir()
    lines = corpus.joinpath("manifest.jsonl").read_text().splitlines()[:4]
    for line in lines:
        shutil.copy(corpus / json.loads(line)["path"], audio)
    (audio / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    index, run_dir = jfs_dir / "index.parquet", jfs_dir / "run"  # ... and the run directory
    cache = tmp_path / "node-local-cache"
    res = asrd("index", str(audio / "manifest.jsonl"), "-o", str(index))
    assert res.returncode == 0, res.stderr
    overrides = [f"run.index={index}", f"run.dir={run_dir}", "run.num_shards=2",
                 "pipeline.part_rows=2", f"store.require_mount={jfs_volume.root}",
                 f"store.cache_dir={cache}", "store.cache_gb=1"]
    res = asrd("run", *overrides)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 of 2 done" in res.stdout
    assert asrd("run", *overrides).stdout.count("finished 0 shards") == 1  # nothing redone
    res = asrd("merge", "--preset", "none", f"run.dir={run_dir}")
    assert res.returncode == 0, res.stderr[-3000:]

    assert Markers(run_dir).done_shards() == {0, 1}
    t = pq.ParquetDataset(sorted((run_dir / "merged").glob("part-*.parquet"))).read()
    assert t.num_rows == 4 and len(set(t.column("id").to_pylist())) == 4
    assert t.column("error").null_count == 4 and all(t.column("text").to_pylist())
    cached = [p for p in cache.rglob("*") if p.is_file() and p.parent.name != ".locks"
              and not p.name.startswith(".")]
    assert len(cached) == 4  # each recording copied to the node once, read from there
    paths = pq.read_table(index, columns=["path"]).column("path").to_pylist()
    assert all(p.startswith(str(audio)) for p in paths)

