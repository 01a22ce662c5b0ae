"""What the integrity checks cost, and what the Ray reaper does after a kill -9.

1. Verification: a run of S shard files (copied index rows, R rows each) is checked at both depths
   (asrd.verify: quick = one scan of sizes and mtimes, as `asrd status`; full = sha256 of every
   file, as `asrd merge`) beside the whole merge, which includes the full check.
2. Ray after kill -9: `asrd run` on the fault engine, blocked inside its shard; the task process
   alone is SIGKILLed. (a) with its reaper: how many processes held files in the task's Ray folder
   and how long until none does and the folder is gone; (b) the reaper killed with the task (as a
   whole job step is): the processes Ray leaves running after --linger-s, then the next task's
   sweep (`hpc.ray_reaper.sweep`) and its time.

Usage: python bench/bench_integrity.py [--shards 200] [--rows 5000] [--record]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asrd import config as config_mod  # noqa: E402
from asrd.index import build_index  # noqa: E402
from asrd.merge import merge  # noqa: E402
from asrd.plan import make_plan, read_rows  # noqa: E402
from asrd.runtime.write import ShardWriter  # noqa: E402
from asrd.schema import output_schema  # noqa: E402
from asrd.speech_samples import make_corpus  # noqa: E402
from asrd.verify import verify_shards  # noqa: E402
from bench.results import report  # noqa: E402
from hpc.ray_reaper import holders, sweep  # noqa: E402


def verification(root: Path, shards: int, rows: int) -> list[tuple[str, str, str]]:
    n = shards * rows
    index = root / "index.parquet"
    pq.write_table(pa.table({"id": [f"u{i:08d}" for i in range(n)],
                             "path": [f"/data/u{i:08d}.flac" for i in range(n)],
                             "duration_s": np.full(n, 5.0)}), index)
    cfg = config_mod.load(None, [f"run.index={index}", f"run.dir={root / 'run'}",
                                 f"run.num_shards={shards}", "wandb.mode=disabled"])
    rd, plan = make_plan(cfg)
    schema = output_schema(pq.read_schema(index))
    for spec in plan.shards:
        w = ShardWriter(rd, spec, schema, part_rows=rows, shard_key=plan.shard_key(spec.shard))
        for b in read_rows(plan.index, spec.start, spec.stop, batch_rows=rows):
            for r in b.to_pylist():
                w.add({**r, "text": "copied text of a typical length for one utterance",
                       "error": None, "model": "copy", "engine": "copy"})
        w.finalize(1.0, plan.config_hash, "copy")
    mb = sum(rd.shard_file(s).stat().st_size for s in range(shards)) / 2**20
    verify_shards(rd, plan)  # the first read of the markers (then kept in their summary file)
    t = time.perf_counter()
    quick = verify_shards(rd, plan)
    quick_s = time.perf_counter() - t
    t = time.perf_counter()
    full = verify_shards(rd, plan, full=True)
    full_s = time.perf_counter() - t
    assert len(quick.good) == len(full.good) == shards
    t = time.perf_counter()
    merge(cfg, track=False)
    merge_s = time.perf_counter() - t
    work = f"{shards} shard files x {rows} rows ({mb:.0f} MiB), local disk"
    return [("verify quick (status, resubmit; markers already summarised) s", f"{quick_s:.3f}", work),
            ("verify full (sha256, merge) s / MiB/s", f"{full_s:.2f} / {mb / full_s:,.0f}", work),
            ("merge s, full verify included (verify's share)", f"{merge_s:.2f} "
             f"({full_s / merge_s:.1%})", work)]


def blocked_run(root: Path, index: Path, name: str) -> tuple[subprocess.Popen, Path]:
    """`asrd run` blocked in its engine; returns it and its Ray folder."""
    state, ray_tmp = root / f"{name}-state", Path(tempfile.mkdtemp(prefix="asrd-rt-"))
    args = [sys.executable, "-m", "asrd.cli", "run", f"run.index={index}",
            f"run.dir={root / name}", "run.num_shards=1", "engine.kind=fault",
            f"faults.state_dir={state}", "faults.block_after_calls=1",
            f"faults.release_file={state / 'never'}", "audio.pack.enabled=false",
            "engine.batch_size=1", "engine.calls_in_flight=1", "pipeline.items_per_decode_task=1",
            f"pipeline.ray_tmp={ray_tmp}", "wandb.mode=disabled"]
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while not (state / "blocked").exists():
        assert proc.poll() is None, f"{name}: the run ended before its engine blocked"
        time.sleep(0.05)
    (folder,) = ray_tmp.glob("ray-*")
    return proc, folder


def ray_after_kill(root: Path, linger_s: float) -> list[tuple[str, str, str]]:
    corpus = make_corpus(root / "corpus", n=8).parent
    index = root / "speech.parquet"
    build_index(corpus / "manifest.jsonl", index)
    work = "asrd run, fault engine blocked mid-shard, the task process alone SIGKILLed"

    proc, folder = blocked_run(root, index, "with-reaper")
    before = len(holders(folder))
    os.kill(proc.pid, signal.SIGKILL)
    t = time.perf_counter()
    proc.wait()
    while folder.exists() or holders(folder):
        time.sleep(0.02)
    reaped_s = time.perf_counter() - t

    proc, folder = blocked_run(root, index, "reaper-killed")
    (reaper,) = [c for c in psutil.Process(proc.pid).children()
                 if "hpc.ray_reaper" in " ".join(c.cmdline())]
    reaper.kill()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(linger_s)
    left = sorted(p.name() for p in holders(folder))
    t = time.perf_counter()
    sweep(folder.parent)
    sweep_s = time.perf_counter() - t
    after = len(holders(folder))
    return [("processes with files in the Ray folder at the kill (the task too) / after, reaper on",
             f"{before} / 0, folder removed, in {reaped_s:.2f} s", work),
            (f"Ray processes left {linger_s:.0f} s after the kill, reaper killed too",
             f"{len(left)} ({', '.join(left)})", work),
            ("... removed by the next task's sweep", f"{len(left) - after} of {len(left)} "
             f"in {sweep_s:.2f} s, folder removed: {not folder.exists()}", work)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=200)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--linger-s", type=float, default=10.0)
    ap.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="asrd-bench-"))
    try:
        figures = verification(root, a.shards, a.rows) + ray_after_kill(root, a.linger_s)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report("integrity", figures, a.record)


if __name__ == "__main__":
    main()
