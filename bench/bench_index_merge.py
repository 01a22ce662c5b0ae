"""Index building and merging at scale: N real (tiny) audio files, 1000 shard files.

Measures: header probes per second (`asrd index`, threads), shard commit rate (writer + marker),
merge rows per second, and the merge's peak memory in a fresh process (it must stay flat in the
number of shards). Usage: python bench/bench_index_merge.py [--files 100000] [--shards 1000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asrd import config as config_mod  # noqa: E402
from asrd.index import build_index  # noqa: E402
from asrd.plan import Plan, ShardSpec, make_plan, read_rows  # noqa: E402
from asrd.rundir import RunDir  # noqa: E402
from asrd.schema import output_schema  # noqa: E402
from asrd.runtime.write import ShardWriter  # noqa: E402

import pyarrow.parquet as pq  # noqa: E402


def make_files(root: Path, n: int) -> None:
    proto = root / "proto.wav"
    sf.write(proto, (np.random.default_rng(0).normal(0, 0.1, 16000)).astype(np.float32), 16000)
    data = proto.read_bytes()
    for i in range(n):
        d = root / "audio" / f"{i // 1000:04d}"
        if i % 1000 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"u{i:07d}.wav").write_bytes(data)


def commit_shard(rd: RunDir, plan: Plan, spec: ShardSpec, schema) -> None:
    """One shard's rows with a copied text, through the real writer (shard file and marker)."""
    w = ShardWriter(rd, spec, schema, part_rows=10_000, shard_key=plan.shard_key(spec.shard))
    for b in read_rows(plan.index, spec.start, spec.stop):
        for r in b.to_pylist():
            w.add({**r, "text": "copied text of a typical length for one utterance",
                   "error": None, "model": "copy", "engine": "copy"})
    w.finalize(1.0, plan.config_hash, "copy")


def merge_in_child(run_yaml: Path) -> tuple[float, float]:
    code = ("import resource,time,sys;from asrd import config;from asrd.merge import merge;"
            f"c=config.load({str(run_yaml)!r});t=time.perf_counter();s=merge(c,track=False);"
            "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024, s.rows)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    wall, rss, rows = out.stdout.split()
    return float(wall), float(rss)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--shards", type=int, default=1000)
    ap.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="asrd-bench-"))
    try:
        make_files(root, a.files)
        t = time.perf_counter()
        build_index(root / "audio", root / "index.parquet", workers=16)
        index_s = time.perf_counter() - t
        cfg = config_mod.load(None, [f"run.index={root / 'index.parquet'}", f"run.dir={root / 'run'}",
                                     f"run.num_shards={a.shards}"])
        t = time.perf_counter()
        rd, plan = make_plan(cfg)
        plan_s = time.perf_counter() - t
        schema = output_schema(pq.read_schema(plan.index))
        t = time.perf_counter()
        for spec in plan.shards:
            commit_shard(rd, plan, spec, schema)
        commit_s = time.perf_counter() - t
        merge_s, merge_rss = merge_in_child(rd.config_path)
        figures = {
            "index probes/s": a.files / index_s, "plan s": plan_s,
            "shard commits/s (writer+marker)": a.shards / commit_s,
            "merge rows/s": a.files / merge_s, "merge peak RSS MiB": merge_rss}
        print(json.dumps(figures, indent=1))
        if a.record:
            machine = f"{platform.node()} ({platform.processor() or platform.machine()}, 2 cores, local disk)"
            day = datetime.date.today().isoformat()
            cmd = f"python bench/bench_index_merge.py --files {a.files} --shards {a.shards}"
            with open(Path(__file__).parent / "RESULTS.md", "a") as f:
                for k, v in figures.items():
                    f.write(f"| index/merge | {k} | {v:,.1f} | {a.files} files, {a.shards} shards | "
                            f"{machine} | {day} | `{cmd}` |\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
