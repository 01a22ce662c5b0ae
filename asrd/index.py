"""`asrd index`: build the Parquet audio index, streaming, from a folder, a manifest or a Parquet file.

Sources:
- a directory tree of audio files (ids are the paths relative to the root: stable across machines);
- a JSONL or CSV manifest with a `path` (or `audio_filepath`) column, relative paths resolved against
  the manifest's folder; other columns pass through (reference text, language, speaker);
- a Parquet file whose rows carry the audio bytes (`audio` as binary, or the Hugging Face
  `{bytes, path}` struct of the Common Voice layout).
Headers are probed in parallel threads (on a network store the probe waits on I/O). An entry that
cannot be probed stays in the index with its `probe_error`, so it ends as an error row instead of
vanishing.
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from asrd.audio import AudioError, probe
from asrd.schema import error_reason
from hpc.commit import atomic_path

AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".mka",
                    ".wma", ".aiff", ".aif"}
PATH_COLUMNS = ("path", "audio_filepath", "file", "filename")
BATCH_ROWS = 4096
ROW_GROUP_ROWS = 16384


class IndexError_(ValueError):
    """The source cannot be indexed at all (not a per-entry problem)."""


@dataclass
class IndexReport:
    rows: int = 0
    audio_s: float = 0.0
    failed: dict[str, int] = field(default_factory=dict)  # probe failures by reason
    examples: list[str] = field(default_factory=list)  # a few failed entries, for the message


def build_index(source: str | Path, out: str | Path, workers: int = 16) -> IndexReport:
    """Write `out` (atomically) from `source`; returns counts, failures reported not fatal."""
    source = Path(source)
    entries = _entries(source)
    report = IndexReport()
    writer = None
    seen: set[str] = set()
    with atomic_path(out) as tmp, ThreadPoolExecutor(max(1, workers)) as pool:
        for batch in _batched(entries, BATCH_ROWS):
            rows = list(pool.map(_probe_entry, batch))
            for r in rows:
                if r["id"] in seen:
                    raise IndexError_(f"duplicate id {r['id']!r} in {source}")
                seen.add(r["id"])
                _account(report, r)
            table = pa.Table.from_pylist(rows)
            if writer is None:
                schema = _unify(table.schema)
                writer = pq.ParquetWriter(tmp, schema, compression="zstd")
            writer.write_table(table.cast(writer.schema), row_group_size=ROW_GROUP_ROWS)
        if writer is None:
            raise IndexError_(f"no audio entries found in {source}")
        writer.close()
    return report


def _account(report: IndexReport, row: dict[str, Any]) -> None:
    report.rows += 1
    if row["probe_error"]:
        reason = error_reason(row["probe_error"])
        report.failed[reason] = report.failed.get(reason, 0) + 1
        if len(report.examples) < 5:
            report.examples.append(f"{row['id']}: {row['probe_error']}")
    else:
        report.audio_s += row["duration_s"]


def _unify(schema: pa.Schema) -> pa.Schema:
    """Fix the types of the standard columns (a first batch of all-null values infers `null`)."""
    fixed = {"id": pa.string(), "path": pa.string(), "audio": pa.binary(), "duration_s": pa.float64(),
             "sample_rate": pa.int32(), "channels": pa.int32(), "num_bytes": pa.int64(),
             "probe_error": pa.string()}
    return pa.schema([pa.field(f.name, fixed.get(f.name, pa.string() if pa.types.is_null(f.type)
                                                  else f.type)) for f in schema])


def _batched(it: Iterable[dict], n: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _probe_entry(entry: dict[str, Any]) -> dict[str, Any]:
    src = entry.get("audio") if entry.get("audio") is not None else entry.get("path")
    row = {"id": entry["id"], "path": entry.get("path"), "duration_s": None, "sample_rate": None,
           "channels": None, "num_bytes": None, "probe_error": None}
    if "audio" in entry:
        row["audio"] = entry["audio"]
    try:
        if src is None:
            raise AudioError("missing file", "the entry names no audio")
        info = probe(src)
        row.update(duration_s=info.duration_s, sample_rate=info.sample_rate,
                   channels=info.channels, num_bytes=info.num_bytes)
    except AudioError as e:
        row["probe_error"] = str(e)
    except Exception as e:  # a probe must never stop the index: record it and go on
        row["probe_error"] = f"probe failed: {type(e).__name__}: {e}"
    for k, v in entry.items():
        row.setdefault(k, v)
    return row


# --- sources ---------------------------------------------------------------------------------------

def _entries(source: Path) -> Iterator[dict[str, Any]]:
    if source.is_dir():
        return _dir_entries(source)
    if not source.exists():
        raise IndexError_(f"index source not found: {source}")
    suffix = source.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _manifest_entries(source, _jsonl_rows(source))
    if suffix == ".csv":
        return _manifest_entries(source, _csv_rows(source))
    if suffix == ".parquet":
        return _parquet_entries(source)
    raise IndexError_(f"cannot index {source}: expected a directory, .jsonl, .csv or .parquet")


def _dir_entries(root: Path) -> Iterator[dict[str, Any]]:
    """Deterministic walk (sorted), so the same tree always yields the same index order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                path = Path(dirpath) / name
                yield {"id": path.relative_to(root).as_posix(), "path": str(path.resolve())}


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise IndexError_(f"{path}:{lineno}: not JSON ({e.msg})") from None


def _csv_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, newline="") as f:
        yield from csv.DictReader(f)


def _manifest_entries(manifest: Path, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    base = manifest.parent
    for n, row in enumerate(rows):
        key = next((k for k in PATH_COLUMNS if row.get(k)), None)
        if key is None:
            raise IndexError_(f"{manifest}: row {n} has none of the path columns {PATH_COLUMNS}")
        raw = str(row.pop(key))
        path = Path(raw) if Path(raw).is_absolute() else base / raw
        entry = {"id": str(row.pop("id", None) or raw), "path": str(path)}
        entry.update({k: v for k, v in row.items() if k not in entry})
        yield entry


def _parquet_entries(path: Path) -> Iterator[dict[str, Any]]:
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if "audio" not in names and not any(c in names for c in PATH_COLUMNS):
        raise IndexError_(f"{path}: no `audio` bytes column and no path column")
    n = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            audio = row.pop("audio", None)
            src_name = None
            if isinstance(audio, dict):  # Hugging Face / Common Voice: {"bytes": ..., "path": ...}
                src_name, audio = audio.get("path"), audio.get("bytes")
            given_path = next((row.pop(k) for k in PATH_COLUMNS if row.get(k)), None)
            ident = row.pop("id", None) or given_path or src_name or f"{path.stem}:{n}"
            entry: dict[str, Any] = {"id": str(ident), "audio": audio}
            entry["path"] = given_path if audio is None else None
            entry.update(row)
            n += 1
            yield entry
