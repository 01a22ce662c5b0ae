"""Even load across engines and no tail at a shard's end: 8 engines of a fixed cost per audio
second (the timed engine: each call sleeps that long, so the figures are about the routing, not
the CPU), one shard of clips of mixed lengths, through the whole task (decode actors, engine
stage, writer) on Ray.

Figures, from the engines' own call records: the tail (the first engine going idle for good to
the last one finishing) as a share of the engines' span (first call start to last call end), and
each engine's audio seconds and busy seconds against the mean (the largest deviation).

    python bench/bench_engine_balance.py [--clips 600] [--cost 0.02] [--record]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asrd import config as config_mod  # noqa: E402
from asrd.index import build_index  # noqa: E402
from asrd.plan import make_plan  # noqa: E402
from asrd.runtime.task import run_task  # noqa: E402
from asrd.testing.faults import SAMPLE_RATE, read_events  # noqa: E402
from asrd.testing.timed_engine import TimedSettings  # noqa: E402
from bench.results import report  # noqa: E402

ENGINES = 8


def make_clips(root: Path, n: int, seed: int = 0) -> None:
    """`n` WAV clips of 1-15 s (uniform), 16 kHz: decoding is a copy, the engines are the cost."""
    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True)
    for i, seconds in enumerate(rng.uniform(1.0, 15.0, n)):
        x = rng.normal(0, 0.05, int(seconds * SAMPLE_RATE)).astype(np.float32)
        sf.write(root / "audio" / f"c{i:05d}.wav", x, SAMPLE_RATE)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=600)
    ap.add_argument("--cost", type=float, default=0.02, help="engine s per audio s")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="asrd-balance-"))
    os.environ["SLURM_CPUS_PER_TASK"] = "4"  # Ray's accounting: 8 x 0.1 engines + 2 decoders
    try:
        make_clips(root, args.clips)
        build_index(root / "audio", root / "index.parquet")
        state = root / "state"
        TimedSettings(s_per_audio_s=args.cost).write(state)
        cfg = config_mod.load(None, [
            f"run.index={root / 'index.parquet'}", f"run.dir={root / 'run'}", "run.num_shards=1",
            "engine.kind=asrd.testing.timed_engine:TimedEngine", f"faults.state_dir={state}",
            f"engine.num_engines={ENGINES}", "engine.cpus_per_engine=0.1",
            "engine.batch_size=4", "engine.calls_in_flight=2", "pipeline.decode_actors=2",
            "pipeline.items_per_decode_task=4", "audio.pack.enabled=false",
            "audio.vad.enabled=false"])
        rd, _ = make_plan(cfg)
        assert run_task(rd.path) == [0]
        calls = read_events(state, "timed-calls")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    by_engine: dict[str, list[dict]] = collections.defaultdict(list)
    for c in calls:
        by_engine[c["actor"]].append(c)
    assert len(by_engine) == ENGINES, f"{len(by_engine)} engines answered"
    last_end = [max(c["end"] for c in cs) for cs in by_engine.values()]
    audio = np.array([sum(c["audio_s"] for c in cs) for cs in by_engine.values()])
    busy = np.array([sum(c["end"] - c["start"] for c in cs) for cs in by_engine.values()])
    span = max(last_end) - min(c["start"] for c in calls)
    tail = max(last_end) - min(last_end)
    work = f"{ENGINES} timed engines ({args.cost} s per audio s), {args.clips} clips of 1-15 s"
    report("engine balance", [
        ("engines' span s", f"{span:.2f}", work),
        ("tail (first engine idle -> last finishes), share of span", f"{tail / span:.2%}", work),
        ("largest deviation of an engine's audio s from the mean",
         f"{np.abs(audio / audio.mean() - 1).max():.2%}", work),
        ("largest deviation of an engine's busy s from the mean",
         f"{np.abs(busy / busy.mean() - 1).max():.2%}", work),
        ("engines' busy share of span (mean)", f"{busy.mean() / span:.1%}", work),
    ], args.record)


if __name__ == "__main__":
    main()
