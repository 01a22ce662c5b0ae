"""WebDataset: tar shards written by `webdataset`'s own TarWriter, one sample per item: the audio
(`<key>.flac`, or the source's extension) and `<key>.json` with every column of the item.

WebDataset splits a member's name at its first dot into key and field, so the key is the item's
position in the export (`000000000042`), never its id (ids are paths, with dots and slashes); the
id is in the JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pyarrow as pa
from omegaconf import DictConfig

from asrd.export.items import ExportItem
from asrd.export.writer import ExportShardWriter

KEY_DIGITS = 12


class WdsShardWriter(ExportShardWriter):
    def __init__(self, folder: Path, shard: int, schema: pa.Schema, options: DictConfig,
                 dest: Callable[[str], str]):
        import webdataset as wds

        super().__init__(folder, shard, schema, options, dest)
        self.name = f"shard-{shard:05d}.tar"
        self.writer = wds.TarWriter(str(folder / self.name))
        self.n = 0

    def add(self, item: ExportItem) -> int:
        key = f"{self.shard:05d}{self.n:0{KEY_DIGITS - 5}d}"
        meta = json.dumps(item.columns, ensure_ascii=False, default=str).encode()
        self.writer.write({"__key__": key, item.clip.ext: item.clip.data, "json": meta})
        self.n += 1
        return len(item.clip.data) + len(meta) + 1024  # + two tar headers

    def close(self) -> list[str]:
        self.writer.close()
        return [self.name]
