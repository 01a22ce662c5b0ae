"""Which shards a submission runs: an `--array` selection (SHARDS, not array indices) or a list,
less the done ones (and any the caller excludes), grouped `slurm.shards_per_task` to a task and
split into arrays of at most MaxArraySize."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from asrd.launch.errors import LaunchError
from asrd.plan import load_plan
from asrd.rundir import RunDir
from asrd.run_config import OpenRun
from asrd.verify import verify_shards
from hpc import slurm_ctl
from hpc.array_submit import plan_arrays
from hpc.arrays import ArrayChunk, format_array, group, parse_array


@dataclass
class Submission:
    run_dir: RunDir
    cfg: DictConfig  # what the tasks run: frozen <- -c file <- overrides
    force: bool
    shards: list[int]  # selected and not done
    tasks: list[list[int]]
    chunks: list[ArrayChunk]
    max_array_size: int | None
    skipped: dict[str, list[int]] = field(default_factory=dict)  # why -> shards left out

    def chunk_shards(self, chunk: ArrayChunk) -> list[int]:
        return [s for t in self.tasks[chunk.offset:chunk.offset + chunk.count] for s in t]

    def describe(self) -> list[str]:
        lines = [f"{len(self.shards)} shards in {len(self.tasks)} tasks "
                 f"({self.cfg.slurm.shards_per_task} per task) -> {len(self.chunks)} array(s)"
                 + (f", MaxArraySize {self.max_array_size}" if self.max_array_size else "")]
        for why, shards in self.skipped.items():
            if shards:
                lines.append(f"left out ({why}): {format_array(shards)}")
        for i, chunk in enumerate(self.chunks):
            lines.append(f"array {i}: --array={chunk.spec} (tasks {chunk.offset}.."
                         f"{chunk.offset + chunk.count - 1}), shards "
                         f"{format_array(self.chunk_shards(chunk))}")
        return lines


def prepare(run: OpenRun, array: str | None = None, shards: list[int] | None = None,
            parallelism: int | None = None, force: bool = False,
            exclude: dict[str, set[int]] | None = None, dry_run: bool = False) -> Submission:
    """Select shards (an --array string or a list; default all), drop done ones, group, split."""
    rd, cfg = run.run_dir, run.cfg
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
    return Submission(rd, cfg, force, todo, tasks, chunks, max_size, skipped)
