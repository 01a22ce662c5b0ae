"""The report's figures (matplotlib, rendered off-screen to PNG bytes)."""

from __future__ import annotations

import colorsys
import io
import math
import re
from collections.abc import Callable

import numpy as np

from asrd.report.data import SIGNALS, ReportData

STRAGGLER = 1.5  # a shard slower than this times the median wall time is drawn as a straggler
LEGEND_ROWS = 20  # task names per legend column, beside the plot
MAX_LEGEND_TASKS = 80  # more tasks than this are not named one by one
INTEGER_BINS = 60  # integer values spanning at most this many get one bar per value


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


def natural_key(name: str) -> list:
    """Sort key that orders the numbers in a name by value: task 32_2 before 32_10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", name) if part]


def task_colors(n: int) -> list:
    """`n` distinct colours: matplotlib's qualitative palettes while they last (10, then 20),
    beyond that hues a golden angle apart (each one new, neighbours far apart)."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](k) for k in range(n)]
    if n <= 20:
        return [colormaps["tab20"](k) for k in range(n)]
    return [colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 0.75 if k % 2 else 0.55,
                                0.85 if (k // 2) % 2 else 0.65) for k in range(n)]


def _integer_axis(axis) -> None:
    """Ticks at whole numbers only: the axis counts rows, or the values are counts."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _bins(values: np.ndarray, limit: float | None) -> tuple[np.ndarray, bool]:
    """The histogram's bin edges over what the axis shows (the values and the threshold, so
    that values bunched far from it, 0.99998 text-language confidences, still make bars one
    can see), and whether the values are whole numbers: then one bar per value when the range
    is short, and whole-number ticks."""
    low, high = float(values.min()), float(values.max())
    if limit is not None:
        low, high = min(low, limit), max(high, limit)
    if np.all(values == np.round(values)) and high - low <= INTEGER_BINS:
        return np.arange(math.floor(low) - 0.5, math.ceil(high) + 1.5), True
    if high - low <= 1e-9 * max(1.0, abs(low), abs(high)):  # one value, no threshold
        pad = max(0.01, 0.02 * abs(low))
        low, high = low - pad, high + pad
    return np.linspace(low, high, 41), False


def _histograms(plt, data: ReportData):
    shown = [(c, t, th) for c, t, th in SIGNALS if len(data.signals.get(c, ()))]
    cols = 3
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.8 * rows), squeeze=False)
    for ax, (col, title, threshold) in zip(axes.flat, shown):
        values = data.signals[col]
        limit = getattr(data.thresholds, threshold) if threshold is not None else None
        bins, whole = _bins(values, limit)
        ax.hist(values, bins=bins, color="#4c72b0")
        ax.set_ylabel("rows", fontsize=8)
        _integer_axis(ax.yaxis)
        if whole:
            _integer_axis(ax.xaxis)
        if limit is not None:
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
    from matplotlib.ticker import PercentFormatter

    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("share of ok rows with each flag (a row may have several)")
    ax.set_ylabel("language")
    ax.set_title("flags per language (the row's language)")
    if names:  # beside the bars, never over them
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="flag",
                  title_fontsize=8)
    return fig


def _errors(plt, data: ReportData):
    reasons = sorted(data.errors, key=lambda k: data.errors[k])
    fig, ax = plt.subplots(figsize=(10, 0.6 + 0.4 * len(reasons)))
    ax.barh(reasons, [data.errors[r] for r in reasons], color="#c44e52")
    ax.set_xlabel("rows")
    ax.set_ylabel("reason")
    _integer_axis(ax.xaxis)
    ax.set_title("error rows by reason")
    return fig


def _throughput(plt, data: ReportData):
    tasks = sorted({s.task for s in data.spans}, key=natural_key)
    fig, ax = plt.subplots(figsize=(10, 3.5))
    for task, color in zip(tasks, task_colors(len(tasks))):
        spans = [s for s in data.spans if s.task == task]
        # one collection per task, not one artist per shard: memory flat in the shard count
        ax.hlines([s.audio_s_per_s for s in spans], [s.start for s in spans],
                  [s.end for s in spans], color=color, linewidth=3, label=task)
    ax.set_xlabel("seconds since the first shard started")
    ax.set_ylabel("audio s per s")
    title = "throughput over time per task (each line one shard, from its marker)"
    if len(tasks) <= MAX_LEGEND_TASKS:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="task",
                  title_fontsize=8, ncol=math.ceil(len(tasks) / LEGEND_ROWS))
    else:
        title += f"; {len(tasks)} tasks, not named"
    ax.set_title(title)
    return fig


def _wall_times(plt, data: ReportData):
    shards = sorted(data.shard_wall_s)
    walls = np.array([data.shard_wall_s[s] for s in shards])
    median = float(np.median(walls))
    fig, ax = plt.subplots(figsize=(10, 3.5))
    slow = walls > STRAGGLER * median
    # at their numbers; one line collection, not a bar artist per shard (10,000 shards)
    ax.vlines(shards, 0, walls, colors=np.where(slow, "#c44e52", "#4c72b0"),
              linewidth=max(0.5, min(8.0, 400 / len(shards))))
    ax.axhline(median, color="black", linestyle=":", label=f"median {median:.0f} s")
    ax.axhline(STRAGGLER * median, color="#c44e52", linestyle="--",
               label=f"straggler: > {STRAGGLER:g}x median ({int(slow.sum())} shards)")
    ax.set_xlabel("shard")
    ax.set_ylabel("wall time (s)")
    ax.set_title("shard wall times")
    ax.legend(fontsize=8)
    if len(shards) <= 40:
        ax.set_xticks(shards, [str(s) for s in shards])
    else:
        _integer_axis(ax.xaxis)
    return fig
