"""One shard's counters and the metrics logged from them.

The driver counts finished rows and the time the engines starve; each stage reports its own
counters (`counters()`: queue depths, latencies, second tries), and `ShardMetrics.snapshot`
puts them under their logged names (asrd.tracking sums the counters over a task's shards and
derives rates from them; asrd.tracking.prometheus exposes them).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

import numpy as np

from asrd.runtime.records import RowResult
from asrd.schema import error_reason

log = logging.getLogger("asrd.metrics")

STARVED_WARNING_S = 60.0  # warn once the engines have idled this long into a shard ...
STARVED_WARNING_SHARE = 0.2  # ... for more than this share of it


def percentile(values: Iterable[float], q: float) -> float:
    values = list(values)
    return float(np.percentile(values, q)) if values else 0.0


class Counting(Protocol):
    def counters(self) -> dict[str, float]: ...


@dataclass
class ShardMetrics:
    shard: int
    todo: int  # rows this run of the shard has to finish
    done: int = 0
    failed: int = 0
    audio_s: float = 0.0  # of the rows that came out ok
    errors: dict[str, int] = field(default_factory=dict)  # error rows by reason
    engine_starved_s: float = 0.0  # engines idle while rows were still to decode
    segments_reused: int = 0  # of long recordings, committed before a stop: not transcribed again
    t0: float = field(default_factory=time.monotonic)
    warned: bool = False

    def finished(self, row: RowResult) -> None:
        self.done += 1
        if row.ok:
            self.audio_s += row.duration_s or 0.0
        else:
            self.failed += 1
            reason = error_reason(row.error or "")
            self.errors[reason] = self.errors.get(reason, 0) + 1

    def warn_if_starved(self) -> None:
        """Once per shard: the engines waited for decoded audio for too large a share of it."""
        elapsed = time.monotonic() - self.t0
        if not self.warned and elapsed > STARVED_WARNING_S \
                and self.engine_starved_s > STARVED_WARNING_SHARE * elapsed:
            self.warned = True
            log.warning("decode cannot keep up: engines idle %.0f%% of the time; raise "
                        "pipeline.decode_actors or CPUs per task",
                        100 * self.engine_starved_s / elapsed)

    def snapshot(self, stages: list[Counting]) -> dict[str, Any]:
        """The shard's metrics under their logged names."""
        m: dict[str, Any] = {
            "progress/shard": self.shard, "progress/items_done": self.done,
            "progress/items_total": self.todo, "progress/items_failed": self.failed,
            "progress/audio_s_done": self.audio_s,
            "progress/shard_elapsed_s": time.monotonic() - self.t0,
            "engine/starved_s": self.engine_starved_s,
            "progress/segments_reused": self.segments_reused}
        for stage in stages:
            m.update(stage.counters())
        m.update({f"failures/{k}": v for k, v in self.errors.items()})
        return m
