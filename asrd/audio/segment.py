"""Cutting decoded audio into model inputs of at most the engine's window."""

from __future__ import annotations

import numpy as np


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
