"""The `asrd` command line. Every command takes `--config FILE` and trailing `key=value` overrides.

index -> plan -> run / run-shard (or submit, for SLURM) -> merge; status at any time.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import select
import signal
import sys
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

from asrd import config as config_mod
from asrd.config_checks import EXPORT_AUDIO, EXPORT_FORMATS
from asrd.done_marker import DoneMarker
from asrd.launch import commands as launch_commands
from asrd.plan_record import Plan
from asrd.rundir import RunDir
from asrd.run_config import open_run
from hpc.store import check_root

# The exceptions a user can act on (a bad config, input or run state): one `asrd: error:` line,
# exit status 2. Named by module and class rather than imported, so that a command imports only
# the modules it runs (`asrd status` would otherwise import nearly every module first); an
# exception whose module was never imported cannot have been raised. Subclasses count too.
USER_ERRORS = frozenset({
    "asrd.config.ConfigError", "asrd.index.IndexInputError", "asrd.plan.PlanError",
    "asrd.merge.MergeError", "asrd.rundir.RunDirError", "asrd.engines.base.EngineUnavailable",
    "asrd.audio.decode.AudioError", "asrd.audio.vad.VadUnavailable", "asrd.filters.FilterError",
    "hpc.store.StoreError", "asrd.demo.DemoUnavailable", "asrd.forecast.ForecastError",
    "asrd.export.target.ExportError", "asrd.quality.presets.PresetError",
    "asrd.runtime.write.ShardIncomplete", "asrd.launch.errors.LaunchError",
    "hpc.arrays.ArraySpecError", "hpc.slurm_ctl.SlurmError", "builtins.FileNotFoundError"})


def is_user_error(e: BaseException) -> bool:
    """Whether `e` is (a subclass of) one of USER_ERRORS."""
    return any(f"{c.__module__}.{c.__qualname__}" in USER_ERRORS for c in type(e).__mro__)


def load_config(args: argparse.Namespace) -> DictConfig:
    return config_mod.load(args.config, args.overrides)


def run_config(args: argparse.Namespace, check_drift: bool = True) -> DictConfig:
    """For commands on a planned run: its frozen config <- the -c file <- the overrides."""
    return open_run(args.config, args.overrides, check_drift=check_drift).cfg


def check_engine(cfg: DictConfig, packages: bool) -> None:
    """Refuse a config whose engine cannot load (no model, no package) before it is frozen."""
    from asrd.engines.registry import engine_class

    engine_class(cfg.engine.kind).check(cfg.engine, packages=packages)
    if cfg.language_id.enabled:
        from asrd.engines.language_id import check_identifier

        check_identifier(cfg.engine, cfg.language_id, packages=packages)


def cmd_config(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    if args.write:
        from asrd.config_doc import starter_yaml

        text = starter_yaml(cfg)
        try:  # "x": an existing file (edited by hand, perhaps) is never overwritten unasked
            with open(args.write, "w" if args.force else "x", encoding="utf-8") as f:
                f.write(text)
        except FileExistsError:
            raise config_mod.ConfigError(f"{args.write} exists: name another file, or --force to "
                                         "overwrite it") from None
        print(f"wrote {args.write} (every key, with a line on what it does)")
    else:
        print(config_mod.to_yaml(cfg), end="")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from asrd.index import build_index

    report = build_index(args.source, args.output, workers=args.workers)
    print(f"indexed {report.rows} entries, {report.audio_s / 3600:.2f} h of audio -> {args.output}")
    if report.failed:
        print(f"{sum(report.failed.values())} entries could not be probed (kept; they will be "
              f"error rows): " + ", ".join(f"{k}={v}" for k, v in sorted(report.failed.items())))
        for ex in report.examples:
            print(f"  {ex}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from asrd.plan import make_plan

    cfg = load_config(args)
    check_root(cfg.run.dir, cfg.store.require_mount, must_exist=False)
    check_engine(cfg, packages=False)  # the tasks may run where other packages are installed
    rd, plan = make_plan(cfg, force=args.force)
    secs = [s.audio_s for s in plan.shards]
    print(f"planned {plan.num_shards} shards of {plan.index_rows} rows in {rd.path} "
          f"(config {plan.config_hash}); audio per shard {min(secs):.0f}-{max(secs):.0f} s")
    print_forecast(rd, plan, cfg, args)
    return 0


def print_forecast(rd: RunDir, plan: Plan, cfg: DictConfig, args: argparse.Namespace) -> None:
    from asrd.forecast import (format_forecast, forecast_path, forecast_run,
                               small_shards_without_rate)

    if args.calibrate:
        from asrd.calibrate import calibrate

        calibrate(cfg, args.calibrate_audio_s)
    fc = forecast_run(rd, cfg, args.rates_from or ())
    if fc is None:
        print("forecast: no measured rate for these engine settings; run `asrd calibrate` (or "
              "`asrd plan --calibrate`), or name earlier runs with --rates-from RUN_DIR")
        warning = small_shards_without_rate(plan)
        if warning:
            print(warning)
        return
    print(format_forecast(fc))
    print(f"wrote {forecast_path(rd)}")


def cmd_calibrate(args: argparse.Namespace) -> int:
    from asrd.calibrate import calibrate
    from asrd.forecast import calibration_path

    cfg = load_config(args)
    cal = calibrate(cfg, args.audio_s)
    print(f"calibrated on {cal.sample_rows} rows ({cal.sample_audio_s:.0f} audio s): "
          f"{cal.rate.s_per_row:.3g} s per row + {cal.rate.s_per_window:.3g} s per model window "
          f"({cal.rate.audio_s_per_s:.1f} audio s/s on the sample), start-up "
          f"{cal.rate.startup_s:.0f} s "
          f"-> {calibration_path(RunDir(cfg.run.dir))}")
    return 0


def cmd_run_shard(args: argparse.Namespace) -> int:
    from asrd.runtime.task import run_task

    cfg = load_config(args)
    done = run_task(cfg.run.dir, args.shard, args.overrides, force=args.force, config=args.config)
    print(f"finished shards: {done}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from asrd.plan import make_plan
    from asrd.runtime.task import run_task

    cfg = load_config(args)
    check_root(cfg.run.dir, cfg.store.require_mount, must_exist=False)
    check_engine(cfg, packages=True)
    rd, plan = make_plan(cfg, force=args.force)
    done = run_task(rd.path, None, args.overrides, force=args.force, config=args.config)
    print(f"finished {len(done)} shards; {len(rd.markers.done_shards())} of {plan.num_shards} done")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from asrd.merge import merge
    from asrd.report import REPORT_NAME

    run = open_run(args.config, args.overrides)
    cfg = run.cfg
    s = merge(cfg, allow_incomplete=args.allow_incomplete or None, row_filter=args.filter,
              preset=args.preset, threshold_edits=run.threshold_edits)
    print(f"merged {s.shards_merged}/{s.shards_planned} shards: {s.rows} rows ({s.ok} ok, "
          f"{s.failed} failed), {s.audio_hours:.2f} h -> {RunDir(cfg.run.dir).merged_dir}")
    if s.reference_rescored:
        print(f"{s.reference_rescored} rows have a reference that changed in the index since "
              "they were transcribed: their WER, CER and flags are computed against it")
    if s.dropped_by_preset:
        edits = s.quality.get("threshold_edits")
        print(f"quality preset {s.preset!r}"
              + (" with " + ", ".join(f"{k}={v}" for k, v in edits.items()) if edits else "")
              + f": dropped {s.dropped_by_preset} rows; by flag: "
              + ", ".join(f"{k}={v}" for k, v in s.dropped_by_flag.items()))
    if s.filter:
        print(f"filter kept {s.kept} of {s.rows} rows, dropped {s.dropped_by_filter}")
        for clause, n in s.filter_counts["dropped_by_clause"].items():
            print(f"  {clause}: failed {n['false']}, unknown (null) {n['null']}")
    if s.failures_by_reason:
        print("failures: " + ", ".join(f"{k}={v}" for k, v in sorted(s.failures_by_reason.items())))
    if s.missing_shards or s.rejected_shards:
        print(f"INCOMPLETE: missing shards {s.missing_shards}, rejected {s.rejected_shards}")
    report = RunDir(cfg.run.dir).merged_dir / REPORT_NAME
    if report.is_file():  # a report that failed is a warning above, not a merge error
        print(f"report: {report}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from asrd.export import export

    args.overrides += [f"export.{k}={v}" for k, v in (("format", args.format),
                       ("audio", args.audio), ("windows", args.windows or None)) if v is not None]
    cfg = run_config(args)
    s = export(cfg, args.output, force=args.force)
    resumed = (" (already complete: nothing written)" if s.was_complete else
               f" (resumed at merged row {s.resumed_from_row})" if s.resumed_from_row else "")
    print(f"exported {s.items} {'windows' if cfg.export.windows else 'rows'} of {s.rows} merged "
          f"rows in {s.shards} {cfg.export.format} shards -> {s.folder}{resumed}")
    if s.skipped:
        print("not exported: " + ", ".join(f"{k}={v}" for k, v in sorted(s.skipped.items())))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from asrd.merge import MergeError
    from asrd.report import REPORT_NAME, write_report

    cfg = run_config(args)
    rd = RunDir(cfg.run.dir)
    summary_path = rd.merged_dir / "summary.json"
    if not summary_path.is_file():
        raise MergeError(f"{summary_path} does not exist: run `asrd merge` first")
    out = Path(args.output) if args.output else rd.merged_dir / REPORT_NAME
    write_report(cfg, rd.path, json.loads(summary_path.read_text()), out)
    print(f"wrote {out}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from asrd.plan import load_plan
    from asrd.status import drift_lines, format_status, run_status

    run = open_run(args.config, args.overrides, check_drift=False)  # reading is never refused
    plan = load_plan(run.run_dir)
    st = run_status(run.run_dir, plan=plan)
    print(format_status(st, per_shard=args.per_shard))
    print(eta_line(run.run_dir, plan, st.markers))
    for line in drift_lines(run.run_dir, run.cfg):
        print(line)
    return 0


def eta_line(rd: RunDir, plan: Plan, markers: dict[int, DoneMarker]) -> str:
    """The time left, from the done shards' markers (read once, by the status)."""
    from asrd.forecast import eta, format_eta

    return format_eta(eta(rd, plan, markers))


def cmd_demo(args: argparse.Namespace) -> int:
    from asrd.demo import run_demo

    return run_demo(Path(args.workdir), args.overrides, args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asrd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--config", "-c", help="YAML config file (see `asrd config`)")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
        p.set_defaults(func=func)
        return p

    p = add("config", cmd_config, "print the resolved config, or write a starter file")
    p.add_argument("--write", metavar="FILE",
                   help="write a starter file: every key, with a comment line on what it does")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p = add("index", cmd_index, "build a Parquet audio index from a folder, manifest, Parquet or "
                                "tar shards (local or s3://)")
    p.add_argument("source")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--workers", type=int, default=16, help="parallel header probes")
    p = add("plan", cmd_plan, "freeze the config and cut the index into shards")
    p.add_argument("--force", action="store_true", help="re-plan over an existing run directory")
    p.add_argument("--calibrate", action="store_true",
                   help="measure the rate on this node first (see `asrd calibrate`)")
    p.add_argument("--calibrate-audio-s", type=float, default=300.0, metavar="S")
    p.add_argument("--rates-from", action="append", metavar="RUN_DIR",
                   help="forecast from the done-markers of this earlier run (repeatable)")
    p = add("calibrate", cmd_calibrate,
            "run a sample of the index through one task's pipeline here; the forecast's rate")
    p.add_argument("--audio-s", type=float, default=300.0,
                   help="audio seconds in the sample (rows across the duration range)")
    p = add("run-shard", cmd_run_shard, "run some shards in this process (what a task runs)")
    p.add_argument("--shard", type=int, action="append", required=True,
                   help="a shard to run; repeat for several")
    p.add_argument("--force", action="store_true", help="run despite config drift")
    p = add("run", cmd_run, "plan if needed, then run every shard on this machine")
    p.add_argument("--force", action="store_true")
    p = add("merge", cmd_merge, "validate and merge the shard files")
    p.add_argument("--allow-incomplete", action="store_true")
    p.add_argument("--filter", action="append", metavar="SQL",
                   help='keep only rows matching this SQL WHERE clause, e.g. "score >= 3"; '
                        'repeat for several (each one\'s drops are counted)')
    p.add_argument("--preset", help="quality preset (default: merge.preset): default | strict | "
                   "run | none, or a preset file (.yaml); rows with its flags are left out; "
                   "quality.thresholds.KEY=VALUE overrides apply on top")
    p = add("report", cmd_report, "write the quality report page of the last merge again")
    p.add_argument("-o", "--output", help="where (default: RUN_DIR/merged/report.html)")
    p = add("status", cmd_status, "shards done / running / failed / missing")
    p.add_argument("--per-shard", action="store_true")
    p = add("export", cmd_export, "the merged rows with their audio, in a training format")
    p.add_argument("--format", choices=EXPORT_FORMATS, help="export.format")
    p.add_argument("-o", "--output", required=True, help="the export folder, or s3://bucket/prefix")
    p.add_argument("--audio", choices=EXPORT_AUDIO, help="export.audio")
    p.add_argument("--windows", action="store_true", help="export.windows: <= 30 s windows")
    p.add_argument("--force", action="store_true",
                   help="start again: remove what an earlier export wrote there (nothing else)")
    p = add("demo", cmd_demo, "sample speech -> index -> run -> merge -> word error rate")
    p.add_argument("--workdir", default="demo")
    launch_commands.register(sub)  # submit, resubmit, sbatch, run-task
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, so that a reader that went away is handled below
        return status
    except Exception as e:
        if is_user_error(e):
            return _fail(str(e), getattr(e, "details", ()))
        if isinstance(e, BrokenPipeError):
            if _stdout_closed():  # `asrd status | head -1`: the reader has what it wanted
                return _quiet_exit()
            return _fail(_os_error(e))
        if isinstance(e, OSError):  # the machine refused (disk full, read-only, no permission)
            return _fail(_os_error(e))
        raise


def _stdout_closed() -> bool:
    """Whether the reader of stdout is gone: poll reports an error on a pipe without readers."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor, or no poll here
        return False


def _quiet_exit() -> int:
    """End as a Unix tool killed by SIGPIPE does: no message, status 128 + SIGPIPE. Output still
    buffered goes nowhere (else Python's own flush at exit would complain on stderr)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def _fail(message: str, details: Sequence[str] = ()) -> int:
    """One line on stderr (then `details`, what was and was not done, one per line), exit
    status 2: what every refused command ends with."""
    print("asrd: error: " + " ".join(message.split()), file=sys.stderr)
    for line in details:
        print(f"  {line}", file=sys.stderr)
    return 2


def _os_error(e: OSError) -> str:
    hints = {errno.ENOSPC: "free space there and run the command again (committed work is kept)",
             errno.EDQUOT: "free space there and run the command again (committed work is kept)",
             errno.EROFS: "the file system is read-only: point run.dir at a writable store"}
    what = e.strerror or str(e)
    where = f": {e.filename}" if e.filename else ""
    return f"{what}{where}" + (f"; {hints[e.errno]}" if e.errno in hints else "")


if __name__ == "__main__":
    sys.exit(main())
