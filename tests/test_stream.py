"""Long recordings as a stream: decoded, searched for speech and cut while they are read, with
the same segments as the whole-array path, and memory that does not grow with the recording."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import soxr
from faster_whisper.vad import VadOptions, get_speech_timestamps

from asrd.audio import VadSettings, decode, segment
from asrd.audio.segment import SegmentStream
from asrd.audio.vad import SpeechRegions, check_available
from asrd.testing.samples import SENTENCES, non_speech, speak

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
