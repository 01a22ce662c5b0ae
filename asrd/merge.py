"""`asrd merge`: verify every shard against its marker and the plan, then stream the shards into
the merged dataset (Parquet files of a target size) and a summary.

Verification (asrd.verify, full depth) hashes every shard file against the sha256 its marker
recorded before anything is written; a shard that fails is named, its marker is invalidated and
`asrd resubmit` / `asrd run` redo exactly it. Memory stays flat: shards are read one record batch
at a time, and exactly-once is checked per shard against that shard's slice of the index (its ids,
by row number). The rows' label columns (a reference, a speaker) are the index's as it is now
(asrd.relabel), so a corrected reference needs only another merge.

The merged folder is built under a temporary name and swapped in by rename, so a reader never sees
half a merge. One merge at a time holds the run's merge lock; the next one first repairs what a
killed one left: a `merged.old/` without `merged/` is put back (it is the last whole merge), one
beside `merged/` is removed, and so are `.merged.tmp-*` folders (no live merge owns them).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig

from asrd.done_marker import DoneMarker
from asrd.filters import FilterCounts, RowFilter
from asrd.plan import Plan, check_index_unchanged, load_plan, read_rows
from asrd.quality.flags import LanguageRule, Thresholds
from asrd.quality.presets import PresetFilter, get_preset
from asrd.relabel import Relabel, merged_schema
from asrd.report import REPORT_NAME, ReportData, write_report
from asrd.row_coverage import RowCoverage, RowsNotOnce
from asrd.rundir import RunDir
from asrd.schema import tally
from asrd import hooks
from asrd.verify import sha256_file, verify_shards
from hpc.arrays import format_array
from hpc.commit import fsync_dir, tmp_name, write_json
from hpc.markers import exclusive_or_wait

log = logging.getLogger("asrd.merge")


class MergeError(RuntimeError):
    """The run cannot be merged as asked; the message lists what is wrong."""


class _ShardBroken(Exception):
    """A shard whose file matches its marker but not the index (rows missing, repeated, or under
    other ids): it is no longer done."""

    def __init__(self, shard: int, why: str):
        super().__init__(why)
        self.shard, self.why = shard, why


@dataclass
class MergeSummary:
    shards_planned: int = 0
    shards_merged: int = 0
    missing_shards: list[int] = field(default_factory=list)
    rejected_shards: dict[int, str] = field(default_factory=dict)
    rows: int = 0
    ok: int = 0
    failed: int = 0
    kept: int = 0
    dropped_by_filter: int = 0
    filter: list[str] = field(default_factory=list)  # the WHERE clauses every kept row matches
    filter_counts: dict[str, Any] = field(default_factory=dict)  # rows dropped, by clause
    preset: str | None = None  # the quality preset applied (asrd.quality.presets)
    dropped_by_preset: int = 0
    dropped_by_flag: dict[str, int] = field(default_factory=dict)  # a row counts for each flag
    reference_rescored: int = 0  # rows whose index reference differs from their shard's copy
    quality: dict[str, Any] = field(default_factory=dict)  # the preset, thresholds, flags used
    audio_hours: float = 0.0
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    merge_id: str = ""  # SHA-256 over the merged files' names and contents: what an export of
    # this merge is tied to (a re-merge with other rows is another merge, whatever its sizes)
    per_shard: list[dict[str, Any]] = field(default_factory=list)


def _index_rows(plan: Plan, index: pq.ParquetFile, shard: int, labels: list[str]) -> pa.Table:
    """The shard's rows of the index (`index`, opened once per merge): their ids, and their label
    columns as they are now."""
    spec = plan.shards[shard]
    return pa.Table.from_batches(list(read_rows(index, spec.start, spec.stop,
                                                columns=["id", *labels])))


ROW_GROUP_ROWS = 65_536  # rows gathered into one Parquet row group ...
ROW_GROUP_BYTES = 64 * 2**20  # ... or this many bytes: tiny shards must not each make one (the
# writer keeps every row group's metadata until the file closes: memory grew with shard count)
COMPACT_TABLES = 256  # pending shards' tables are copied into one after this many


class _RollingWriter:
    """Parquet files of about `target_bytes` each, named part-00000.parquet, ..."""

    def __init__(self, folder: Path, schema: pa.Schema, target_bytes: int):
        self.folder, self.schema, self.target = folder, schema, target_bytes
        self.writer: pq.ParquetWriter | None = None
        self.files: list[str] = []
        self.bytes = 0
        self.pending: list[pa.Table] = []
        self.pending_rows = self.pending_bytes = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.pending.append(table)
        if len(self.pending) >= COMPACT_TABLES:  # many tiny tables cost far more than their rows
            self.pending = [pa.concat_tables(self.pending).combine_chunks()]
        self.pending_rows += table.num_rows
        self.pending_bytes += table.nbytes
        if (self.pending_rows >= ROW_GROUP_ROWS or self.pending_bytes >= ROW_GROUP_BYTES
                or self.bytes + self.pending_bytes // 3 >= self.target):
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        table = pa.concat_tables(self.pending)
        self.pending, self.pending_rows, self.pending_bytes = [], 0, 0
        if self.writer is None:
            name = f"part-{len(self.files):05d}.parquet"
            self.files.append(name)
            self.writer = pq.ParquetWriter(self.folder / name, self.schema, compression="zstd")
            self.bytes = 0
        self.writer.write_table(table)
        self.bytes += table.nbytes // 3  # zstd ratio of text-heavy rows; a rough estimate suffices
        if self.bytes >= self.target:
            self._close_file()

    def _close_file(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def close(self) -> None:
        self._flush()
        self._close_file()


def merge(cfg: DictConfig, allow_incomplete: bool | None = None,
          row_filter: list[str] | None = None, track: bool = True,
          preset: str | None = None, threshold_edits: Mapping[str, Any] | None = None
          ) -> MergeSummary:
    """`row_filter`: SQL WHERE clauses a kept row matches (None: merge.filter); `preset`: the
    quality preset (asrd.quality.presets: a name or a preset file; None: merge.preset), applied
    before the filter; `threshold_edits`: quality thresholds set for this merge, on top of the
    preset's (asrd.run_config.threshold_edits)."""
    rd = RunDir(cfg.run.dir)
    plan = load_plan(rd)
    check_index_unchanged(plan)
    allow_incomplete = cfg.merge.allow_incomplete if allow_incomplete is None else allow_incomplete
    row_filter = list(row_filter if row_filter is not None else cfg.merge.filter)
    expr = RowFilter(row_filter) if row_filter else None  # a bad clause fails before any work
    quality = PresetFilter(get_preset(cfg.merge.preset if preset is None else preset),
                           Thresholds.of(cfg.quality.thresholds), cfg.engine.language,
                           threshold_edits, LanguageRule.of(cfg.language_id))
    with _merge_lock(rd):
        _recover(rd)
        verdicts = verify_shards(rd, plan, full=True)
        summary = MergeSummary(shards_planned=plan.num_shards, filter=row_filter)
        good = sorted(verdicts.good)
        summary.rejected_shards = dict(sorted(verdicts.bad.items()))
        summary.missing_shards = [s for s in range(plan.num_shards)
                                  if s not in verdicts.good and s not in verdicts.bad]
        if (summary.missing_shards or summary.rejected_shards) and not allow_incomplete:
            raise MergeError(_incomplete_message(summary))
        if not good:
            raise MergeError("no shard can be merged: " + _incomplete_message(summary))
        if expr is not None:  # unknown columns are refused before a folder is made
            expr.check(pq.read_schema(rd.shard_file(good[0])))
        try:
            _write_merged(cfg, rd, plan, good, verdicts.good, expr, summary, quality)
        except _ShardBroken as e:
            with rd.markers.claim(e.shard) as mine:
                if mine:
                    rd.markers.invalidate(e.shard, e.why)
            raise MergeError(f"shard {e.shard} rejected: {e.why}; it is no longer done (its marker "
                             "moved to rejected/): run `asrd resubmit` (or `asrd run`) to redo it"
                             ) from None
        report = _report(cfg, rd, summary)
    if track and cfg.wandb.mode != "disabled":
        from asrd.tracking import log_merge

        log_merge(cfg, rd.path, summary.__dict__, summary.per_shard, _samples(rd, cfg),
                  figures=report.figures if report else None,
                  flagged=report.flagged if report else None)
    return summary


def _report(cfg: DictConfig, rd: RunDir, summary: MergeSummary) -> ReportData | None:
    """merged/report.html (asrd.report); a report that fails costs its page, not the merge."""
    try:
        return write_report(cfg, rd.path, summary.__dict__, rd.merged_dir / REPORT_NAME)
    except Exception as e:  # noqa: BLE001 - the merged dataset is whole; say why, go on
        log.warning("quality report not written: %s: %s", type(e).__name__, e)
        return None


def _merge_lock(rd: RunDir):
    return exclusive_or_wait(rd.markers.claims_dir / "merge.lock", lambda: log.warning(
        "another `asrd merge` is running on %s: waiting for it", rd.path))


def _old_dir(rd: RunDir) -> Path:
    return rd.merged_dir.with_name(rd.merged_dir.name + ".old")


def _recover(rd: RunDir) -> None:
    """Undo what a killed merge left (the caller holds the merge lock, so no merge is live)."""
    old = _old_dir(rd)
    if old.exists():
        if rd.merged_dir.exists():  # killed after the swap: the new merge is whole
            shutil.rmtree(old)
        else:  # killed between the two renames: put the last whole merge back
            old.rename(rd.merged_dir)
            log.warning("restored %s, left by a merge that was killed", rd.merged_dir)
    for leftover in rd.path.glob(f".{rd.merged_dir.name}.tmp-*"):
        log.warning("removing %s, left by a merge that was killed", leftover)
        shutil.rmtree(leftover)


def _write_merged(cfg: DictConfig, rd: RunDir, plan: Plan, good: list[int],
                  markers: dict[int, DoneMarker], expr, summary: MergeSummary,
                  quality: PresetFilter) -> None:
    """Stream the good shards into a new merged folder and swap it in."""
    out_tmp = tmp_name(rd.merged_dir)
    out_tmp.mkdir(parents=True)
    hooks.at("merge.tmp_made", cfg.faults)
    try:
        shard_schema = pq.read_schema(rd.shard_file(good[0]))
        index_schema = pq.read_schema(plan.index)
        relabel = Relabel(merged_schema(shard_schema, index_schema), index_schema,
                          Thresholds.of(cfg.quality.thresholds), cfg.engine.language,
                          LanguageRule.of(cfg.language_id))
        filter_counts = FilterCounts()
        writer = _RollingWriter(out_tmp, relabel.schema, int(cfg.merge.target_file_mb * 2**20))
        audio_s = 0.0
        with pq.ParquetFile(plan.index) as index:
            for s in good:
                audio_s += _merge_shard(rd, plan, index, s, markers[s], expr, filter_counts,
                                        writer, summary, quality, shard_schema, relabel)
        writer.close()
        summary.audio_hours = audio_s / 3600.0
        if expr is not None:
            summary.dropped_by_filter = filter_counts.dropped
            summary.filter_counts = filter_counts.to_dict()
        summary.files = writer.files
        summary.merge_id = content_id(out_tmp, writer.files)
        summary.reference_rescored = relabel.rescored
        summary.__dict__.update(quality.summary())
        write_json(out_tmp / "summary.json", summary.__dict__)
        fsync_dir(out_tmp)
        hooks.at("merge.written", cfg.faults)
        old = _old_dir(rd)
        if rd.merged_dir.exists():
            rd.merged_dir.rename(old)
            hooks.at("merge.old_moved", cfg.faults)
        out_tmp.rename(rd.merged_dir)
        fsync_dir(rd.path)
        hooks.at("merge.new_moved", cfg.faults)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(out_tmp, ignore_errors=True)


def content_id(folder: Path, files: list[str]) -> str:
    """The merge id of the merged `files` in `folder`."""
    digest = hashlib.sha256()
    for name in files:
        digest.update(f"{name} {sha256_file(folder / name)}\n".encode())
    return digest.hexdigest()


def _merge_shard(rd: RunDir, plan: Plan, index: pq.ParquetFile, shard: int, marker: DoneMarker,
                 expr, filter_counts, writer: _RollingWriter, summary: MergeSummary,
                 quality: PresetFilter, shard_schema: pa.Schema, relabel: Relabel) -> float:
    """Stream one shard into the writer, checking that it holds every index row of the shard
    exactly once, each under the id the index gives that row (with the index's labels).
    Returns the audio seconds of its rows that succeeded."""
    spec = plan.shards[shard]
    index_rows = _index_rows(plan, index, shard, relabel.labels)
    coverage = RowCoverage(spec)
    audio_s = 0.0
    for batch in _batches(rd, shard):
        table = pa.Table.from_batches([batch]).cast(shard_schema)
        try:
            rel = coverage.add(table.column("row").to_numpy())
        except RowsNotOnce as e:
            raise _ShardBroken(shard, str(e)) from None
        index_batch = index_rows.take(pa.array(rel))
        if not index_batch.column("id").equals(table.column("id")):
            raise _ShardBroken(shard, "its ids do not match the index rows they claim")
        table = relabel.apply(table, index_batch)
        n_ok, n_failed, ok_audio = tally(table, summary.failures_by_reason)
        summary.rows += table.num_rows
        summary.ok += n_ok
        summary.failed += n_failed
        audio_s += ok_audio
        table = quality.apply(table)
        if expr is not None:
            table, counts = expr.apply(table)
            filter_counts.add(counts)
        summary.kept += table.num_rows
        writer.write(table)
    try:
        coverage.check_complete()
    except RowsNotOnce as e:
        raise _ShardBroken(shard, str(e)) from None
    wall = marker.wall_s
    summary.per_shard.append({"shard": shard, "rows": marker.rows, "failed": marker.failed,
                              "audio_s": audio_s, "wall_s": wall, "host": marker.host or None,
                              "rtf_x": audio_s / wall if wall else None})
    summary.shards_merged += 1
    return audio_s


def _batches(rd: RunDir, shard: int):
    """The shard file's record batches; a file that does not read is a MergeError naming it."""
    try:
        yield from pq.ParquetFile(rd.shard_file(shard)).iter_batches(batch_size=8192)
    except (pa.ArrowException, OSError) as e:
        raise _ShardBroken(shard, f"{rd.shard_file(shard).name} does not read ({e})") from None


def _samples(rd: RunDir, cfg: DictConfig) -> list[dict[str, Any]]:
    """A few ok transcripts with the path of their audio, for a quick listen in the merge run."""
    out: list[dict[str, Any]] = []
    for f in rd.merged_files():
        for b in pq.ParquetFile(f).iter_batches(batch_size=256, columns=["id", "text", "path",
                                                                          "duration_s", "error"]):
            out += [r for r in b.to_pylist() if r["error"] is None][: cfg.wandb.sample_rows - len(out)]
            if len(out) >= cfg.wandb.sample_rows:
                return out
    return out


def _incomplete_message(summary: MergeSummary) -> str:
    parts = []
    if summary.missing_shards:
        parts.append(f"{len(summary.missing_shards)} of {summary.shards_planned} shards have no "
                     f"marker: {format_array(summary.missing_shards)}")
    for s, why in sorted(summary.rejected_shards.items())[:20]:
        parts.append(f"shard {s} rejected: {why}")
    if summary.rejected_shards:
        parts.append("rejected shards are no longer done (their markers moved to rejected/)")
    parts.append("run `asrd resubmit` (or `asrd run`) to redo exactly these shards, or merge "
                 "what exists with --allow-incomplete")
    return "; ".join(parts)

