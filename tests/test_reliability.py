"""Crashes, signals and config drift (issue 7), on real Ray with the real CPU engine."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from asrd.cli import main as asrd_main
from asrd.plan import make_plan
from tests.conftest import make_cfg


def run_args(index: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "asrd.cli", "run", f"run.index={index}", f"run.dir={run_dir}",
            "run.num_shards=1", "pipeline.part_rows=1", "pipeline.items_per_decode_task=1",
            "engine.batch_size=1", *extra]


def parts(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "shards" / "shard-000000.parts").glob("part-*.parquet"))


def wait_for(cond, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, "the run ended early"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def assert_exactly_once(run_dir: Path, rows: int) -> dict:
    marker = json.loads((run_dir / "done" / "shard-000000.json").read_text())
    t = pq.read_table(run_dir / "shards" / "shard-000000.parquet")
    assert sorted(t.column("row").to_pylist()) == list(range(rows))
    assert marker["rows"] == rows == marker["ok"] + marker["failed"]
    return marker


def test_killed_decode_actor_is_restarted_and_items_retried(corpus_index, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(run_args(corpus_index, run_dir), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(parts(run_dir)) >= 1, proc)
        pids = subprocess.run(["pgrep", "-f", "ray::DecodeWorker"], capture_output=True,
                              text=True).stdout.split()
        assert pids, "no decode actor process found"
        for pid in pids:
            os.kill(int(pid), signal.SIGKILL)
        assert proc.wait(timeout=300) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    marker = assert_exactly_once(run_dir, 8)
    assert marker["ok"] == 8, marker["errors"]  # retried, not lost and not failed


def test_sigkill_at_random_points_always_resumes_exactly_once(corpus_index, tmp_path):
    run_dir = tmp_path / "run"
    rng = random.Random(1)
    kills = 0
    for attempt in range(3):
        proc = subprocess.Popen(run_args(corpus_index, run_dir), start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(4, 14))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            continue
        assert proc.returncode == 0
        break
    if not (run_dir / "done" / "shard-000000.json").exists():
        subprocess.run(run_args(corpus_index, run_dir), check=True, capture_output=True)
    assert kills >= 1
    assert_exactly_once(run_dir, 8)


def test_sigterm_flushes_finished_rows_and_exits_cleanly(corpus_index, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(run_args(corpus_index, run_dir, "pipeline.part_rows=100"),
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    started = threading.Event()

    def watch() -> None:
        for line in proc.stderr:
            if "already committed" in line:  # the engine is up and the shard has started
                started.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        assert started.wait(240), "the shard never started"
        time.sleep(10)  # rows finish, but stay buffered (part_rows=100): SIGTERM must commit them
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (run_dir / "done" / "shard-000000.json").exists()
    committed = sum(pq.read_metadata(p).num_rows for p in parts(run_dir))
    assert committed >= 1  # finished rows were flushed, not lost
    for p in run_dir.rglob("*.parquet"):  # nothing half-written under a final name
        pq.read_metadata(p)
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]
    subprocess.run(run_args(corpus_index, run_dir), check=True, capture_output=True)
    assert assert_exactly_once(run_dir, 8)["resumed_rows"] == committed


def test_run_with_drifted_config_is_refused(corpus_index, tmp_path, capsys):
    cfg = make_cfg(corpus_index, tmp_path / "run")
    make_plan(cfg)
    base = [f"run.index={corpus_index}", f"run.dir={tmp_path / 'run'}", "run.num_shards=2",
            "pipeline.part_rows=2"]
    assert asrd_main(["run-shard", "--shard", "0", *base, "engine.beam_size=5"]) == 2
    assert "config drift" in capsys.readouterr().err
    assert asrd_main(["run-shard", "--shard", "7", *base]) == 2
    assert not (tmp_path / "run" / "done").exists()
