"""The report's figures (matplotlib, rendered off-screen to PNG bytes)."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

from asrd.report.data import SIGNALS, ReportData

STRAGGLER = 1.5  # a shard slower than this times the median wall time is drawn as a straggler


def figures(data: ReportData) -> dict[str, bytes]:
    """Every figure the data supports, by name."""
    out: dict[str, bytes] = {}
    if any(len(v) for v in data.signals.values()):
        out["signals"] = _png(lambda plt: _histograms(plt, data))
    if data.flags_by_language:
        out["flags_by_language"] = _png(lambda plt: _flags(plt, data))
    if data.errors:
        out["error_reasons"] = _png(lambda plt: _errors(plt, data))
    if data.spans:
        out["throughput_over_time"] = _png(lambda plt: _throughput(plt, data))
        out["shard_wall_times"] = _png(lambda plt: _wall_times(plt, data))
    return out


def _png(draw: Callable) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw(plt)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _histograms(plt, data: ReportData):
    shown = [(c, t, th) for c, t, th in SIGNALS if len(data.signals.get(c, ()))]
    cols = 3
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.8 * rows), squeeze=False)
    for ax, (col, title, threshold) in zip(axes.flat, shown):
        values = data.signals[col]
        spread = float(np.ptp(values)) > 1e-9 * max(1.0, float(np.abs(values).max()))
        ax.hist(values, bins=40 if spread else 1, color="#4c72b0")
        if threshold is not None:
            limit = getattr(data.thresholds, threshold)
            ax.axvline(limit, color="#c44e52", linestyle="--", label=f"threshold {limit:g}")
            ax.legend(fontsize=8)
        ax.set_title(f"{title} ({len(values)} rows)", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _flags(plt, data: ReportData):
    languages = sorted(data.flags_by_language, key=lambda k: -data.rows_by_language.get(k, 0))
    names = sorted({f for per in data.flags_by_language.values() for f in per})
    fig, ax = plt.subplots(figsize=(10, 0.6 + 0.45 * max(1, len(languages))))
    left = np.zeros(len(languages))
    for name in names:
        share = np.array([data.flags_by_language[k].get(name, 0) / max(1, data.rows_by_language[k])
                          for k in languages])
        ax.barh(languages, share, left=left, label=name)
        left += share
    ax.set_xlabel("flags per ok row (a row may have several)")
    ax.set_title("flags per language (the row's language)")
    if names:
        ax.legend(fontsize=8, loc="lower right")
    return fig


def _errors(plt, data: ReportData):
    reasons = sorted(data.errors, key=lambda k: data.errors[k])
    fig, ax = plt.subplots(figsize=(10, 0.6 + 0.4 * len(reasons)))
    ax.barh(reasons, [data.errors[r] for r in reasons], color="#c44e52")
    ax.set_xlabel("rows")
    ax.set_title("error rows by reason")
    return fig


def _throughput(plt, data: ReportData):
    tasks = sorted({s.task for s in data.spans})
    fig, ax = plt.subplots(figsize=(10, 3.5))
    for k, task in enumerate(tasks):
        spans = sorted((s for s in data.spans if s.task == task), key=lambda s: s.start)
        color = f"C{k % 10}"
        for s in spans:
            ax.hlines(s.audio_s_per_s, s.start, s.end, color=color, linewidth=3,
                      label=task if s is spans[0] else None)
    ax.set_xlabel("seconds since the first shard started")
    ax.set_ylabel("audio s per s")
    ax.set_title("throughput over time per task (each line one shard, from its marker)")
    if len(tasks) <= 12:
        ax.legend(fontsize=8)
    return fig


def _wall_times(plt, data: ReportData):
    shards = sorted(data.shard_wall_s)
    walls = np.array([data.shard_wall_s[s] for s in shards])
    median = float(np.median(walls))
    fig, ax = plt.subplots(figsize=(10, 3.5))
    slow = walls > STRAGGLER * median
    ax.bar(range(len(shards)), walls, color=np.where(slow, "#c44e52", "#4c72b0"))
    ax.axhline(median, color="black", linestyle=":", label=f"median {median:.0f} s")
    ax.axhline(STRAGGLER * median, color="#c44e52", linestyle="--",
               label=f"straggler: > {STRAGGLER:g}x median ({int(slow.sum())} shards)")
    ax.set_xlabel("shard")
    ax.set_ylabel("wall time (s)")
    ax.set_title("shard wall times")
    ax.legend(fontsize=8)
    if len(shards) <= 40:
        ax.set_xticks(range(len(shards)), [str(s) for s in shards])
    return fig
