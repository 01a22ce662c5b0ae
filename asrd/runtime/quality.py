"""The quality stage: a finished ok row's signal columns and flags (asrd.quality), computed as
the row is written, where its text, its speech seconds, the engine's signals and the index
row's reference and language are all at hand.

It runs in the driver: about 0.3 ms per row on one core (most of it text language ID, measured
in bench/bench_quality.py), well under the driver's share of a task at the rates of one node.
"""

from __future__ import annotations

from omegaconf import DictConfig

from asrd.quality.signals import SignalMaker, SignalSettings
from asrd.runtime.records import RowResult


class QualityStage:
    """Fills `RowResult.quality` of ok rows; with `quality.enabled=false`, does nothing."""

    def __init__(self, cfg: DictConfig):
        self.maker = (SignalMaker(SignalSettings.of(cfg.quality, cfg.language_id),
                                  cfg.engine.language)
                      if cfg.quality.enabled else None)

    def assess(self, row: RowResult) -> RowResult:
        if self.maker is not None and row.ok:
            reference = row.index_row.columns.get("reference")
            row.quality = self.maker.row(row.text or "", row.speech_s, row.engine_signals,
                                         reference if isinstance(reference, str) else None,
                                         row.language)
        return row
