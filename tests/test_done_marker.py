"""The done-marker record: its JSON is the on-disk format, and older markers still read."""

from __future__ import annotations

from asrd.done_marker import DoneMarker
from hpc.marker_summary import UnreadableMarker
from tests.runs import done_marker


def test_a_marker_round_trips_through_its_json_with_the_keys_of_the_format():
    m = done_marker(3, 10, ok=9, failed=1, errors={"corrupt audio": 1}, wall_s=2.5,
                    finished_at=100.0, resumed_rows=4, segments_reused=2, task_startup_s=1.5,
                    engine_gpus=[["0"], ["0"]], gpu_engines={"0": [0, 1]})
    d = m.to_json()
    assert list(d) == ["shard", "rows", "ok", "failed", "errors", "audio_s", "wall_s",
                       "config_hash", "asrd_version", "model", "host", "slurm_job_id",
                       "slurm_array", "shard_key", "file", "bytes", "mtime_ns", "sha256",
                       "finished_at", "resumed_rows", "segments_reused", "task_startup_s",
                       "engine_gpus", "gpu_engines"]
    assert DoneMarker.from_json(d) == m
    assert "task_startup_s" not in done_marker(3, 10).to_json()  # only a task's first shard


def test_an_older_marker_reads_and_keeps_keys_this_version_does_not_know():
    old = done_marker(0, 5).to_json()
    for key in ("resumed_rows", "segments_reused", "finished_at", "host", "errors"):
        del old[key]
    m = DoneMarker.from_json({**old, "gpu": "A100"})
    assert isinstance(m, DoneMarker) and m.resumed_rows == 0 and m.finished_at is None
    assert m.to_json()["gpu"] == "A100"


def test_a_marker_without_the_facts_that_prove_its_shard_is_unreadable():
    d = done_marker(0, 5).to_json()
    del d["sha256"], d["bytes"]
    got = DoneMarker.from_json(d)
    assert isinstance(got, UnreadableMarker) and got.reason == "it lacks bytes, sha256"
