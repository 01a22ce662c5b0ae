"""Throughput and ETA between two moments of a task.

Why a separate module: the rates are plain arithmetic on two `Progress` points (the last W&B
log for the current rates, the first update for the averages), easy to check by themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """How far the task was at `clock` (seconds, any monotonic origin): items and audio seconds
    finished over its shards, and the fraction of the task done."""

    clock: float
    items: float
    audio_s: float
    fraction: float


def rates(since: Progress, now: Progress, suffix: str = "") -> dict[str, float]:
    """throughput/items_per_s, throughput/audio_s_per_s and throughput/rtf (wall seconds per
    audio second; only when audio was done), each with `suffix`; none when no time passed."""
    wall = now.clock - since.clock
    if wall <= 0:
        return {}
    items, audio_s = now.items - since.items, now.audio_s - since.audio_s
    out = {f"throughput/items_per_s{suffix}": items / wall,
           f"throughput/audio_s_per_s{suffix}": audio_s / wall}
    if audio_s > 0:
        out[f"throughput/rtf{suffix}"] = wall / audio_s
    return out


def eta_s(first: Progress, now: Progress) -> float | None:
    """Seconds left at the average rate of progress since `first`; None while there is none."""
    rate = (now.fraction - first.fraction) / (now.clock - first.clock or math.inf)
    return (1.0 - now.fraction) / rate if rate > 0 else None
