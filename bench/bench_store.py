"""The shared store: marker commits and scans, `asrd status` at 10k shards, small-file reads, and
the node-local audio cache, on a real JuiceFS mount (SQLite metadata, or a local Redis with
--redis) against local disk.

JuiceFS figures are taken on a cold client: the volume is unmounted and mounted again with an empty
block cache before each read phase. Each read phase also counts the metadata operations the client
made (from the mount's .stats), which is what a remote metadata engine multiplies by its latency
(22 ms to Redis in juicefs #145): that arithmetic, not this machine's loopback, says what a cluster
sees. Local disk is warm (dropping the page cache would disturb the machine's other users).

Usage: python bench/bench_store.py [--markers 10000] [--files 1000] [--file-kb 64] [--redis] [--record]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asrd import config as config_mod  # noqa: E402
from asrd.audio.cache import AudioCache  # noqa: E402
from asrd.plan import make_plan  # noqa: E402
from asrd.schema import INDEX_SCHEMA  # noqa: E402
from asrd.status import run_status  # noqa: E402
from hpc.marker_summary import MarkerSummary  # noqa: E402
from hpc.markers import Markers  # noqa: E402

JUICEFS_SH = ROOT / "hpc" / "scripts" / "juicefs.sh"
REDIS_SH = ROOT / "hpc" / "scripts" / "redis_local.sh"


def sh(script: Path, *args: str) -> str:
    return subprocess.run(["bash", str(script), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


class Store:
    """A folder to benchmark: local disk, or a JuiceFS volume that can be remounted cold."""

    def __init__(self, name: str, home: Path, meta: str | None = None):
        self.name, self.home, self.meta = name, home, meta
        self.root = home / "mnt" if meta else home / "local"
        self.mounts = 0
        if meta:
            sh(JUICEFS_SH, "format", "--meta", meta, "--bucket", str(home / "bucket"),
               "--name", f"bench-{os.getpid()}")
            self.mount()
        else:
            self.root.mkdir(parents=True)

    def mount(self) -> None:
        self.mounts += 1
        sh(JUICEFS_SH, "mount", "--meta", self.meta, "--mount", str(self.root),
           "--log", str(self.home / "juicefs.log"),
           "--cache-dir", str(self.home / f"blockcache-{self.mounts}"))

    def cold(self) -> None:
        """A fresh client with an empty block cache (JuiceFS); nothing for local disk."""
        if self.meta:
            sh(JUICEFS_SH, "umount", "--mount", str(self.root))
            self.mount()

    def meta_ops(self) -> int:
        if not self.meta:
            return 0
        for line in (self.root / ".stats").read_text().splitlines():
            if line.startswith("juicefs_meta_ops_durations_histogram_seconds_total "):
                return int(float(line.split()[1]))
        return 0

    def close(self) -> None:
        if self.meta:
            sh(JUICEFS_SH, "umount", "--mount", str(self.root), "--force")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def marker_figures(store: Store, n: int) -> dict[str, float]:
    """10k shards: commit their markers, then scan and read them as `asrd status` does."""
    index = store.root / "index.parquet"
    ids = [f"utt{i:07d}" for i in range(n)]
    pq.write_table(pa.table({"id": ids, "path": [f"/audio/{i}.flac" for i in ids],
                             "duration_s": np.full(n, 10.0), "sample_rate": np.full(n, 16000, np.int32),
                             "channels": np.ones(n, np.int32), "num_bytes": np.full(n, 320_000),
                             "probe_error": pa.nulls(n, pa.string())}, schema=INDEX_SCHEMA), index)
    run = store.root / "run"
    cfg = config_mod.load(None, [f"run.index={index}", f"run.dir={run}", f"run.num_shards={n}"])
    make_plan(cfg)
    markers = Markers(run)
    proto = {"rows": 1, "ok": 1, "failed": 0, "errors": {}, "audio_s": 10.0, "wall_s": 2.0,
             "config_hash": "0" * 16, "asrd_version": "bench", "model": "copy", "host": "node",
             "slurm_job_id": None, "slurm_array": None, "file": "", "bytes": 1, "sha256": "0" * 64}
    write_s, _ = timed(lambda: [markers.write(s, {**proto, "shard": s}) for s in range(n)])
    fig = {"marker commits/s": n / write_s}

    store.cold()
    ops0 = store.meta_ops()
    scan_s, done = timed(markers.done_shards)
    assert len(done) == n
    fig["marker scan s (one readdir)"] = scan_s
    if store.meta:
        fig["marker scan meta ops"] = store.meta_ops() - ops0
    scan_warm_s, _ = timed(markers.done_shards)
    fig["marker scan s (again)"] = scan_warm_s

    store.cold()
    ops0 = store.meta_ops()
    read_s, allm = timed(markers.read_all)
    assert len(allm) == n
    fig["marker read_all s (sequential)"] = read_s
    if store.meta:
        fig["marker read meta ops per marker"] = (store.meta_ops() - ops0) / n

    store.cold()
    with ThreadPoolExecutor(32) as pool:
        par_s, got = timed(lambda: list(pool.map(markers.read, sorted(done))))
    assert len(got) == n
    fig["marker read s (32 threads)"] = par_s

    summary = MarkerSummary(markers.done_dir, run / "markers-summary.json", threads=32)
    store.cold()
    ops0 = store.meta_ops()
    first_s, got = timed(summary.read_all)
    assert len(got) == n and summary.reads == n
    fig["MarkerSummary s (first: reads all, 32 threads)"] = first_s
    store.cold()
    ops0 = store.meta_ops()
    again_s, got = timed(summary.read_all)
    assert len(got) == n and summary.reads == 0
    fig["MarkerSummary s (summary current: scan + 1 file)"] = again_s
    if store.meta:
        fig["MarkerSummary meta ops (summary current)"] = store.meta_ops() - ops0

    store.cold()
    status_s, st = timed(lambda: run_status(str(run), slurm=False))
    assert st.count("done") == n
    fig["run_status s (in process)"] = status_s
    store.cold()
    cli_s, res = timed(lambda: subprocess.run(
        [sys.executable, "-m", "asrd.cli", "status", f"run.dir={run}"], capture_output=True,
        text=True, env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}))
    assert res.returncode == 0 and f"{n} done" in res.stdout, res.stderr
    fig["`asrd status` s (whole command)"] = cli_s
    return fig


def file_figures(store: Store, cache_root: Path, n: int, kb: int) -> dict[str, float]:
    """Small audio-sized files: read rate cold and again, and through the node-local cache."""
    audio = store.root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        (audio / f"a{i:05d}.flac").write_bytes(rng.bytes(kb * 1024))
    paths = sorted(str(p) for p in audio.iterdir())
    read_all = lambda ps: sum(len(Path(p).read_bytes()) for p in ps)  # noqa: E731
    fig = {}

    store.cold()
    ops0 = store.meta_ops()
    cold_s, nbytes = timed(lambda: read_all(paths))
    fig["small-file reads/s (cold)"] = n / cold_s
    fig["small-file read MB/s (cold)"] = nbytes / cold_s / 1e6
    if store.meta:
        fig["small-file read meta ops per file"] = (store.meta_ops() - ops0) / n
    again_s, _ = timed(lambda: read_all(paths))
    fig["small-file reads/s (again)"] = n / again_s

    store.cold()
    cache = AudioCache(cache_root / store.name, max_bytes=10 * n * kb * 1024)
    miss_s, local = timed(lambda: [cache.local_path(p) for p in paths])
    assert cache.stats.misses == n
    fig["cache fill files/s (miss: copy from store)"] = n / miss_s
    ops0 = store.meta_ops()
    hit_s, local2 = timed(lambda: [cache.local_path(p) for p in paths])
    assert local2 == local and cache.stats.hits == n
    fig["cache hit µs per file (lookup only)"] = hit_s / n * 1e6
    if store.meta:
        fig["cache hit meta ops per file"] = (store.meta_ops() - ops0) / n
    hit_read_s, _ = timed(lambda: read_all([cache.local_path(p) for p in paths]))
    fig["cache hit reads/s (lookup + read local copy)"] = n / hit_read_s
    return fig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--markers", type=int, default=10_000)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--file-kb", type=int, default=64)
    ap.add_argument("--redis", action="store_true", help="also a JuiceFS volume on a local Redis")
    ap.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    a = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="asrd-bench-store-"))
    stores: list[Store] = []
    redis_dir = home / "redis"
    results: dict[str, dict[str, float]] = {}
    try:
        stores.append(Store("local disk", home / "local"))
        stores.append(Store("JuiceFS sqlite", home / "jfs-sqlite", f"sqlite3://{home}/jfs-sqlite/meta.db"))
        if a.redis:
            url = sh(REDIS_SH, "start", str(redis_dir))
            stores.append(Store("JuiceFS redis", home / "jfs-redis", f"{url}/1"))
        for store in stores:
            print(f"== {store.name}", flush=True)
            results[store.name] = {**marker_figures(store, a.markers),
                                   **file_figures(store, home / "cache", a.files, a.file_kb)}
            print(json.dumps(results[store.name], indent=1), flush=True)
    finally:
        for store in stores:
            store.close()
        if a.redis:
            sh(REDIS_SH, "stop", str(redis_dir))
        shutil.rmtree(home, ignore_errors=True)
    if a.record:
        machine = f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, shared)"
        day = datetime.date.today().isoformat()
        cmd = (f"python bench/bench_store.py --markers {a.markers} --files {a.files} "
               f"--file-kb {a.file_kb}" + (" --redis" if a.redis else ""))
        with open(Path(__file__).parent / "RESULTS.md", "a") as f:
            for store, fig in results.items():
                for k, v in fig.items():
                    f.write(f"| store | {k} | {v:,.2f} | {store}; {a.markers} markers, {a.files} x "
                            f"{a.file_kb} KiB files | {machine} | {day} | `{cmd}` |\n")


if __name__ == "__main__":
    main()
