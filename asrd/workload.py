"""A shard's work in the units a task's time goes by: rows and model windows.

Why not audio seconds: Whisper pads every input to its 30 s window, so a 3 s clip alone costs the
encoder as much as 30 s of a long recording, and every row, however short, is opened, decoded,
segmented, scored and written on its own. Clips of at most `audio.pack.max_clip_s` share windows
(in order, within one decode call of `pipeline.items_per_decode_task` rows, as the decode actors
pack them: asrd.audio.pack.plan_windows); a longer recording takes one window per
`audio.max_segment_s`. So a shard of short clips costs more per audio second than one long file,
and a rate per audio second measured on one mix is wrong on another (by -42% and +43% on the
one-node cluster). The forecast's rate is seconds per row and per window instead.

Durations are the index's; the pipeline packs and segments by detected speech, which is at most
that, so windows are counted as the index's durations would need them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig

from asrd.audio.pack import PackSettings, plan_windows
from asrd.engines import EngineUnavailable
from asrd.engines.registry import engine_packs


@dataclass(frozen=True)
class WorkShape:
    """The settings that decide how many windows a row takes."""

    pack: PackSettings | None  # None: every clip is transcribed alone
    window_s: float
    chunk_rows: int  # rows per decode call: packing never crosses one

    @classmethod
    def of(cls, cfg: DictConfig) -> WorkShape:
        window = float(cfg.audio.max_segment_s)
        pack = None
        if cfg.audio.pack.enabled and _engine_packs(cfg):
            pack = PackSettings(float(cfg.audio.pack.max_clip_s), float(cfg.audio.pack.gap_s),
                                window)
        return cls(pack, window, max(1, int(cfg.pipeline.items_per_decode_task)))


def _engine_packs(cfg: DictConfig) -> bool:
    """Whether the engine splits packed windows by time (as the pipeline asks it); where that
    cannot be told here (the model is on the task's nodes only), packing is assumed on."""
    try:
        return engine_packs(cfg)
    except (EngineUnavailable, OSError, ValueError, ImportError):
        return True


def row_windows(durations: np.ndarray, shape: WorkShape) -> np.ndarray:
    """Each row's share of model windows: 1/k for each of the k clips of a packed window,
    ceil(duration / window) for any other row (at least 1)."""
    alone = np.maximum(1.0, np.ceil(durations / shape.window_s))
    if shape.pack is None:
        return alone
    out = alone.copy()
    short = durations <= shape.pack.max_clip_s
    for start in range(0, len(durations), shape.chunk_rows):
        stop = min(start + shape.chunk_rows, len(durations))
        if short[start:stop].sum() < 2:
            continue
        lengths = [float(d) if s else None for d, s in
                   zip(durations[start:stop], short[start:stop])]
        for group in plan_windows(lengths, shape.pack):
            out[[start + i for i in group]] = 1.0 / len(group)
    return out


@dataclass(frozen=True)
class Work:
    rows: int
    windows: float
    audio_s: float


def cumulative(durations: np.ndarray, shape: WorkShape) -> np.ndarray:
    """Running sum of windows (element k: rows [0, k)), so a contiguous range's is a
    difference."""
    return np.concatenate([[0.0], np.cumsum(row_windows(durations, shape))])


def work_of(cum_windows: np.ndarray, cum_audio: np.ndarray, start: int, stop: int) -> Work:
    return Work(stop - start, float(cum_windows[stop] - cum_windows[start]),
                float(cum_audio[stop] - cum_audio[start]))

