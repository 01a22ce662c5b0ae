"""`asrd submit --until-done`: a run finishes itself through killed, cancelled and requeued
tasks, on the real one-node SLURM (hpc/scripts/slurm_local.sh), with no command after the first
submit. The tests wait on conditions only (the chain's record, markers, the fault hooks' files),
each under a generous bound.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from asrd.launch.rounds import (COMPLETE, GAVE_UP, WAITING, Chain, Check, FollowUp, Round,
                                load_chain, new_chain)
from asrd.launch.slurm_params import follow_up_options
from asrd import config as config_mod
from asrd.launch.errors import LaunchError
from asrd.rundir import RunDir
from asrd.testing.faults import read_events
from hpc.follow_up import follow_up_script, submit_env
from hpc.array_submit import read_records
from hpc.arrays import format_array
from tests.test_slurm import (  # noqa: F401 (cancel_after, slurm_cluster: fixtures)
    TASK, asrd, blocking_engine, cancel_after, cancel_and_wait, done, first_task_keys, index_ids,
    merged_ids, parts, plan, restarts, slurm_cluster, srun_says, tiny_index, wait_for)

CHAIN_S = 900  # the bound on a whole chain: rounds of tasks that each start Ray on 2 CPUs


@pytest.fixture
def cancel_follow_ups():
    """Run directories whose queued follow-up jobs the test leaves behind."""
    runs: list[Path] = []
    yield runs
    jobs = []
    for run in runs:
        for path in (run / "until-done").glob("*.json"):
            chain = load_chain(path)
            jobs += [chain.follow_up.job] if chain.follow_up else []
    if jobs:
        cancel_and_wait(jobs, f"follow-up jobs {jobs}")


def submit_until_done(run: Path, *args: str) -> Path:
    out = asrd("submit", "--until-done", *args, f"run.dir={run}", *TASK).stdout
    assert re.search(r"^until done: follow-up job \d+ checks once job\(s\) \d+ end", out, re.M), out
    return Path(re.search(r"^chain: (.+)$", out, re.M).group(1))


def chain_ended(path: Path) -> bool:
    return load_chain(path).ended is not None


def merged_once(run: Path, index: Path) -> None:
    asrd("merge", "--preset", "none", f"run.dir={run}")
    assert sorted(merged_ids(run)) == sorted(index_ids(index))  # every id, exactly once


# --- no cluster needed ----------------------------------------------------------------------------

def test_chain_record_reads_back_as_written(tmp_path):
    rd = RunDir(tmp_path / "run")
    chain = new_chain(rd, [0, 1, 2], 2)
    chain = Chain(chain.path, chain.run_dir, chain.shards, 2, chain.created,
                  rounds=(Round(0, "r0.json", (0, 1, 2), ("11", "12"), "t0"),
                          Round(1, "r1.json", (2,), ("14",), "t1")),
                  checks=(Check("13", "t1", 0, 2, (2,), (), "resubmitted"),
                          Check("15", "t2", 1, 2, (), (2,), WAITING)),
                  follow_up=FollowUp("16", ("14",))).save()
    assert chain.path.parent == rd.path / "until-done"
    assert load_chain(chain.path) == chain
    assert chain.resubmissions == 1 and chain.ended is None
    assert json.loads(chain.path.read_text())["follow_up"] == {"job": "16", "after": ["14"]}


def test_follow_up_job_options_script_and_environment(monkeypatch):
    cfg = config_mod.load(None, ["slurm.partition=gpu", "slurm.account=proj", "slurm.gpus_per_node=8",
                                 "slurm.mem_gb=400"])
    assert follow_up_options(cfg) == ["--partition=gpu", "--account=proj", "--cpus-per-task=1",
                                      "--mem=1024M", "--time=30"]  # none of the tasks' GPUs
    cfg.slurm.follow_up_sbatch = ["--partition=cpu", "#SBATCH --time 10"]
    assert follow_up_options(cfg)[:1] == ["--partition=cpu"] and "--time=10" in follow_up_options(cfg)
    cfg.slurm.follow_up_sbatch = ["--dependency=afterok:1"]
    with pytest.raises(LaunchError, match="sets the follow-up job's --dependency itself"):
        follow_up_options(cfg)
    script = follow_up_script(["/venv/bin/python", "-m", "asrd.cli", "until-done-check",
                               "--chain", "/runs/a b/$(x).json"], ["export A=1"])
    assert script.splitlines()[2:] == [
        "export A=1", "exec /venv/bin/python -m asrd.cli until-done-check --chain "
        "'/runs/a b/$(x).json'"]
    monkeypatch.setenv("SLURM_CONF", "/etc/x/slurm.conf")
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "100")
    with submit_env():  # what the follow-up's own submissions run in
        assert "SLURM_JOB_ID" not in os.environ and "SLURM_MEM_PER_NODE" not in os.environ
        assert os.environ["SLURM_CONF"] == "/etc/x/slurm.conf"
    assert os.environ["SLURM_JOB_ID"] == "7"


def test_until_done_refuses_what_it_cannot_do(tmp_path):
    run = tmp_path / "run"
    asrd("plan", f"run.index={tiny_index(tmp_path / 'i.parquet', 2)}", f"run.dir={run}",
         "run.num_shards=2")
    for args, message in (
            (["--rounds", "2"], "--rounds is the number of resubmissions of --until-done"),
            (["--until-done", "--rounds", "-1"], "--rounds -1: must be 0 or more"),
            (["--until-done", "slurm.executor=local"], "--until-done needs SLURM")):
        proc = asrd("submit", *args, f"run.dir={run}", check=False)
        assert proc.returncode == 2 and proc.stderr.startswith(f"asrd: error: {message}"), \
            proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (run / "submissions").exists() and not (run / "until-done").exists()


# --- on the cluster -------------------------------------------------------------------------------

@pytest.mark.slurm
def test_tasks_killed_by_a_fault_hook_are_resubmitted_until_done(
        slurm_cluster, corpus_index, tmp_path, cancel_after, cancel_follow_ups):
    """4 shards of 2 rows; the first 2 tasks to commit a part SIGKILL themselves there (as a
    node lost mid-shard). The follow-up resubmits exactly their shards, which resume from the
    committed part; the chain ends complete and every row is merged once."""
    run, state = tmp_path / "run", tmp_path / "faults"
    cancel_after[1].append(run)
    cancel_follow_ups.append(run)
    plan(corpus_index, run, 4, "engine.kind=fault", f"faults.state_dir={state}",
         "faults.kill_at=task.part_committed", "faults.kill_times=2", "audio.pack.enabled=false")
    chain_path = submit_until_done(run, "--rounds", "2")
    wait_for(lambda: chain_ended(chain_path), CHAIN_S, "the chain to end", run, every=1)
    chain = load_chain(chain_path)
    killed = tuple(sorted(e["shard"] for e in read_events(state, "points")))
    assert len(killed) == 2
    assert [r.shards for r in chain.rounds] == [(0, 1, 2, 3), killed]  # exactly those again
    assert [(c.after_round, c.missing, c.outcome) for c in chain.checks] == [
        (0, killed, "resubmitted"), (1, (), COMPLETE)]
    assert chain.follow_up is None and done(run) == {0, 1, 2, 3}
    for s in killed:
        assert RunDir(run).markers.read(s)["resumed_rows"] == 1  # the part before the kill
    status = asrd("status", f"run.dir={run}").stdout
    assert "4 planned, 4 done" in status and "until done: 1 of at most 2 rounds" in status, status
    first, second = chain.checks
    assert (f"  check by job {second.job}: 4 of 4 done -> complete" in status
            and f"  round 1: shards {format_array(killed)} in job(s) {chain.rounds[1].jobs[0]}"
            in status), status
    merged_once(run, corpus_index)


@pytest.mark.slurm
def test_scancelled_task_is_resubmitted_and_requeued_one_is_left_to_slurm(
        slurm_cluster, corpus_index, tmp_path, cancel_after, cancel_follow_ups):
    """Shard 0's task is cancelled mid-shard (what PreemptMode=CANCEL does), shard 1's requeued
    (what PreemptMode=REQUEUE does). The follow-up waits for the requeued task to run again and
    resubmits only shard 0; every shard ends done, every row once."""
    run, release = tmp_path / "run", tmp_path / "release"
    cancel_after[1].append(run)
    cancel_follow_ups.append(run)
    # Each task commits its first row, then its engine holds the next call until `release`.
    plan(corpus_index, run, 3, *blocking_engine(run, release, 1), "pipeline.part_rows=1")
    chain_path = submit_until_done(run, "--array", "0-2%2")
    cancelled, requeued, _ = first_task_keys(run)
    wait_for(lambda: parts(run, 0) >= 1 and parts(run, 1) >= 1, 300,
             "shards 0 and 1 to commit a part", run)
    subprocess.run(["scancel", cancelled], check=True)
    subprocess.run(["scontrol", "requeue", requeued], check=True)
    # Release the engines only once both have stopped, or they could finish their held rows.
    wait_for(lambda: srun_says(run, cancelled) and srun_says(run, requeued), 120,
             "both tasks to stop", run)
    release.touch()
    wait_for(lambda: chain_ended(chain_path), CHAIN_S, "the chain to end", run, every=1)
    chain = load_chain(chain_path)
    assert [r.shards for r in chain.rounds] == [(0, 1, 2), (0,)]
    assert chain.checks[-1].outcome == COMPLETE and done(run) == {0, 1, 2}
    assert restarts(requeued) >= 1  # shard 1 was finished by its own requeued task
    assert RunDir(run).markers.read(0)["resumed_rows"] == 1
    assert RunDir(run).markers.read(1)["resumed_rows"] == 1
    merged_once(run, corpus_index)


@pytest.mark.slurm
def test_chain_gives_up_after_its_rounds_and_says_why(slurm_cluster, tmp_path, cancel_after,
                                                      cancel_follow_ups):
    """Tasks that always fail (their setup exits 3 in an array task; the follow-up job runs the same
    setup lines and goes on): round 0 and `--rounds 1` more, then the
    chain gives up, naming the failed task's log; nothing is left queued."""
    run = tmp_path / "run"
    cancel_after[1].append(run)
    cancel_follow_ups.append(run)
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump({"run": {"dir": str(run), "num_shards": 2,
                                                "index": str(tiny_index(tmp_path / "i.parquet", 2))},
                                        "slurm": {"setup": ['[ -z "$SLURM_ARRAY_TASK_ID" ] || exit 3']}}))
    asrd("plan", "-c", str(cfg_file))
    out = asrd("submit", "-c", str(cfg_file), "--until-done", "--rounds", "1", *TASK).stdout
    chain_path = Path(re.search(r"^chain: (.+)$", out, re.M).group(1))
    wait_for(lambda: chain_ended(chain_path), CHAIN_S, "the chain to end", run, every=1)
    chain = load_chain(chain_path)
    assert [r.shards for r in chain.rounds] == [(0, 1), (0, 1)]
    last = chain.checks[-1]
    assert (last.outcome, last.missing, last.done) == (GAVE_UP, (0, 1), 0)
    job = chain.rounds[1].jobs[0]
    assert f"shard 0: job {job}_0 ended FAILED, log " in last.note, last.note
    assert len(read_records(RunDir(run).submissions_dir)) == 2  # no third submission
    status = asrd("status", f"run.dir={run}").stdout
    assert f"-> gave up: 1 rounds spent; shard 0: job {job}_0 ended FAILED" in status, status
    assert "next check" not in status
