"""Helpers for tests that run `asrd run` as a process and look at its run directory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pyarrow.parquet as pq

from asrd.done_marker import DoneMarker


def cli_args(index: Path, run_dir: Path, *extra: str) -> list[str]:
    """`asrd run` of a one-shard run."""
    return [sys.executable, "-m", "asrd.cli", "run", f"run.index={index}", f"run.dir={run_dir}",
            "run.num_shards=1", *extra]


def run_here(args: list[str]) -> None:
    """A `cli_args` command line run by `asrd.cli.main` in this process (on the tests' kept Ray
    session): for a run whose own process is not what the test is about, e.g. the resume after
    a killed one. It must succeed."""
    from asrd.cli import main

    assert args[:3] == [sys.executable, "-m", "asrd.cli"], args
    assert main(args[3:]) == 0


def part_rows(run_dir: Path) -> list[int]:
    """Index rows in the shard's committed parts (the resume point)."""
    parts = sorted((run_dir / "shards" / "shard-000000.parts").glob("part-*.parquet"))
    return [r for p in parts for r in pq.read_table(p, columns=["row"]).column(0).to_pylist()]


def marker(run_dir: Path) -> dict:
    return json.loads((run_dir / "done" / "shard-000000.json").read_text())


def done_marker(shard: int, rows: int, **fields) -> DoneMarker:
    """A done-marker with the given figures and placeholder file facts, for tests that read
    markers without running the shard."""
    base = dict(shard=shard, rows=rows, ok=rows, failed=0, audio_s=0.0, wall_s=0.0,
                config_hash="", shard_key="", bytes=0, mtime_ns=0, sha256="")
    return DoneMarker(**{**base, **fields})


def shard_rows(run_dir: Path) -> list[dict]:
    return pq.read_table(run_dir / "shards" / "shard-000000.parquet").to_pylist()


def assert_exactly_once(run_dir: Path, rows: int) -> dict:
    """Every index row of the one shard once in its file; the marker agrees. Returns it."""
    m = marker(run_dir)
    assert sorted(r["row"] for r in shard_rows(run_dir)) == list(range(rows))
    assert m["rows"] == rows == m["ok"] + m["failed"]
    return m


def wait_until(cond: Callable[[], object], proc: subprocess.Popen, what: str,
               log: Path | None = None) -> None:
    """Wait for a condition that the run itself brings about; fail if the run ends first."""
    while not cond():
        if proc.poll() is not None:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"the run exited ({proc.returncode}) before {what}\n{tail}")
        time.sleep(0.05)


@contextlib.contextmanager
def running(args: list[str], log: Path) -> Iterator[subprocess.Popen]:
    """A process in its own session (so that its Ray processes are its own), stderr to `log`;
    killed with everything it started if the test leaves it running."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as err:
        proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=err)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def flip_bytes(path: Path, keep_mtime: bool = False) -> None:
    """Invert a few bytes in the middle of a committed file, its size unchanged (what bit rot
    or a stray write does); with `keep_mtime`, its mtime too (rot the file system never saw)."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4] = bytes(b ^ 0xFF for b in data[mid:mid + 4])
    path.write_bytes(bytes(data))
    assert path.stat().st_size == st.st_size
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
