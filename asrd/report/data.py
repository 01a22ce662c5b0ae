"""What the report shows, gathered from the shard files (every row, flagged or not: nothing is
deleted there) and the done-markers (each shard's wall time, host, task and finish time).

Counts are exact over all rows; the signal values for the histograms are a uniform sample of at
most `MAX_SIGNAL_ROWS` rows (spread over the shards), so memory stays flat on any run size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from omegaconf import DictConfig

from asrd.config import Thresholds
from asrd.quality.flags import LanguageRule
from asrd.quality.presets import SIGNAL_COLUMNS, flags_again, get_preset
from asrd.rundir import RunDir

MAX_SIGNAL_ROWS = 200_000
FLAGGED_SAMPLE = 24  # flagged rows shown (and logged to W&B)

# (column, title, the threshold (a `Thresholds` field) drawn on its histogram, or None)
SIGNALS = [
    ("avg_logprob", "average token log-probability", "min_avg_logprob"),
    ("no_speech_prob", "no-speech probability", "max_no_speech_prob"),
    ("audio_language_p", "spoken language confidence", None),
    ("text_language_p", "text language confidence", None),
    ("compression_ratio", "compression ratio (zlib)", "max_compression_ratio"),
    ("ngram_repeats", "most repeats of one n-gram", "max_ngram_repeats"),
    ("unique_word_share", "unique-word share", "max_unique_word_share"),
    ("longest_word", "longest word (characters)", "long_word_chars"),
    ("chars_per_s", "characters per second of speech", "max_chars_per_s"),
    ("words_per_s", "words per second of speech", None),
    ("wer", "WER against the reference", "max_reference_wer"),
    ("cer", "CER against the reference", "max_reference_cer"),
]


@dataclass
class TaskSpan:
    """One shard's run: which task ran it, when, and how fast."""

    task: str
    shard: int
    start: float  # seconds since the first shard started
    end: float
    audio_s_per_s: float


@dataclass
class ReportData:
    title: str
    summary: Mapping[str, Any]
    thresholds: Thresholds
    signals: dict[str, np.ndarray] = field(default_factory=dict)  # column -> sampled values
    flags_by_language: dict[str, dict[str, int]] = field(default_factory=dict)
    rows_by_language: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    spans: list[TaskSpan] = field(default_factory=list)
    shard_wall_s: dict[int, float] = field(default_factory=dict)
    flagged: list[dict[str, Any]] = field(default_factory=list)  # a sample of flagged rows
    figures: dict[str, bytes] = field(default_factory=dict)  # name -> PNG


def _merge_thresholds(cfg: DictConfig, summary: Mapping[str, Any]) -> Thresholds:
    """The thresholds the merge judged by (recorded in its summary since merges record them;
    before that, its preset's)."""
    used = (summary.get("quality") or {}).get("thresholds")
    if used:
        return Thresholds.of(used)
    preset = get_preset(summary.get("preset") or cfg.merge.preset)
    return preset.thresholds or Thresholds.of(cfg.quality.thresholds)


def gather(cfg: DictConfig, run_dir: Path, summary: Mapping[str, Any]) -> ReportData:
    rd = RunDir(run_dir)
    data = ReportData(title=f"{cfg.run.name}: label quality", summary=summary,
                      thresholds=_merge_thresholds(cfg, summary))
    shards = sorted(int(s["shard"]) for s in summary.get("per_shard") or [])
    per_shard_cap = max(1, MAX_SIGNAL_ROWS // max(1, len(shards)))
    samples: dict[str, list[np.ndarray]] = {c: [] for c, _, _ in SIGNALS}
    rng = np.random.default_rng(0)
    for shard in shards:
        try:  # one open per shard file: on a shared store each costs round trips
            with pq.ParquetFile(rd.shard_file(shard)) as pf:
                table = pf.read(columns=_columns(pf.schema_arrow))
        except FileNotFoundError:
            continue
        _count(data, table, cfg.engine.language, data.thresholds,
               LanguageRule.of(cfg.language_id))
        keep = (np.sort(rng.choice(table.num_rows, per_shard_cap, replace=False))
                if table.num_rows > per_shard_cap else None)
        for col in samples:
            if col in table.column_names:
                values = table.column(col).to_numpy(zero_copy_only=False).astype(float)
                values = values if keep is None else values[keep]
                samples[col].append(values[~np.isnan(values)])
    data.signals = {c: np.concatenate(v) if v else np.zeros(0) for c, v in samples.items()}
    data.errors = dict(summary.get("failures_by_reason") or {})
    _timeline(data, rd, shards)
    return data


def _columns(schema: pa.Schema) -> list[str]:
    wanted = ["id", "text", "error", "flags", "language", "reference", "speech_s",
              *dict.fromkeys([*(c for c, _, _ in SIGNALS), *SIGNAL_COLUMNS])]
    return [c for c in wanted if c in schema.names]


def _count(data: ReportData, table: pa.Table, default_language: str | None,
           thresholds: Thresholds, rule: LanguageRule | None = None) -> None:
    """Rows and flags per language (the row's own, else the run's), and flagged examples; the
    flags as the merge computed them, at its thresholds."""
    if "flags" not in table.column_names:
        return
    languages = (table.column("language").to_pylist() if "language" in table.column_names
                 else [None] * table.num_rows)
    flags = flags_again(table, thresholds, default_language, rule)
    table = table.set_column(table.column_names.index("flags"), "flags",
                             pa.array(flags, pa.list_(pa.string())))
    ok = pc.is_null(table.column("error")).to_pylist()
    for lang, fl, is_ok in zip(languages, flags, ok):
        if not is_ok:
            continue
        key = lang if isinstance(lang, str) and lang else (default_language or "unknown")
        data.rows_by_language[key] = data.rows_by_language.get(key, 0) + 1
        per = data.flags_by_language.setdefault(key, {})
        for f in fl or ():
            per[f] = per.get(f, 0) + 1
    if len(data.flagged) < FLAGGED_SAMPLE:
        hit = pc.greater(pc.fill_null(pc.list_value_length(table.column("flags")), 0), 0)
        shown = [c for c in ("id", "flags", "text", "reference", "speech_s") if c in
                 table.column_names]
        data.flagged += table.filter(hit).select(shown).slice(
            0, FLAGGED_SAMPLE - len(data.flagged)).to_pylist()


def _timeline(data: ReportData, rd: RunDir, shards: list[int]) -> None:
    """Each merged shard's span on its task's lane, from its marker's figures."""
    markers = {s: m for s, m in rd.markers.read_all().items() if isinstance(m, dict)}
    rows = []
    for s in shards:
        m = markers.get(s)
        if not m or not m.get("wall_s") or not m.get("finished_at"):
            continue
        task = m.get("slurm_array") or f"{m.get('host') or 'local'}"
        end = float(m["finished_at"])
        rows.append((task, s, end - float(m["wall_s"]), end,
                     float(m.get("audio_s") or 0) / float(m["wall_s"])))
        data.shard_wall_s[s] = float(m["wall_s"])
    t0 = min((r[2] for r in rows), default=0.0)
    data.spans = [TaskSpan(task, s, start - t0, end - t0, rate)
                  for task, s, start, end, rate in rows]
