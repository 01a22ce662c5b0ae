"""`asrd submit`, `resubmit`, `sbatch` and `run-task`: a planned run's shards as SLURM job arrays.

`--array` takes SLURM's syntax and selects SHARDS (not array indices); the selected shards that
have no marker are grouped `slurm.shards_per_task` to a task, and the tasks are submitted through
submitit as one array, or as several when there are more than MaxArraySize. Every
submission is recorded in RUN_DIR/submissions/ (which job, which task, which shards), which is
how `asrd status` joins SLURM's view to the markers and `asrd resubmit` finds what is left.

Tasks run the frozen config plus the submission's command-line overrides; a shard that was
cancelled, crashed or timed out has no marker, so a requeue or resubmission simply runs it again
and it resumes from its committed parts.
"""

from __future__ import annotations

import argparse
import functools
import logging
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from asrd import config as config_mod
from asrd.plan import load_plan
from asrd.rundir import RunDir
from asrd.verify import verify_shards
from hpc import slurm_ctl
from hpc.arrays import ArrayChunk, ArraySpecError, format_array, group, parse_array, task_items
from hpc.commit import read_json, write_json
from hpc.launch import (Resumable, export_lines, make_executor, new_record,
                        plan_arrays, python_executable, read_records, requeue_self, submit_arrays,
                        write_record)
from hpc.slurm_env import SlurmEnv
from hpc.stop import run_until_stopped

log = logging.getLogger("asrd.launch.launcher")

TEMPLATE = Path(__file__).resolve().parents[2] / "sbatch" / "asrd_array.sbatch"

# SLURM job states, as `asrd status` names them (anything else: the task ended).
PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING",
                  "RESIZING"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}


class LaunchError(ValueError):
    """A submission that cannot be made as asked; the message says what to change."""


# --- config -> SLURM parameters -------------------------------------------------------------------

def _no_newline(key: str, value: Any) -> None:
    """A newline in a value would end an #SBATCH line and start a shell line in the script."""
    if isinstance(value, str) and any(c in value for c in "\n\r\0"):
        raise LaunchError(f"slurm.{key}={value!r}: newlines are not allowed in SLURM parameters")


def parse_extra_sbatch(lines: list[str]) -> dict[str, Any]:
    """slurm.extra_sbatch ("#SBATCH --mail-type=END", "--gres gpu:1", "--exclusive") -> options."""
    options: dict[str, Any] = {}
    for line in lines:
        _no_newline("extra_sbatch", line)
        text = line.strip()
        text = text[len("#SBATCH"):].strip() if text.startswith("#SBATCH") else text
        m = re.match(r"^--([A-Za-z][A-Za-z0-9_-]*)(?:[= ]\s*(.*))?$", text)
        if not m:
            raise LaunchError(f"slurm.extra_sbatch line {line!r}: expected one long option, "
                              "like '--mail-type=END' or '#SBATCH --gres=gpu:1'")
        value = m.group(2)
        options[m.group(1)] = True if value is None or value == "" else value.strip()
    return options


def job_name(cfg: DictConfig) -> str:
    return f"asrd-{cfg.run.name}"


def sbatch_options(cfg: DictConfig) -> dict[str, Any]:
    """The job's resources as sbatch long options (True: a flag)."""
    s = cfg.slurm
    for key in ("partition", "account", "qos", "constraint"):
        _no_newline(key, s[key])
    options: dict[str, Any] = {
        "partition": s.partition, "account": s.account, "qos": s.qos,
        "time": int(s.time_min), "nodes": int(s.nodes), "cpus-per-task": int(s.cpus_per_task),
        "mem": f"{int(float(s.mem_gb) * 1024)}M", "constraint": s.constraint,
    }
    if s.gpus_per_node:
        options["gpus-per-node"] = int(s.gpus_per_node)
    if s.exclusive:
        options["exclusive"] = True
    options.update(parse_extra_sbatch(list(s.extra_sbatch)))
    return {k: v for k, v in options.items() if v is not None}


def setup_lines(cfg: DictConfig) -> list[str]:
    """slurm.env as quoted exports, then slurm.setup (the user's shell lines, as written)."""
    try:
        exports = export_lines({str(k): str(v) for k, v in cfg.slurm.env.items()})
    except ValueError as e:
        raise LaunchError(f"slurm.env: {e}") from e
    return exports + list(cfg.slurm.setup)  # setup lines (e.g. a JuiceFS mount) see the env


def submitit_params(cfg: DictConfig) -> dict[str, Any]:
    """AutoExecutor parameters for the slurm section (also valid for the local executor)."""
    s = cfg.slurm
    options = sbatch_options(cfg)
    params: dict[str, Any] = {
        "name": job_name(cfg), "timeout_min": int(s.time_min), "nodes": int(s.nodes),
        "cpus_per_task": int(s.cpus_per_task), "mem_gb": float(s.mem_gb),
        "slurm_signal_delay_s": int(s.signal_delay_s),
        "slurm_array_parallelism": int(s.array_parallelism),
    }
    if s.gpus_per_node:
        params["gpus_per_node"] = int(s.gpus_per_node)
    for key in ("partition", "account", "qos", "constraint"):
        if s[key] is not None:
            params[f"slurm_{key}"] = str(s[key])
    if s.exclusive:
        params["slurm_exclusive"] = True
    known = {"partition", "account", "qos", "time", "nodes", "cpus-per-task", "mem",
             "constraint", "gpus-per-node", "exclusive"}
    extra = {k: v for k, v in options.items() if k not in known}
    params["slurm_additional_parameters"] = {"requeue": True, **extra}
    setup = setup_lines(cfg)
    if setup:
        params["slurm_setup"] = setup
    return params


# --- what to submit -----------------------------------------------------------------------------

@dataclass
class Submission:
    run_dir: RunDir
    cfg: DictConfig
    overrides: list[str]
    force: bool
    shards: list[int]  # selected and not done
    tasks: list[list[int]]
    chunks: list[ArrayChunk]
    max_array_size: int | None
    skipped: dict[str, list[int]] = field(default_factory=dict)  # why -> shards left out

    def describe(self) -> list[str]:
        lines = [f"{len(self.shards)} shards in {len(self.tasks)} tasks "
                 f"({self.cfg.slurm.shards_per_task} per task) -> {len(self.chunks)} array(s)"
                 + (f", MaxArraySize {self.max_array_size}" if self.max_array_size else "")]
        for why, shards in self.skipped.items():
            if shards:
                lines.append(f"left out ({why}): {format_array(shards)}")
        for i, chunk in enumerate(self.chunks):
            shards = [s for t in self.tasks[chunk.offset:chunk.offset + chunk.count] for s in t]
            lines.append(f"array {i}: --array={chunk.spec} (tasks {chunk.offset}.."
                         f"{chunk.offset + chunk.count - 1}), shards {format_array(shards)}")
        return lines


def load_run_config(config: str | None, overrides: list[str]) -> tuple[RunDir, DictConfig]:
    """The run's frozen config plus `overrides` (the same config its tasks will run)."""
    cfg = config_mod.load(config, overrides)
    rd = RunDir(Path(cfg.run.dir).resolve())
    if not rd.exists():
        raise LaunchError(f"{rd.path} is not a planned run directory: run `asrd plan` first")
    return rd, config_mod.load(rd.config_path, overrides)


def prepare(config: str | None, overrides: list[str], array: str | None = None,
            shards: list[int] | None = None, parallelism: int | None = None,
            force: bool = False, exclude: dict[str, set[int]] | None = None,
            dry_run: bool = False) -> Submission:
    """Select shards (an --array string or a list; default all), drop done ones, group, split."""
    rd, cfg = load_run_config(config, overrides)
    rd.check_config(cfg, force=force)  # refuse drift now, not in a thousand tasks
    planned = load_plan(rd).num_shards
    spec_parallelism = None
    if array is not None:
        spec = parse_array(array)
        shards, spec_parallelism = spec.indices, spec.parallelism
    elif shards is None:
        shards = list(range(planned))
    outside = [s for s in shards if not 0 <= s < planned]
    if outside:
        raise LaunchError(f"shards {format_array(outside)} are not in the plan "
                          f"(it has shards 0-{planned - 1})")
    done = verify_shards(rd, load_plan(rd)).done  # a marker that no longer holds is not done
    skipped = {"done": sorted(set(shards) & done)}
    todo = [s for s in shards if s not in done]
    for why, excluded in (exclude or {}).items():
        skipped[why] = sorted(set(todo) & excluded)
        todo = [s for s in todo if s not in excluded]
    tasks = group(todo, int(cfg.slurm.shards_per_task))
    p = parallelism or spec_parallelism or int(cfg.slurm.array_parallelism)
    max_size = None
    if cfg.slurm.executor == "slurm":
        try:
            max_size = slurm_ctl.max_array_size()
        except slurm_ctl.SlurmError:
            if not dry_run:
                raise
            max_size = slurm_ctl.SLURM_DEFAULT_MAX_ARRAY_SIZE  # what an unconfigured cluster has
    chunks = plan_arrays(len(tasks), max_size, p)
    return Submission(rd, cfg, list(overrides), force, todo, tasks, chunks, max_size, skipped)


# --- submitit -----------------------------------------------------------------------------------

def _task_main(run_dir: str, overrides: list[str], force: bool, shards: list[int]) -> list[int]:
    """What one submitit array task runs (pickled by reference: asrd must be importable there)."""
    from asrd.runtime.task import run_task

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.info("task %s: shards %s", SlurmEnv.from_environ().task_key, shards)
    return run_task(run_dir, shards, overrides, force=force)


def submit(sub: Submission, kind: str = "submit") -> Path | None:
    """Submit through submitit and record it; returns the record's path (None: nothing to do)."""
    if not sub.tasks:
        return None
    cfg = sub.cfg
    executor = make_executor(sub.run_dir.logs_dir / "submitit" / "%j", submitit_params(cfg),
                             cluster=cfg.slurm.executor, max_requeues=int(cfg.slurm.max_requeues))
    fn = Resumable(functools.partial(_task_main, str(sub.run_dir.path), sub.overrides, sub.force),
                   max_requeues=int(cfg.slurm.max_requeues))
    arrays, jobs = submit_arrays(executor, fn, sub.tasks, sub.chunks)
    record = new_record(cfg.slurm.executor, sub.tasks, arrays, command=kind,
                        run_dir=str(sub.run_dir.path), overrides=sub.overrides, force=sub.force,
                        max_array_size=sub.max_array_size, params=submitit_params(cfg),
                        skipped=sub.skipped)
    path = write_record(sub.run_dir.submissions_dir, record)
    if cfg.slurm.executor == "local":  # its tasks are children of this process: see them through
        for job in jobs:
            error = job.exception()
            if error is not None:
                log.error("local task %s failed: %s", job.job_id, error)
    return path


# --- SLURM's view of the shards -----------------------------------------------------------------

def _started_dir(record_path: str | Path) -> Path:
    return Path(record_path).with_suffix(".started")


def _task_keys(record: dict[str, Any]) -> list[tuple[str, list[int]]]:
    """(SLURM key, shards) of every task of a record that SLURM knows of."""
    tasks = record["tasks"]
    if record["kind"] == "sbatch":  # job ids are known once a task starts and says so
        started = _started_dir(record["path"])
        if not started.is_dir():
            return []
        out = []
        for p in sorted(started.glob("*.json")):
            info = read_json(p)
            out.append((info["task_key"], list(info["shards"])))
        return out
    if record["kind"] != "slurm":
        return []
    return [(key, list(tasks[a["offset"] + i]))
            for a in record["arrays"] for i, key in enumerate(a["task_keys"])]


def slurm_states(run_dir: str | Path | RunDir) -> dict[int, str]:
    """Shard -> "running" | "pending" | "failed" from the recorded submissions and SLURM.

    A shard submitted several times takes its most active state (running, then pending), else
    the state of its latest submission; "failed" means its task ended (with no marker, the
    shard did not finish). Shards SLURM knows nothing of (never submitted, or purged from a
    cluster without accounting) are left out. Without SLURM clients: {}.
    """
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not slurm_ctl.available():
        return {}
    keyed = [kv for r in read_records(rd.submissions_dir) for kv in _task_keys(r)]
    if not keyed:
        return {}
    try:
        states = slurm_ctl.job_states({key.split("_")[0] for key, _ in keyed})
    except slurm_ctl.SlurmError as e:
        log.warning("SLURM states unavailable: %s", e)
        return {}
    rank = {"running": 2, "pending": 1}
    out: dict[int, str] = {}
    for key, shards in keyed:  # oldest first: a later submission's ended state replaces
        state = states.get(key)
        if state is None:
            continue
        name = ("pending" if state in PENDING_STATES else
                "running" if state in RUNNING_STATES else "failed")
        for s in shards:
            if rank.get(name, 0) >= rank.get(out.get(s, ""), 0):
                out[s] = name
    return out


# --- sbatch template ----------------------------------------------------------------------------

_SBATCH_SAFE = re.compile(r"^[A-Za-z0-9_.,:/=+@%-]+$")


def sbatch_quote(value: Any) -> str:
    """Quote a value for an #SBATCH line (sbatch reads double quotes and backslash escapes)."""
    text = str(value)
    _no_newline("value", text)
    if _SBATCH_SAFE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fill(template: str, values: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        if m.group(1) not in values:
            raise LaunchError(f"template {TEMPLATE} has an unknown placeholder {m.group(0)}")
        return values[m.group(1)]

    return re.sub(r"\{\{(\w+)\}\}", sub, template)


def render_sbatch(sub: Submission, record_path: Path) -> str:
    """The sbatch script for this submission's first array; later arrays are commented commands."""
    cfg = sub.cfg
    first = sub.chunks[0]
    lines = [f"#SBATCH --{k}" if v is True else f"#SBATCH --{k}={sbatch_quote(v)}"
             for k, v in sbatch_options(cfg).items()]
    more = [f"#   ASRD_TASK_OFFSET={c.offset} sbatch --array={c.spec} THIS_SCRIPT"
            for c in sub.chunks[1:]]
    if more:
        more.insert(0, f"# {len(sub.chunks)} arrays (MaxArraySize {sub.max_array_size}): submit "
                       "this script once as it is, then once per line below:")
    log_pattern = str(sub.run_dir.logs_dir / "sbatch").replace("%", "%%") + "/%A_%a.log"
    return _fill(TEMPLATE.read_text(), {
        "job_name": sbatch_quote(job_name(cfg)),
        "array": first.spec,
        "output": sbatch_quote(log_pattern),
        "signal_delay_s": str(int(cfg.slurm.signal_delay_s)),
        "sbatch_lines": "\n".join(lines),
        "more_arrays": "\n".join(more),
        "setup": "\n".join(setup_lines(cfg)),
        "python": shlex.quote(python_executable()),
        "record": shlex.quote(str(record_path)),
    })


def write_sbatch(sub: Submission) -> tuple[Path, str]:
    """Record an sbatch submission (no job ids yet) and render its script."""
    arrays = [{"job_id": None, "offset": c.offset, "count": c.count, "parallelism": c.parallelism,
               "spec": c.spec} for c in sub.chunks]
    record = new_record("sbatch", sub.tasks, arrays, command="sbatch",
                        run_dir=str(sub.run_dir.path), overrides=sub.overrides, force=sub.force,
                        max_array_size=sub.max_array_size,
                        max_requeues=int(sub.cfg.slurm.max_requeues), skipped=sub.skipped)
    (sub.run_dir.logs_dir / "sbatch").mkdir(parents=True, exist_ok=True)
    path = write_record(sub.run_dir.submissions_dir, record, name="sbatch")
    return path, render_sbatch(sub, path)


def run_task_from_record(record_path: str | Path, task: int | None = None,
                         offset: int = 0) -> list[int]:
    """What an sbatch array task runs: its shards from the record; requeued on USR2."""
    from asrd.runtime.task import run_task

    record = read_json(record_path)
    env = SlurmEnv.from_environ()
    index = task if task is not None else env.array_task_id
    if index is None:
        raise LaunchError("no array task: run this inside a SLURM array task or pass --task N")
    shards = task_items(record["tasks"], index, offset)
    if env.in_slurm:
        write_json(_started_dir(record_path) / f"{env.task_key}.json",
                   {"task_key": env.task_key, "shards": shards, "host": env.node,
                    "restart": env.restart_count})
    log.info("task %s: shards %s", env.task_key, shards)
    return run_until_stopped(run_task, record["run_dir"], shards, record["overrides"],
                             force=record["force"],
                             on_requeue=lambda: requeue_self(record.get("max_requeues")))


# --- command line -------------------------------------------------------------------------------

def _errors_to_exit(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (LaunchError, ArraySpecError, slurm_ctl.SlurmError) as e:
            print(f"asrd: error: {e}", file=sys.stderr)
            return 2
    return wrapper


def _print_submission(sub: Submission, dry_run: bool) -> None:
    for line in sub.describe():
        print(line)
    if dry_run:
        print("sbatch options: " + " ".join(
            f"--{k}" if v is True else f"--{k}={sbatch_quote(v)}"
            for k, v in sbatch_options(sub.cfg).items()))
        for line in setup_lines(sub.cfg):
            print(f"setup: {line}")
        print("dry run: nothing submitted")


def _submit_and_report(sub: Submission, dry_run: bool, kind: str) -> int:
    _print_submission(sub, dry_run)
    if dry_run:
        return 0
    if not sub.tasks:
        print("nothing to submit")
        return 0
    record = submit(sub, kind)
    for a in read_json(record)["arrays"]:
        print(f"submitted job {a['job_id']}: {a['count']} tasks")
    print(f"record: {record}")
    return 0


@_errors_to_exit
def cmd_submit(args: argparse.Namespace) -> int:
    sub = prepare(args.config, args.overrides, array=args.array, force=args.force,
                  dry_run=args.dry_run)
    return _submit_and_report(sub, args.dry_run, "submit")


def active_shards(rd: RunDir) -> set[int]:
    return {s for s, v in slurm_states(rd).items() if v in ("running", "pending")}


@_errors_to_exit
def cmd_resubmit(args: argparse.Namespace) -> int:
    rd, _ = load_run_config(args.config, args.overrides)
    plan = load_plan(rd)
    missing = sorted(set(range(plan.num_shards)) - verify_shards(rd, plan).done)
    exclude = {} if args.include_active else {"running or pending in SLURM": active_shards(rd)}
    sub = prepare(args.config, args.overrides, shards=missing, parallelism=args.parallelism,
                  force=args.force, exclude=exclude, dry_run=args.dry_run)
    if sub.shards:
        print(f"shards without a marker: --array={format_array(sub.shards)}")
    return _submit_and_report(sub, args.dry_run, "resubmit")


@_errors_to_exit
def cmd_sbatch(args: argparse.Namespace) -> int:
    sub = prepare(args.config, args.overrides, array=args.array, force=args.force)
    if not sub.tasks:
        raise LaunchError("no shard left to run: " + "; ".join(sub.describe()))
    record, script = write_sbatch(sub)
    sys.stdout.write(script)
    print(f"asrd sbatch: record {record}; " + "; ".join(sub.describe()), file=sys.stderr)
    return 0


@_errors_to_exit
def cmd_run_task(args: argparse.Namespace) -> int:
    done = run_task_from_record(args.submission, args.task, args.offset)
    print(f"finished shards: {done}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add submit, resubmit, sbatch and run-task to the `asrd` command line."""

    def add(name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, help=help)
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
    p = add("run-task", cmd_run_task, "run one array task of an `asrd sbatch` record")
    p.add_argument("--submission", required=True, help="the record the sbatch script names")
    p.add_argument("--task", type=int, help="array index (default: $SLURM_ARRAY_TASK_ID)")
    p.add_argument("--offset", type=int, default=0, help="added to the array index")
