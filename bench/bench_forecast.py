"""The forecast of `asrd plan` against a real run on the local one-node SLURM (CPU engine,
faster-whisper Whisper-base).

espeak recordings are indexed; `asrd plan --calibrate` measures the rate on this node (a sample
across the duration range through one task's real pipeline) and forecasts each task's wall time
and the array's wall-clock; then `asrd submit` runs the array on SLURM. Measured: each task's
wall time (SLURM's StartTime to EndTime, `scontrol show job`) and the array's wall-clock (first
task start to last task end, so queue wait behind other users' jobs is not counted, as the
forecast does not count it).

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

from asrd.index import build_index  # noqa: E402
from asrd.rundir import RunDir  # noqa: E402
from asrd.testing.samples import make_corpus  # noqa: E402
from bench.results import report  # noqa: E402
from hpc import slurm_ctl  # noqa: E402
from hpc.launch import read_records  # noqa: E402


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recordings", type=int, default=48)
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--parallelism", type=int, default=1, help="slurm.array_parallelism")
    ap.add_argument("--cpus", type=int, default=2, help="slurm.cpus_per_task")
    ap.add_argument("--calibrate-audio-s", type=float, default=60.0)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-forecast-"))
    index = work / "index.parquet"
    if not index.is_file():
        build_index(make_corpus(work / "corpus", n=args.recordings), index)
    run = work / f"run-{int(time.time())}"
    common = [f"run.index={index}", f"run.dir={run}", f"run.num_shards={args.shards}",
              f"slurm.cpus_per_task={args.cpus}", f"slurm.array_parallelism={args.parallelism}",
              "slurm.mem_gb=3", "slurm.time_min=20", "wandb.mode=disabled"]
    print(asrd("plan", *common, "--calibrate", "--calibrate-audio-s", str(args.calibrate_audio_s)))
    fc = json.loads((run / "forecast.json").read_text())
    t0 = time.monotonic()
    print(asrd("submit", *common))
    rd = RunDir(run)
    while len(rd.markers.done_shards()) < args.shards:
        time.sleep(1.0)
    job_ids = [a["job_id"] for r in read_records(rd.submissions_dir) for a in r["arrays"]]
    while slurm_ctl.queue_states(job_ids):  # until every task has exited (teardown included)
        time.sleep(0.5)
    print(f"drained {time.monotonic() - t0:.0f} s after submission")
    times = {k: v for j in job_ids for k, v in task_times(j).items()}
    keys = sorted(times, key=lambda k: int(k.split("_")[1]))
    actual = [times[k][1] - times[k][0] for k in keys]
    wall_clock = max(e for _, e in times.values()) - min(s for s, _ in times.values())
    forecast = fc["task_wall_s"]
    rate = fc["rate"]
    per_task = " / ".join(f"{f:.0f} vs {a:.0f}" for f, a in zip(forecast, actual))
    err_tasks = max(abs(f - a) / a for f, a in zip(forecast, actual))
    err_clock = abs(fc["wall_clock_s"] - wall_clock) / wall_clock
    audio = fc["total_audio_h"] * 3600
    workload = (f"{args.recordings} espeak recordings ({audio:.0f} audio s), {args.shards} shards, "
                f"slurm.cpus_per_task={args.cpus}, array_parallelism={args.parallelism}, "
                f"Whisper-base int8 (faster-whisper); calibration {rate['audio_s']:.0f} audio s: "
                f"{rate['audio_s_per_s']:.1f} audio s/s, start-up {rate['startup_s']:.0f} s")
    report("forecast", [
        ("task wall s, forecast vs SLURM (per task)", f"{per_task} (max error {err_tasks:.0%})",
         workload),
        ("array wall-clock s, forecast vs SLURM (first start to last end)",
         f"{fc['wall_clock_s']:.0f} vs {wall_clock:.0f} (error {err_clock:.0%})", workload),
    ], args.record)
    return 0 if max(err_tasks, err_clock) <= 0.2 else 1


if __name__ == "__main__":
    sys.exit(main())
