"""What a person reads: a tqdm bar on a terminal, one summary line per interval in a SLURM log,
and one-off `asrd:` messages on stderr.

Why here: a 1000-task run is watched from log files as much as from W&B, so the line packs the
W&B numbers (progress, rates, latency, queues, GPUs, failures, ETA) into one grep-able row.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from tqdm import tqdm


def say(message: str) -> None:
    """One message on stderr, flushed at once so that it lands in the SLURM log even if the
    process is killed next."""
    print(f"asrd: {message}", file=sys.stderr, flush=True)


def progress(total: int | None, desc: str, **kwargs: Any) -> tqdm:
    """A tqdm bar on a terminal; a disabled one in batch logs (the periodic line covers those)."""
    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True,
                disable=not sys.stderr.isatty(), **{"unit": "item", **kwargs})


def task_bar(label: str) -> tqdm:
    """A task's bar counts percent of its shards: item totals are known per shard only."""
    return progress(100, label,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")


def show_on_bar(bar: tqdm, fraction: float | None, m: Mapping[str, Any]) -> None:
    """Move the bar to the task's `fraction` (if known) and show shard, items and failures of the
    task metrics `m`."""
    if fraction is not None:
        bar.n = round(100 * fraction, 1)
    parts = [f"shard {m['progress/shard']}"] if "progress/shard" in m else []
    parts.append(f"{m.get('progress/items_done', 0)} items")
    if m.get("progress/items_failed"):
        parts.append(f"{m['progress/items_failed']} failed")
    bar.set_postfix_str(", ".join(parts), refresh=True)


def summary_line(label: str, shard: Mapping[str, Any], shards_seen: int,
                 m: Mapping[str, Any]) -> str:
    """One line for a SLURM log: `shard` is the current shard's own metrics, `m` a snapshot of
    the logged ones (rates are since the last W&B log)."""
    parts = [f"asrd [{label}]"]
    if "progress/shard" in shard or shards_seen > 1:
        where = f"shard {shard.get('progress/shard', '?')} {shard.get('progress/items_done', 0)}"
        if "progress/items_total" in shard:
            where += f"/{shard['progress/items_total']}"
        parts.append(where)
    head = f"{m.get('progress/items_done', 0)} items"
    if "progress/fraction" in m:
        head += f", {100 * m['progress/fraction']:.1f}% of task"
    reasons = {k[9:]: v for k, v in m.items() if k.startswith("failures/") and v}
    failed = m.get("progress/items_failed", sum(reasons.values()))
    if failed or reasons:
        head += f", {failed} failed" + (
            " (" + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) + ")"
            if reasons else "")
    parts.append(head)
    if "throughput/items_per_s" in m:
        rate = f"{m['throughput/items_per_s']:.1f} items/s"
        if m.get("throughput/audio_s_per_s"):
            rate += f", {m['throughput/audio_s_per_s']:.0f}x real time"
        parts.append(rate)
    lat = [f"{k[8:].replace('_ms_', ' ')} {v:.0f} ms" for k, v in m.items()
           if k.startswith("latency/")]
    if lat:
        parts.append(", ".join(lat))
    queues = [f"{k[6:]} {v}" for k, v in m.items() if k.startswith("queue/")]
    if queues:
        parts.append("queue " + " ".join(queues))
    for k, v in m.items():
        if k.endswith("/util_pct"):
            i = k.split("/")[1]
            used = m.get(f"gpu/{i}/mem_used_gib")
            parts.append(f"gpu{i} {v:.0f}%" + (f" {used:.1f} GiB" if used is not None else ""))
    if "progress/eta_s" in m:
        parts.append(f"eta {_duration(m['progress/eta_s'])}")
    return " | ".join(parts)


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
