"""What an index holds, as one content hash per column: so that a changed reference text is
noticed even when the file keeps its size, and so that the change can be told apart by column.

`asrd index` hashes each record batch as it writes it and stores the result in the Parquet
footer (`asrd.columns`); an index written by another tool is hashed from its data when first
looked at. The hash of a column does not depend on how its rows are cut into batches (each of a
column's streams, values, lengths and null positions, is hashed on its own), so both ways give
the same identity for the same content.

Columns fall in two kinds (asrd.schema.WORK_COLUMNS): the work columns (ids, paths, embedded
audio, the probe's duration, rate, channels, size and error, and the transcription `language`)
decide what the engines do: a change voids the shards it touches. Every other column is a label
that travels beside the transcript (a reference, a speaker): a change needs only a re-merge,
which writes the index's current values (asrd.relabel).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from asrd.schema import WORK_COLUMNS

FOOTER_KEY = b"asrd.columns"
VERSION = 1  # of the hashing below; a record of another version is not used


@dataclass(frozen=True)
class IndexIdentity:
    rows: int
    columns: dict[str, str]  # column -> its content hash

    @property
    def work_fingerprint(self) -> str:
        """What the shards' work depends on: the row count and the work columns' hashes."""
        work = {k: v for k, v in sorted(self.columns.items()) if k in WORK_COLUMNS}
        return hashlib.sha256(json.dumps([self.rows, work]).encode()).hexdigest()[:16]

    def changed(self, other: IndexIdentity) -> tuple[list[str], list[str]]:
        """(work columns, label columns) that differ from `other`: changed, added or gone (or,
        when the row count changed, that alone as the work change)."""
        if self.rows != other.rows:  # every column differs; the rows say it in short
            return [f"{other.rows} rows, now {self.rows}"], []
        names = sorted(set(self.columns) | set(other.columns))
        differ = [n for n in names if self.columns.get(n) != other.columns.get(n)]
        return ([n for n in differ if n in WORK_COLUMNS],
                [n for n in differ if n not in WORK_COLUMNS])

    def to_footer(self) -> dict[bytes, bytes]:
        return {FOOTER_KEY: json.dumps({"version": VERSION, "rows": self.rows,
                                        "columns": self.columns}).encode()}


@dataclass
class _ColumnHash:
    type: str
    streams: dict[str, Any] = field(default_factory=dict)  # stream name -> hashlib object

    def feed(self, stream: str, data: bytes | memoryview | np.ndarray) -> None:
        h = self.streams.get(stream)
        if h is None:
            h = self.streams[stream] = hashlib.sha256()
        h.update(data)

    def digest(self) -> str:
        parts = [self.type] + [f"{k}:{h.hexdigest()}" for k, h in sorted(self.streams.items())]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


class ColumnHasher:
    """Hashes tables (or record batches) of one schema as they come, column by column."""

    def __init__(self, schema: pa.Schema):
        self.rows = 0
        self.hashes = {f.name: _ColumnHash(_type_tag(f.type)) for f in schema}

    def add(self, data: pa.Table | pa.RecordBatch) -> None:
        for name in data.column_names:
            column = data.column(name)
            chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
            base = self.rows
            for chunk in chunks:
                _feed(self.hashes[name], chunk, base)
                base += len(chunk)
        self.rows += data.num_rows

    def identity(self) -> IndexIdentity:
        return IndexIdentity(self.rows, {k: h.digest() for k, h in self.hashes.items()})


def _type_tag(kind: pa.DataType) -> str:
    """The type as the hash sees it: nested types by their values alone (a list read back from
    Parquet names its item field otherwise than the list that was written)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return str(kind) if pa.types.is_primitive(kind) or _is_bytes(kind) else "json"


def _is_bytes(kind: pa.DataType) -> bool:
    return kind in (pa.string(), pa.binary(), pa.large_string(), pa.large_binary())


def _feed(h: _ColumnHash, arr: pa.Array, base: int) -> None:
    if arr.null_count:
        nulls = np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False)) + base
        h.feed("nulls", nulls.astype(np.int64))
    kind = arr.type
    if pa.types.is_dictionary(kind):
        arr, kind = arr.dictionary_decode(), kind.value_type
    if pa.types.is_null(kind):
        return
    if _is_bytes(kind):
        width = np.int64 if kind in (pa.large_string(), pa.large_binary()) else np.int32
        _, offsets_buf, data_buf = arr.buffers()
        if offsets_buf is None:  # an empty array
            return
        offsets = np.frombuffer(offsets_buf, dtype=width, count=len(arr) + 1,
                                offset=arr.offset * np.dtype(width).itemsize)
        h.feed("lengths", np.diff(offsets).astype(np.int64))
        if data_buf is not None:
            h.feed("values", memoryview(data_buf)[int(offsets[0]):int(offsets[-1])])
    elif pa.types.is_primitive(kind):
        zero = pa.scalar(False if pa.types.is_boolean(kind) else 0, kind)
        values = arr.fill_null(zero) if arr.null_count else arr
        h.feed("values", np.ascontiguousarray(values.to_numpy(zero_copy_only=False)))
    else:  # nested and other types: rare in an index; one JSON line per value
        h.feed("values", "".join(json.dumps(v, default=str, sort_keys=True) + "\n"
                                 for v in arr.to_pylist()).encode())


def stored_identity(path: str | Path) -> IndexIdentity | None:
    """The identity `asrd index` recorded in the file's footer, if it did."""
    meta = pq.read_metadata(path).metadata or {}
    raw = meta.get(FOOTER_KEY)
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if record.get("version") != VERSION:
        return None
    return IndexIdentity(int(record["rows"]), dict(record["columns"]))


def compute_identity(path: str | Path, batch_rows: int = 65536) -> IndexIdentity:
    """The identity from the file's data (an index that another tool wrote)."""
    pf = pq.ParquetFile(path)
    hasher = ColumnHasher(pf.schema_arrow)
    for batch in pf.iter_batches(batch_size=batch_rows):
        hasher.add(batch)
    return hasher.identity()


def index_identity(path: str | Path) -> IndexIdentity:
    """The index's identity: its footer's record (cheap), else hashed from its data. A record
    whose row count or columns are not the file's (a tool rewrote the file and kept our footer
    key) is not used."""
    stored = stored_identity(path)
    if stored is not None:
        pf = pq.ParquetFile(path)
        if stored.rows == pf.metadata.num_rows and set(stored.columns) == set(pf.schema_arrow.names):
            return stored
    return compute_identity(path)
