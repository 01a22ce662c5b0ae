"""The sharded, atomic, resumable export: one loop for every format.

Rows stream from the merged run into a format's shard writer; a shard ends at the first row
boundary past the target size. A shard is written into a temporary folder, its files are renamed
into the output folder, and only then is `export.json` (the progress record) rewritten atomically
with the shard and the number of merged rows it consumed. A killed export resumes from that
record: it skips the rows of the recorded shards and writes the next shard again from its first
row, under the same names (the rows and their order are fixed by the merged files), so every row
ends in exactly one shard. Memory holds one batch of rows and one shard writer's buffer.
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from omegaconf import DictConfig

from asrd.export.items import ExportItem, row_item, window_items, window_schema
from asrd.export.source import MergedSource
from asrd.testing.faults import record
from hpc.commit import read_json, write_json

PROGRESS = "export.json"


class ExportError(ValueError):
    """The export cannot run as asked; the message says why and what to do."""


class ShardWriter(ABC):
    """Writes one shard of a format into `folder` (a temporary folder of its own)."""

    def __init__(self, folder: Path, shard: int, schema: pa.Schema, options: DictConfig):
        self.folder, self.shard, self.schema, self.options = folder, shard, schema, options

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
    source: list[list[Any]]  # [merged file name, size] of the merged run exported
    rows_done: int = 0
    items: int = 0
    shards: list[ShardRecord] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # rows not exported, by reason
    complete: bool = False

    @classmethod
    def load(cls, path: Path) -> "Progress":
        d = read_json(path)
        return cls(**{**d, "shards": [ShardRecord(**s) for s in d["shards"]]})


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


class ShardedExport:
    def __init__(self, out: Path, source: MergedSource, writer_cls: type[ShardWriter],
                 options: DictConfig, faults: DictConfig | None = None):
        self.out, self.source, self.writer_cls = out, source, writer_cls
        self.options, self.faults = options, faults
        self.target_bytes = int(options.shard_mb * 2**20)
        merged = source.schema()
        self.schema = window_schema(merged) if options.windows else merged
        self.items_added = 0  # in this process (the fault hook counts these)

    def _identity(self) -> tuple[dict[str, Any], list[list[Any]]]:
        opts = {k: self.options[k] for k in ("format", "audio", "windows", "window_s", "shard_mb")}
        return opts, [[f.name, f.stat().st_size] for f in self.source.files]

    def _progress(self, force: bool) -> Progress:
        opts, src = self._identity()
        path = self.out / PROGRESS
        if path.is_file() and not force:
            p = Progress.load(path)
            if p.options != opts or p.source != src:
                raise ExportError(f"{self.out} holds an export of other options or of another "
                                  f"merge ({p.options}); export into another folder, or --force "
                                  "to start it again")
            return p
        if self.out.is_dir() and any(self.out.iterdir()) and not path.is_file():
            raise ExportError(f"{self.out} is not empty and holds no export: choose another folder")
        if force and self.out.is_dir():
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        return Progress(opts, src)

    def run(self, force: bool = False) -> ExportSummary:
        progress = self._progress(force)
        resumed, was_complete = progress.rows_done, progress.complete
        if not was_complete:
            self._export(progress)
        return ExportSummary(str(self.out), len(progress.shards), progress.rows_done,
                             progress.items, progress.skipped, resumed, was_complete)

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
        writer: ShardWriter | None = None
        tmp: Path | None = None
        rows = items = size = 0
        skipped: dict[str, int] = {}
        for row in self.source.rows(progress.rows_done):
            rows += 1
            for item in self._items(row, skipped):
                if writer is None:
                    shard = len(progress.shards)
                    tmp = self.out / f".shard-{shard:05d}.tmp"
                    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed export
                    tmp.mkdir()
                    writer = self.writer_cls(tmp, shard, self.schema, self.options)
                size += writer.add(item)
                items += 1
                self._fault_hook()
            if size >= self.target_bytes:
                self._commit(progress, writer, tmp, rows, items, size, skipped)
                writer, tmp, rows, items, size, skipped = None, None, 0, 0, 0, {}
        if rows or writer is not None:
            self._commit(progress, writer, tmp, rows, items, size, skipped)
        progress.complete = True
        write_json(self.out / PROGRESS, asdict(progress))

    def _commit(self, progress: Progress, writer: ShardWriter | None, tmp: Path | None,
                rows: int, items: int, size: int, skipped: dict[str, int]) -> None:
        """Rename the shard's files into place, then record them (the commit point)."""
        names: list[str] = []
        if writer is not None and tmp is not None:
            names = writer.close()
            for name in names:
                final = self.out / name
                if final.is_dir():  # the same shard from a killed export, before its commit
                    shutil.rmtree(final)
                os.replace(tmp / name, final)
            shutil.rmtree(tmp, ignore_errors=True)
            progress.shards.append(ShardRecord(names, rows, items, size))
        progress.rows_done += rows
        progress.items += items
        for reason, n in skipped.items():
            _count(progress.skipped, reason, n)
        write_json(self.out / PROGRESS, asdict(progress))

    def _fault_hook(self) -> None:
        """`faults.export_exit_after_items`: the process dies after that many items (tests)."""
        self.items_added += 1
        n = self.faults.export_exit_after_items if self.faults is not None else 0
        if n and self.items_added >= n:
            record(self.faults, "export-exits", items=self.items_added)
            os._exit(137)
