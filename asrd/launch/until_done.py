"""`asrd submit --until-done`: a run that finishes itself through preemption, crashes and
cancellations, with nobody at the keyboard.

After the arrays are queued, a follow-up job (hpc.follow_up) waits for them with
`--dependency=afterany`, then checks: shards done are done; shards SLURM still runs or holds
pending (a requeued task, another submission) are left to their jobs and waited for; the shards
of the chain neither done nor queued are resubmitted as a new round, exactly those, and a new
follow-up waits for that round. It ends when every shard is done, or when a check finds shards
neither done nor queued and `--rounds` resubmissions are spent. Each round and check is recorded
(asrd.launch.rounds) and `asrd status` shows them.

Requeueing clusters (PreemptMode=REQUEUE) rerun a preempted task inside its array, which has not
ended meanwhile, so its shard is never resubmitted twice; cancelling clusters (PreemptMode=CANCEL)
end it, and the follow-up resubmits its shard. A resubmitted shard resumes from its committed
parts, and a shard's claim keeps two tasks off it, so every row is written once.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from asrd import config as config_mod
from asrd.launch.errors import LaunchError
from asrd.launch.rounds import (COMPLETE, ERROR, GAVE_UP, RESUBMITTED, WAITING, Chain, Check,
                                FollowUp, Round, latest_chain, load_chain, new_chain, now)
from asrd.launch.selection import Submission, prepare
from asrd.launch.slurm_params import follow_up_options, job_name, setup_lines
from asrd.launch.slurm_view import ShardJob, slurm_states
from asrd.launch.submit import RecordedRun, submit
from asrd.plan import load_plan
from asrd.rundir import RunDir
from asrd.run_config import OpenRun
from asrd.verify import verify_shards
from hpc import slurm_ctl
from hpc.arrays import format_array
from hpc.follow_up import submit_env, submit_follow_up
from hpc.array_submit import python_executable, read_record
from hpc.slurm_env import SlurmEnv

log = logging.getLogger("asrd.launch.until_done")

DEFAULT_ROUNDS = 3


def _round(number: int, record: Path, sub: Submission) -> Round:
    jobs = tuple(a.job_id for a in read_record(record).arrays if a.job_id is not None)
    return Round(number, str(record), tuple(sub.shards), jobs, now())


def _queue_check(chain: Chain, cfg, after: set[str]) -> Chain:
    """Queue the follow-up job that checks `chain` once the jobs `after` have ended."""
    rd = RunDir(chain.run_dir)
    logs = str(rd.logs_dir / "until-done").replace("%", "%%")
    job = submit_follow_up(
        sorted(after), [python_executable(), "-m", "asrd.cli", "until-done-check",
                        "--chain", str(chain.path)],
        name=f"{job_name(cfg.run.name)}-until-done", output=Path(f"{logs}/%j.log"),
        options=follow_up_options(cfg), setup=setup_lines(cfg))
    return dataclasses.replace(chain, follow_up=FollowUp(job, tuple(sorted(after))))


def start(sub: Submission, record: Path, max_rounds: int) -> Chain:
    """Record round 0 (the arrays just queued) and queue its follow-up job."""
    chain = new_chain(sub.run_dir, sub.shards, max_rounds)
    chain = dataclasses.replace(chain, rounds=(_round(0, record, sub),)).save()
    try:
        return _queue_check(chain, sub.cfg, set(chain.rounds[0].jobs)).save()
    except (slurm_ctl.SlurmError, LaunchError) as e:
        _ended(chain, None, ERROR, f"the follow-up job was not queued: {e}")
        raise LaunchError(f"the arrays are queued, but not the follow-up job that would "
                          f"resubmit what they leave undone: {e}",
                          [f"record: {record}", f"chain: {chain.path}",
                           "`asrd resubmit` submits what is left once they end"]) from None


def _ended(chain: Chain, job: str | None, outcome: str, note: str, done: int = 0,
           missing: tuple[int, ...] = (), queued: tuple[int, ...] = ()) -> Chain:
    check = Check(job, now(), chain.rounds[-1].number if chain.rounds else 0, done, missing,
                  queued, outcome, note)
    return dataclasses.replace(chain, checks=chain.checks + (check,), follow_up=None).save()


def check(chain_path: str | Path) -> Chain:
    """What a follow-up job runs: check the chain's last round and continue it (see the module's
    docstring). Only the follow-up the chain names acts: a stray or duplicate one does nothing."""
    chain = load_chain(chain_path)
    job = SlurmEnv.from_environ().job_id
    if chain.follow_up is None or (job is not None and job != chain.follow_up.job):
        log.warning("chain %s expects no check from job %s (next check: %s): nothing done",
                    chain.path, job, chain.follow_up.job if chain.follow_up else "none")
        return chain
    try:
        with submit_env():  # the arrays and the next follow-up must not inherit this job's
            return _check(chain, job)
    except (LaunchError, slurm_ctl.SlurmError) as e:
        _ended(load_chain(chain.path), job, ERROR, str(e))  # with any round it recorded
        raise


def _check(chain: Chain, job: str | None) -> Chain:
    rd = RunDir(chain.run_dir)
    latest = RecordedRun.of(read_record(chain.rounds[-1].record))  # its tasks' config and force
    cfg = config_mod.load([rd.config_path, *([latest.config] if latest.config else [])])
    done = verify_shards(rd, load_plan(rd)).done
    states = slurm_states(rd, strict=True)
    active = {s for s, j in states.items() if j.label in ("running", "pending")}
    scope = set(chain.shards)
    missing = tuple(sorted(scope - done - active))
    queued = tuple(sorted((scope - done) & active))
    n_done = len(scope & done)
    if not missing and not queued:
        log.info("all %d shards done", len(scope))
        return _ended(chain, job, COMPLETE, "", n_done)
    if missing and chain.resubmissions >= chain.max_rounds:
        note = f"{chain.max_rounds} rounds spent; " + _why(missing, states)
        log.error("giving up: shards %s neither done nor queued: %s", format_array(missing), note)
        return _ended(chain, job, GAVE_UP, note, n_done, missing, queued)
    after = {states[s].job_id for s in queued}
    after_round, outcome = chain.rounds[-1].number, WAITING
    if missing:
        sub = prepare(OpenRun(rd, cfg, {}), shards=list(missing), force=latest.force)
        if sub.tasks:
            record = submit(sub, "until-done")
            chain = dataclasses.replace(
                chain, rounds=chain.rounds + (_round(len(chain.rounds), record, sub),))
            after |= set(chain.rounds[-1].jobs)
            outcome = RESUBMITTED
            log.info("round %d: resubmitted shards %s", len(chain.rounds) - 1,
                     format_array(sub.shards))
    found = Check(job, now(), after_round, n_done, missing, queued, outcome)
    chain = dataclasses.replace(chain, checks=chain.checks + (found,), follow_up=None).save()
    if not after:  # the missing shards were done by the time of the submission
        return _check(chain, job)
    return _queue_check(chain, cfg, after).save()


def _why(shards: tuple[int, ...], states: dict[int, ShardJob]) -> str:
    """How the last tasks of these shards ended, shortly."""
    parts = []
    for s in shards[:5]:
        j = states.get(s)
        task = f"_{j.task_id}" if j and j.task_id is not None else ""
        parts.append(f"shard {s}: job {j.job_id}{task} ended {j.state}, log {j.log}" if j
                     else f"shard {s}: no task SLURM knows of")
    more = f" (and {len(shards) - 5} more)" if len(shards) > 5 else ""
    return "; ".join(parts) + more


def status_lines(rd: RunDir) -> list[str]:
    """The latest chain's rounds and checks, and the state of its next check, for `asrd status`."""
    chain = latest_chain(rd)
    if chain is None:
        return []
    lines = [f"until done: {chain.resubmissions} of at most {chain.max_rounds} rounds after "
             f"the first (record {chain.path})"]
    for r in chain.rounds:
        lines.append(f"  round {r.number}: shards {format_array(r.shards)} in job(s) "
                     f"{', '.join(r.jobs)}")
        for c in (c for c in chain.checks if c.after_round == r.number):
            lines.append(f"  check by job {c.job}: {_describe(c, len(chain.shards))}")
    if chain.follow_up is not None:
        lines.append(f"  next check: job {chain.follow_up.job} {_follow_up_state(chain, rd)}")
    return lines


def _describe(c: Check, total: int) -> str:
    text = f"{c.done} of {total} done"
    if c.missing:
        text += f", neither done nor queued: {format_array(c.missing)}"
    if c.queued:
        text += f", still queued: {format_array(c.queued)}"
    text += f" -> {c.outcome}"
    return text + (f": {c.note}" if c.note else "")


def _follow_up_state(chain: Chain, rd: RunDir) -> str:
    follow = chain.follow_up
    assert follow is not None
    try:
        state = slurm_ctl.job_states([follow.job]).get(follow.job)
    except slurm_ctl.SlurmError as e:
        return f"(SLURM cannot say: {e})"
    after = f"after job(s) {', '.join(follow.after)}"
    if state is None:
        return f"({after}; SLURM no longer lists it)"
    if state.state in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING"):
        return f"{state.state.lower()} ({after})"
    return (f"ended {state.state} without checking (log {rd.logs_dir / 'until-done'}/"
            f"{follow.job}.log): the chain stopped; `asrd resubmit` submits what is left")
