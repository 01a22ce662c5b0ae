"""`asrd submit`, `resubmit`, `sbatch` and `run-task`: a planned run's shards as SLURM job arrays.

`--array` takes SLURM's syntax and selects SHARDS (not array indices). Every submission is
recorded in RUN_DIR/submissions/ (which job, which task, which shards, and the resolved config the
tasks run), which is how `asrd status` joins SLURM's view to the markers and `asrd resubmit` finds
what is left. A shard that was cancelled, crashed or timed out has no marker, so a requeue or
resubmission simply runs it again and it resumes from its committed parts.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from asrd.launch.errors import LaunchError
from asrd.launch.sbatch import run_task_from_record, write_sbatch
from asrd.launch.selection import Submission, prepare
from asrd.launch.slurm_params import format_options, sbatch_options, setup_lines
from asrd.launch.slurm_view import active_shards
from asrd.launch.submit import submit
from asrd.plan import load_plan
from asrd.run_config import open_run
from asrd.verify import verify_shards
from hpc.array_submit import read_record
from hpc.arrays import format_array


def _print_submission(sub: Submission, dry_run: bool) -> None:
    for line in sub.describe():
        print(line)
    if dry_run:
        print("sbatch options: " + format_options(sbatch_options(sub.cfg)))
        for line in setup_lines(sub.cfg):
            print(f"setup: {line}")
        print("dry run: nothing submitted")


def _submit_and_report(sub: Submission, dry_run: bool, command: str) -> int:
    _print_submission(sub, dry_run)
    if dry_run:
        return 0
    if not sub.tasks:
        print("nothing to submit")
        return 0
    record = submit(sub, command)
    for a in read_record(record).arrays:
        print(f"submitted job {a.job_id}: {a.count} tasks")
    print(f"record: {record}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    run = open_run(args.config, args.overrides, force=args.force)
    sub = prepare(run, array=args.array, force=args.force, dry_run=args.dry_run)
    return _submit_and_report(sub, args.dry_run, "submit")


def cmd_resubmit(args: argparse.Namespace) -> int:
    run = open_run(args.config, args.overrides, force=args.force)
    rd = run.run_dir
    plan = load_plan(rd)
    missing = sorted(set(range(plan.num_shards)) - verify_shards(rd, plan).done)
    exclude = {} if args.include_active else {"running or pending in SLURM": active_shards(rd)}
    sub = prepare(run, shards=missing, parallelism=args.parallelism, force=args.force,
                  exclude=exclude, dry_run=args.dry_run)
    if sub.shards:
        print(f"shards without a marker: --array={format_array(sub.shards)}")
    return _submit_and_report(sub, args.dry_run, "resubmit")


def cmd_sbatch(args: argparse.Namespace) -> int:
    run = open_run(args.config, args.overrides, force=args.force)
    sub = prepare(run, array=args.array, force=args.force)
    if not sub.tasks:
        raise LaunchError("no shard left to run: " + "; ".join(sub.describe()))
    record, script = write_sbatch(sub)
    sys.stdout.write(script)
    print(f"asrd sbatch: record {record}; " + "; ".join(sub.describe()), file=sys.stderr)
    return 0


def cmd_run_task(args: argparse.Namespace) -> int:
    done = run_task_from_record(args.submission, args.task, args.offset)
    print(f"finished shards: {done}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add submit, resubmit, sbatch and run-task to the `asrd` command line."""

    def add(name: str, func: Callable, help: str, config: bool = True) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, help=help)
        if config:
            p.add_argument("--config", "-c", help="YAML config file (see `asrd config`)")
            p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
        p.set_defaults(func=func)
        return p

    array_help = "shards to run, in SLURM's --array syntax (0-999, 1,5,7-9, 0-99%%8); default all"
    p = add("submit", cmd_submit, "submit the planned shards as SLURM job arrays (submitit)")
    p.add_argument("--array", help=array_help)
    p.add_argument("--dry-run", action="store_true", help="print what would be submitted")
    p.add_argument("--force", action="store_true", help="submit despite config drift")
    p = add("resubmit", cmd_resubmit, "submit exactly the shards that have no marker")
    p.add_argument("--parallelism", type=int, help="tasks running at once (SLURM's %%P)")
    p.add_argument("--include-active", action="store_true",
                   help="also shards SLURM still runs or holds pending")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--force", action="store_true")
    p = add("sbatch", cmd_sbatch, "print an sbatch array script for plain `sbatch`")
    p.add_argument("--array", help=array_help)
    p.add_argument("--force", action="store_true")
    p = add("run-task", cmd_run_task, "run one array task of an `asrd sbatch` record (with the "
            "config the record holds)", config=False)
    p.add_argument("--submission", required=True, help="the record the sbatch script names")
    p.add_argument("--task", type=int, help="array index (default: $SLURM_ARRAY_TASK_ID)")
    p.add_argument("--offset", type=int, default=0, help="added to the array index")
