"""Long recordings as a stream: decoded, searched for speech and cut while they are read, with
the same segments as the whole-array path, and memory that does not grow with the recording."""

from __future__ import annotations

import json
import logging
import os
import signal
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import soxr
from faster_whisper.vad import VadOptions, get_speech_timestamps

from asrd import config as config_mod
from asrd.audio import VadSettings, decode, segment
from asrd.audio.segment import SegmentStream
from asrd.audio.vad import SpeechRegions, check_available
from asrd.index import build_index
from asrd.plan import make_plan
from asrd.runtime.decode_worker import DecodeWorker, decode_actor_config
from asrd.runtime.partial import PartialRows, SegmentDone
from asrd.runtime.records import WorkItem
from asrd.runtime.task import run_task
from asrd.testing.faults import read_events
from asrd.speech_samples import SENTENCES, non_speech, speak
from tests.conftest import make_cfg
from tests.runs import (assert_exactly_once, cli_args, part_rows, run_here, running, shard_rows,
                        wait_until)

SR = 16000


@pytest.fixture(scope="module")
def talk(tmp_path_factory) -> np.ndarray:
    """About a minute of different sentences with pauses from 0.2 s (shorter than two paddings)
    to 3 s, some of them filled with quiet noise."""
    folder = tmp_path_factory.mktemp("talk")
    rng = np.random.default_rng(3)
    parts = []
    for i, text in enumerate(SENTENCES * 2):
        x = decode(str(speak(text, folder / f"s{i}.wav", speed=130 + 15 * (i % 3))), SR)
        pause = non_speech("noise" if i % 3 == 0 else "silence", rng.uniform(0.2, 3.0), SR, i)
        parts += [x, 0.05 * pause]
    return np.concatenate(parts)


@pytest.mark.parametrize("settings,max_s", [(VadSettings(), 30.0), (VadSettings(), 4.0),
                                            (VadSettings(0.3, 0, 1500, 100), 30.0)])
def test_streamed_speech_regions_are_faster_whispers_whole_array_regions(talk, settings, max_s):
    """Fed in odd-sized blocks, regions come out as soon as they are final and equal, sample for
    sample, what faster-whisper's `get_speech_timestamps` finds on the whole array."""
    whole = get_speech_timestamps(talk.copy(), VadOptions(
        threshold=settings.threshold, min_speech_duration_ms=settings.min_speech_ms,
        min_silence_duration_ms=settings.min_silence_ms, speech_pad_ms=settings.speech_pad_ms,
        max_speech_duration_s=max_s))
    vad = SpeechRegions(settings, max_s)
    streamed, before_end = [], 0
    for at in range(0, len(talk), 7919):
        streamed += vad.feed(talk[at:at + 7919])
        before_end = len(streamed)
    streamed += vad.finish()
    assert len(whole) >= 10
    assert streamed == [(r["start"], r["end"]) for r in whole]
    assert before_end >= len(whole) - 1  # handed out while streaming, not all at the end


@pytest.mark.parametrize("vad", [VadSettings(), None], ids=["vad", "no-vad"])
@pytest.mark.parametrize("max_s", [30.0, 5.0])
def test_segment_stream_of_a_48khz_stereo_file_equals_the_whole_decode(talk, tmp_path, vad,
                                                                         max_s):
    path = tmp_path / "talk.flac"
    left = soxr.resample(talk, SR, 48000)
    sf.write(path, np.stack([left, 0.5 * left], axis=1), 48000)
    whole = decode(str(path), SR)
    expected = segment(whole, SR, max_s, vad)
    stream = SegmentStream(str(path), SR, max_s, vad)
    cuts = list(stream)
    assert [c.index for c in cuts] == list(range(len(cuts))) and len(cuts) >= 2
    assert [(c.start, c.end) for c in cuts] == expected.spans
    assert all(np.array_equal(c.audio, whole[c.start:c.end]) for c in cuts)
    assert stream.speech_s == expected.speech_s and stream.duration_s == len(whole) / SR


def test_segment_stream_memory_does_not_grow_with_the_recording(talk, tmp_path):
    """Ten minutes (38 MB as 16 kHz float32) cut while holding a fraction of it."""
    check_available()  # the model's own memory is not the stream's
    minute = talk[:60 * SR]
    path = tmp_path / "ten-minutes.wav"
    sf.write(path, np.tile(minute, 10), SR, subtype="PCM_16")
    tracemalloc.start()
    try:
        n = sum(1 for _ in SegmentStream(str(path), SR, 30.0, VadSettings()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n >= 20
    assert peak < 16e6, f"peak {peak / 1e6:.1f} MB"


# --- a long recording in the runtime: streamed, committed by segment, resumed after kill -9 -------

MAX_SEGMENT_S = 5.0  # short windows, so that a minute of sentences is a dozen segments
SHORT_WINDOWS = ["audio.pack.enabled=false", f"audio.max_segment_s={MAX_SEGMENT_S}",
                 f"audio.pack.max_clip_s={MAX_SEGMENT_S}", "audio.retry_segment_s=0",
                 "pipeline.stream_min_s=10"]


@pytest.fixture(scope="module")
def long_index(talk, tmp_path_factory) -> tuple[Path, Path]:
    """An index of the long recording (48 kHz stereo FLAC) and one short utterance after it."""
    folder = tmp_path_factory.mktemp("long-index")
    left = soxr.resample(talk, SR, 48000)
    sf.write(folder / "talk.flac", np.stack([left, 0.5 * left], axis=1), 48000)
    speak(SENTENCES[0], folder / "short.wav")
    (folder / "manifest.jsonl").write_text(
        "".join(json.dumps({"path": p, "id": p}) + "\n" for p in ("talk.flac", "short.wav")))
    build_index(folder / "manifest.jsonl", folder / "index.parquet")
    return folder / "index.parquet", folder / "talk.flac"


def partial_segments(run_dir: Path) -> list[dict]:
    folder = run_dir / "shards" / "shard-000000.partial"
    return [r for p in sorted(folder.glob("seg-*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_kill_inside_a_long_recording_resumes_from_its_committed_segments(long_index, tmp_path,
                                                                          caplog):
    """kill -9 of the task while the engine is held inside the long recording: the resumed run
    transcribes only the segments not committed, and the row comes out once, whole, in order,
    with times in the recording."""
    index, talk_path = long_index
    run_dir = tmp_path / "run"
    common = ["engine.kind=fault", "run.num_shards=1", *SHORT_WINDOWS, "pipeline.part_seconds=0.001",
              "engine.batch_size=1", "engine.calls_in_flight=1"]
    state = tmp_path / "faults"
    held = 6
    args = cli_args(index, run_dir, *common, f"faults.state_dir={state}",
                    f"faults.block_after_calls={held}", f"faults.release_file={state / 'never'}")
    log = tmp_path / "run1.log"
    with running(args, log) as proc:
        # the answers before the held call are committed: the short row's (if it came first)
        # in a part, the long recording's segments as a partial row
        wait_until(lambda: (state / "blocked").exists()
                   and len(partial_segments(run_dir)) + len(part_rows(run_dir)) >= held,
                   proc, "the answered segments are committed", log)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    committed = partial_segments(run_dir)
    assert len(committed) >= held - 1
    assert sorted(r["seg"] for r in committed) == sorted({r["seg"] for r in committed})

    again = tmp_path / "faults2"
    caplog.set_level(logging.INFO, logger="asrd")
    run_here(cli_args(index, run_dir, *common, f"faults.state_dir={again}",
                      "faults.block_after_calls=-1"))
    assert assert_exactly_once(run_dir, 2)["segments_reused"] == len(committed)
    long_row = next(r for r in shard_rows(run_dir) if r["id"] == "talk.flac")
    expected = segment(decode(str(talk_path), SR), SR, MAX_SEGMENT_S, VadSettings())
    assert long_row["error"] is None and len(expected.spans) >= 10
    assert [(s["start"], s["end"]) for s in long_row["segments"]] == [
        (a / SR, b / SR) for a, b in expected.spans]
    assert [s["text"] for s in long_row["segments"]] == [
        f"talk.flac {(b - a) / SR:.2f} seconds" for a, b in expected.spans]
    calls = [e for e in read_events(again, "engine-calls") if e["ids"] == ["talk.flac"]]
    assert len(calls) == len(expected.spans) - len(committed)  # only the rest
    assert (f"long recording 'talk.flac' resumed: {len(committed)} of its {len(expected.spans)} "
            "segments were transcribed before the task stopped and reused") in caplog.text
    assert not (run_dir / "shards" / "shard-000000.partial").exists()


def test_decode_actor_dying_inside_a_long_recording_loses_no_segment(long_index, tmp_path):
    """The actor streaming the recording exits while cutting its 7th segment (its second piece):
    that piece is asked for again, alone, on a restarted actor, which decodes the recording
    again and goes on from there; every segment is transcribed exactly once."""
    index, talk_path = long_index
    state = tmp_path / "faults"
    cfg = make_cfg(index, tmp_path / "run", "engine.kind=fault", "run.num_shards=1",
                   *SHORT_WINDOWS, f"faults.state_dir={state}", "faults.decode_exit_segment=6")
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0]
    assert_exactly_once(rd.path, 2)
    assert [e["segment"] for e in read_events(state, "decode-exits")] == [6]
    long_row = next(r for r in shard_rows(rd.path) if r["id"] == "talk.flac")
    expected = segment(decode(str(talk_path), SR), SR, MAX_SEGMENT_S, VadSettings())
    assert [s["text"] for s in long_row["segments"]] == [
        f"talk.flac {(b - a) / SR:.2f} seconds" for a, b in expected.spans]
    transcribed = [i for e in read_events(state, "engine-calls") for i in e["ids"]]
    assert transcribed.count("talk.flac") == len(expected.spans)


def test_partial_rows_are_used_only_for_their_config_and_id(tmp_path):
    """Segments committed under another config hash, or for another id at that row, are not
    reused; a damaged file costs its own segments only."""
    folder = tmp_path / "shard-000000.partial"
    for config_hash, row_id in (("aaa", "talk"), ("bbb", "talk"), ("aaa", "other")):
        p = PartialRows(folder, config_hash, every_s=1.0)
        p.add(SegmentDone(0, row_id, 0, 0.0, 4.0, f"{config_hash} {row_id}", 0.1))
        p.commit()
    (folder / "seg-00009.parquet").write_bytes(b"PAR1 not really")
    again = PartialRows(folder, "aaa", every_s=1.0)
    assert {k: s.text for k, s in again.committed(0, "talk").items()} == {0: "aaa talk"}
    assert again.committed(0, "nobody") == {}
    again.clear()
    assert not folder.exists()


def test_a_committed_segment_is_not_sent_again_unless_its_span_changed(long_index):
    """A stream asked to resume sends no audio for segments whose committed span it cuts again
    exactly; one whose span differs (the audio changed) is sent, to be transcribed again."""
    index, talk_path = long_index
    cfg = config_mod.load(None, ["run.index=x", *SHORT_WINDOWS])
    worker = DecodeWorker(*decode_actor_config(cfg), cfg.audio.pack.enabled, [])
    item = WorkItem(0, "talk.flac", str(talk_path))
    whole, _ = worker._piece(item, 0, {})
    (a0, b0), (a1, b1) = whole.spans[:2]
    piece, segments = worker._piece(WorkItem(1, "talk.flac", str(talk_path)), 0,
                                    {0: (a0, b0 + 0.5), 1: (a1, b1)})
    assert piece.spans == whole.spans and piece.reused == [1]
    assert segments[1] is None and segments[0] is not None and len(segments[0]) > 0
