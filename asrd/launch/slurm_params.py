"""The config's `slurm` section -> SLURM parameters, translated once (`sbatch_options`); the
submitit parameters and the sbatch script are both made from that one translation."""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig

from asrd.launch.errors import LaunchError
from hpc.array_submit import export_lines

# sbatch options that submitit takes as its own named parameters; the rest it passes through.
SUBMITIT_NAMED = {"time": "timeout_min", "nodes": "nodes", "cpus-per-task": "cpus_per_task",
                  "gpus-per-node": "gpus_per_node"}


# Options asrd sets itself: the task logs' place, the array, the requeue signal, and the comment
# by which `asrd status` finds pending sbatch arrays. slurm.extra_sbatch may not change them.
OWN_OPTIONS = ("job-name", "array", "output", "error", "open-mode", "requeue", "signal", "comment")


def no_newline(key: str, value: Any) -> None:
    """A newline in a value would end an #SBATCH line and start a shell line in the script."""
    if isinstance(value, str) and any(c in value for c in "\n\r\0"):
        raise LaunchError(f"slurm.{key}={value!r}: newlines are not allowed in SLURM parameters")


def parse_extra_sbatch(lines: list[str], key: str = "extra_sbatch") -> dict[str, Any]:
    """slurm.extra_sbatch ("#SBATCH --mail-type=END", "--gres gpu:1", "--exclusive") -> options."""
    options: dict[str, Any] = {}
    for line in lines:
        no_newline(key, line)
        text = line.strip()
        text = text[len("#SBATCH"):].strip() if text.startswith("#SBATCH") else text
        m = re.match(r"^--([A-Za-z][A-Za-z0-9_-]*)(?:[= ]\s*(.*))?$", text)
        if not m:
            raise LaunchError(f"slurm.{key} line {line!r}: expected one long option, "
                              "like '--mail-type=END' or '#SBATCH --gres=gpu:1'")
        if m.group(1) in OWN_OPTIONS:
            raise LaunchError(f"slurm.{key} line {line!r}: asrd sets --{m.group(1)} itself "
                              f"(it owns {', '.join('--' + o for o in OWN_OPTIONS)})")
        value = m.group(2)
        options[m.group(1)] = True if value is None or value == "" else value.strip()
    return options


def job_name(run_name: str) -> str:
    """The SLURM job name of a run's arrays (`asrd status` finds pending sbatch arrays by it)."""
    return f"asrd-{run_name}"


def sbatch_options(cfg: DictConfig) -> dict[str, Any]:
    """The job's resources as sbatch long options (True: a flag)."""
    s = cfg.slurm
    for key in ("partition", "account", "qos", "constraint"):
        no_newline(key, s[key])
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


# The follow-up job of `--until-done` checks markers and submits: one CPU for minutes. It takes the
# run's partition, account and QOS unless slurm.follow_up_sbatch says otherwise.
FOLLOW_UP_OPTIONS = {"cpus-per-task": 1, "mem": "1024M", "time": 30}


def follow_up_options(cfg: DictConfig) -> list[str]:
    """The follow-up job's sbatch words ("--partition=gpu"), unquoted (passed as argv)."""
    tasks = sbatch_options(cfg)
    options = {k: tasks[k] for k in ("partition", "account", "qos") if k in tasks}
    options.update(FOLLOW_UP_OPTIONS)
    extra = parse_extra_sbatch(list(cfg.slurm.follow_up_sbatch), "follow_up_sbatch")
    if "dependency" in extra:
        raise LaunchError("slurm.follow_up_sbatch: asrd sets the follow-up job's --dependency "
                          "itself (afterany on the arrays it checks)")
    options.update(extra)
    return [f"--{k}" if v is True else f"--{k}={v}" for k, v in options.items()]


def setup_lines(cfg: DictConfig) -> list[str]:
    """slurm.env as quoted exports, then slurm.setup (the user's shell lines, as written)."""
    try:
        exports = export_lines({str(k): str(v) for k, v in cfg.slurm.env.items()})
    except ValueError as e:
        raise LaunchError(f"slurm.env: {e}") from e
    return exports + list(cfg.slurm.setup)  # setup lines (e.g. a JuiceFS mount) see the env


def submitit_params(cfg: DictConfig) -> dict[str, Any]:
    """AutoExecutor parameters (also valid for the local executor), from `sbatch_options`."""
    options = sbatch_options(cfg)
    params: dict[str, Any] = {
        "name": job_name(cfg.run.name),
        "slurm_signal_delay_s": int(cfg.slurm.signal_delay_s),
        "slurm_array_parallelism": int(cfg.slurm.array_parallelism),
        **{SUBMITIT_NAMED[k]: v for k, v in options.items() if k in SUBMITIT_NAMED},
        "slurm_additional_parameters": {
            "requeue": True, **{k: v for k, v in options.items() if k not in SUBMITIT_NAMED}},
    }
    setup = setup_lines(cfg)
    if setup:
        params["slurm_setup"] = setup
    return params


_SBATCH_SAFE = re.compile(r"^[A-Za-z0-9_.,:/=+@%-]+$")


def sbatch_quote(value: Any) -> str:
    """Quote a value for an #SBATCH line (sbatch reads double quotes and backslash escapes)."""
    text = str(value)
    no_newline("value", text)
    if _SBATCH_SAFE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sbatch_lines(options: dict[str, Any]) -> list[str]:
    return [f"#SBATCH --{k}" if v is True else f"#SBATCH --{k}={sbatch_quote(v)}"
            for k, v in options.items()]


def format_options(options: dict[str, Any]) -> str:
    """Options as sbatch command-line words, for reading (`--dry-run`)."""
    return " ".join(f"--{k}" if v is True else f"--{k}={sbatch_quote(v)}"
                    for k, v in options.items())
