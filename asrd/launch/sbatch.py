"""`asrd sbatch`: a Submission as a plain sbatch array script, and what its tasks run.

The script's template is `sbatch/asrd_array.sbatch` of the checkout, packaged from there as
`asrd.sbatch_templates`, so an installed asrd renders it as well as a checkout. The record is written only once the script rendered: a
failed `asrd sbatch` leaves nothing behind. SLURM's job ids are unknown until the user submits
the script; each array's comment names the record and its task offset, which is how `asrd status`
finds the arrays while pending, and each task records its SLURM key when it starts.
"""

from __future__ import annotations

import logging
import re
import shlex
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from asrd.launch.errors import LaunchError
from asrd.launch.selection import Submission
from asrd.launch.slurm_params import (job_name, sbatch_lines, sbatch_options, sbatch_quote,
                                      setup_lines)
from asrd.launch.submit import RecordedRun, new_submission_record, run_recorded_task
from hpc.array_submit import (RecordedArray, python_executable, read_record, record_path,
                              requeue_self, write_record)
from hpc.arrays import task_items
from hpc.commit import write_json
from hpc.slurm_env import SlurmEnv
from hpc.stop import run_until_stopped

log = logging.getLogger("asrd.launch.sbatch")



def _template() -> Traversable:
    """The shipped array template: packaged as `asrd.sbatch_templates` from the top-level sbatch/
    folder; a checkout used without installing it (PYTHONPATH) reads that folder itself."""
    try:
        return resources.files("asrd.sbatch_templates") / "asrd_array.sbatch"
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "sbatch" / "asrd_array.sbatch"


TEMPLATE = _template()
COMMENT_PREFIX = "asrd:"


def array_comment(record_file: Path, offset: int) -> str:
    """The comment of one array of a record: `asrd:<record file name>:<task offset>`."""
    return f"{COMMENT_PREFIX}{record_file.name}:{offset}"


def parse_comment(comment: str) -> tuple[str, int] | None:
    """(record file name, task offset) from an array's comment; None: not one of ours."""
    m = re.match(rf"^{re.escape(COMMENT_PREFIX)}(.+):(\d+)$", comment)
    return (m.group(1), int(m.group(2))) if m else None


def started_dir(record_file: str | Path) -> Path:
    """Where an sbatch record's tasks note their SLURM key and shards when they start."""
    return Path(record_file).with_suffix(".started")


def _fill(template: str, values: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        if m.group(1) not in values:
            raise LaunchError(f"template {TEMPLATE} has an unknown placeholder {m.group(0)}")
        return values[m.group(1)]

    return re.sub(r"\{\{(\w+)\}\}", sub, template)


def render_sbatch(sub: Submission, record_file: Path) -> str:
    """The sbatch script for this submission's first array; later arrays are commented commands."""
    cfg = sub.cfg
    first = sub.chunks[0]
    more = [f"#   ASRD_TASK_OFFSET={c.offset} sbatch --array={c.spec} "
            f"--comment={array_comment(record_file, c.offset)} THIS_SCRIPT"
            for c in sub.chunks[1:]]
    if more:
        more.insert(0, f"# {len(sub.chunks)} arrays (MaxArraySize {sub.max_array_size}): submit "
                       "this script once as it is, then once per line below:")
    log_pattern = str(sub.run_dir.logs_dir / "sbatch").replace("%", "%%") + "/%A_%a.log"
    return _fill(TEMPLATE.read_text(), {
        "job_name": sbatch_quote(job_name(cfg.run.name)),
        "array": first.spec,
        "output": sbatch_quote(log_pattern),
        "signal_delay_s": str(int(cfg.slurm.signal_delay_s)),
        "comment": sbatch_quote(array_comment(record_file, first.offset)),
        "sbatch_lines": "\n".join(sbatch_lines(sbatch_options(cfg))),
        "more_arrays": "\n".join(more),
        "setup": "\n".join(setup_lines(cfg)),
        "python": shlex.quote(python_executable()),
        "record": shlex.quote(str(record_file)),
    })


def write_sbatch(sub: Submission) -> tuple[Path, str]:
    """Render the script, then record the submission (no job ids yet); returns both."""
    path = record_path(sub.run_dir.submissions_dir, "sbatch")
    script = render_sbatch(sub, path)
    (sub.run_dir.logs_dir / "sbatch").mkdir(parents=True, exist_ok=True)
    record = new_submission_record(sub, "sbatch", "sbatch")
    for c in sub.chunks:
        record = record.with_array(RecordedArray(None, c.offset, c.count, c.parallelism,
                                                 spec=c.spec))
    write_record(path, record)
    return path, script


def run_task_from_record(record_file: str | Path, task: int | None = None,
                         offset: int = 0) -> list[int]:
    """What an sbatch array task runs: its shards from the record; requeued on USR2."""
    record = read_record(record_file)
    env = SlurmEnv.from_environ()
    index = task if task is not None else env.array_task_id
    if index is None:
        raise LaunchError("no array task: run this inside a SLURM array task or pass --task N")
    shards = task_items(record.tasks, index, offset)
    if env.in_slurm:
        write_json(started_dir(record_file) / f"{env.task_key}.json",
                   {"task_key": env.task_key, "shards": shards, "host": env.node,
                    "restart": env.restart_count})
    log.info("task %s: shards %s", env.task_key, shards)
    return run_until_stopped(run_recorded_task, record, shards,
                             on_requeue=lambda: requeue_self(RecordedRun.of(record).max_requeues))
