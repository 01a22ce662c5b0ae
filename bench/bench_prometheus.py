"""What Prometheus metrics cost a task: milliseconds per TaskTracker.update with the metrics
refreshed on every call (monitoring.every_s=0: a textfile written, temp file + rename) beside
the same updates with monitoring off, side by side in one run, for a task on one shard and on
many. Usage:
    python bench/bench_prometheus.py [--updates 2000] [--shards 1,64] [--record]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asrd import config  # noqa: E402
from asrd.tracking import TaskTracker  # noqa: E402
from bench.results import report  # noqa: E402
from hpc.slurm_env import SlurmEnv  # noqa: E402


def driver_metrics(shard: int, done: int) -> dict[str, float]:
    """The keys the pipeline reports for a shard (asrd.runtime.metrics), two error reasons."""
    return {"progress/shard": shard, "progress/items_done": done, "progress/items_total": 10**6,
            "progress/items_failed": done // 50, "progress/audio_s_done": 7.5 * done,
            "progress/shard_elapsed_s": done / 100, "latency/decode_ms_p50": 12.0,
            "latency/decode_ms_p90": 30.0, "latency/engine_ms_p50": 900.0,
            "latency/engine_ms_p90": 1400.0, "queue/decode": 64, "queue/engine": 32,
            "queue/judge": 0, "engine/calls_in_flight": 16, "engine/starved_s": 0.5,
            "progress/items_cut_again": done // 200, "progress/segments_reused": 0,
            "failures/corrupt audio": done // 100, "failures/engine error": done // 100}


def ms_per_update(overrides: list[str], shards: int, updates: int) -> float:
    cfg = config.load(None, ["run.index=x", "wandb.mode=disabled",
                             "pipeline.log_every_s=1e9", *overrides])
    tracker = TaskTracker(cfg, list(range(shards)), SlurmEnv.from_environ())
    per_shard = max(1, updates // shards)
    t0 = time.perf_counter()
    for i in range(updates):
        tracker.update(driver_metrics(min(i // per_shard, shards - 1), i % per_shard + 1))
    elapsed = time.perf_counter() - t0
    tracker.finish()
    return 1000 * elapsed / updates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=2000)
    ap.add_argument("--shards", default="1,64")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    figures = []
    with tempfile.TemporaryDirectory() as textfiles:
        for shards in (int(s) for s in args.shards.split(",")):
            off = ms_per_update([], shards, args.updates)
            on = ms_per_update([f"monitoring.textfile_dir={textfiles}", "monitoring.every_s=0"],
                               shards, args.updates)
            figures.append((
                "TaskTracker.update, ms: monitoring off / textfile refreshed on every update",
                f"{off:.3f} / {on:.3f}",
                f"{args.updates} updates of the driver's 19 keys, a task of {shards} shard(s)"))
    report("prometheus", figures, args.record)


if __name__ == "__main__":
    main()
