"""The forecast of `asrd plan` against a real run on the local one-node SLURM (CPU engine,
faster-whisper Whisper-base).

A corpus of three mixes in index order, so that the three shards differ: short espeak clips
(about 3 s, packed into shared windows), clips of two sentences (about 8 s) and one long
recording (about 100 s, segmented). `asrd calibrate` runs under `srun` with the task's CPUs and
memory (a sample across the duration range through one task's real pipeline, as three shards),
`asrd plan` forecasts each task's wall time and the array's wall-clock at the slots the partition
holds (2 one-CPU tasks on the 2-CPU node, whatever `%N` says), and `asrd submit` runs the array.
Measured: each task's wall time (SLURM's StartTime to EndTime, `scontrol show job`) and the
array's wall-clock (first task start to last task end, so queue wait behind other users' jobs is
not counted, as the forecast does not count it). Beside them, what the previous model (one audio
rate from the calibration sample, `slurm.array_parallelism` slots) would have forecast.

    SLURM_CONF=/tmp/asrd-slurm/slurm.conf python bench/bench_forecast.py --record
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asrd.forecast import array_wall_clock  # noqa: E402
from asrd.index import build_index  # noqa: E402
from asrd.rundir import RunDir  # noqa: E402
from asrd.speech_samples import SENTENCES, speak  # noqa: E402
from bench.results import report  # noqa: E402
from hpc import slurm_ctl  # noqa: E402
from hpc.array_submit import read_records  # noqa: E402


def asrd(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "asrd.cli", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"asrd {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def task_times(job_id: str) -> dict[str, tuple[float, float]]:
    """Task key -> (start, end) epoch seconds, from the controller (1 s resolution)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                         check=True).stdout
    times = {}
    for line in out.splitlines():
        f = dict(x.split("=", 1) for x in line.split() if "=" in x)
        key = f"{f['ArrayJobId']}_{f['ArrayTaskId']}"
        parse = lambda s: dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S").timestamp()  # noqa: E731
        times[key] = (parse(f["StartTime"]), parse(f["EndTime"]))
    return times


def mixed_corpus(folder: Path, short: int, medium: int, long_sentences: int) -> Path:
    """`short` one-sentence clips, `medium` two-sentence clips and one recording of
    `long_sentences` sentences, in that order in the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(short)]
    texts += [f"{SENTENCES[i % 8]}. {SENTENCES[(i + 3) % 8]}" for i in range(medium)]
    texts.append(". ".join(SENTENCES[i % 8] for i in range(long_sentences)))
    rows = []
    for i, text in enumerate(texts):
        path = speak(text, folder / f"rec{i:03d}.wav", speed=190 if i < short else 150)
        rows.append({"path": path.name, "reference": text})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", type=int, default=30, help="one-sentence clips (about 3 s)")
    ap.add_argument("--medium", type=int, default=12, help="two-sentence clips (about 8 s)")
    ap.add_argument("--long-sentences", type=int, default=32, help="sentences of the long file")
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--parallelism", type=int, default=3, help="slurm.array_parallelism")
    ap.add_argument("--cpus", type=int, default=1, help="slurm.cpus_per_task")
    ap.add_argument("--calibrate-audio-s", type=float, default=90.0)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-forecast-"))
    index = work / "index.parquet"
    if not index.is_file():
        build_index(mixed_corpus(work / "corpus", args.short, args.medium, args.long_sentences),
                    index)
    run = work / f"run-{int(time.time())}"
    common = [f"run.index={index}", f"run.dir={run}", f"run.num_shards={args.shards}",
              f"slurm.cpus_per_task={args.cpus}", f"slurm.array_parallelism={args.parallelism}",
              "slurm.mem_gb=3", "slurm.time_min=20", "wandb.mode=disabled",
              "engine.cpus_per_engine=0.5"]
    subprocess.run(["srun", f"--cpus-per-task={args.cpus}", "--mem=3G", sys.executable, "-m",
                    "asrd.cli", "calibrate", *common, "--audio-s", str(args.calibrate_audio_s)],
                   check=True)
    print(asrd("plan", *common))
    fc = json.loads((run / "forecast.json").read_text())
    t0 = time.monotonic()
    print(asrd("submit", *common))
    rd = RunDir(run)
    while len(rd.markers.done_shards()) < args.shards:
        time.sleep(1.0)
    job_ids = [a.job_id for r in read_records(rd.submissions_dir) for a in r.arrays]
    while slurm_ctl.queue_states(job_ids):  # until every task has exited (teardown included)
        time.sleep(0.5)
    print(f"drained {time.monotonic() - t0:.0f} s after submission")
    times = {k: v for j in job_ids for k, v in task_times(j).items()}
    keys = sorted(times, key=lambda k: int(k.split("_")[1]))
    actual = [times[k][1] - times[k][0] for k in keys]
    wall_clock = max(e for _, e in times.values()) - min(s for s, _ in times.values())
    forecast = fc["task_wall_s"]
    rate = fc["rate"]
    # the previous model: the sample's audio rate for every shard, array_parallelism slots
    plan = json.loads((run / "plan.json").read_text())
    old = [rate["startup_s"] + s["audio_s"] / rate["audio_s_per_s"] for s in plan["shards"]]
    old_clock = array_wall_clock(old, args.parallelism)

    def per_task(walls: list[float]) -> str:
        errs = [(f - a) / a for f, a in zip(walls, actual)]
        return (" / ".join(f"{f:.0f} vs {a:.0f} ({e:+.0%})" for f, a, e in
                           zip(walls, actual, errs)))

    err_tasks = max(abs(f - a) / a for f, a in zip(forecast, actual))
    err_clock = abs(fc["wall_clock_s"] - wall_clock) / wall_clock
    audio = [s["audio_s"] for s in plan["shards"]]
    rows = [s["stop"] - s["start"] for s in plan["shards"]]
    workload = (f"{args.short} clips of ~3 s, {args.medium} of ~8 s and one of "
                f"{args.long_sentences} sentences: {args.shards} shards of "
                + ", ".join(f"{r} rows/{a:.0f} audio s" for r, a in zip(rows, audio))
                + f"; slurm.cpus_per_task={args.cpus}, array_parallelism={args.parallelism} on "
                f"the 2-CPU node ({fc['parallelism']} slots: {fc['slots']}); Whisper-base int8 "
                f"(faster-whisper); calibration under srun, {rate['audio_s']:.0f} audio s in "
                f"3 shards: {rate['s_per_row']:.2f} s/row + {rate['s_per_window']:.2f} s/window, "
                f"start-up {rate['startup_s']:.0f} s ({rate['audio_s_per_s']:.1f} audio s/s)")
    report("forecast", [
        ("task wall s, forecast vs SLURM (per task: short clips, medium, long file)",
         f"{per_task(forecast)}; the audio-rate model: {per_task(old)}", workload),
        ("array wall-clock s, forecast vs SLURM (first start to last end)",
         f"{fc['wall_clock_s']:.0f} vs {wall_clock:.0f} ({(fc['wall_clock_s'] - wall_clock) / wall_clock:+.0%}); "
         f"the audio-rate model at {args.parallelism} slots: {old_clock:.0f} "
         f"({(old_clock - wall_clock) / wall_clock:+.0%})", workload),
    ], args.record)
    return 0 if max(err_tasks, err_clock) <= 0.2 else 1


if __name__ == "__main__":
    sys.exit(main())
