"""Two tasks that get the same shard never both commit it: the claim (a filelock on the store)
decides, the loser skips. Run on local disk and on a real JuiceFS mount (one client), and on a
Redis-backed volume with the racers on two clients, as two nodes would be."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from hpc.commit import write_bytes, write_json
from hpc.markers import Markers
from tests.juicefs_fixtures import client_pids, jfs_dir, jfs_volume, redis_volume  # noqa: F401

SHARD = 7
CTX = mp.get_context("fork")


def _task(run_dir: str, use_claim: bool, work_s: float, barrier, q) -> None:
    """What a shard task does: claim, check the marker, work, commit the file, write the marker."""
    try:
        markers = Markers(run_dir)
        barrier.wait(timeout=30)
        if use_claim:
            with markers.claim(SHARD) as mine:
                q.put(_attempt(run_dir, markers, work_s) if mine else "claimed by another")
        else:
            q.put(_attempt(run_dir, markers, work_s))
    except BaseException as e:
        q.put(f"error: {e!r}")


def _attempt(run_dir: str, markers: Markers, work_s: float) -> str:
    if markers.is_done(SHARD):
        return "already done"
    time.sleep(work_s)  # the work: long enough that the racers overlap
    pid = os.getpid()
    write_bytes(Path(run_dir) / "shards" / "shard-000007.parquet", f"written by {pid}".encode())
    write_json(Path(run_dir) / "commits" / f"{pid}.json", {"pid": pid})  # one file per commit
    markers.write(SHARD, {"pid": pid})
    return "committed"


def race(run_dirs: list[Path], use_claim: bool = True, work_s: float = 0.5) -> list[str]:
    """One racer per entry of `run_dirs` (the same run directory, possibly through different
    mounts), all released at once."""
    barrier, q = CTX.Barrier(len(run_dirs)), CTX.Queue()
    procs = [CTX.Process(target=_task, args=(str(d), use_claim, work_s, barrier, q)) for d in run_dirs]
    for p in procs:
        p.start()
    outcomes = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    return sorted(outcomes)


def assert_exactly_one_commit(run_dir: Path, outcomes: list[str]) -> None:
    assert outcomes.count("committed") == 1, outcomes
    assert all(o in ("committed", "claimed by another", "already done") for o in outcomes), outcomes
    commits = list((run_dir / "commits").iterdir())
    assert len(commits) == 1
    winner = int(commits[0].stem)
    assert Markers(run_dir).read(SHARD)["pid"] == winner
    assert (run_dir / "shards" / "shard-000007.parquet").read_text() == f"written by {winner}"


def _holder(run_dir: str, held, q) -> None:
    with Markers(run_dir).claim(SHARD) as mine:
        q.put(mine)
        held.set()
        time.sleep(600)  # until killed


def start_holder(run_dir: Path):
    held, q = CTX.Event(), CTX.Queue()
    # daemon: a holder left over by a failing test must not keep pytest waiting at exit
    p = CTX.Process(target=_holder, args=(str(run_dir), held, q), daemon=True)
    p.start()
    assert held.wait(30) and q.get(timeout=5) is True
    return p


def can_claim(run_dir: Path) -> bool:
    with Markers(run_dir).claim(SHARD) as mine:
        return mine


def kill(p) -> None:
    os.kill(p.pid, signal.SIGKILL)
    p.join(timeout=30)
    assert p.exitcode == -signal.SIGKILL


def freed(run_dir: Path, bound_s: float = 30) -> bool:
    """Whether the claim becomes free: the kernel drops a dead process's flock when it closes
    its files, but on a FUSE mount (JuiceFS) the release reaches the client, and through it the
    metadata engine, after the process is gone, so another client may see it a moment later."""
    deadline = time.monotonic() + bound_s
    while not can_claim(run_dir):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture(params=["local", pytest.param("juicefs", marks=pytest.mark.juicefs)])
def store(request, tmp_path) -> Path:
    """A run directory on local disk, or on the session's JuiceFS mount."""
    if request.param == "local":
        return tmp_path
    return request.getfixturevalue("jfs_dir")


def test_racing_tasks_commit_exactly_once(store):
    assert_exactly_one_commit(store, race([store] * 4))


def test_a_late_duplicate_sees_the_marker_and_skips(store):
    assert race([store], work_s=0) == ["committed"]
    assert race([store], work_s=0) == ["already done"]
    assert_exactly_one_commit(store, ["committed", "already done"])


def test_without_claims_the_race_double_commits(tmp_path):
    """The control: the test above would catch a broken claim."""
    outcomes = race([tmp_path] * 3, use_claim=False)
    assert outcomes.count("committed") > 1
    assert len(list((tmp_path / "commits").iterdir())) > 1


def test_a_killed_holder_frees_its_claim(store):
    holder = start_holder(store)
    assert can_claim(store) is False
    kill(holder)  # SIGKILL: no cleanup code runs; the kernel closes the file, dropping the flock
    assert freed(store)


@pytest.mark.juicefs
@pytest.mark.redis
def test_two_clients_race_and_a_dead_client_frees_its_claims(redis_volume):
    node_a, node_b = redis_volume.mounts
    run_a = node_a / "run"
    run_a.mkdir()
    run_b = node_b / "run"  # the same directory, through the other client
    deadline = time.time() + 10
    while not run_b.is_dir():  # the other client's entry cache expires within --entry-cache 1 s
        assert time.time() < deadline
        time.sleep(0.1)

    assert_exactly_one_commit(run_a, race([run_a, run_b, run_a, run_b]))

    # A killed process on client B: its lock is released through client B (no session timeout).
    holder = start_holder(run_b)
    assert can_claim(run_a) is False
    kill(holder)
    assert freed(run_a)

    # Client B dies while a process holds a claim through it (a node crash). Client A sees the
    # claim held until B's session goes stale (about 5 missed heartbeats; 1 s here, 12 s by
    # default) and another client cleans it up, deleting its locks.
    holder = start_holder(run_b)
    try:
        assert can_claim(run_a) is False
        pids = client_pids(redis_volume, node_b)
        assert pids, "client B's juicefs processes not found"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        t0 = time.time()
        while not can_claim(run_a):
            assert time.time() - t0 < 60, "a dead client's claim was never freed"
            time.sleep(0.5)
        assert time.time() - t0 > 1  # not freed by the kill itself: it took the session timeout
    finally:
        kill(holder)  # the holder itself, left on its dead mount
    redis_volume.umount(node_b)  # the dead client's mount ("transport endpoint is not connected")
