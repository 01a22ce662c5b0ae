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
from asrd.runtime.task import run_task
from asrd.testing.faults import read_events
from asrd.testing.samples import NON_SPEECH, SENTENCES, non_speech, speak
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
