"""Named presets that `asrd merge` applies: which flags leave a row out of the merged dataset,
at which thresholds. Nothing is deleted from the shard files, so another preset needs only
another merge.

When a preset's thresholds are the run's own (`quality.thresholds`), the flags stored by the
pipeline are used as they are; otherwise the flags are computed again from the stored signals
(asrd.quality.flags, a pure function), and the merged output carries the preset's flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from asrd.quality.flags import FLAGS, Thresholds, row_flags
from asrd.schema import QUALITY_FIELDS


class PresetError(ValueError):
    """An unknown preset name."""


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    thresholds: Thresholds | None  # None: the run's own `quality.thresholds`
    drop: frozenset[str]  # a row with any of these flags is left out


PRESETS = {p.name: p for p in (
    Preset("default", "leave out a row with any flag, at the documented thresholds (those of "
           "NeMo Curator/Granary and OWSM; a reference is judged by CER)", Thresholds(),
           frozenset(FLAGS)),
    Preset("strict", "as default, and a row whose text is 10% or more WER from its reference "
           "is left out too (distil-whisper's rule, for a strong model's labels)",
           Thresholds(max_reference_wer=0.10), frozenset(FLAGS)),
    Preset("run", "leave out a row with any flag, at the run's own quality.thresholds", None,
           frozenset(FLAGS)),
    Preset("none", "keep every row", None, frozenset()),
)}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise PresetError(f"unknown quality preset {name!r}: one of {sorted(PRESETS)}")
    return PRESETS[name]


# what flags are computed from: every quality column but the flags themselves
SIGNAL_COLUMNS = tuple(name for name, _ in QUALITY_FIELDS if name != "flags")


class PresetFilter:
    """Applies a preset to merged record batches and counts the rows each flag left out (a
    row with several flags counts under each)."""

    def __init__(self, preset: Preset, run_thresholds: Thresholds, default_language: str | None):
        self.preset, self.default_language = preset, default_language
        self.thresholds = preset.thresholds or run_thresholds
        self.recompute = bool(preset.drop) and self.thresholds != run_thresholds
        self.dropped = 0
        self.dropped_by_flag: dict[str, int] = {}

    def apply(self, table: pa.Table) -> pa.Table:
        if "flags" not in table.column_names or not self.preset.drop:
            return table  # a run without signals, or a preset that keeps every row
        flags = table.column("flags").to_pylist()
        if self.recompute:
            flags = self._flags_again(table, flags)
            table = table.set_column(table.column_names.index("flags"), "flags",
                                     pa.array(flags, pa.list_(pa.string())))
        keep = []
        for fl in flags:
            hit = [f for f in fl or () if f in self.preset.drop]
            keep.append(not hit)
            for f in hit:
                self.dropped_by_flag[f] = self.dropped_by_flag.get(f, 0) + 1
        self.dropped += keep.count(False)
        return table.filter(pa.array(keep, pa.bool_()))

    def _flags_again(self, table: pa.Table, stored: list[Any]) -> list[Any]:
        """The preset's flags of rows that have signals (null stays null: an error row, or a
        row written without signals)."""
        cols = [c for c in SIGNAL_COLUMNS if c in table.column_names]
        rows = table.select(cols).to_pylist()
        languages = (table.column("language").to_pylist() if "language" in table.column_names
                     else [None] * table.num_rows)
        return [None if fl is None else row_flags(
                    s, self.thresholds, lang if isinstance(lang, str) and lang
                    else self.default_language)
                for fl, s, lang in zip(stored, rows, languages)]

    def summary(self) -> dict[str, Any]:
        return {"preset": self.preset.name, "dropped_by_preset": self.dropped,
                "dropped_by_flag": dict(sorted(self.dropped_by_flag.items(),
                                               key=lambda kv: -kv[1]))}

