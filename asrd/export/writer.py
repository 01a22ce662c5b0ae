"""The sharded, atomic, resumable export: one loop for every format.

Rows stream from the merged run into a format's shard writer; a shard ends at the first row
boundary past the target size. A shard is written into a temporary folder, its files are moved
into the output folder or prefix (renamed; on S3, uploaded under a temporary key and moved: see
target.py), and only then is `export.json` (the progress record) rewritten atomically
with the shard and the number of merged rows it consumed. A killed export resumes from that
record: it skips the rows of the recorded shards and writes the next shard again from its first
row, under the same names (the rows and their order are fixed by the merged files), so every row
ends in exactly one shard. Memory holds one batch of rows and one shard writer's buffer.

The export owns exactly what `export.json` names (its shards, and the files of a shard being
renamed into place, listed as `uncommitted` before the first rename) and its own temporary
files; nothing else in the folder is touched. `export.json` is written before the first shard,
so a kill at any point leaves a folder that the next run resumes (or, with --force, empties of
the export's files and starts again). The merge exported is named by the `merge_id` that
`asrd merge` writes (a hash of the merged files), so a re-merge is never resumed into, and a
shard read while a merge replaced the files is never recorded.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
from omegaconf import DictConfig

from asrd.export.items import ExportItem, row_item, window_items, window_schema
from asrd.export.source import MergedSource
from asrd.export.target import (LEFTOVER, LOCK, PROGRESS, ExportError, ExportTarget,
                                shard_tmp_name)
from asrd import hooks


class ExportShardWriter(ABC):
    """Writes one shard of a format into `folder` (a temporary folder of its own); `dest(name)`
    says where each name it makes will be once placed (a path or an s3:// URL)."""

    def __init__(self, folder: Path, shard: int, schema: pa.Schema, options: DictConfig,
                 dest: Callable[[str], str]):
        self.folder, self.shard, self.schema, self.options = folder, shard, schema, options
        self.dest = dest

    @abstractmethod
    def add(self, item: ExportItem) -> int:
        """Write one item; returns about how many bytes it added to the shard."""

    @abstractmethod
    def close(self) -> list[str]:
        """Finish the shard; returns the names it made in `folder` (files or folders)."""


@dataclass
class ShardRecord:
    names: list[str]
    rows: int  # merged rows consumed (exported or not)
    items: int  # items written (rows, or windows)
    bytes: int


@dataclass
class Progress:
    options: dict[str, Any]
    merge_id: str  # the merged run exported (merged/summary.json)
    rows_done: int = 0
    items: int = 0
    shards: list[ShardRecord] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # rows not exported, by reason
    complete: bool = False
    uncommitted: list[str] = field(default_factory=list)  # names of ours in the folder that no
    # recorded shard owns (a shard being renamed into place, an earlier export's files on
    # --force): the next run removes them before it writes anything

    @classmethod
    def load(cls, text: str, where: str) -> "Progress":
        """The record `text` (read from `where`); keys it does not know are left out (an older
        record then matches no options and merge, so it is restarted only with --force)."""
        try:
            d = json.loads(text)
            known = {f.name for f in fields(cls)}
            progress = cls(**{**{k: v for k, v in d.items() if k in known},
                              "merge_id": d.get("merge_id", ""),
                              "shards": [ShardRecord(**s) for s in d["shards"]]})
        except (ValueError, TypeError, KeyError) as e:
            raise ExportError(f"{where} does not read as an export's progress record ({e}); "
                              "remove the folder's export yourself, or export elsewhere") from None
        strange = [n for n in progress.owned() if Path(n).name != n or n in (".", "..")]
        if strange:  # never follow a record out of its folder
            raise ExportError(f"{where} names files outside its folder ({strange[0]!r}): remove "
                              "the folder's export yourself, or export elsewhere")
        return progress

    def owned(self) -> list[str]:
        """Every name in the folder this export wrote, besides export.json and temporaries."""
        return [n for s in self.shards for n in s.names] + self.uncommitted


@dataclass
class ExportSummary:
    folder: str
    shards: int
    rows: int
    items: int
    skipped: dict[str, int]
    resumed_from_row: int
    was_complete: bool  # an earlier export had already finished: nothing was written


def _count(d: dict[str, int], reason: str, n: int = 1) -> None:
    d[reason] = d.get(reason, 0) + n


def read_merge_id(merged_dir: Path) -> str:
    """The content identity `asrd merge` recorded for the merged files (asrd.merge)."""
    summary = merged_dir / "summary.json"
    merge_id = json.loads(summary.read_text()).get("merge_id") if summary.is_file() else None
    if not merge_id:
        raise ExportError(f"{summary} records no merge id (merged by an earlier asrd): run "
                          "`asrd merge` again, then export")
    return merge_id


class ShardedExport:
    def __init__(self, target: ExportTarget, source: MergedSource, merged_dir: Path,
                 writer_cls: type[ExportShardWriter], options: DictConfig,
                 hook_settings: DictConfig | None = None):
        self.target, self.source, self.writer_cls = target, source, writer_cls
        self.out = target.location  # for messages
        self.merged_dir, self.merge_id = merged_dir, read_merge_id(merged_dir)
        self.options, self.hook_settings = options, hook_settings
        self.target_bytes = int(options.shard_mb * 2**20)
        merged = source.schema()
        self.schema = window_schema(merged) if options.windows else merged
        self.items_added = 0  # in this process (a hook may act on the count)

    def _options(self) -> dict[str, Any]:
        return {k: self.options[k] for k in ("format", "audio", "windows", "window_s", "shard_mb")}

    def run(self, force: bool = False) -> ExportSummary:
        self.target.check()
        if self.options.shard_mb > self.target.max_shard_mb:
            raise ExportError(f"export.shard_mb={self.options.shard_mb:g} is over "
                              f"{self.target.max_shard_mb} for {self.out}: each file is moved to "
                              "its final key by a server-side copy, which S3 allows up to 5 GiB")
        if self.target.read_progress() is None:
            self._refuse_foreign()  # before the lock: nothing is written into a user's folder
        with self.target.lock() as mine:
            if not mine:
                raise ExportError(f"another `asrd export` is writing {self.out}: wait for it, "
                                  "or export into another folder")
            progress = self._progress(force)
            resumed, was_complete = progress.rows_done, progress.complete
            if not was_complete:
                self._export(progress)
            self.target.finish()
        return ExportSummary(self.out, len(progress.shards), progress.rows_done,
                             progress.items, progress.skipped, resumed, was_complete)

    def _progress(self, force: bool) -> Progress:
        """The record to go on from, after the folder is cleared of what a killed or an earlier
        (--force) export left."""
        text = self.target.read_progress()
        earlier = None if text is None else Progress.load(text, f"{self.out}/{PROGRESS}")
        if earlier is None:
            self._refuse_foreign()
            progress = Progress(self._options(), self.merge_id)
        elif force:
            progress = Progress(self._options(), self.merge_id, uncommitted=earlier.owned())
        elif earlier.options != self._options():
            raise ExportError(f"{self.out} holds an export of other options ({earlier.options});"
                              " export into another folder, or --force to start it again")
        elif earlier.merge_id != self.merge_id:
            raise ExportError(f"{self.out} holds an export of another merge (the run was merged "
                              "again since); export into another folder, or --force to start "
                              "it again")
        else:
            progress = earlier
        self.target.clear_leftovers()
        if progress is not earlier:
            self._save(progress)  # from here on the folder holds this export
        if progress.uncommitted:
            hooks.at("export.discarding", self.hook_settings)
            for name in progress.uncommitted:
                self.target.remove(name)
            progress.uncommitted = []
            self._save(progress)
        return progress

    def _refuse_foreign(self) -> None:
        """Refuse a folder holding anything but an export's own hidden files."""
        foreign = sorted(n for n in self.target.names()
                         if n != LOCK and not LEFTOVER.fullmatch(n))
        if foreign:
            raise ExportError(f"{self.out} holds files that are not an export "
                              f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}): "
                              "export into an empty or new folder")

    def _save(self, progress: Progress) -> None:
        """Rewrite export.json atomically (the commit point of every step)."""
        self.target.write_progress(
            json.dumps(asdict(progress), indent=2, sort_keys=True) + "\n",
            lambda: hooks.at("export.progress_written", self.hook_settings))

    def _items(self, row, skipped: dict[str, int]) -> list[ExportItem]:
        if row.columns.get("error") is not None:
            _count(skipped, "error row")  # no transcript to train on
            return []
        if row.error is not None:
            _count(skipped, f"audio: {row.error}")
            return []
        if not self.options.windows:
            return [row_item(row)]
        items, too_long = window_items(row, self.options.window_s)
        if too_long:
            _count(skipped, "segment longer than a window", too_long)
        return items

    def _export(self, progress: Progress) -> None:
        writer: ExportShardWriter | None = None
        rows = items = size = 0
        skipped: dict[str, int] = {}
        for row in self.source.rows(progress.rows_done):
            rows += 1
            for item in self._items(row, skipped):
                if writer is None:
                    shard = len(progress.shards)
                    tmp = self.target.staging / shard_tmp_name(shard)
                    tmp.mkdir()
                    writer = self.writer_cls(tmp, shard, self.schema, self.options,
                                             self.target.dest)
                size += writer.add(item)
                items += 1
                self._item_added()
            if size >= self.target_bytes:
                self._commit(progress, writer, rows, items, size, skipped)
                writer, rows, items, size, skipped = None, 0, 0, 0, {}
        if rows or writer is not None:
            self._commit(progress, writer, rows, items, size, skipped)
        progress.complete = True
        self._save(progress)

    def _commit(self, progress: Progress, writer: ExportShardWriter | None, rows: int,
                items: int, size: int, skipped: dict[str, int]) -> None:
        """Stage the shard's files (an upload, on S3), list them as uncommitted, move them into
        place, then record them as the shard (the commit point). Rows without items (all
        skipped) are recorded alone."""
        names = writer.close() if writer is not None else []
        hooks.at("export.shard_closed", self.hook_settings)
        self._check_same_merge()
        if names and writer is not None:
            taken = [n for n in names if self.target.exists(n)]
            if taken:
                raise ExportError(f"{self.out} holds {', '.join(taken)}, which this export did "
                                  "not write and would replace: move it out of the folder")
            self.target.stage(writer.shard, names)
            self._check_same_merge()  # a merge during a long upload
            progress.uncommitted = names
            self._save(progress)
            for name in names:
                self.target.place(writer.shard, name)
                hooks.at("export.file_moved", self.hook_settings)
            self.target.unstage(writer.shard)
            progress.shards.append(ShardRecord(names, rows, items, size))
            progress.uncommitted = []
        progress.rows_done += rows
        progress.items += items
        for reason, n in skipped.items():
            _count(progress.skipped, reason, n)
        self._save(progress)

    def _check_same_merge(self) -> None:
        """Refuse to record rows read while a merge replaced the merged files (they may be of
        both merges)."""
        if read_merge_id(self.merged_dir) != self.merge_id:
            raise ExportError(f"`asrd merge` replaced {self.merged_dir} while this export read "
                              "it; the shard being written is not recorded: export again with "
                              "--force")

    def _item_added(self) -> None:
        self.items_added += 1
        hooks.at("export.item_added", self.hook_settings, items=self.items_added)
