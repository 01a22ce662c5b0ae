"""Segmentation by speech: Silero VAD finds the speech, non-speech never reaches the engine."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from asrd.audio import VadSettings, decode, segment
from asrd.audio.segment import merge_regions
from asrd.index import build_index
from asrd.plan import make_plan
from asrd.runtime.resegment import looks_failed
from asrd.runtime.task import run_task
from asrd.testing.faults import read_events
from asrd.speech_samples import NON_SPEECH, SENTENCES, non_speech, speak
from tests.conftest import make_cfg

SR = 16000


@pytest.mark.parametrize("kind", NON_SPEECH)
def test_non_speech_gives_no_model_input(kind):
    cut = segment(non_speech(kind, 20.0), SR, 30.0, VadSettings())
    assert cut.spans == [] and cut.speech_s == 0.0


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory):
    """12 different sentences with 1.5 s pauses (about a minute), and where each one lies."""
    folder = tmp_path_factory.mktemp("long")
    pause = np.zeros(int(1.5 * SR), np.float32)
    parts, where, at = [pause], [], len(pause)
    for i, text in enumerate(SENTENCES + SENTENCES[:4]):
        x = decode(str(speak(text, folder / f"s{i}.wav", speed=120 + 10 * (i % 4))), SR)
        loud = np.flatnonzero(np.abs(x) > 0.01)
        x = x[loud[0]:loud[-1] + 1]  # the speech itself, without espeak's silent edges
        parts += [x, pause]
        where.append((at, at + len(x)))
        at += len(x) + len(pause)
    return np.concatenate(parts), where


def test_long_speech_is_cut_in_pauses_into_windows(long_recording):
    audio, sentences = long_recording
    cut = segment(audio, SR, 30.0, VadSettings())
    assert len(cut.spans) >= 2 and all(b - a <= 30 * SR for a, b in cut.spans)
    assert [a for a, _ in cut.spans] == sorted(a for a, _ in cut.spans)
    for s, e in sentences:  # every sentence whole inside one window: no cut mid-sentence
        assert any(a <= s and e <= b for a, b in cut.spans), (s / SR, e / SR, cut.spans)
    spoken = sum(e - s for s, e in sentences) / SR
    assert spoken <= cut.speech_s < len(audio) / SR  # the pauses are not speech


def test_merge_regions_keeps_order_and_the_limit():
    assert merge_regions([(0, 10), (20, 30), (35, 60), (61, 70)], 40) == [(0, 30), (35, 70)]
    assert merge_regions([], 40) == []
    assert merge_regions([(0, 40), (41, 50)], 40) == [(0, 40), (41, 50)]


def test_rows_without_speech_are_empty_ok_rows_with_no_engine_call(corpus, tmp_path):
    """Silence, noise, a tone and a sweep: ok rows with empty text and speech_s 0, and the
    engine never saw them; the speech rows have their speech seconds."""
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    for kind in NON_SPEECH:
        sf.write(tmp_path / f"{kind}.flac", non_speech(kind, 20.0), SR)
        rows.append({"path": str(tmp_path / f"{kind}.flac"), "id": kind})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({**r, "path": str(corpus / r["path"])}) + "\n"
                                if "id" not in r else json.dumps(r) + "\n" for r in rows))
    build_index(manifest, tmp_path / "index.parquet")
    state = tmp_path / "faults"
    cfg = make_cfg(tmp_path / "index.parquet", tmp_path / "run", "run.num_shards=1",
                   "engine.kind=fault", f"faults.state_dir={state}")
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0]
    out = {r["id"]: r for r in pq.read_table(rd.shard_file(0)).to_pylist()}
    for kind in NON_SPEECH:
        r = out[kind]
        assert r["error"] is None and r["text"] == "" and r["segments"] == [], r
        assert r["speech_s"] == 0.0
    speech = [r for i, r in out.items() if i not in NON_SPEECH]
    assert len(speech) == 8 and all(r["error"] is None and r["text"] for r in speech)
    assert all(0 < r["speech_s"] <= r["duration_s"] + 1e-6 for r in speech)
    seen = {i for name in ("engine-calls", "engine-windows")  # alone, or packed
            for c in read_events(state, name) for i in c["ids"]}
    assert seen and not seen & set(NON_SPEECH)


def test_a_long_segment_the_model_gave_up_on_is_cut_shorter_and_transcribed_again(
        long_recording, tmp_path):
    """Two rows of the same minute of speech: on one, the (real) model gives up on every segment
    longer than 12 s (the fault hook blanks them); that row is decoded again in segments of at
    most 10 s and gets its text. The other keeps its long segments: nothing to redo."""
    audio, sentences = long_recording
    end = max(e for _, e in sentences if e < 36 * SR)  # about half a minute, cut in a pause
    sf.write(tmp_path / "long.flac", audio[:end + SR // 2], SR)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"id": i, "path": str(tmp_path / "long.flac")}) + "\n"
                                for i in ("gave-up", "fine")))
    build_index(manifest, tmp_path / "index.parquet")

    def run(retry_s: float, run_dir, inner: str = "faster_whisper"):
        state = run_dir / "faults"
        cfg = make_cfg(tmp_path / "index.parquet", run_dir, "run.num_shards=1",
                       "engine.kind=fault", f"faults.inner={inner}",
                       f"faults.state_dir={state}", "faults.blank_ids=[gave-up]",
                       "faults.blank_over_s=12", f"audio.retry_segment_s={retry_s}")
        rd, _ = make_plan(cfg)
        assert run_task(rd.path) == [0]
        rows = {r["id"]: r for r in pq.read_table(rd.shard_file(0)).to_pylist()}
        calls = [(i, s) for c in read_events(state, "engine-calls")
                 for i, s in zip(c["ids"], c["seconds"])]
        return rows, calls

    rows, calls = run(10.0, tmp_path / "run")
    assert len(rows) == 2 and all(r["error"] is None for r in rows.values())
    gave_up, fine = rows["gave-up"], rows["fine"]
    assert len(gave_up["text"].split()) > 30  # about 55 words are said
    assert len(gave_up["segments"]) > len(fine["segments"])
    assert all(s["end"] - s["start"] <= 10.0 + 1e-6 for s in gave_up["segments"])
    assert any(s["end"] - s["start"] > 12 for s in fine["segments"])  # not cut again
    assert len(fine["text"].split()) > 30
    # The fine row's segments once; the other row's as the fine row's, then the shorter ones.
    assert sum(1 for i, _ in calls if i == "fine") == len(fine["segments"])
    assert sum(1 for i, _ in calls if i == "gave-up") == \
        len(fine["segments"]) + len(gave_up["segments"])

    # Never cut again (no model needed to show it): the blanked long segment stays empty.
    rows, _ = run(0.0, tmp_path / "run-off", inner="null")
    assert any(s["end"] - s["start"] > 12 and s["text"] == ""
               for s in rows["gave-up"]["segments"])


def test_failed_transcriptions_are_told_from_good_ones():
    said = "the quick brown fox jumps over the lazy dog. "
    varied = ("speech recognition turns spoken words into written text, and the weather "
              "tomorrow will be sunny with a light breeze from the west. ")
    assert looks_failed("", 25.0, 10.0)  # nothing for 25 s of speech
    assert looks_failed(said * 8, 25.0, 10.0)  # a loop
    assert not looks_failed(varied * 2, 25.0, 10.0)
    assert not looks_failed("", 8.0, 10.0)  # already short: nothing shorter to try
    assert not looks_failed("", 25.0, 0.0)  # retries off
