"""Packing short clips into full windows: Whisper pads every input to 30 s, so a 5 s clip costs
the encoder a whole window. Short single-segment recordings of one decode chunk go into shared
windows (longest first, each into the first window it fits), a gap of silence between them; the engine transcribes it with timestamps and the
text is split back to its rows by time (asrd.engines: `Engine.hypotheses_packed`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PackSettings:
    max_clip_s: float = 15.0  # longer clips are transcribed alone
    gap_s: float = 1.0  # silence between two clips of a window
    window_s: float = 30.0  # the model's window


@dataclass(frozen=True)
class Member:
    """One clip of a packed window: its row, and where it lies in the window (seconds)."""

    row: int
    id: str
    offset_s: float
    length_s: float


def plan_windows(lengths: list[float | None], settings: PackSettings) -> list[list[int]]:
    """Groups of at least two positions whose clips fit one window with gaps: longest clip
    first, each into the first window it fits (first-fit decreasing: fewer, fuller windows than
    packing in order, so fewer encoder passes and fewer clips left alone); each group's positions
    in order, the groups by their first. A length of None (or longer than `max_clip_s`) is not
    packed."""
    fits = [i for i, n in enumerate(lengths) if n is not None and n <= settings.max_clip_s]
    windows: list[list[int]] = []
    used: list[float] = []
    for i in sorted(fits, key=lambda i: (-(lengths[i] or 0.0), i)):
        n = lengths[i] or 0.0
        k = next((k for k, u in enumerate(used) if u + settings.gap_s + n <= settings.window_s),
                 None)
        if k is None:
            windows.append([i])
            used.append(n)
        else:
            windows[k].append(i)
            used[k] += settings.gap_s + n
    return sorted((sorted(w) for w in windows if len(w) >= 2), key=lambda w: w[0])


def build_window(clips: list[np.ndarray], sr: int, gap_s: float) -> tuple[np.ndarray, list[float]]:
    """The clips joined with `gap_s` of silence between them, and each clip's offset (s)."""
    gap = np.zeros(int(gap_s * sr), dtype=np.float32)
    parts, offsets, at = [], [], 0
    for k, clip in enumerate(clips):
        if k:
            parts.append(gap)
            at += len(gap)
        offsets.append(at / sr)
        parts.append(clip)
        at += len(clip)
    return np.concatenate(parts).astype(np.float32, copy=False), offsets


def assign_by_time(words: list[tuple[float, float, str]], members: list[Member]
                   ) -> list[list[int] | None]:
    """Each member's word positions from timed words (start, end, text): a word belongs to the
    member its middle falls in (within half a gap of it). A member is unplaceable (None) when
    one of its words reaches more than a quarter gap into another member's clip (a model's
    timestamps may be off by a few hundred ms, so a piece may run into the gaps, and into the
    silence a clip starts or ends with: VAD pads speech by 300 ms), a word was cut off (no end
    time), a word falls in no member's reach, or it got no word at all (the model may have
    merged it into a neighbour): such rows are transcribed again alone, never guessed."""
    gaps = [b.offset_s - a.offset_s - a.length_s for a, b in zip(members, members[1:])]
    reach = min(gaps, default=1.0) / 2
    spill = reach / 2
    placed: list[list[int]] = [[] for _ in members]
    bad: set[int] = set()
    for i, (start, end, text) in enumerate(words):
        mid = (start + end) / 2 if math.isfinite(end) else start  # a cut-off piece: its start
        k = next((k for k, m in enumerate(members)
                  if m.offset_s - reach <= mid <= m.offset_s + m.length_s + reach), None)
        if k is None:
            nearest = min(range(len(members)), key=lambda j: min(
                abs(mid - members[j].offset_s), abs(mid - members[j].offset_s - members[j].length_s)))
            bad.add(nearest)
            continue
        into_other = max((min(end, m.offset_s + m.length_s) - max(start, m.offset_s)
                          for j, m in enumerate(members) if j != k), default=0.0)
        if not math.isfinite(end) or into_other > spill:
            bad.add(k)
        placed[k].append(i)
    return [None if k in bad or not "".join(words[i][2] for i in got).strip() else got
            for k, got in enumerate(placed)]
