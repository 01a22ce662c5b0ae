"""Submit and scheduling overhead of SLURM job arrays of tiny tasks, on the local one-node cluster.

Two submissions of N tasks whose work is nothing (plain sbatch: `true`) or next to nothing
(asrd's submitit path: unpickle, run a callable that commits one marker):
- submit s: until the submission call returns (for submitit: pickling N calls + sbatch);
- drain s: from submission until SLURM has finished every task;
- overhead per task: drain s x concurrent slots / N, i.e. what launching one task costs a slot.

    python bench/bench_slurm_submit.py --tasks 1000 --record
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hpc import slurm_ctl  # noqa: E402
from hpc.array_submit import Resumable, make_executor, plan_arrays, submit_arrays  # noqa: E402
from hpc.markers import Markers  # noqa: E402

SCRIPT = ROOT / "hpc" / "scripts" / "slurm_local.sh"


def commit_marker(run_dir: str, item: int) -> int:
    """The tiny task: one atomic marker (cloudpickle ships this function by value)."""
    Markers(run_dir).write(item, {"item": item})
    return item


def wait_drained(job_ids: list[str], poll_s: float = 0.5) -> float:
    while slurm_ctl.queue_states(job_ids):
        time.sleep(poll_s)
    return time.monotonic()


def bench_sbatch(n: int, mem: str, log_dir: Path) -> tuple[float, float]:
    t0 = time.monotonic()
    out = subprocess.run(["sbatch", "--parsable", f"--array=0-{n - 1}", f"--mem={mem}",
                          "--cpus-per-task=1", f"--output={log_dir}/sbatch-%A_%a.out",
                          "--wrap=true"], check=True, capture_output=True, text=True)
    t_submit = time.monotonic() - t0
    job = out.stdout.strip().split(";")[0]
    return t_submit, wait_drained([job]) - t0


def bench_submitit(n: int, mem_gb: float, run_dir: Path) -> tuple[float, float, int]:
    executor = make_executor(run_dir / "logs" / "%j", {
        "timeout_min": 10, "mem_gb": mem_gb, "cpus_per_task": 1,
        "slurm_array_parallelism": n})
    chunks = plan_arrays(n, slurm_ctl.max_array_size(), None)
    t0 = time.monotonic()
    arrays, _ = submit_arrays(executor, Resumable(functools.partial(commit_marker, str(run_dir))),
                           list(range(n)), chunks)
    t_submit = time.monotonic() - t0
    t_end = wait_drained([a.job_id for a in arrays])
    return t_submit, t_end - t0, len(Markers(run_dir).done_shards())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    args = ap.parse_args()
    n = args.tasks

    was_up = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0
    subprocess.run(["bash", str(SCRIPT), "start"], check=True)
    env_line = subprocess.run(["bash", str(SCRIPT), "env"], check=True, capture_output=True,
                              text=True).stdout.strip().removeprefix("export ")
    os.environ["SLURM_CONF"] = shlex.split(env_line)[0].split("=", 1)[1]
    config = slurm_ctl.show_config()
    slots = int(subprocess.run(["sinfo", "-h", "-o", "%c"], check=True, capture_output=True,
                               text=True).stdout.split()[0])
    try:
        with tempfile.TemporaryDirectory(prefix="asrd-bench-slurm-") as tmp:
            work = Path(tmp)
            sb_submit, sb_drain = bench_sbatch(n, "100M", work)
            si_submit, si_drain, markers = bench_submitit(n, 0.1, work / "run")
    finally:
        if not was_up:
            subprocess.run(["bash", str(SCRIPT), "stop"], check=True)
    if markers != n:
        print(f"only {markers} of {n} tasks committed their marker", file=sys.stderr)
        return 1

    workload = (f"{n} array tasks, {slots} CPU slots, 1 CPU each, MaxArraySize "
                f"{config.get('MaxArraySize')}, {config.get('SchedulerParameters')}")
    figures = [
        ("plain sbatch `true`: submit s", f"{sb_submit:.2f}"),
        ("plain sbatch `true`: drain s", f"{sb_drain:.1f}"),
        ("plain sbatch `true`: overhead per task s (drain x slots / N)",
         f"{sb_drain * slots / n:.3f}"),
        ("submitit map_array (asrd path): submit s", f"{si_submit:.2f}"),
        ("submitit map_array (asrd path): drain s", f"{si_drain:.1f}"),
        ("submitit map_array (asrd path): overhead per task s (drain x slots / N)",
         f"{si_drain * slots / n:.3f}"),
    ]
    for what, value in figures:
        print(f"{what}: {value}")
    if args.record:
        machine = (f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, "
                   "one-node SLURM 22.05)")
        day = dt.date.today().isoformat()
        cmd = f"python bench/bench_slurm_submit.py --tasks {n} --record"
        with open(Path(__file__).parent / "RESULTS.md", "a") as f:
            for what, value in figures:
                f.write(f"| slurm submit | {what} | {value} | {workload} | {machine} | {day} "
                        f"| `{cmd}` |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
