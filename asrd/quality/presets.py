"""Named presets that `asrd merge` applies: which flags leave a row out of the merged dataset,
at which thresholds. Nothing is deleted from the shard files, so another preset needs only
another merge.

The flags are always computed again from the stored signals (asrd.quality.flags, a pure
function, about 100k rows/s): so thresholds and presets may change at merge time, and shard files
written by an earlier version are judged by the current rules. A preset is a built-in name or a
user's YAML file (`load_preset_file`); `quality.thresholds.*` keys the merge command itself sets
apply on top of the preset's thresholds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa
import yaml

from asrd.quality.flags import FLAGS, RENAMED_FLAGS, LanguageRule, Thresholds, row_flags
from asrd.schema import QUALITY_FIELDS


class PresetError(ValueError):
    """An unknown preset name, or a preset file that cannot be used."""


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    thresholds: Thresholds | None  # None: the run's own `quality.thresholds`
    drop: frozenset[str]  # a row with any of these flags is left out
    file: str | None = None  # the user's preset file it was read from; None: built in


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

PRESET_FILE_KEYS = ("name", "description", "base", "drop", "thresholds")


def is_preset_file(name: str) -> bool:
    """Whether a preset name names a file (a YAML path) rather than a built-in preset."""
    return name.endswith((".yaml", ".yml")) or "/" in name


def get_preset(name: str) -> Preset:
    """A built-in preset by name, or a user's preset file by its path."""
    if is_preset_file(name):
        return load_preset_file(Path(name))
    if name not in PRESETS:
        raise PresetError(f"unknown quality preset {name!r}: one of {sorted(PRESETS)}, or a "
                          "preset file (.yaml)")
    return PRESETS[name]


def load_preset_file(path: Path) -> Preset:
    """A user's preset: a YAML mapping with `thresholds` (any of quality.thresholds' keys, on
    top of those of `base`, a built-in preset: default unless named), `drop` (the flags that
    leave a row out; default every flag), and optional `name` and `description`."""
    where = f"preset file {path}"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PresetError(f"{where} not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise PresetError(f"{where} cannot be read: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict):
        raise PresetError(f"{where} must be a mapping with keys {list(PRESET_FILE_KEYS)}")
    unknown = sorted(set(map(str, raw)) - set(PRESET_FILE_KEYS))
    if unknown:
        raise PresetError(f"{where}: unknown keys {unknown}; it takes {list(PRESET_FILE_KEYS)}")
    base_name = str(raw.get("base") or "default")
    if base_name not in PRESETS or PRESETS[base_name].thresholds is None:
        raise PresetError(f"{where}: base must be one of "
                          f"{sorted(k for k, p in PRESETS.items() if p.thresholds)}")
    thresholds = with_edits(PRESETS[base_name].thresholds, raw.get("thresholds") or {}, where)
    drop = raw.get("drop", list(FLAGS))
    if not isinstance(drop, list):
        raise PresetError(f"{where}: drop must be a list of flags, of {list(FLAGS)}")
    for flag in drop:
        if flag not in FLAGS:
            renamed = (f" (renamed {RENAMED_FLAGS[flag]!r}, with a new rule)"
                       if flag in RENAMED_FLAGS else "")
            raise PresetError(f"{where}: unknown flag {flag!r}{renamed}; flags are {list(FLAGS)}")
    return Preset(str(raw.get("name") or path.stem), str(raw.get("description") or ""),
                  thresholds, frozenset(drop), file=str(path.resolve()))


def with_edits(base: Thresholds, edits: Mapping[str, Any], where: str) -> Thresholds:
    """`base` with some thresholds changed; an unknown name or a value of the wrong type is a
    PresetError naming `where` they came from."""
    if not isinstance(edits, Mapping):
        raise PresetError(f"{where}: thresholds must be a mapping of quality.thresholds keys")
    fields = {f.name: f for f in dataclasses.fields(Thresholds)}
    values: dict[str, Any] = {}
    for key, value in edits.items():
        if key not in fields:
            raise PresetError(f"{where}: unknown threshold {key!r}; thresholds are "
                              f"{sorted(fields)}")
        want = int if fields[key].type in ("int", int) else float
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                want is int and not float(value).is_integer()):
            raise PresetError(f"{where}: threshold {key} must be a number, not {value!r}")
        values[key] = want(value)
    return dataclasses.replace(base, **values)


# what flags are computed from: every quality column but the flags themselves
SIGNAL_COLUMNS = tuple(name for name, _ in QUALITY_FIELDS if name != "flags")


class PresetFilter:
    """Applies a preset to merged record batches: computes every row's flags again at the
    preset's thresholds (with `edits` on top), leaves out rows with a dropped flag, and counts
    the rows each flag left out (a row with several flags counts under each)."""

    def __init__(self, preset: Preset, run_thresholds: Thresholds, default_language: str | None,
                 edits: Mapping[str, Any] | None = None, rule: LanguageRule | None = None):
        self.preset, self.default_language, self.rule = preset, default_language, rule
        self.edits = dict(edits or {})
        self.thresholds = with_edits(preset.thresholds or run_thresholds, self.edits,
                                     "quality.thresholds")
        self.dropped = 0
        self.dropped_by_flag: dict[str, int] = {}

    def apply(self, table: pa.Table) -> pa.Table:
        if "flags" not in table.column_names:
            return table  # a run without signals
        flags = flags_again(table, self.thresholds, self.default_language, self.rule)
        table = table.set_column(table.column_names.index("flags"), "flags",
                                 pa.array(flags, pa.list_(pa.string())))
        if not self.preset.drop:
            return table
        keep = []
        for fl in flags:
            hit = [f for f in fl or () if f in self.preset.drop]
            keep.append(not hit)
            for f in hit:
                self.dropped_by_flag[f] = self.dropped_by_flag.get(f, 0) + 1
        self.dropped += keep.count(False)
        return table.filter(pa.array(keep, pa.bool_()))

    def summary(self) -> dict[str, Any]:
        """What `summary.json` records: the counts, and exactly what judged the rows."""
        return {"preset": self.preset.name, "dropped_by_preset": self.dropped,
                "dropped_by_flag": dict(sorted(self.dropped_by_flag.items(),
                                               key=lambda kv: -kv[1])),
                "quality": {"preset": self.preset.name, "preset_file": self.preset.file,
                            "thresholds": dataclasses.asdict(self.thresholds),
                            "threshold_edits": self.edits,
                            "drop": sorted(self.preset.drop, key=FLAGS.index)}}


def flags_again(table: pa.Table, thresholds: Thresholds, default_language: str | None,
                rule: LanguageRule | None = None
                ) -> list[Any]:
    """The flags of output rows at `thresholds`, from their stored signals (null stays null: an
    error row, or a row written without signals)."""
    cols = [c for c in SIGNAL_COLUMNS if c in table.column_names]
    rows = table.select(cols).to_pylist()
    languages = (table.column("language").to_pylist() if "language" in table.column_names
                 else [None] * table.num_rows)
    return [None if fl is None else row_flags(
                s, thresholds, lang if isinstance(lang, str) and lang else default_language, rule)
            for fl, s, lang in zip(table.column("flags").to_pylist(), rows, languages)]
