"""`asrd index`: build the Parquet audio index, streaming, from a folder, a manifest or a Parquet file.

Sources:
- a directory tree of audio files (ids are the paths relative to the root: stable across machines);
- a JSONL or CSV manifest with a `path` (or `audio_filepath`) column; other columns pass through
  (reference text, language, speaker); a NeMo-style `text` (the reference transcript) becomes
  `reference` (here and in a Parquet source), since the output's `text` is the model's;
- a Parquet file whose rows carry the audio bytes (`audio` as binary, or the Hugging Face
  `{bytes, path}` struct of the Common Voice layout), or a path column.
Every `path` in the index is absolute: a relative path in a manifest or Parquet source is resolved
against that file's folder here, at index time, so the index means the same files from any
working directory. An `id` is kept exactly as the source gives it (`0` stays "0"); a source
without ids gets the path as written there (a folder: relative to its root).
The columns of a manifest are those of all its rows (one scan before probing), so an optional
column that only later rows have is kept, with nulls where a row lacks it.
Headers are probed in parallel threads (on a network store the probe waits on I/O). An entry that
cannot be probed stays in the index with its `probe_error`, so it ends as an error row instead of
vanishing; so does a file whose name is not valid UTF-8 (a Parquet string cannot hold it).
Each column's content hash is computed as its batches are written and stored in the footer
(asrd.index_identity), so that a later edit of any column is noticed, and by column.
"""

from __future__ import annotations

import csv
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from asrd.audio import AudioError, probe
from asrd.audio.source import audio_source, is_s3
from asrd.index_tar import TarSourceError, is_tar_source, tar_entries
from asrd.index_identity import ColumnHasher
from asrd.schema import error_reason
from hpc.commit import atomic_path

AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".mka",
                    ".wma", ".aiff", ".aif"}
PATH_COLUMNS = ("path", "audio_filepath", "file", "filename")
BATCH_ROWS = 4096
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # refused in ids
ROW_GROUP_ROWS = 16384

# The columns `asrd index` writes itself; a source's columns of these names are replaced.
OWN_FIELDS = [pa.field("id", pa.string()), pa.field("path", pa.string()),
              pa.field("duration_s", pa.float64()), pa.field("sample_rate", pa.int32()),
              pa.field("channels", pa.int32()), pa.field("num_bytes", pa.int64()),
              pa.field("probe_error", pa.string())]
AUDIO_FIELD = pa.field("audio", pa.binary())
OWN_NAMES = {f.name for f in OWN_FIELDS} | {AUDIO_FIELD.name}


class IndexInputError(ValueError):
    """The source cannot be indexed at all (not a per-entry problem)."""


@dataclass
class IndexReport:
    rows: int = 0
    audio_s: float = 0.0
    failed: dict[str, int] = field(default_factory=dict)  # probe failures by reason
    examples: list[str] = field(default_factory=list)  # a few failed entries, for the message


@dataclass
class Source:
    """A source's entries (a fresh iterator per call) and the columns they carry besides ours."""

    entries: Callable[[], Iterator[dict[str, Any]]]
    columns: list[pa.Field]
    embedded: bool = False  # entries carry the audio bytes

    def schema(self) -> pa.Schema:
        return pa.schema(OWN_FIELDS + ([AUDIO_FIELD] if self.embedded else []) + self.columns)


def build_index(source: str | Path, out: str | Path, workers: int = 16,
                batch_rows: int = BATCH_ROWS) -> IndexReport:
    """Write `out` (atomically) from `source`; returns counts, failures reported not fatal."""
    if Path(out).is_dir():
        raise IndexInputError(f"the output {out} is a folder: name the index file to write")
    src = open_source(source, batch_rows)
    schema = src.schema()
    report = IndexReport()
    seen: set[str] = set()
    hasher = ColumnHasher(schema)
    with atomic_path(out) as tmp, ThreadPoolExecutor(max(1, workers)) as pool:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in _batched(src.entries(), batch_rows):
                rows = list(pool.map(_probe_entry, batch))
                for r in rows:
                    if r["id"] in seen:
                        raise IndexInputError(f"duplicate id {r['id']!r} in {source}")
                    seen.add(r["id"])
                    _account(report, r)
                table = pa.Table.from_pylist(rows, schema=schema)
                hasher.add(table)
                writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            writer.add_key_value_metadata(hasher.identity().to_footer())
        if not report.rows:
            raise IndexInputError(f"no audio entries found in {source}")
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
    src = entry.pop("_bytes", src)  # a tar member's data, read as its shard streamed by
    row = {"id": entry["id"], "path": entry.get("path"), "duration_s": None, "sample_rate": None,
           "channels": None, "num_bytes": None, "probe_error": None}
    if "audio" in entry:
        row["audio"] = entry["audio"]
    try:
        if entry.get("name_error"):
            raise AudioError("invalid file name", entry["name_error"])
        if src is None:
            raise AudioError("missing file", "the entry names no audio")
        info = probe(audio_source(src) if isinstance(src, str) else src)
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

def open_source(source: str | Path, batch_rows: int = BATCH_ROWS) -> Source:
    if is_tar_source(str(source)):
        return _tar_source(str(source), batch_rows)
    if is_s3(str(source)):
        raise IndexInputError(f"cannot index {source}: a manifest or Parquet file must be local "
                              "(or on a mount); the paths in it may be s3:// URLs")
    source = Path(source)
    if source.is_dir():
        return Source(lambda: _dir_entries(source), [])
    if not source.exists():
        raise IndexInputError(f"index source not found: {source}")
    suffix = source.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _manifest_source(source, lambda: _jsonl_rows(source), batch_rows)
    if suffix == ".csv":
        return _manifest_source(source, lambda: _csv_rows(source), batch_rows)
    if suffix == ".parquet":
        return _parquet_source(source)
    raise IndexInputError(f"cannot index {source}: expected a directory, .jsonl, .csv or .parquet")


def _tar_source(source: str, batch_rows: int) -> Source:
    """Tar shards (asrd.index_tar); the columns come from a first pass over the sidecars only."""
    def entries(with_audio: bool) -> Iterator[dict[str, Any]]:
        try:
            for e in tar_entries(source, with_audio):
                yield {k: v for k, v in e.items()
                       if k not in OWN_NAMES or k in ("id", "path")}
        except TarSourceError as e:
            raise IndexInputError(str(e)) from None

    passthrough = ({k: v for k, v in e.items() if k not in ("id", "path")}
                   for e in entries(False))
    return Source(lambda: entries(True), _scan_columns(Path(source), passthrough, batch_rows))


def _raw(text: str) -> bytes:
    """The bytes of a name the OS (or a JSON escape) gave as surrogates."""
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="surrogatepass")


def _utf8_problem(text: str) -> str | None:
    """Why `text` (a file name from the OS, surrogate-escaped) cannot be stored, or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"not valid UTF-8, rename the file: {_raw(text)!r}"
    return None


def _printable(text: str) -> str:
    """`text` with undecodable bytes shown as \\xNN (a valid string for the index)."""
    return _raw(text).decode("utf-8", errors="backslashreplace")


def _dir_entries(root: Path) -> Iterator[dict[str, Any]]:
    """Deterministic walk (sorted), so the same tree always yields the same index order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                path = Path(dirpath) / name
                entry = {"id": path.relative_to(root).as_posix(), "path": str(path.resolve())}
                problem = _utf8_problem(entry["path"]) or _control_problem(entry["id"])
                if problem:
                    entry = {"id": _visible(entry["id"]), "path": _visible(entry["path"]),
                             "name_error": problem}
                yield entry


def _control_problem(name: str) -> str | None:
    bad = _control_char(name)
    return f"holds the control character {bad}, rename the file: {name!r}" if bad else None


def _visible(text: str) -> str:
    """`text` with undecodable bytes and control characters shown as \\xNN (a valid id)."""
    return CONTROL_CHARS.sub(lambda m: f"\\x{ord(m.group()):02x}", _printable(text))


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise IndexInputError(f"{path}:{lineno}: not JSON ({e.msg})") from None
                    if not isinstance(row, dict):
                        raise IndexInputError(f"{path}:{lineno}: not a JSON object")
                    yield row
        except UnicodeDecodeError as e:
            raise IndexInputError(f"{path}:{lineno + 1}: not UTF-8 text ({e.reason})") from None


def _csv_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as f:
        try:
            for n, row in enumerate(csv.DictReader(f, strict=True)):
                if None in row:
                    raise IndexInputError(f"{path}: row {n} has more fields than the header")
                yield row
        except UnicodeDecodeError as e:
            raise IndexInputError(f"{path}: not UTF-8 text ({e.reason})") from None
        except csv.Error as e:
            raise IndexInputError(f"{path}: not CSV ({e})") from None


def _given_id(value: Any, fallback: str, where: str) -> str:
    """The source's id, kept as given (`0` is "0"); the fallback only when it has none."""
    if value is None:
        return _checked_id(_printable(fallback), where)
    ident = str(value)
    if not ident:
        raise IndexInputError(f"{where}: empty id; give every row an id, or drop the id column to "
                          "use the paths")
    return _checked_id(_printable(ident), where)


def _checked_id(ident: str, where: str) -> str:
    """`ident`, refused if it holds a control character (a NUL, a newline, ...): ids name rows
    in logs and files in exports, where such a character breaks or hides them."""
    if (bad := _control_char(ident)):
        raise IndexInputError(f"{where}: the id {ident!r} holds the control character {bad}; "
                          "remove it from the id")
    return ident


def _control_char(text: str) -> str | None:
    """The first control character (C0, DEL, C1) in `text`, as U+XXXX; None if none."""
    found = CONTROL_CHARS.search(text)
    return f"U+{ord(found.group()):04X}" if found else None


def _resolve(raw: str, base: Path) -> str:
    """An absolute path: a relative one is taken relative to `base` (the source's folder)."""
    return raw if is_s3(raw) else os.path.abspath(os.path.join(base, raw))


def _manifest_source(manifest: Path, rows: Callable[[], Iterator[dict[str, Any]]],
                     batch_rows: int) -> Source:
    # The scan checks every row (a path column, no empty id) before any file is probed, but
    # leaves the paths alone: it is the cheaper half of reading the manifest twice.
    passthrough = (_split_row(manifest, n, row)[2] for n, row in enumerate(rows()))
    return Source(lambda: _manifest_entries(manifest, rows()),
                  _scan_columns(manifest, passthrough, batch_rows))


def _scan_columns(source: Path, rows: Iterator[dict[str, Any]], batch_rows: int
                  ) -> list[pa.Field]:
    """The columns of all `rows`, types unified over all of them (a column that the first rows
    lack is still found; an int column with a float later becomes float)."""
    schema = pa.schema([])
    for batch in _batched(rows, batch_rows):
        names = dict.fromkeys(k for e in batch for k in e)
        for name in names:
            try:
                arr = pa.array([e.get(name) for e in batch])
                schema = pa.unify_schemas([schema, pa.schema([(name, arr.type)])],
                                          promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError) as e:
                raise IndexInputError(f"{source}: column {name!r} cannot be stored: its values mix "
                                  f"types or hold invalid text ({e})") from None
    return [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in schema]


def _split_row(manifest: Path, n: int, row: dict[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    """A manifest row's path as written, its id as given (None: none), and its other columns."""
    key = next((k for k in PATH_COLUMNS if row.get(k)), None)
    if key is None:
        raise IndexInputError(f"{manifest}: row {n} has none of the path columns {PATH_COLUMNS}")
    raw, ident = str(row.pop(key)), row.pop("id", None)
    if ident is not None and str(ident) == "":
        raise IndexInputError(f"{manifest}: row {n}: empty id; give every row an id, or drop the id "
                          "column to use the paths")
    return raw, ident, _reference_named({k: v for k, v in row.items() if k not in OWN_NAMES})


def _manifest_entries(manifest: Path, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    base = Path(os.path.abspath(manifest)).parent
    for n, row in enumerate(rows):
        raw, ident, rest = _split_row(manifest, n, row)
        entry = {"id": _given_id(ident, raw, f"{manifest}: row {n}"), "path": _resolve(raw, base)}
        problem = _utf8_problem(entry["path"])
        if problem:
            entry.update(path=_printable(entry["path"]), name_error=problem)
        entry.update(rest)
        yield entry


def _reference_named(row: dict[str, Any]) -> dict[str, Any]:
    """A source row's `text` (the reference transcript, by the NeMo manifest convention) as
    `reference`, unless the row has a `reference` already."""
    if "text" in row and "reference" not in row:
        row["reference"] = row.pop("text")
    return row


def _parquet_source(path: Path) -> Source:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise IndexInputError(f"{path}: not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    path_key = next((c for c in PATH_COLUMNS if c in names), None)
    if "audio" not in names and path_key is None:
        raise IndexInputError(f"{path}: no `audio` bytes column and no path column")
    columns = [f.with_name("reference") if f.name == "text" and "reference" not in names else f
               for f in pf.schema_arrow if f.name not in OWN_NAMES and f.name != path_key]
    return Source(lambda: _parquet_entries(path, pf, path_key), columns,
                  embedded="audio" in names)


def _parquet_entries(path: Path, pf: pq.ParquetFile, path_key: str | None
                     ) -> Iterator[dict[str, Any]]:
    base = Path(os.path.abspath(path)).parent
    n = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            audio = row.pop("audio", None)
            src_name = None
            if isinstance(audio, dict):  # Hugging Face / Common Voice: {"bytes": ..., "path": ...}
                src_name, audio = audio.get("path"), audio.get("bytes")
            given_path = row.pop(path_key, None) if path_key else None
            fallback = given_path or src_name or f"{path.stem}:{n}"
            entry: dict[str, Any] = {"id": _given_id(row.pop("id", None), fallback,
                                                     f"{path}: row {n}"), "audio": audio}
            entry["path"] = _resolve(given_path, base) if audio is None and given_path else None
            entry.update({k: v for k, v in _reference_named(row).items() if k not in OWN_NAMES})
            n += 1
            yield entry


# --- reading an index --------------------------------------------------------------------------------

def check_index(path: str | Path) -> pa.Schema:
    """The schema of the index at `path`, after the checks every later stage relies on (a
    Parquet file; a text `id`; a numeric `duration_s`; a `path` or `audio` column), so that an
    index made by hand fails at plan time with what to fix."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise IndexInputError(f"index {path} is not a readable Parquet file ({e}); make it with "
                          "`asrd index`") from None
    hint = "; make the index with `asrd index`"
    missing = [c for c in ("id", "duration_s") if c not in schema.names]
    if missing:
        raise IndexInputError(f"index {path} has no {' and no '.join(map(repr, missing))} column{hint}")
    if "path" not in schema.names and "audio" not in schema.names:
        raise IndexInputError(f"index {path} has neither a 'path' nor an 'audio' column{hint}")
    types = {"id": (pa.types.is_string, pa.types.is_large_string, "text"),
             "duration_s": (pa.types.is_floating, pa.types.is_integer, "numbers (seconds)")}
    for name, (test, other, what) in types.items():
        kind = schema.field(name).type
        if not (test(kind) or other(kind) or pa.types.is_null(kind)):
            raise IndexInputError(f"index {path}: column {name!r} must hold {what}, not {kind}{hint}")
    if (missing_ids := _null_count(path, "id")):
        raise IndexInputError(f"index {path}: {missing_ids} rows have no id (null){hint}")
    return schema


def _null_count(path: str | Path, column: str) -> int:
    """Nulls in a column, from the row groups' statistics where the writer kept them."""
    pf = pq.ParquetFile(path)
    k = pf.schema_arrow.get_field_index(column)
    groups = [pf.metadata.row_group(g).column(k).statistics for g in range(pf.num_row_groups)]
    if all(s is not None and s.has_null_count for s in groups):
        return sum(s.null_count for s in groups)
    return pf.read(columns=[column]).column(0).null_count
