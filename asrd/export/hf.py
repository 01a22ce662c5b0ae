"""Hugging Face `datasets`: Parquet shards with an `Audio` column, written by `datasets`' own
ParquetWriter, so the features (the `Audio` type, and every other column's) are in each file's
metadata and `load_dataset("parquet", ...)` or `load_dataset(DIR)` gives the audio column back.

Audio is embedded as `{bytes, path}`: 16 kHz FLAC, or the source file's bytes; `path` is a file
name made from the id (asrd.export.names) with the audio's extension, so that `datasets` knows
its format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pyarrow as pa
from omegaconf import DictConfig

from asrd.export.items import ExportItem
from asrd.export.names import file_name
from asrd.export.source import FLAC_RATE
from asrd.export.writer import ExportShardWriter

BUFFER_ROWS = 64  # rows per write (one Parquet row group)


class HfShardWriter(ExportShardWriter):
    def __init__(self, folder: Path, shard: int, schema: pa.Schema, options: DictConfig,
                 dest: Callable[[str], str]):
        from datasets import Audio, Features
        from datasets.arrow_writer import ParquetWriter

        super().__init__(folder, shard, schema, options, dest)
        self.name = f"train-{shard:05d}.parquet"
        rate = FLAC_RATE if options.audio == "flac16k" or options.windows else None
        features = Features.from_arrow_schema(schema)
        features["audio"] = Audio(sampling_rate=rate, decode=True)
        self.arrow_schema = features.arrow_schema
        self.writer = ParquetWriter(path=str(folder / self.name), features=features,
                                    use_content_defined_chunking=False)
        self.buffer: list[dict] = []

    def add(self, item: ExportItem) -> int:
        name = file_name(item.id, item.clip.ext)
        self.buffer.append({**item.columns, "audio": {"bytes": item.clip.data, "path": name}})
        if len(self.buffer) >= BUFFER_ROWS:
            self._flush()
        return len(item.clip.data) + len(item.text)

    def _flush(self) -> None:
        if self.buffer:
            self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=self.arrow_schema))
            self.buffer = []

    def close(self) -> list[str]:
        self._flush()
        self.writer.finalize()
        return [self.name]
