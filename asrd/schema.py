"""The file contracts: index rows and output rows (Parquet schemas). Versioned; keep them stable.

Index row: `id` (unique, stable), `path` (where the audio is) or `audio` (its bytes), `duration_s`,
`sample_rate`, `channels`, `num_bytes`, `probe_error` (why the header could not be read; such rows
are kept so that they end as error rows, never silently dropped), plus passthrough columns.

Output row, one per index row of a shard: `id`, `row` (its row number in the index), `text`,
`segments` (start, end, text; seconds in the recording), `speaker_turns` (a diarising model's
turns: speaker, start_s, end_s, text; seconds in the recording; null for other models),
`duration_s`, `speech_s` (seconds of
detected speech; 0 and an empty text when the recording has none), `model`, `engine`, `error` (null when ok),
`decode_s`, `engine_s`, `pack_window` and `pack_offset_s` (the id of the row whose window this
short clip shared, and where it started in it; null when transcribed alone), the quality signals
and `flags` (QUALITY_FIELDS; null on error rows), plus `path` and the passthrough columns (the
audio bytes are not copied; a manifest's reference transcript is the passthrough `reference`).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

SCHEMA_VERSION = 5

INDEX_COLUMNS = ("id", "path", "audio", "duration_s", "sample_rate", "channels", "num_bytes",
                 "probe_error")

# The index columns that decide what the engines do (`language` forces the transcription
# language): a change voids the shards it touches. Every other column is a label that only
# travels beside the transcript, so a change needs only a re-merge (asrd.index_identity).
WORK_COLUMNS = frozenset(INDEX_COLUMNS) | {"language"}

INDEX_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("path", pa.string()),
    ("duration_s", pa.float64()),
    ("sample_rate", pa.int32()),
    ("channels", pa.int32()),
    ("num_bytes", pa.int64()),
    ("probe_error", pa.string()),
])

SEGMENT_TYPE = pa.struct([("start", pa.float64()), ("end", pa.float64()), ("text", pa.string()),
                          ("avg_logprob", pa.float64()), ("no_speech_prob", pa.float64())])

# A speaker's turn (asrd.engines.base.SpeakerTurn); the tag names a speaker within one engine
# input only: the model labels each input on its own.
SPEAKER_TURN_TYPE = pa.struct([("speaker", pa.string()), ("start_s", pa.float64()),
                               ("end_s", pa.float64()), ("text", pa.string())])

# Quality signals of an ok row (asrd.quality; README "Output schema" says what each means) and
# the flags its thresholds trip.
QUALITY_FIELDS = [
    ("avg_logprob", pa.float64()),
    ("no_speech_prob", pa.float64()),
    ("audio_language", pa.string()),
    ("audio_language_p", pa.float64()),
    ("audio_expected_p", pa.float64()),
    ("text_language", pa.string()),
    ("text_language_p", pa.float64()),
    ("text_expected_p", pa.float64()),
    ("num_words", pa.int64()),
    ("compression_ratio", pa.float64()),
    ("ngram_repeats", pa.int64()),
    ("unique_word_share", pa.float64()),
    ("longest_word", pa.int64()),
    ("chars_per_s", pa.float64()),
    ("words_per_s", pa.float64()),
    ("hallucination", pa.string()),
    ("wer", pa.float64()),
    ("cer", pa.float64()),
    ("flags", pa.list_(pa.string())),
]

OUTPUT_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("row", pa.int64()),
    ("text", pa.string()),
    ("segments", pa.list_(SEGMENT_TYPE)),
    ("speaker_turns", pa.list_(SPEAKER_TURN_TYPE)),
    ("duration_s", pa.float64()),
    ("speech_s", pa.float64()),
    ("model", pa.string()),
    ("engine", pa.string()),
    ("error", pa.string()),
    ("decode_s", pa.float64()),
    ("engine_s", pa.float64()),
    ("pack_window", pa.string()),
    ("pack_offset_s", pa.float64()),
    *QUALITY_FIELDS,
])

# Optional judge columns; present only when the judge ran.
JUDGE_FIELDS = [("score", pa.float64()), ("judge_error", pa.string())]


def error_reason(error: str) -> str:
    """The stable category of an `error` value: the part before its first colon."""
    return error.split(":", 1)[0]


def tally(table: pa.Table, reasons: dict[str, int]) -> tuple[int, int, float]:
    """(ok rows, failed rows, audio seconds of the ok rows) of output rows; adds each failure's
    reason to `reasons`. One definition for shard markers and the merge summary."""
    err = table.column("error")
    for e in err.drop_null().to_pylist():
        reasons[error_reason(e)] = reasons.get(error_reason(e), 0) + 1
    ok_audio = pc.sum(table.column("duration_s").filter(pc.is_null(err))).as_py() or 0.0
    return err.null_count, len(err) - err.null_count, ok_audio


def passthrough_fields(index_schema: pa.Schema) -> list[pa.Field]:
    """Index columns that travel unchanged into the output (reference text, language, speaker)."""
    own = (set(INDEX_COLUMNS) - {"path"}) | set(OUTPUT_SCHEMA.names)
    return [f for f in index_schema if f.name not in own]


def output_schema(index_schema: pa.Schema, judge: bool = False,
                  language: bool = False) -> pa.Schema:
    """`language`: the language-ID pass writes each row's `language` (the index's where it
    gives one, else the routed one), so the column is there as text whatever the index has."""
    passthrough = passthrough_fields(index_schema)
    if language:
        passthrough = [f for f in passthrough if f.name != "language"] + [
            pa.field("language", pa.string())]
    fields = list(OUTPUT_SCHEMA) + (JUDGE_FIELDS if judge else []) + passthrough
    return pa.schema(fields, metadata={b"asrd_schema_version": str(SCHEMA_VERSION).encode()})
