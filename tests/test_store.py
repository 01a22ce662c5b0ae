"""The store check (a missing mount is a clear error) and the node-local audio cache."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asrd.audio.cache import AudioCache
from hpc.commit import write_json
from hpc.marker_summary import MarkerSummary
from hpc.markers import Markers
from hpc.store import StoreError, check_root, juicefs_setup_line, mount_of, mounts

# --- check_root ---------------------------------------------------------------------------------


def test_check_root_accepts_a_local_folder(tmp_path):
    assert check_root(tmp_path).point == mount_of(tmp_path).point


def test_check_root_refuses_missing_and_non_directories(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        check_root(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        check_root(tmp_path / "file")


def test_check_root_before_the_run_dir_exists(tmp_path):
    check_root(tmp_path / "runs" / "new", must_exist=False)
    assert not (tmp_path / "runs").exists()  # checking creates nothing


def test_unmounted_mount_point_is_a_clear_error_and_nothing_is_written(tmp_path):
    point = tmp_path / "jfs"  # the bare directory a mount would cover
    point.mkdir()
    with pytest.raises(StoreError, match=r"require_mount=.*jfs is not mounted.*juicefs.sh mount"):
        check_root(point / "runs" / "r1", require_mount=point, must_exist=False)
    assert list(point.iterdir()) == []


def _tmpfs_mount() -> Path:
    """A real mount point other than / that this user can write (tmpfs at /dev/shm)."""
    point = Path("/dev/shm")
    if not os.path.ismount(point) or not os.access(point, os.W_OK):
        pytest.skip("no writable tmpfs mount at /dev/shm")
    return point


def test_path_must_be_on_the_required_mount_of_the_required_type(tmp_path):
    point = _tmpfs_mount()
    inside = point / f"asrd-store-test-{os.getpid()}"
    inside.mkdir()
    try:
        assert check_root(inside, require_mount=point).fstype == "tmpfs"
        with pytest.raises(StoreError, match="expected fuse.juicefs"):
            check_root(inside, require_mount=point, fstype="fuse.juicefs")
        with pytest.raises(StoreError, match="outside store.require_mount"):
            check_root(tmp_path, require_mount=point)
        link = tmp_path / "link"  # a symlink out of the mount is judged by where it leads
        link.symlink_to(tmp_path)
        with pytest.raises(StoreError, match="outside"):
            check_root(link, require_mount=point)
    finally:
        inside.rmdir()


def test_mount_table_escapes_are_decoded(tmp_path):
    table = tmp_path / "mounts"
    table.write_text("JuiceFS:v /mnt/my\\040store fuse.juicefs rw 0 0\n/dev/vda / ext4 rw 0 0\n")
    (m, root) = mounts(str(table))
    assert (m.point, m.fstype, m.source) == ("/mnt/my store", "fuse.juicefs", "JuiceFS:v")
    assert root.point == "/"


def test_setup_line_quotes_paths():
    line = juicefs_setup_line("/mnt/my store", "redis://h:6379/1")
    assert line.endswith("mount --mount '/mnt/my store' --meta redis://h:6379/1")
    assert line.startswith("bash ") and "juicefs.sh" in line


def test_a_missing_mount_stops_the_run_before_anything_is_written(corpus_index, tmp_path):
    bare = tmp_path / "jfs"  # where the volume should be mounted, but is not
    bare.mkdir()
    res = subprocess.run([sys.executable, "-m", "asrd.cli", "run", f"run.index={corpus_index}",
                          f"run.dir={bare}/run", f"store.require_mount={bare}"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "asrd: error: store.require_mount=" in res.stderr and "is not mounted" in res.stderr
    assert "Traceback" not in res.stderr
    assert list(bare.iterdir()) == []  # no run directory on the node's local disk


# --- audio cache --------------------------------------------------------------------------------


def _files(folder: Path, n: int, size: int = 1000) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"a{i:03d}.flac"
        p.write_bytes(bytes([i % 256]) * size + os.urandom(16))
        out.append(p)
    return out


def test_miss_then_hit_serves_an_identical_local_copy(tmp_path):
    (src,) = _files(tmp_path / "store", 1)
    cache = AudioCache(tmp_path / "cache", max_bytes=10_000)
    first = cache.local_path(str(src))
    assert first != str(src) and first.startswith(str(tmp_path / "cache"))
    assert first.endswith(".flac") and Path(first).read_bytes() == src.read_bytes()
    assert cache.local_path(str(src)) == first
    assert (cache.stats.misses, cache.stats.hits) == (1, 1)


def test_a_rewritten_source_is_not_served_stale(tmp_path):
    (src,) = _files(tmp_path / "store", 1)
    cache = AudioCache(tmp_path / "cache", max_bytes=10_000)
    old = cache.local_path(str(src))
    src.write_bytes(b"new content, new size")
    new = cache.local_path(str(src))
    assert new != old and Path(new).read_bytes() == b"new content, new size"


def test_unreadable_or_oversized_sources_are_served_from_the_store(tmp_path):
    cache = AudioCache(tmp_path / "cache", max_bytes=500)
    missing = str(tmp_path / "missing.wav")
    assert cache.local_path(missing) == missing  # the decoder then reports "missing file"
    (big,) = _files(tmp_path / "store", 1, size=1000)
    assert cache.local_path(str(big)) == str(big)
    assert cache.stats.bypassed == 2 and cache.usage_bytes() == 0


def test_lru_eviction_keeps_the_recently_used(tmp_path):
    a, b, c, d = _files(tmp_path / "store", 4, size=1000)
    cache = AudioCache(tmp_path / "cache", max_bytes=3100, grace_s=0)
    for f in (a, b, c):
        cache.local_path(str(f))
        time.sleep(0.02)
    pa = cache.local_path(str(a))  # a used again: b is now the least recently used
    time.sleep(0.02)
    pd = cache.local_path(str(d))
    assert cache.stats.evicted >= 1 and cache.usage_bytes() <= 3100
    assert Path(pa).exists() and Path(pd).exists()
    assert cache.local_path(str(b)) and cache.stats.misses == 5  # b had to be copied again


def test_recently_handed_out_files_survive_eviction(tmp_path):
    files = _files(tmp_path / "store", 3, size=1000)
    cache = AudioCache(tmp_path / "cache", max_bytes=1500, grace_s=60)
    paths = [cache.local_path(str(f)) for f in files]
    assert all(Path(p).exists() for p in paths)  # over the cap for now, but nothing pulled away


def test_cache_is_off_by_default():
    from asrd import config as config_mod

    cfg = config_mod.load(None, [])
    assert AudioCache.from_config(cfg.store) is None


def _reader(cache_dir: str, max_bytes: int, grace_s: float, srcs: list[str], seed: int, q) -> None:
    """One of several processes sharing the cache: read every source, check every byte."""
    cache = AudioCache(cache_dir, max_bytes, grace_s=grace_s)
    order = srcs[:]
    random.Random(seed).shuffle(order)
    bad = 0
    for src in order:
        for _ in range(20):  # only with grace_s=0 can another process evict before we open
            try:
                data = Path(cache.local_path(src)).read_bytes()
                break
            except FileNotFoundError:
                continue
        bad += data != Path(src).read_bytes()
    q.put((cache.stats.misses, cache.stats.hits, bad))


def _run_readers(tmp_path: Path, n_procs: int, max_bytes: int, grace_s: float, srcs: list[Path]):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_reader, args=(str(tmp_path / "cache"), max_bytes, grace_s,
                                               [str(s) for s in srcs], i, q))
             for i in range(n_procs)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return results


def test_processes_sharing_the_cache_copy_each_file_once(tmp_path):
    srcs = _files(tmp_path / "store", 30, size=20_000)
    results = _run_readers(tmp_path, 4, max_bytes=10**8, grace_s=60, srcs=srcs)
    assert sum(r[2] for r in results) == 0  # every byte right
    assert sum(r[0] for r in results) == 30  # each file copied by exactly one process
    assert sum(r[1] for r in results) == 3 * 30
    cache_files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert not [p for p in cache_files if p.name.startswith(".tmp-")]


def test_processes_under_eviction_pressure_keep_content_and_accounting_right(tmp_path):
    srcs = _files(tmp_path / "store", 30, size=20_000)
    cap = 5 * 20_016
    results = _run_readers(tmp_path, 4, max_bytes=cap, grace_s=0, srcs=srcs)
    assert sum(r[2] for r in results) == 0
    cache = AudioCache(tmp_path / "cache", cap)
    assert cache.usage_bytes() <= cap
    assert int((tmp_path / "cache" / ".usage").read_text()) == cache.usage_bytes()


# --- marker summary -----------------------------------------------------------------------------


def test_marker_summary_reads_each_marker_once_and_follows_changes(tmp_path):
    markers = Markers(tmp_path)
    summary = MarkerSummary(markers.done_dir, tmp_path / "markers-summary.json")
    for s in range(20):
        markers.write(s, {"shard": s, "ok": 1})
    assert len(summary.read_all()) == 20 and summary.reads == 20
    assert len(summary.read_all()) == 20 and summary.reads == 0  # from the summary alone
    markers.write(20, {"shard": 20, "ok": 1})  # new
    markers.write(3, {"shard": 3, "ok": 0})  # redone: rewritten by rename
    markers.remove(7)  # being redone
    got = summary.read_all()
    assert summary.reads == 2
    assert set(got) == {f"shard-{s:06d}.json" for s in range(21) if s != 7}
    assert got["shard-000003.json"]["ok"] == 0


def test_a_corrupt_summary_costs_only_reads(tmp_path):
    markers = Markers(tmp_path)
    for s in range(5):
        markers.write(s, {"shard": s})
    path = tmp_path / "markers-summary.json"
    path.write_text("{not json")
    summary = MarkerSummary(markers.done_dir, path)
    assert len(summary.read_all()) == 5 and summary.reads == 5
    assert json.loads(path.read_text())["version"] == 1  # rewritten, usable next time


def test_a_fresh_reader_takes_committed_markers_from_the_journal(tmp_path):
    markers = Markers(tmp_path)
    for s in range(250):  # three journal parts
        markers.write(s, {"shard": s, "ok": 1})
    summary = markers._summary()
    got = summary.read_all()
    assert len(got) == 250 and summary.reads == 0 and summary.journal_reads == 3
    assert got["shard-000249.json"] == {"shard": 249, "ok": 1}
    assert not summary.summary_file.exists()  # the journal holds them all: nothing to write
    markers.write(120, {"shard": 120, "ok": 0})
    assert summary.read_all()["shard-000120.json"]["ok"] == 0
    assert summary.reads == 0 and summary.journal_reads == 3


def test_the_summary_keeps_only_the_markers_the_journal_does_not_hold(tmp_path):
    markers = Markers(tmp_path)
    for s in range(5):
        markers.write(s, {"shard": s, "ok": 1})
    write_json(markers.path(2), {"shard": 2, "ok": 7})  # replaced without the journal
    summary = markers._summary()
    assert summary.read_all()["shard-000002.json"]["ok"] == 7 and summary.reads == 1
    saved = json.loads(summary.summary_file.read_text())["entries"]
    assert list(saved) == ["shard-000002.json"]
    assert summary.read_all()["shard-000002.json"]["ok"] == 7 and summary.reads == 0
    markers.write(2, {"shard": 2, "ok": 8})  # now in the journal: the summary drops it
    assert summary.read_all()["shard-000002.json"]["ok"] == 8 and summary.reads == 0
    assert json.loads(summary.summary_file.read_text())["entries"] == {}


def test_a_journal_entry_is_never_believed_for_a_marker_changed_since(tmp_path):
    markers = Markers(tmp_path)
    for s in range(5):
        markers.write(s, {"shard": s, "ok": 1})
    write_json(markers.path(2), {"shard": 2, "ok": 7})  # replaced without the journal
    markers.remove(3)  # being redone
    summary = markers._summary()
    got = summary.read_all()
    assert set(got) == {f"shard-{s:06d}.json" for s in (0, 1, 2, 4)}
    assert got["shard-000002.json"]["ok"] == 7 and summary.reads == 1


def test_a_corrupt_journal_part_costs_only_reads(tmp_path):
    markers = Markers(tmp_path)
    for s in range(5):
        markers.write(s, {"shard": s, "ok": 1})
    (tmp_path / "markers-journal" / "part-000000.json").write_text("{half a file")
    markers.write(4, {"shard": 4, "ok": 4})  # the part is whole again, with shard 4 only
    summary = markers._summary()
    got = summary.read_all()
    assert len(got) == 5 and got["shard-000004.json"]["ok"] == 4
    assert summary.reads == 4  # the four entries lost with the corrupt part



def test_a_journal_entry_without_its_marker_costs_a_read_not_a_crash(tmp_path):
    markers = Markers(tmp_path)
    markers.write(0, {"shard": 0, "ok": 1})
    part = tmp_path / "markers-journal" / "part-000000.json"
    data = json.loads(part.read_text())
    del data["entries"]["shard-000000.json"]["marker"]  # the right key, no marker
    part.write_text(json.dumps(data))
    summary = markers._summary()
    assert summary.read_all() == {"shard-000000.json": {"shard": 0, "ok": 1}}
    assert summary.reads == 1
