"""`asrd submit`, `resubmit`, `sbatch` and `run-task`: a planned run's shards as SLURM job arrays.

`--array` takes SLURM's syntax and selects SHARDS (not array indices). Every submission is
recorded in RUN_DIR/submissions/ (which job, which task, which shards, and the resolved config the
tasks run), which is how `asrd status` joins SLURM's view to the markers and `asrd resubmit` finds
what is left. A shard that was cancelled, crashed or timed out has no marker, so a requeue or
resubmission simply runs it again and it resumes from its committed parts. `submit --until-done`
leaves the resubmitting to a follow-up job (asrd.launch.until_done); `until-done-check` is what
that job runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from asrd.launch import until_done
from asrd.launch.errors import LaunchError
from asrd.launch.sbatch import run_task_from_record, write_sbatch
from asrd.launch.selection import Submission, prepare
from asrd.launch.slurm_params import (follow_up_options, format_options, sbatch_options,
                                      setup_lines)
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


def _submit_and_report(sub: Submission, dry_run: bool, command: str) -> Path | None:
    """Submit (unless a dry run) and say what was queued; returns the record, if one was made."""
    _print_submission(sub, dry_run)
    if dry_run:
        return None
    if not sub.tasks:
        print("nothing to submit")
        return None
    record = submit(sub, command)
    for a in read_record(record).arrays:
        print(f"submitted job {a.job_id}: {a.count} tasks")
    print(f"record: {record}")
    return record


def cmd_submit(args: argparse.Namespace) -> int:
    if args.rounds is not None and not args.until_done:
        raise LaunchError("--rounds is the number of resubmissions of --until-done: add "
                          "--until-done")
    rounds = until_done.DEFAULT_ROUNDS if args.rounds is None else args.rounds
    if rounds < 0:
        raise LaunchError(f"--rounds {rounds}: must be 0 or more")
    run = open_run(args.config, args.overrides, force=args.force)
    if args.until_done and run.cfg.slurm.executor != "slurm":
        raise LaunchError(f"--until-done needs SLURM (slurm.executor=slurm, not "
                          f"{run.cfg.slurm.executor}): its follow-up job waits in SLURM's queue")
    sub = prepare(run, array=args.array, force=args.force, dry_run=args.dry_run)
    if args.until_done and args.dry_run:
        print(f"until done: a follow-up job ({' '.join(follow_up_options(sub.cfg))}) "
              f"would check once these arrays end and resubmit what they left undone, up to "
              f"{rounds} rounds")
    record = _submit_and_report(sub, args.dry_run, "submit")
    if args.until_done and record is not None:
        chain = until_done.start(sub, record, rounds)
        assert chain.follow_up is not None
        print(f"until done: follow-up job {chain.follow_up.job} checks once job(s) "
              f"{', '.join(chain.follow_up.after)} end and resubmits what is neither done nor "
              f"queued, up to {rounds} rounds; `asrd status` shows each round")
        print(f"chain: {chain.path}")
    return 0


def cmd_until_done_check(args: argparse.Namespace) -> int:
    chain = until_done.check(args.chain)
    last = chain.checks[-1] if chain.checks else None
    print(f"until done: {last.outcome if last else 'nothing checked'}"
          + (f"; next check: job {chain.follow_up.job}" if chain.follow_up else ""))
    return 0 if last is None or last.outcome != until_done.GAVE_UP else 1


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
    _submit_and_report(sub, args.dry_run, "resubmit")
    return 0


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
    p.add_argument("--until-done", action="store_true",
                   help="queue a follow-up job that, once the arrays end, resubmits the shards "
                        "neither done nor queued, round after round, until all are done")
    p.add_argument("--rounds", type=int, help=f"resubmissions --until-done may make "
                   f"(default {until_done.DEFAULT_ROUNDS})")
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
    p = add("until-done-check", cmd_until_done_check, "what --until-done's follow-up job runs: "
            "check the last round, resubmit what is left, queue the next check", config=False)
    p.add_argument("--chain", required=True, help="the chain's record (RUN_DIR/until-done/)")
