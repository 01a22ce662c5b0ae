"""The SLURM launcher against a real one-node SLURM (slurmctld + slurmd + munge), started for the
session by hpc/scripts/slurm_local.sh, with the real pipeline (faster-whisper on CPU) in the tasks.

Each test cancels the jobs it submitted. The node has 2 CPUs: tasks ask for 1 CPU and 1.5 GB.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from omegaconf import OmegaConf

from asrd import config as config_mod
from asrd.launch.errors import LaunchError
from asrd.launch.slurm_params import parse_extra_sbatch, sbatch_options, sbatch_quote
from asrd.launch.slurm_view import slurm_states
from asrd.rundir import RunDir
from asrd.speech_samples import speak
from hpc import slurm_ctl
from hpc.arrays import format_array
from hpc.array_submit import read_records
from tests.runs import done_marker
from tests.test_tracking import fragments, read_run

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "hpc" / "scripts" / "slurm_local.sh"
# Small tasks for a 2-CPU node. engine.cpus_per_engine=0.5 leaves the decode actor a CPU share
# inside a 1-CPU task.
TASK = ["slurm.mem_gb=1.5", "slurm.cpus_per_task=1", "slurm.time_min=10"]
PLAN = ["engine.cpus_per_engine=0.5", "pipeline.part_rows=1", "engine.batch_size=1",
        "pipeline.items_per_decode_task=1"]


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local cluster, started by the project's script; stopped at the end if it started it."""
    was_up = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0
    subprocess.run(["bash", str(SCRIPT), "start"], check=True, timeout=900)
    out = subprocess.run(["bash", str(SCRIPT), "env"], check=True, capture_output=True, text=True)
    conf = shlex.split(out.stdout.strip().removeprefix("export "))[0].split("=", 1)[1]
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield conf
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old
    if not was_up:
        subprocess.run(["bash", str(SCRIPT), "stop"], check=True, timeout=120)


def queued_jobs() -> list[str]:
    """Every job (array task) in the test cluster's queue, in any state."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return out.split()


def cancel_and_wait(jobs: list[str], what: str) -> None:
    """Cancel and wait until the jobs have left the queue: scancel returns at once, and a task
    still running (or completing) holds the one node's CPUs the next test's tasks wait for."""
    slurm_ctl.cancel(jobs)
    ids = {str(j).split("_")[0] for j in jobs}  # an array's tasks are listed as <id>_<task>
    wait_for(lambda: not any(j.split("_")[0] in ids for j in queued_jobs()), 120,
             f"{what} to leave the queue")


@pytest.fixture
def cancel_after():
    """Job ids (or run directories whose submissions to cancel) that the test leaves behind.
    The test starts on an empty queue (a job an earlier test left running is cancelled, and
    named in the captured output) and its own jobs are gone from the queue when it ends."""
    left = queued_jobs()
    if left:
        print(f"jobs left in the queue by an earlier test, cancelled: {left}")
        cancel_and_wait(left, "jobs left by an earlier test")
    jobs: list[str] = []
    runs: list[Path] = []
    yield jobs, runs
    for run in runs:
        for record in read_records(RunDir(run).submissions_dir):
            jobs += [a.job_id for a in record.arrays if a.job_id]
    if jobs:
        cancel_and_wait(jobs, f"this test's jobs {sorted(set(jobs))}")


def asrd(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "asrd.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"asrd {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, run: Path | None = None,
             every: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            queue = subprocess.run(["squeue", "-r"], capture_output=True, text=True).stdout
            logs = ""
            if run is not None:
                for err in sorted((run / "logs").rglob("*.err"))[-2:]:
                    logs += f"\n--- {err}\n" + err.read_text()[-2000:]
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{queue}{logs}")
        time.sleep(every)


def plan(index: Path, run: Path, shards: int, *extra: str) -> None:
    asrd("plan", f"run.index={index}", f"run.dir={run}", f"run.num_shards={shards}", *PLAN, *extra)


def done(run: Path) -> set[int]:
    return RunDir(run).markers.done_shards()


def parts(run: Path, shard: int) -> int:
    return len(list(RunDir(run).parts_dir(shard).glob("part-*.parquet")))


def first_task_keys(run: Path) -> list[str]:
    return list(read_records(RunDir(run).submissions_dir)[0].arrays[0].task_keys)


def merged_ids(run: Path) -> list[str]:
    files = sorted((run / "merged").glob("*.parquet"))
    return [i for f in files for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()]


def index_ids(index: Path) -> list[str]:
    return pq.read_table(index, columns=["id"]).column("id").to_pylist()


def restarts(task_key: str) -> int:
    out = subprocess.run(["scontrol", "show", "job", "-o", task_key], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split("Restarts=")[1].split()[0])


# --- no cluster needed ----------------------------------------------------------------------------

def test_sbatch_values_are_quoted_and_newlines_refused():
    assert sbatch_quote("debug") == "debug"
    assert sbatch_quote('a b"c\\d') == '"a b\\"c\\\\d"'
    cfg = config_mod.load(None, ["slurm.partition=gpu", "slurm.exclusive=true"])
    cfg.slurm.extra_sbatch = ["#SBATCH --mail-type=END", "--gres gpu:2", "--hint=nomultithread"]
    opts = sbatch_options(cfg)
    assert opts["partition"] == "gpu" and opts["exclusive"] is True
    assert opts["gres"] == "gpu:2" and opts["mail-type"] == "END" and opts["mem"] == "4096M"
    cfg.slurm.partition = "debug\necho injected"
    with pytest.raises(LaunchError, match="newlines"):
        sbatch_options(cfg)
    with pytest.raises(LaunchError, match="long option"):
        parse_extra_sbatch(["-p debug"])
    with pytest.raises(LaunchError, match="asrd sets --comment itself"):
        parse_extra_sbatch(["#SBATCH --comment=mine"])  # status finds pending arrays by it


# --- on the cluster -------------------------------------------------------------------------------

@pytest.mark.slurm
def test_array_of_3_shards_with_parallelism_2(slurm_cluster, corpus_index, tmp_path, cancel_after):
    """More tasks than may run at once (two, then one: each task's Ray start-up is most of its
    time), every row once."""
    run = tmp_path / "run"
    cancel_after[1].append(run)
    plan(corpus_index, run, 3)
    dry = asrd("submit", "--array", "0-2%2", "--dry-run", f"run.dir={run}", *TASK)
    assert "--array=0-2%2" in dry.stdout and "--mem=1536M" in dry.stdout
    assert not RunDir(run).submissions_dir.exists()  # a dry run records nothing

    asrd("submit", "--array", "0-2%2", f"run.dir={run}", *TASK)
    (record,) = read_records(RunDir(run).submissions_dir)
    assert record.tasks == [[s] for s in range(3)]
    (array,) = record.arrays
    assert array.parallelism == 2 and len(array.task_keys) == 3
    most_running = [0]

    def finished() -> bool:
        running = list(slurm_ctl.queue_states([array.job_id]).values()).count("RUNNING")
        most_running[0] = max(most_running[0], running)
        return len(done(run)) == 3

    wait_for(finished, 240, "3 markers", run)
    assert most_running[0] <= 2  # SLURM honoured %2
    status = asrd("status", f"run.dir={run}").stdout
    assert "3 planned, 3 done" in status, status
    asrd("merge", "--preset", "none", f"run.dir={run}")
    ids = merged_ids(run)
    assert sorted(ids) == sorted(index_ids(corpus_index))  # every id, exactly once


@pytest.mark.slurm
def test_cancelled_task_is_resubmitted(slurm_cluster, corpus_index, tmp_path, cancel_after):
    run, release = tmp_path / "run", tmp_path / "release"
    cancel_after[1].append(run)
    # 3 + 3 + 2 rows; each task commits its first row, then its engine holds the next call
    # until `release` exists, so shard 0 cannot finish before it has ended.
    plan(corpus_index, run, 3, *blocking_engine(run, release, 1), "pipeline.part_rows=1")
    asrd("submit", "--array", "0-2%2", f"run.dir={run}", *TASK)
    victim = first_task_keys(run)[0]  # shard 0
    wait_for(lambda: parts(run, 0) >= 1, 120, "shard 0 to commit a part", run)
    subprocess.run(["scancel", victim], check=True)
    # scancel returns before the task gets its signal: release the engines only once shard 0
    # has ended, or it could finish its held row first.
    wait_for(lambda: srun_says(run, victim), 120, "shard 0's task to end", run)
    release.touch()
    wait_for(lambda: done(run) == {1, 2} and label(run, 0) == "cancelled", 120,
             "shards 1, 2 done and shard 0 cancelled", run)
    assert not RunDir(run).markers.is_done(0)
    status = asrd("status", f"run.dir={run}").stdout
    assert "1 cancelled" in status and "0 failed" in status, status

    out = asrd("resubmit", f"run.dir={run}", *TASK).stdout
    assert "--array=0" in out, out
    records = read_records(RunDir(run).submissions_dir)
    assert len(records) == 2 and records[1].tasks == [[0]]  # exactly the shard without marker
    wait_for(lambda: done(run) == {0, 1, 2}, 120, "shard 0 after resubmit", run)
    assert RunDir(run).markers.read(0)["resumed_rows"] == 1  # the committed part was kept
    asrd("merge", "--preset", "none", f"run.dir={run}")
    assert sorted(merged_ids(run)) == sorted(index_ids(corpus_index))
    nothing = asrd("resubmit", f"run.dir={run}", *TASK).stdout
    assert "nothing to submit" in nothing


def label(run: Path, shard: int) -> str | None:
    job = slurm_states(run).get(shard)
    return job.label if job else None


def blocking_engine(run: Path, release: Path, calls: int) -> list[str]:
    """Plan overrides: the fault engine answers `calls` calls of one row each, then holds the
    next until `release` exists; its `blocked` file says when (a condition to wait on, not a
    clock). Finished rows stay in the writer's buffer until the task stops."""
    return ["engine.kind=fault", f"faults.state_dir={run / 'faults'}",
            f"faults.block_after_calls={calls}", f"faults.release_file={release}",
            "engine.calls_in_flight=1", "pipeline.part_rows=1000", "pipeline.part_seconds=1e9"]


def blocked(run: Path) -> bool:
    return (run / "faults" / "blocked").exists()


def task_log(run: Path, key: str) -> str:
    """A submitit task's stderr log (the requeued run appends to it)."""
    log = run / "logs" / "submitit" / key / f"{key}_0_log.err"
    return log.read_text(errors="replace") if log.exists() else ""


def srun_says(run: Path, key: str) -> str:
    """srun's line on how the task's process ended ("Exited with exit code N", or "Killed"
    when SLURM had to SIGKILL it after KillWait), from the task's log."""
    text = task_log(run, key)
    m = re.search(r"task 0: (Exited with exit code \d+|Killed|Terminated)", text)
    return m.group(1) if m else ""


@pytest.mark.slurm
def test_scancel_and_requeue_exit_143_with_finished_rows_committed(slurm_cluster, corpus_index,
                                                                   tmp_path, cancel_after):
    """SLURM's SIGTERM reaches every process of the step (Ray's, W&B's); the task still commits
    the rows it finished and exits 143 by itself, before KillWait's SIGKILL. The engine holds
    its third call, so exactly 2 finished rows are uncommitted when the signal comes. The W&B
    run (offline) ends as preempted with exit code 143 although the signal ended its service;
    the requeued task continues it to exit code 0."""
    runs = {"scancel": tmp_path / "a", "requeue": tmp_path / "b"}
    release = tmp_path / "release"
    # Short: Ray's socket paths must fit in 107 bytes.
    ray_tmp = {how: Path(tempfile.mkdtemp(prefix=f"asrd-{how}-")) for how in runs}
    for how, run in runs.items():
        cancel_after[1].append(run)
        plan(corpus_index, run, 1, *blocking_engine(run, release, 2),
             f"pipeline.ray_tmp={ray_tmp[how]}", "wandb.mode=offline", "wandb.log_every_s=1")
        asrd("submit", f"run.dir={run}", *TASK)
    keys = {how: first_task_keys(run)[0] for how, run in runs.items()}
    for how, run in runs.items():
        wait_for(lambda: blocked(run), 150, f"{how}: the engine to block", run)
        assert parts(run, 0) == 0  # nothing committed before the signal
    subprocess.run(["scancel", keys["scancel"]], check=True)
    subprocess.run(["scontrol", "requeue", keys["requeue"]], check=True)
    for how, run in runs.items():
        wait_for(lambda: srun_says(run, keys[how]), 60, f"{how}: the task's end", run)
        assert srun_says(run, keys[how]) == "Exited with exit code 143", how
        assert len(pq.read_table(RunDir(run).parts_dir(0)).column("row")) == 2, how
        assert not done(run)
        log = task_log(run, keys[how])
        assert "W&B finish" not in log and "Traceback" not in log, log[-3000:]
        first, ending = (read_run(f) for f in fragments(run / "wandb"))
        assert first["run"].run_id == ending["run"].run_id and not first["exit"], how
        assert ending["exit_code"] == 143 and ending["preempting"], how
    assert not list(ray_tmp["scancel"].iterdir())  # its Ray session folder went with it
    release.touch()  # the requeued task runs again, resumes, and finishes
    run = runs["requeue"]
    wait_for(lambda: done(run) == {0}, 150, "the requeued task's marker", run)
    marker = RunDir(run).markers.read(0)
    assert marker["resumed_rows"] == 2 and marker["rows"] == marker["ok"] == 8
    ids = pq.read_table(RunDir(run).shard_file(0), columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == sorted(index_ids(corpus_index))  # no row lost, none twice
    assert restarts(keys["requeue"]) >= 1
    wait_for(lambda: len(fragments(run / "wandb")) == 3 and read_run(
        fragments(run / "wandb")[-1])["exit"], 60, "the requeued task's W&B run to end", run)
    again = read_run(fragments(run / "wandb")[-1])
    assert again["exit_code"] == 0 and again["summary"]["slurm/restart_count"] >= 1
    for folder in ray_tmp.values():
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slurm
def test_preemption_signal_requeues_and_resumes_mid_shard(slurm_cluster, corpus_index, tmp_path,
                                                          cancel_after):
    """The pre-timeout USR2 stops a task mid-shard and requeues it; it runs again and finishes
    the shard from its committed parts, every row exactly once."""
    run, release = tmp_path / "run", tmp_path / "release"
    cancel_after[1].append(run)
    plan(corpus_index, run, 1, *blocking_engine(run, release, 2), "pipeline.part_rows=1")
    asrd("submit", f"run.dir={run}", *TASK)
    key = first_task_keys(run)[0]
    wait_for(lambda: blocked(run), 150, "the engine to block", run)
    assert parts(run, 0) == 2
    subprocess.run(["scancel", "--signal=USR2", key], check=True)
    wait_for(lambda: restarts(key) >= 1, 150, "the task to requeue itself", run)
    release.touch()
    wait_for(lambda: done(run) == {0}, 150, "marker after restart", run)
    marker = RunDir(run).markers.read(0)
    assert marker["resumed_rows"] == 2
    assert marker["rows"] == marker["ok"] + marker["failed"] == 8
    ids = pq.read_table(RunDir(run).shard_file(0), columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == sorted(index_ids(corpus_index))  # no row lost, none twice


@pytest.mark.slurm
def test_more_tasks_than_max_array_size_are_split(slurm_cluster, tmp_path, cancel_after):
    max_size = slurm_ctl.max_array_size()
    n = max_size + 2
    wav = speak("one two three", tmp_path / "a.wav")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"u{i:05d}", "path": str(wav)}) + "\n"
                                for i in range(n)))
    index = tmp_path / "index.parquet"
    asrd("index", str(manifest), "-o", str(index))
    run, release = tmp_path / "run", tmp_path / "release"
    cancel_after[1].append(run)
    plan(index, run, n, *blocking_engine(run, release, 0))  # no task ends before the scancel

    unsplit = subprocess.run(["sbatch", f"--array=0-{n - 1}", "--mem=100M", "--wrap=true"],
                             capture_output=True, text=True)
    assert unsplit.returncode != 0 and "array" in unsplit.stderr.lower()  # what splitting avoids

    half = (n + 1) // 2
    script = asrd("sbatch", "--array", f"0-{n - 1}%2", f"run.dir={run}", *TASK).stdout
    assert f"#SBATCH --array=0-{half - 1}%1\n" in script  # plain sbatch gets the same split
    assert re.search(rf"^#   ASRD_TASK_OFFSET={half} sbatch --array=0-{n - half - 1}%1 "
                     rf"--comment=asrd:\S+-sbatch.json:{half} THIS_SCRIPT$", script, re.M), script

    asrd("submit", "--array", f"0-{n - 1}%2", f"run.dir={run}", *TASK)
    (record,) = [r for r in read_records(RunDir(run).submissions_dir) if r.kind == "slurm"]
    first, second = record.arrays
    assert (first.offset, first.count) == (0, half)
    assert (second.offset, second.count) == (half, n - half)
    assert first.parallelism == second.parallelism == 1  # %2 shared by two arrays
    # Keep each array's first and last task, cancel the rest: the kept ones show the offsets.
    for a in (first, second):
        subprocess.run(["scancel", f"{a.job_id}_[1-{a.count - 2}]"], check=True)
    release.touch()
    keys = slurm_ctl.queue_states([first.job_id, second.job_id])
    assert all(int(k.split("_")[1]) < max_size for k in keys)
    wanted = {0, first.count - 1, first.count, n - 1}
    wait_for(lambda: done(run) == wanted, 150, f"markers of shards {sorted(wanted)}", run)
    jobs = [first.job_id, second.job_id]
    wait_for(lambda: not slurm_ctl.queue_states(jobs), 60, "the kept tasks to end", run)
    assert not {"running", "pending"} & {j.label for j in slurm_states(run).values()}
    out = asrd("resubmit", "--dry-run", f"run.dir={run}", *TASK).stdout
    cancelled = format_array(sorted(set(range(n)) - wanted))  # "1-500,503-1001"
    assert f"--array={cancelled}" in out, out


@pytest.mark.slurm
def test_sbatch_template_with_hostile_run_dir(slurm_cluster, corpus_index, tmp_path, cancel_after):
    hostile = tmp_path / "run dir 'q' \"dq\" $(touch PWNED1) `touch PWNED2` ; & %x"
    cancel_after[1].append(hostile)
    env_value = "$(touch PWNED3) 'x' \"y\""
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "run": {"dir": str(hostile), "index": str(corpus_index), "num_shards": 2},
        "slurm": {"env": {"ASRD_TEST_VALUE": env_value}},
    }))
    release = tmp_path / "release"  # the engines hold their second call until it exists
    asrd("plan", "--config", str(cfg_file), *PLAN, *blocking_engine(hostile, release, 1),
         "pipeline.part_rows=1")
    out = asrd("sbatch", "--config", str(cfg_file), "--array", "0-1%2", *TASK, cwd=tmp_path)
    script = out.stdout
    assert "#SBATCH --array=0-1%2" in script
    exec_line = next(line for line in script.splitlines() if line.startswith("exec "))
    argv = shlex.split(exec_line)
    record = Path(argv[argv.index("--submission") + 1])
    assert record.parent == hostile / "submissions" and record.is_file()
    export = next(line for line in script.splitlines() if "ASRD_TEST_VALUE" in line)
    assert shlex.split(export.removeprefix("export "))[0] == f"ASRD_TEST_VALUE={env_value}"

    job_file = tmp_path / "job.sbatch"
    job_file.write_text(script)
    job = subprocess.run(["sbatch", "--parsable", str(job_file)], cwd=tmp_path, check=True,
                         capture_output=True, text=True).stdout.strip().split(";")[0]
    cancel_after[0].append(job)
    # The pre-timeout USR2 (`--signal=B:USR2@...` in the script) mid-shard: run-task stops,
    # requeues itself, and the same script runs again and resumes.
    wait_for(lambda: parts(hostile, 0) >= 1, 150, "shard 0: 1 part", hostile)
    committed = parts(hostile, 0)
    subprocess.run(["scancel", "--batch", "--signal=USR2", f"{job}_0"], check=True)
    # scancel returns before the signal lands: release the engines only once the task has
    # requeued itself, or its held row could be answered and committed before it stops.
    wait_for(lambda: restarts(f"{job}_0") >= 1, 150, "shard 0 to requeue itself", hostile)
    release.touch()
    wait_for(lambda: done(hostile) == {0, 1}, 150, "2 markers from the sbatch array", hostile)
    assert restarts(f"{job}_0") == 1
    assert RunDir(hostile).markers.read(0)["resumed_rows"] == committed == 1
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))
    logs = sorted(p.name for p in (hostile / "logs" / "sbatch").iterdir())
    assert logs == [f"{job}_0.log", f"{job}_1.log"]  # %A_%a expanded inside the quoted path
    assert set(slurm_states(hostile)) == {0, 1}  # the tasks recorded their SLURM ids
    asrd("merge", "--preset", "none", "--config", str(cfg_file))
    assert sorted(merged_ids(hostile)) == sorted(index_ids(corpus_index))


def test_config_overrides_reach_sbatch_options():
    cfg = config_mod.load(None, ["slurm.account=proj", "slurm.qos=high", "slurm.gpus_per_node=8",
                                 "slurm.constraint=h200", "slurm.time_min=90", "slurm.mem_gb=0.5"])
    opts = sbatch_options(cfg)
    assert opts == {"account": "proj", "qos": "high", "time": 90, "nodes": 1, "cpus-per-task": 2,
                    "mem": "512M", "constraint": "h200", "gpus-per-node": 8}
    assert OmegaConf.select(cfg, "slurm.partition") is None


# --- submissions SLURM refuses, and what status calls each shard (no task starts Ray) ---------

def tiny_index(path: Path, rows: int) -> Path:
    """An index whose rows no task here reads (these tasks never get to the pipeline)."""
    pq.write_table(pa.table({"id": [f"u{i:05d}" for i in range(rows)],
                             "path": [f"/nowhere/{i}.wav" for i in range(rows)],
                             "duration_s": [1.0] * rows}), path)
    return path


def refusing_sbatch(folder: Path, refuse_from: int) -> dict[str, str]:
    """An environment whose `sbatch` is the real one, given a partition SLURM does not have from
    its `refuse_from`-th call on: the controller itself refuses those submissions."""
    folder.mkdir()
    real = shutil.which("sbatch")
    shim = folder / "sbatch"
    shim.write_text(f"""#!/bin/bash
n=$(( $(cat {folder}/calls 2>/dev/null || echo 0) + 1 )); echo $n > {folder}/calls
if [ "$n" -ge {refuse_from} ]; then exec {real} --partition=asrd-no-such-partition "$@"; fi
exec {real} "$@"
""")
    shim.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


def status_of(run: Path) -> str:
    return asrd("status", f"run.dir={run}").stdout


@pytest.mark.slurm
def test_refused_array_leaves_the_queued_ones_on_record(slurm_cluster, tmp_path, cancel_after):
    """The 2nd of 2 arrays is refused by the controller: the 1st stays on record and pending, the
    error says which shards are queued, and resubmit plans only the others."""
    n = slurm_ctl.max_array_size() + 1
    run = tmp_path / "run"
    cancel_after[1].append(run)
    asrd("plan", f"run.index={tiny_index(tmp_path / 'index.parquet', n)}", f"run.dir={run}",
         f"run.num_shards={n}")
    held = ["slurm.extra_sbatch=[--hold]", *TASK]  # queued, never run
    proc = subprocess.run([sys.executable, "-m", "asrd.cli", "submit", f"run.dir={run}", *held],
                          capture_output=True, text=True, timeout=300,
                          env=refusing_sbatch(tmp_path / "shim", refuse_from=2))
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("asrd: error:")]
    assert len(errors) == 1 and "refused array 2 of 2" in errors[0], proc.stderr
    assert "Invalid partition" in errors[0] and "Traceback" not in proc.stderr, proc.stderr
    (record,) = read_records(RunDir(run).submissions_dir)
    (array,) = record.arrays
    queued = format_array(range(array.count))
    assert f"queued: job {array.job_id}, shards {queued}" in proc.stderr, proc.stderr
    assert f"not queued: shards {array.count}-{n - 1}" in proc.stderr, proc.stderr

    status = status_of(run)
    assert f"{array.count} pending" in status and f"{n - array.count} missing" in status
    plan_again = asrd("resubmit", "--dry-run", f"run.dir={run}", *TASK).stdout
    assert f"--array={array.count}-{n - 1}\n" in plan_again, plan_again  # never the queued
    assert f"left out (running or pending in SLURM): {queued}" in plan_again, plan_again

    slurm_ctl.cancel([array.job_id])  # pending: its tasks never start
    wait_for(lambda: f"{array.count} never started" in status_of(run), 300,
             "the cancelled array's tasks as never started", run)
    assert f"--array=0-{n - 1}\n" in asrd("resubmit", "--dry-run", f"run.dir={run}").stdout


@pytest.mark.slurm
def test_status_names_failed_cancelled_never_started_and_sbatch_pending(slurm_cluster, tmp_path,
                                                                        cancel_after):
    run, release = tmp_path / "run", tmp_path / "release"
    cancel_after[1].append(run)
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump({"run": {"dir": str(run), "num_shards": 5,
                                                "index": str(tiny_index(tmp_path / "i.parquet", 5))},
                                        "slurm": {"setup": ["exit 3"]}}))
    asrd("plan", "-c", str(cfg_file))
    # shards 0, 1: tasks that fail at once (their setup exits 3)
    asrd("submit", "-c", str(cfg_file), "--array", "0-1", *TASK)
    job = read_records(RunDir(run).submissions_dir)[0].arrays[0].job_id
    wait_for(lambda: label(run, 0) == label(run, 1) == "failed", 300, "2 failed tasks", run)
    for shard in (0, 1):
        log = run / "logs" / "submitit" / f"{job}_{shard}" / f"{job}_{shard}_0_log.err"
        assert log.is_file()
        assert f"failed: shard {shard}: job {job}, task {shard} ended FAILED; log {log}" \
            in status_of(run)
    # shard 2: a task that runs until `release` exists, cancelled while running
    cfg_file.write_text(cfg_file.read_text().replace(
        "exit 3", f"while [ ! -e {release} ]; do sleep 0.1; done; exit 3"))
    asrd("submit", "-c", str(cfg_file), "--array", "2", *TASK)
    wait_for(lambda: label(run, 2) == "running", 300, "shard 2 running", run)
    (key,) = read_records(RunDir(run).submissions_dir)[1].arrays[0].task_keys
    subprocess.run(["scancel", key], check=True)
    wait_for(lambda: label(run, 2) == "cancelled", 300, "shard 2 cancelled", run)
    # shards 3, 4: a plain sbatch array, pending (held), then cancelled before it ran
    script = asrd("sbatch", "-c", str(cfg_file), "--array", "3-4", *TASK).stdout
    (tmp_path / "job.sbatch").write_text(script)
    sbatch_job = subprocess.run(["sbatch", "--parsable", "--hold", str(tmp_path / "job.sbatch")],
                                check=True, capture_output=True, text=True).stdout.strip()
    cancel_after[0].append(sbatch_job)
    assert label(run, 3) == label(run, 4) == "pending"
    status = status_of(run)
    assert "2 pending" in status and "pending: 3-4" in status, status
    subprocess.run(["scancel", sbatch_job], check=True)
    wait_for(lambda: label(run, 3) == label(run, 4) == "never started", 300,
             "shards 3, 4 never started", run)
    status = status_of(run)
    assert ("5 planned, 0 done, 0 running, 0 pending, 2 failed, 1 cancelled, 2 never started, "
            "0 missing") in status, status


@pytest.mark.slurm
def test_forecast_runs_at_the_slots_the_partition_holds(slurm_cluster, tmp_path):
    """The one node has 2 CPUs: an array of 1-CPU tasks at %3 runs 2 at a time, and tasks that
    ask for 60% of its memory one at a time; the forecast uses what sinfo says, not the %3."""
    from asrd.forecast import array_wall_clock
    from asrd.plan import make_plan
    from tests.conftest import make_cfg

    index = tiny_index(tmp_path / "index.parquet", 30)
    earlier = []  # rates of tasks of 1 and of 3 CPUs
    for cpus in (1, 3):
        rd, _ = make_plan(make_cfg(index, tmp_path / f"earlier{cpus}", "run.num_shards=3",
                                   f"slurm.cpus_per_task={cpus}"))
        rd.markers.write(0, done_marker(0, 10, wall_s=10.0, task_startup_s=5.0).to_json())
        earlier += ["--rates-from", str(rd.path)]
    node_mb = int(subprocess.run(["sinfo", "-h", "-N", "-o", "%m"], capture_output=True,
                                 text=True, check=True).stdout.split()[0])
    common = ["run.num_shards=3", "slurm.cpus_per_task=1", "slurm.array_parallelism=3"]
    out = asrd("plan", f"run.index={index}", f"run.dir={tmp_path / 'cpus'}", *common,
               *earlier).stdout
    fc = json.loads((tmp_path / "cpus" / "forecast.json").read_text())
    assert fc["parallelism"] == 2, out
    walls = fc["task_wall_s"]
    assert fc["wall_clock_s"] == pytest.approx(array_wall_clock(walls, 2))  # the third waits
    assert fc["wall_clock_s"] > 1.9 * max(walls) > array_wall_clock(walls, 3)
    assert ("wall-clock at 2 tasks at once" in out and "1 usable nodes run 2 such tasks at once "
            "(by CPUs), fewer than slurm.array_parallelism=3" in out), out
    mem_gb = round(0.6 * node_mb / 1024, 1)
    out = asrd("plan", f"run.index={index}", f"run.dir={tmp_path / 'mem'}", *common,
               f"slurm.mem_gb={mem_gb}", *earlier).stdout
    assert json.loads((tmp_path / "mem" / "forecast.json").read_text())["parallelism"] == 1, out
    assert "run 1 such tasks at once (by memory)" in out, out
    out = asrd("plan", f"run.index={index}", f"run.dir={tmp_path / 'big'}", *common,
               "slurm.cpus_per_task=3", *earlier).stdout
    assert "NO NODE FITS a task (3 CPUs" in out, out
