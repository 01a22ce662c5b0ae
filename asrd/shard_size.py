"""Whether shards are worth their task's start-up, and how many would be.

Why: a task pays a fixed start-up (process, Ray, engine load: about 12 s for Whisper-base on a
CPU, minutes for a large model on a GPU) however little audio its shard holds; shards are cut by
audio seconds, so too many of them buy nothing but start-ups (a 3 s shard pays 12 s). With a
measured rate the judgement is start-up against a task's work; without one, audio per shard.
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence

# Warn when start-up is more than this share of the median task's wall time ...
STARTUP_SHARE_WARN = 0.5
# ... and suggest the most shards whose tasks keep it to about this share.
STARTUP_SHARE_TARGET = 0.1
# Without a rate: shards under this much audio are likely start-up dominated (at CPU speed,
# Whisper-base's few audio s/s, 600 s is about a minute and a half of work).
MIN_SHARD_AUDIO_S = 600.0


def worth_num_shards(total_work_s: float, startup_s: float, shards_per_task: int) -> int | None:
    """The most shards whose tasks spend at most STARTUP_SHARE_TARGET of their time starting
    up; None when start-up is free."""
    if startup_s <= 0:
        return None
    task_work_s = startup_s * (1 - STARTUP_SHARE_TARGET) / STARTUP_SHARE_TARGET
    return max(1, math.floor(total_work_s / task_work_s)) * shards_per_task


def startup_share(task_walls: Sequence[float], startup_s: float) -> float:
    """Start-up's share of the median task's wall time."""
    median = statistics.median(task_walls)
    return startup_s / median if median > 0 else 0.0


def advice_from_rate(task_walls: Sequence[float], startup_s: float, worth: int | None,
                     num_shards: int) -> str | None:
    """A warning when the median task spends more than half its time starting up."""
    share = startup_share(task_walls, startup_s)
    if share <= STARTUP_SHARE_WARN or worth is None or worth >= num_shards:
        return None
    return (f"SHARDS TOO SMALL: start-up ({startup_s:.0f} s) is {share:.0%} of a median task's "
            f"wall time ({statistics.median(task_walls):.0f} s); run.num_shards={worth} would "
            f"keep it near {STARTUP_SHARE_TARGET:.0%}")


def advice_from_audio(shard_audio_s: Sequence[float], num_shards: int) -> str | None:
    """Without a rate: a warning when the median shard holds under MIN_SHARD_AUDIO_S of audio."""
    median = statistics.median(shard_audio_s)
    if median >= MIN_SHARD_AUDIO_S:
        return None
    fewer = max(1, math.floor(sum(shard_audio_s) / MIN_SHARD_AUDIO_S))
    if fewer >= num_shards:
        return None
    return (f"SHARDS LIKELY TOO SMALL: the median shard holds {median:.0f} audio s, under "
            f"{MIN_SHARD_AUDIO_S:.0f} s, so a task's start-up (seconds to minutes) may cost more "
            f"than its work; run.num_shards={fewer} ({sum(shard_audio_s) / fewer:.0f} audio s each) "
            "would not (calibrate to know: `asrd plan --calibrate`)")
