"""`asrd status`: which shards are done, running, pending, failed, cancelled, never started or
missing, from one scan of the markers plus SLURM's view of the recorded submissions
(asrd.launch.slurm_view says what each SLURM label means; "missing": no marker and no task SLURM
knows of), and the rounds and checks of the latest `asrd submit --until-done`.

A marker counts only if it still holds (asrd.verify, quick depth: one scan of the shard files'
sizes and mtimes); one that does not is invalidated and listed with its reason. A shard that SLURM
does not know of but whose claim a live process on this host holds (`asrd run` without SLURM) is
"running", with that process's pid.

Status reads the state whatever the config says, so it is never refused for config drift; it
names the output keys that differ from the planned run instead, as the commands that would refuse
them do."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from asrd.config import output_diff
from asrd.done_marker import DoneMarker

from asrd.launch.slurm_view import ShardJob, slurm_states
from asrd.launch.until_done import status_lines as until_done_lines
from asrd.plan import load_plan
from asrd.plan_record import Plan
from asrd.rundir import RunDir
from asrd.verify import verify_shards
from hpc.arrays import format_array


@dataclass
class RunStatus:
    planned: int
    states: dict[int, str]  # shard -> done | running | pending | failed | cancelled |
    #                         never started | missing
    jobs: dict[int, ShardJob] = field(default_factory=dict)  # shard -> its SLURM task, if any
    rows_ok: int = 0
    rows_failed: int = 0
    audio_hours_done: float = 0.0
    audio_hours_planned: float = 0.0
    wall_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    invalid: dict[int, str] = field(default_factory=dict)  # markers that failed verification
    local: dict[int, int] = field(default_factory=dict)  # running here, outside SLURM: shard -> pid
    markers: dict[int, DoneMarker] = field(default_factory=dict)  # the done shards' markers (read once)
    until_done: list[str] = field(default_factory=list)  # the `submit --until-done` rounds

    def count(self, state: str) -> int:
        return sum(1 for v in self.states.values() if v == state)


def run_status(run_dir: str | Path | RunDir, slurm: bool = True,
               plan: Plan | None = None) -> RunStatus:
    """The run's state; `plan`: the run's plan where the caller has loaded it already."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    plan = load_plan(rd) if plan is None else plan
    verdicts = verify_shards(rd, plan)
    states = {s: "missing" for s in range(plan.num_shards)}
    jobs = {s: j for s, j in slurm_states(rd).items() if s in states} if slurm else {}
    states.update({s: j.label for s, j in jobs.items()})
    st = RunStatus(plan.num_shards, states, jobs=jobs, invalid=verdicts.bad,
                   markers=verdicts.good,
                   audio_hours_planned=sum(s.audio_s for s in plan.shards) / 3600,
                   until_done=until_done_lines(rd) if slurm else [])
    for s, holder in rd.markers.holders().items():
        if states.get(s) == "missing" and s not in verdicts.good and holder.alive_here():
            states[s] = "running"
            st.local[s] = holder.pid
    for s, m in verdicts.good.items():
        if s in states:
            states[s] = "done"
            st.rows_ok += m.ok
            st.rows_failed += m.failed
            st.audio_hours_done += m.audio_s / 3600
            st.wall_s += m.wall_s
            for reason, n in m.errors.items():
                st.errors[reason] = st.errors.get(reason, 0) + n
    return st


def format_status(st: RunStatus, per_shard: bool = False) -> str:
    order = ("done", "running", "pending", "failed", "cancelled", "never started", "missing")
    lines = [f"shards: {st.planned} planned, " + ", ".join(f"{st.count(k)} {k}" for k in order),
             f"rows: {st.rows_ok} ok, {st.rows_failed} failed",
             f"audio: {st.audio_hours_done:.2f} of {st.audio_hours_planned:.2f} h done"]
    if st.wall_s:
        lines.append(f"throughput: {st.audio_hours_done * 3600 / st.wall_s:.1f} audio s per task-s")
    if st.errors:
        lines.append("failures: " + ", ".join(f"{k}={v}" for k, v in sorted(st.errors.items())))
    if st.invalid:
        lines.append(f"{len(st.invalid)} markers failed verification; those shards are no longer "
                     "done (`asrd resubmit` or `asrd run` redoes them):")
        lines += [f"  shard {s}: {why}" for s, why in sorted(st.invalid.items())[:20]]
    if per_shard:
        lines += [f"  shard {s:6d}  {v}" + (f" (local pid {st.local[s]})" if s in st.local else "")
                  for s, v in sorted(st.states.items())]
    else:
        for k in ("running", "pending", "cancelled", "never started", "missing"):
            shards = sorted(s for s, v in st.states.items() if v == k)
            if shards:
                lines.append(f"{k}: {format_array(shards)}")
        if st.local:
            lines.append("running here (outside SLURM): " + ", ".join(
                f"shard {s} (local pid {pid})" for s, pid in sorted(st.local.items())[:50]))
    for s in sorted(s for s, v in st.states.items() if v == "failed"):
        j = st.jobs[s]
        task = f", task {j.task_id}" if j.task_id is not None else ""
        lines.append(f"failed: shard {s}: job {j.job_id}{task} ended {j.state}; log {j.log}")
    return "\n".join(lines + st.until_done)


def drift_lines(rd: RunDir, cfg: DictConfig) -> list[str]:
    """The output keys of `cfg` (the run's file and overrides) that differ from the planned run,
    each with both values: what submit, resubmit, run-shard and merge would refuse."""
    frozen = rd.frozen_config()
    keys = output_diff(frozen, cfg)
    if not keys:
        return []
    lines = [f"config drift: {len(keys)} output keys differ from the planned run; submit, "
             "resubmit, run-shard and merge refuse them (put them back, or plan another run.dir):"]
    lines += [f"  {k}: planned {OmegaConf.select(frozen, k)!r}, now {OmegaConf.select(cfg, k)!r}"
              for k in keys[:20]]
    return lines
