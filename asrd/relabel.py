"""Merge-time labels: the merged rows carry the index's current label columns (a reference, a
speaker: every index column but the work columns, asrd.schema.WORK_COLUMNS), not the copies the
shard files took when they were written. So a reference corrected after the run needs only a
re-merge: the merged row shows the new reference, with its WER and CER and the flags they trip
computed again (asrd.quality), as the pipeline would have.

Cost: the shard's label columns are read from the index beside its ids (which merge reads
anyway), and compared per batch; only rows whose reference changed are scored again.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from asrd.quality.flags import LanguageRule, Thresholds, row_flags
from asrd.quality.presets import SIGNAL_COLUMNS
from asrd.quality.reference import score
from asrd.schema import JUDGE_FIELDS, OUTPUT_SCHEMA, WORK_COLUMNS, passthrough_fields

REFERENCE = "reference"


def label_fields(index_schema: pa.Schema) -> list[pa.Field]:
    """The index's label columns: passthrough columns that are not work columns (nor named
    like the judge's columns, which the shard files' own values fill)."""
    judge = {name for name, _ in JUDGE_FIELDS}
    return [f for f in passthrough_fields(index_schema)
            if f.name not in WORK_COLUMNS and f.name not in judge]


def merged_schema(shard_schema: pa.Schema, index_schema: pa.Schema) -> pa.Schema:
    """The shard files' schema with its label columns as the index has them now: a label the
    index still has keeps its place (with the index's type), one it lost goes, a new one comes
    last."""
    labels = {f.name: f for f in label_fields(index_schema)}
    fields = [labels.get(f.name, f) for f in shard_schema
              if f.name in labels or f.name not in _shard_labels(shard_schema)]
    fields += [f for name, f in labels.items() if name not in shard_schema.names]
    return pa.schema(fields, metadata=shard_schema.metadata)


def _shard_labels(shard_schema: pa.Schema) -> set[str]:
    """The label columns a shard file carries (those of the index it was made from)."""
    own = set(OUTPUT_SCHEMA.names) | {name for name, _ in JUDGE_FIELDS} | WORK_COLUMNS
    return {f.name for f in shard_schema if f.name not in own}


class Relabel:
    """Puts the index's label values into merged batches (rows aligned by the caller)."""

    def __init__(self, schema: pa.Schema, index_schema: pa.Schema, thresholds: Thresholds,
                 default_language: str | None, rule: LanguageRule | None = None):
        self.schema, self.thresholds, self.rule = schema, thresholds, rule
        self.default_language = default_language
        self.labels = [f.name for f in label_fields(index_schema)]
        self.rescored = 0  # rows whose WER/CER were computed again against a changed reference

    def apply(self, table: pa.Table, index_rows: pa.Table) -> pa.Table:
        """`table`: shard rows; `index_rows`: the same rows of the index (its label columns)."""
        if REFERENCE in self.labels and "wer" in table.column_names:
            table = self._rescore(table, index_rows.column(REFERENCE))
        columns = [index_rows.column(f.name) if f.name in self.labels else table.column(f.name)
                   for f in self.schema]
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _rescore(self, table: pa.Table, new: pa.ChunkedArray) -> pa.Table:
        """WER, CER and flags again for the ok rows whose reference is not the stored one."""
        old = (table.column(REFERENCE) if REFERENCE in table.column_names
               else pa.nulls(table.num_rows, pa.string()))
        same = pc.fill_null(pc.equal(old.cast(pa.string()), new.cast(pa.string())),
                            False)
        both_null = pc.and_(pc.is_null(old), pc.is_null(new))
        changed = pc.invert(pc.or_(same, both_null))
        todo = pc.and_(changed, pc.is_valid(table.column("flags")))  # ok rows with signals
        rows = pc.indices_nonzero(todo).to_pylist()
        if not rows:
            return table
        wer = table.column("wer").to_pylist()
        cer = table.column("cer").to_pylist()
        flags = table.column("flags").to_pylist()
        signals = table.select([c for c in SIGNAL_COLUMNS if c in table.column_names])
        languages = (table.column("language").to_pylist() if "language" in table.column_names
                     else [None] * table.num_rows)
        refs, texts = new.to_pylist(), table.column("text").to_pylist()
        for i in rows:
            expected = self._expected_language(languages[i])
            ref = refs[i]
            scores = score(texts[i] or "", ref, expected) if isinstance(ref, str) else None
            wer[i], cer[i] = (scores.wer, scores.cer) if scores else (None, None)
            s: dict[str, Any] = signals.slice(i, 1).to_pylist()[0]
            s.update(wer=wer[i], cer=cer[i])
            flags[i] = row_flags(s, self.thresholds, expected, self.rule)
        self.rescored += len(rows)
        for name, values in (("wer", wer), ("cer", cer), ("flags", flags)):
            k = table.column_names.index(name)
            table = table.set_column(k, table.schema.field(k), pa.array(values,
                                                                         table.schema.field(k).type))
        return table

    def _expected_language(self, row_language: Any) -> str | None:
        """As the pipeline judged the row: its own language, else the run's."""
        return row_language if isinstance(row_language, str) and row_language else (
            self.default_language or None)
