"""The run's bookkeeping at scale: a plan of 10,000 shards, `asrd status` over them, and
`asrd merge` of 10,000 small shards, beside the same at 1,000 shards (merge memory must not grow
with the shard count).

Each shard holds two rows of tiny audio files; its shard file and marker are written by the real
ShardWriter (threads: the commits wait on the disk's syncs). `asrd status` and `asrd merge` run as
whole commands in fresh processes (time; merge's peak RSS from its own rusage).

    python bench/bench_bookkeeping.py [--shards 1000,10000] [--root DIR] [--no-merge] [--keep]
                                      [--record]

`--root` puts the runs on another file system (a JuiceFS mount); the default is local disk.
`--no-merge` stops after `asrd status` (the merge is minutes at 10,000 shards).
`--keep` leaves the runs in place (their config.yaml is printed) to profile them again: making a
10,000-shard run on JuiceFS takes about ten minutes on a 2-core machine.

    python bench/bench_bookkeeping.py --of RUN/config.yaml [--repeat 7] [--against DIR] [--no-merge]

times a first `asrd status` (no markers-summary.json) of a kept run, `--repeat` times: median
wall and CPU seconds, and the load average; then `asrd merge` of it again (wall, peak RSS).
`--against DIR` (another checkout, e.g. of the previous commit) alternates its runs with this
checkout's, so that both see the same load.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asrd import config as config_mod  # noqa: E402
from asrd.index import build_index  # noqa: E402
from asrd.plan import make_plan  # noqa: E402
from asrd.schema import output_schema  # noqa: E402
from bench.bench_index_merge import commit_shard, make_files  # noqa: E402
from bench.results import report  # noqa: E402

ROWS_PER_SHARD = 2
ROOT = Path(__file__).resolve().parents[1]
ASRD = [sys.executable, "-m", "asrd.cli"]


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t


def merge_rss_mib(run_dir: Path, code: Path = ROOT) -> tuple[float, float]:
    """(wall s, peak RSS MiB) of `asrd merge` in a fresh process (its own rusage), with the
    asrd of checkout `code`."""
    script = ("import resource,sys,time;from asrd.cli import main;t=time.perf_counter();"
              f"rc=main(['merge','-c',{str(run_dir / 'config.yaml')!r}]);"
              "print(time.perf_counter()-t,"
              " resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)")
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                         text=True, cwd=code)
    wall, rss = out.stdout.split()[-2:]
    return float(wall), float(rss)


def one_size(root: Path, shards: int, where: str,
             merge: bool = True) -> list[tuple[str, str, str]]:
    files = shards * ROWS_PER_SHARD
    base = root / f"s{shards}"
    base.mkdir(parents=True)
    make_files(base, files)
    build_index(base / "audio", base / "index.parquet")
    cfg = config_mod.load(None, [f"run.index={base / 'index.parquet'}", f"run.dir={base / 'run'}",
                                 f"run.num_shards={shards}", "merge.preset=none"])
    t = time.perf_counter()
    rd, plan = make_plan(cfg)
    plan_s = time.perf_counter() - t
    schema = output_schema(pq.read_schema(plan.index))
    t = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda s: commit_shard(rd, plan, s, schema), plan.shards))
    commit_s = time.perf_counter() - t
    status_s = timed([*ASRD, "status", "-c", str(rd.config_path)])
    status_again_s = timed([*ASRD, "status", "-c", str(rd.config_path)])
    work = f"{shards} shards of {ROWS_PER_SHARD} rows, {where}"
    figures = [("plan s", f"{plan_s:.2f}", work),
               ("shard commits/s (8 threads)", f"{shards / commit_s:,.1f}", work),
               ("`asrd status` s (first)", f"{status_s:.2f}", work),
               ("`asrd status` s (again)", f"{status_again_s:.2f}", work)]
    if merge:
        merge_s, rss = merge_rss_mib(rd.path)
        figures += [("`asrd merge` s", f"{merge_s:.1f}", work),
                    ("`asrd merge` peak RSS MiB", f"{rss:.0f}", work)]
    return figures


def first_status(config: Path, code: Path) -> tuple[float, float]:
    """(wall s, CPU s) of `asrd status` from checkout `code` in a fresh process, without the
    markers summary (as the first status after the shards were committed)."""
    (config.parent / "markers-summary.json").unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([*ASRD, "status", "-c", str(config)], check=True, capture_output=True, cwd=code)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def kept_run(config: Path, repeat: int, against: Path | None, merge: bool
             ) -> list[tuple[str, str, str]]:
    """Medians of `repeat` first statuses of a kept run, then its merge, with this checkout's
    asrd (and `against`'s)."""
    codes = {"this checkout": ROOT}
    if against is not None:
        codes = {f"{against}": against, **codes}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in codes}
    loads = []
    for _ in range(repeat):
        for name, code in codes.items():
            loads.append(os.getloadavg()[0])
            times[name].append(first_status(config, code))
    load = f"load {min(loads):.1f}-{max(loads):.1f}"
    figures = [(f"`asrd status` s (first), median of {repeat}: wall / CPU",
                f"{statistics.median(w for w, _ in t):.2f} / "
                f"{statistics.median(c for _, c in t):.2f}", f"{name}; {load}")
               for name, t in times.items()]
    for name, code in codes.items() if merge else ():
        load = f"load {os.getloadavg()[0]:.1f}"
        wall, rss = merge_rss_mib(config.parent, code)
        figures += [("`asrd merge` s (merged again)", f"{wall:.1f}", f"{name}; {load}"),
                    ("`asrd merge` peak RSS MiB", f"{rss:.0f}", f"{name}; {load}")]
    return figures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", default="1000,10000")
    ap.add_argument("--root", default=None, help="where the runs go (default: a local temp dir)")
    ap.add_argument("--no-merge", action="store_true", help="stop after `asrd status`")
    ap.add_argument("--keep", action="store_true", help="leave the runs in place")
    ap.add_argument("--of", type=Path, metavar="CONFIG",
                    help="time first statuses and a merge of this kept run only")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--against", type=Path, metavar="DIR", help="another checkout to compare")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    if args.of:
        report("bookkeeping", kept_run(args.of, args.repeat, args.against, not args.no_merge),
               args.record)
        return
    root = Path(tempfile.mkdtemp(prefix="asrd-bookkeeping-", dir=args.root))
    where = f"on {args.root}" if args.root else "local disk"
    try:
        figures = [f for n in args.shards.split(",") for f in one_size(root, int(n), where, not args.no_merge)]
    finally:
        if args.keep:
            print(f"runs kept: {root}/s*/run/config.yaml")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report("bookkeeping", figures, args.record)


if __name__ == "__main__":
    main()
