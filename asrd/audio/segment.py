"""Cutting decoded audio into model inputs of at most the engine's window.

With voice activity detection (the default) the inputs are the speech: speech regions, merged in
order into spans of at most the window, silence between them kept only inside a span; a recording
with no speech gives no input at all. Without it, the recording is cut at the quietest frame
before each window limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asrd.audio.vad import VadSettings, speech_regions


@dataclass(frozen=True)
class Segmentation:
    spans: list[tuple[int, int]]  # the model inputs, as sample offsets in the recording
    speech_s: float  # seconds of detected speech (the whole recording without VAD)


def segment(audio: np.ndarray, sr: int, max_s: float, vad: VadSettings | None) -> Segmentation:
    """The model inputs of a decoded recording."""
    if vad is None:
        return Segmentation(split_points(audio, sr, max_s), len(audio) / sr)
    regions = speech_regions(audio, vad, max_s)
    return Segmentation(merge_regions(regions, int(max_s * sr)),
                        sum(b - a for a, b in regions) / sr)


def merge_regions(regions: list[tuple[int, int]], max_len: int) -> list[tuple[int, int]]:
    """Consecutive regions joined while the joined span stays within `max_len` samples (each
    region is at most that long already)."""
    spans: list[tuple[int, int]] = []
    for a, b in regions:
        if spans and b - spans[-1][0] <= max_len:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return spans


def split_points(audio: np.ndarray, sr: int, max_s: float, search_s: float = 5.0,
                 frame_s: float = 0.05) -> list[tuple[int, int]]:
    """Cut `audio` into spans of at most `max_s`, each cut at the quietest frame of the last
    `search_s` before the limit, so cuts fall in pauses rather than mid-word where possible."""
    n, limit = len(audio), int(max_s * sr)
    frame, search = max(1, int(frame_s * sr)), int(min(search_s, max_s / 2) * sr)
    spans, start = [], 0
    while n - start > limit:
        lo, hi = start + limit - search, start + limit
        window = audio[lo:hi]
        usable = len(window) // frame * frame
        if usable:
            energy = np.square(window[:usable].reshape(-1, frame)).mean(axis=1)
            cut = lo + int(np.argmin(energy)) * frame + frame // 2
        else:
            cut = hi
        spans.append((start, cut))
        start = cut
    spans.append((start, n))
    return spans
