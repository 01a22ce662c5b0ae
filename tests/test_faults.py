"""The fault paths, driven by the fault hooks (`engine.kind=fault`, `faults.*`), never by clocks.

Every wait below is on a condition (a file the fault engine writes when it blocks, a process's
exit); no test sleeps and then acts, so each holds on a machine of any speed. The fault engine
without an inner engine answers each segment with "<row id> <seconds> seconds", so a row that
got another row's text shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from asrd.plan import make_plan
from asrd.runtime.task import run_task
from asrd.status import format_status, run_status
from asrd.testing.faults import read_events
from hpc.process_ref import ProcessRef
from hpc.ray_reaper import holders, reap, sweep
from tests.conftest import make_cfg
from tests.runs import (assert_exactly_once, cli_args, marker, part_rows, run_here, running,
                        shard_rows, wait_until)

ROWS = 8
ONE_ROW_PER_CALL = ["engine.batch_size=1", "engine.calls_in_flight=1",
                    "pipeline.items_per_decode_task=1"]
# The frozen config keeps the hooks of the run that planned; a resume turns the block off.
NO_BLOCK = ["faults.block_after_calls=-1", *ONE_ROW_PER_CALL]


def fault_args(state: Path, *extra: str) -> list[str]:
    """The fault engine, one clip per input (packing has its own tests: tests/test_pack.py)."""
    return ["engine.kind=fault", f"faults.state_dir={state}", "run.num_shards=1",
            "audio.pack.enabled=false", *extra]


def assert_each_row_once_with_its_own_text(run_dir: Path) -> list[dict]:
    assert_exactly_once(run_dir, ROWS)
    rows = shard_rows(run_dir)
    for r in rows:
        if r["error"] is None:
            assert r["text"].startswith(f"{r['id']} "), r  # its own segment's answer
    return rows


@contextlib.contextmanager
def blocked_run(index: Path, run_dir: Path, state: Path, calls: int,
                *extra: str) -> Iterator[subprocess.Popen]:
    """`asrd run` whose engine answers `calls` one-segment calls, then blocks (never released);
    yields once it is blocked. With one call in flight the driver sends the next call only
    after it has handed the last answer's row to the writer, so exactly `calls` rows are
    finished at that point."""
    args = cli_args(index, run_dir, *fault_args(
        state, f"faults.block_after_calls={calls}", f"faults.release_file={state / 'never'}",
        *ONE_ROW_PER_CALL, *extra))
    log = state.with_suffix(".log")
    with running(args, log) as proc:
        wait_until(lambda: (state / "blocked").exists(), proc, "the engine blocked", log)
        yield proc


def test_sigterm_commits_exactly_the_finished_rows_and_exits_143(corpus_index, tmp_path):
    run_dir, state = tmp_path / "run", tmp_path / "faults"
    # Parts only on demand: finished rows stay in the writer's buffer until the signal.
    ray_tmp = Path(tempfile.mkdtemp(prefix="asrd-rt-"))  # short: Ray's socket paths must fit
    with blocked_run(corpus_index, run_dir, state, 3, "pipeline.part_rows=1000",
                     "pipeline.part_seconds=1e9", f"pipeline.ray_tmp={ray_tmp}") as proc:
        assert part_rows(run_dir) == []  # nothing committed before the signal
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 143
    assert len(part_rows(run_dir)) == 3  # the finished rows, committed on SIGTERM
    assert not (run_dir / "done").exists() or not list((run_dir / "done").iterdir())
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]
    assert not list(ray_tmp.iterdir())  # the task's Ray session folder went with it
    ray_tmp.rmdir()

    run_here(cli_args(corpus_index, run_dir, *fault_args(tmp_path / "faults2", *NO_BLOCK)))
    assert marker(run_dir)["resumed_rows"] == 3
    assert_each_row_once_with_its_own_text(run_dir)


def test_sigkill_at_chosen_points_resumes_exactly_once(corpus_index, tmp_path):
    """kill -9 of the whole task (Ray included) after 2 rows, then after 3 more, a part per row;
    each resume keeps what was committed and the final shard holds every row once."""
    run_dir = tmp_path / "run"
    committed = 0
    for n, calls in enumerate((2, 3)):
        state = tmp_path / f"faults{n}"
        with blocked_run(corpus_index, run_dir, state, calls, "pipeline.part_rows=1") as proc:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        committed += calls
        assert sorted(set(part_rows(run_dir))) == sorted(part_rows(run_dir))  # none twice
        assert len(part_rows(run_dir)) == committed  # the earlier parts plus this run's
        assert not (run_dir / "done" / "shard-000000.json").exists()
    run_here(cli_args(corpus_index, run_dir, *fault_args(tmp_path / "last", *NO_BLOCK)))
    assert marker(run_dir)["resumed_rows"] == 5
    assert_each_row_once_with_its_own_text(run_dir)


def test_kill_hook_at_a_part_commit_kills_only_its_first_arrivals(corpus_index, tmp_path):
    """`faults.kill_at=task.part_committed` with `kill_times=1`: the task SIGKILLs itself right
    after its first part is durable; the same command again (same hooks) is not killed, resumes
    from that part and finishes the shard, every row once."""
    run_dir, state = tmp_path / "run", tmp_path / "faults"
    args = cli_args(corpus_index, run_dir, *fault_args(
        state, "faults.kill_at=task.part_committed", "faults.kill_times=1",
        "pipeline.part_rows=2", *ONE_ROW_PER_CALL))
    with running(args, tmp_path / "first.log") as proc:
        assert proc.wait(timeout=600) == -signal.SIGKILL
    assert len(part_rows(run_dir)) == 2 and not (run_dir / "done").exists()
    kills = read_events(state, "points")
    assert [(e["point"], e["outcome"], e["shard"]) for e in kills] == [
        ("task.part_committed", "kill", 0)]
    subprocess.run(args, check=True, capture_output=True, timeout=600)
    assert read_events(state, "points") == kills  # its one kill was spent
    assert marker(run_dir)["resumed_rows"] == 2
    assert_each_row_once_with_its_own_text(run_dir)


def test_decode_that_kills_its_actor_every_time_costs_only_its_row(corpus_index, tmp_path):
    state = tmp_path / "faults"
    cfg = make_cfg(corpus_index, tmp_path / "run", *fault_args(
        state, "faults.decode_exit_ids=[utt001.flac]", "pipeline.items_per_decode_task=4",
        "pipeline.decode_retries=2"))
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0]
    rows = {r["id"]: r for r in assert_each_row_once_with_its_own_text(rd.path)}
    assert rows["utt001.flac"]["error"].startswith("decode worker died: ")
    # Its chunk-mates died with it (a chunk of 4) and were retried one by one: all ok.
    assert [i for i, r in rows.items() if r["error"]] == ["utt001.flac"]
    # Its first death took its chunk-mates (and any call queued behind it) along: those were
    # decoded again one at a time, alone; there it died on its own 1 + 2 retries more times.
    exits = read_events(state, "decode-exits")
    assert [e["id"] for e in exits] == ["utt001.flac"] * 4
    assert len({e["pid"] for e in exits}) == 4  # each time a new (restarted) actor process


def test_engine_error_on_one_segment_splits_the_batch_down_to_it(corpus_index, tmp_path):
    state = tmp_path / "faults"
    cfg = make_cfg(corpus_index, tmp_path / "run", *fault_args(
        state, "faults.fail_ids=[utt005.wav]", "engine.batch_size=8", "engine.calls_in_flight=1",
        "pipeline.items_per_decode_task=8", "pipeline.engine_retries=2"))
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0]
    rows = {r["id"]: r for r in assert_each_row_once_with_its_own_text(rd.path)}
    assert rows["utt005.wav"]["error"] == ("engine error: InjectedFault: injected engine "
                                           "failure on row utt005.wav")
    assert sum(r["error"] is None for r in rows.values()) == ROWS - 1
    calls = read_events(state, "engine-calls")
    raised = [len(c["ids"]) for c in calls if c["outcome"] == "raised"]
    assert raised == [8, 4, 2, 1, 1, 1]  # halves down to the segment, then 2 retries of it
    answered = sorted(i for c in calls if c["outcome"] == "ok" for i in c["ids"])
    assert answered == sorted(i for i in rows if i != "utt005.wav")  # each other row once
    assert sorted(len(c["ids"]) for c in calls if c["outcome"] == "ok") == [1, 2, 4]


def test_engine_actor_that_dies_is_restarted_and_its_call_retried(corpus_index, tmp_path):
    state = tmp_path / "faults"
    cfg = make_cfg(corpus_index, tmp_path / "run", *fault_args(
        state, "faults.exit_after_calls=2", "engine.batch_size=2", "engine.calls_in_flight=1",
        "pipeline.items_per_decode_task=2"))
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0]
    rows = assert_each_row_once_with_its_own_text(rd.path)
    assert all(r["error"] is None for r in rows)
    calls = read_events(state, "engine-calls")
    (died,) = [c for c in calls if c["outcome"] == "exit"]
    assert died["call"] == 3
    after = [c for c in calls if c["pid"] != died["pid"]]
    assert after and set(died["ids"]) <= {i for c in after for i in c["ids"]}  # retried there


@pytest.mark.parametrize("hook", ["faults.raise_on_calls=[1]", "faults.call_delay_s=0.01"])
def test_other_hooks_keep_every_row(corpus_index, tmp_path, hook):
    """A call that raises once is retried; a slow engine only takes longer."""
    cfg = make_cfg(corpus_index, tmp_path / "run", *fault_args(tmp_path / "f", hook))
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0]
    assert all(r["error"] is None for r in assert_each_row_once_with_its_own_text(rd.path))


def test_a_task_killed_alone_takes_its_ray_processes_and_folder_along(corpus_index, tmp_path):
    """kill -9 of the task process only (not its group): while it ran, `asrd status` showed its
    shard running here with its pid; after, its reaper kills the Ray processes it left (Ray's
    agents outlive their raylet otherwise) and removes its Ray folder, and status says missing."""
    run_dir, state = tmp_path / "run", tmp_path / "faults"
    ray_tmp = Path(tempfile.mkdtemp(prefix="asrd-rt-"))  # short: Ray's socket paths must fit
    with blocked_run(corpus_index, run_dir, state, 1, f"pipeline.ray_tmp={ray_tmp}") as proc:
        (folder,) = ray_tmp.glob("ray-*")
        assert holders(folder)  # Ray's processes keep their logs open there
        st = run_status(str(run_dir))
        assert st.states == {0: "running"} and st.local == {0: proc.pid}
        assert f"shard 0 (local pid {proc.pid})" in format_status(st)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        try:
            for _ in range(1200):  # a bound for a broken reaper, not a clock the test relies on
                if not folder.exists() and not holders(folder):
                    break
                time.sleep(0.05)
            assert not holders(folder) and not folder.exists()
        finally:
            reap(folder)  # whatever a failing run left
    assert run_status(str(run_dir)).states == {0: "missing"}
    ray_tmp.rmdir()


def test_an_owner_stays_alive_when_the_wall_clock_steps():
    """A record's start time read back after the clock stepped (a VM paused or moved) no longer
    matches the wall-clock time psutil gives: the owner is still known alive by its start in
    ticks since boot, and a process that started at another tick is not it."""
    me = ProcessRef.me()
    assert me.ticks is not None
    stepped = ProcessRef.from_json({**me.to_json(), "started": me.started - 5.0})
    assert stepped.alive_here()
    assert not ProcessRef.from_json({**me.to_json(), "ticks": me.ticks + 1}).alive_here()


def test_the_next_task_sweeps_ray_folders_whose_owner_died_with_its_reaper(tmp_path):
    """A whole job step killed (task and reaper alike) leaves its Ray folder: a later sweep on the
    node kills what still holds files there and removes it; a live owner's folder stays."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone, live = tmp_path / "ray-gone", tmp_path / "ray-live"
    for folder, ref in ((gone, ProcessRef(socket.gethostname(), dead.pid, 0.0)),
                        (live, ProcessRef.me())):
        folder.mkdir()
        (folder / "owner.json").write_text(json.dumps(ref.to_json()))
    holder = subprocess.Popen([sys.executable, "-c", "import sys; f = open(sys.argv[1], 'w'); "
                               "print('open', flush=True); sys.stdin.read()", str(gone / "log")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        assert sweep(tmp_path) == [gone]
        holder.wait(timeout=60)  # it ended with its stdin still open: killed (the sweep reaped it)
        assert not gone.exists() and live.exists()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_part_corrupted_under_a_running_task_ends_it_with_one_error_line(corpus_index,
                                                                             tmp_path):
    """A committed part damaged on the store while the task still runs: the task ends with one
    `asrd: error:` line naming the part (no traceback, no marker), the part is discarded, and
    the next run does its rows again: every row once."""
    from tests.test_cli_errors import assert_one_error_line

    run_dir, state = tmp_path / "run", tmp_path / "faults"
    args = cli_args(corpus_index, run_dir, *fault_args(
        state, "faults.block_after_calls=3", f"faults.release_file={state / 'go'}",
        "pipeline.part_rows=1", *ONE_ROW_PER_CALL))
    log = tmp_path / "run1.log"
    with running(args, log) as proc:
        wait_until(lambda: (state / "blocked").exists() and len(part_rows(run_dir)) >= 3, proc,
                   "three rows are committed", log)
        part = sorted((run_dir / "shards" / "shard-000000.parts").glob("part-*.parquet"))[0]
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
        (state / "go").touch()
        proc.wait(timeout=600)
    finished = subprocess.CompletedProcess(args, proc.returncode, "", log.read_text())
    assert_one_error_line(finished, "does not read any more", part.name, "run the shard again")
    assert not part.exists() and not (run_dir / "done" / "shard-000000.json").exists()
    run_here(cli_args(corpus_index, run_dir, *fault_args(tmp_path / "again", *NO_BLOCK)))
    assert_each_row_once_with_its_own_text(run_dir)
