"""What a test pays before its own work: a private Ray session's start and stop
(`hpc.ray_node.local_ray`, what every task runs), the same handed out again by a kept session
(`keep_ray`, what the test suite's in-process tasks share), and a fresh interpreter importing
`asrd.cli` and the task runtime (what every `asrd` subprocess pays). Usage:
    python bench/bench_test_startup.py [--repeat 3] [--record]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import report  # noqa: E402
from hpc.ray_node import keep_ray, local_ray  # noqa: E402


def session_s() -> tuple[float, float]:
    """Seconds to start one private session (until it runs a task) and to stop it."""
    import ray

    t0 = time.monotonic()
    with local_ray(num_cpus=2, num_gpus=0):
        ray.get(ray.remote(lambda: 1).remote())
        t1 = time.monotonic()
    return t1 - t0, time.monotonic() - t1


def kept_s(n: int) -> float:
    """Seconds per `local_ray` block on a kept session, after its first start."""
    import ray

    with tempfile.TemporaryDirectory(prefix="asrd-kept-") as root, keep_ray(root):
        with local_ray(num_cpus=2, num_gpus=0):
            pass
        t0 = time.monotonic()
        for _ in range(n):
            with local_ray(num_cpus=2, num_gpus=0):
                ray.get(ray.remote(lambda: 1).remote())
        return (time.monotonic() - t0) / n


def import_s(module: str) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--record", action="store_true")
    a = ap.parse_args()
    starts, stops = zip(*(session_s() for _ in range(a.repeat)))
    kept = kept_s(a.repeat)
    cli = statistics.median(import_s("asrd.cli") for _ in range(a.repeat))
    task = statistics.median(import_s("asrd.runtime.task") for _ in range(a.repeat))
    work = f"median of {a.repeat}; Ray {__import__('ray').__version__}, 2 CPUs asked"
    report("test suite", [
        ("Ray session start s (until a task runs) / stop s", f"{statistics.median(starts):.2f} / "
         f"{statistics.median(stops):.2f}", work),
        ("the same session handed out again (keep_ray) s", f"{kept:.3f}", work),
        ("fresh interpreter importing asrd.cli / asrd.runtime.task s",
         f"{cli:.2f} / {task:.2f}", f"median of {a.repeat}"),
    ], a.record)


if __name__ == "__main__":
    main()
