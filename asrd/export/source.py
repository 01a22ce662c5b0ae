"""The merged rows of a run, in order, with their audio: what every export format writes.

Rows stream from RUN_DIR/merged/*.parquet a batch at a time (the merged files hold no audio);
each row's audio is read from its path (a local file, an s3:// object or a tar shard's member,
as the decode actors read it: asrd.audio.source), or from the index's `audio` bytes when the
index embedded them, and is either kept as the source file's bytes or decoded to 16 kHz mono FLAC. Audio is
loaded in threads (soundfile, soxr and file reads release the GIL), in the rows' order. A row
whose audio cannot be read any more is counted by reason, never a crash and never written
half.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from asrd.audio import AudioError, decode
from asrd.audio.source import audio_source, tar_member
from asrd.export.names import safe_ext
from asrd.index_tar import AUDIO_EXTENSIONS
from asrd.plan import read_rows

AUDIO_MODES = ("flac16k", "original")
FLAC_RATE = 16000


@dataclass
class Clip:
    """Audio bytes in a file format, as a format writer stores them."""

    data: bytes
    ext: str  # file extension without the dot: flac, wav, mp3, ...
    sample_rate: int | None = None  # known when decoded here (flac16k)


@dataclass
class SourceRow:
    """One merged row (all its columns) and its audio, or why the audio could not be had."""

    columns: dict[str, Any]
    clip: Clip | None = None
    samples: np.ndarray | None = None  # 16 kHz mono, when asked for (the windows cut it)
    error: str | None = None  # an AudioError's reason

    @property
    def id(self) -> str:
        return self.columns["id"]


def flac_bytes(samples: np.ndarray, sample_rate: int = FLAC_RATE) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _ext(path: str | None, data: bytes) -> str:
    """The source's extension; for bytes without a usable one (embedded bytes, a tar member's
    `<tar>#<offset>+<size>`), an audio extension of the container FFmpeg finds (`asrd index`
    reads a tar member back as audio only under one), else `bin`."""
    if path and tar_member(path) is None and (ext := safe_ext(Path(path).suffix[1:])):
        return ext
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            names = container.format.name.split(",")
    except (av.FFmpegError, ValueError):
        return "bin"
    return next((n for n in names if n in AUDIO_EXTENSIONS), "bin")


@dataclass
class MergedSource:
    """The merged rows from `start` on (a resume point), with audio loaded as `audio` says."""

    files: list[Path]
    index: str | None  # the run's index, for rows whose audio was embedded there
    audio: str = "flac16k"
    workers: int = 4
    batch_rows: int = 64
    samples_only: bool = False  # decoded samples instead of a clip (the windows cut them)
    _has_audio: bool | None = None  # whether the index embeds audio bytes (read once)

    def schema(self) -> pa.Schema:
        return pq.read_schema(self.files[0])

    def rows(self, start: int = 0) -> Iterator[SourceRow]:
        """Every merged row from row number `start` of the merged files, in order."""
        with ThreadPoolExecutor(max(1, self.workers)) as pool:
            for batch in self._batches(start):
                cols = batch.to_pylist()
                embedded = self._embedded(batch)
                yield from pool.map(self._load, cols, embedded)

    def _batches(self, start: int) -> Iterator[pa.RecordBatch]:
        skip = start
        for f in self.files:
            pf = pq.ParquetFile(f)
            if skip >= pf.metadata.num_rows:  # already exported: not even read
                skip -= pf.metadata.num_rows
                continue
            for g in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                if skip >= n:
                    skip -= n
                    continue
                for batch in pf.iter_batches(batch_size=self.batch_rows, row_groups=[g]):
                    if skip:
                        drop = min(skip, batch.num_rows)
                        batch, skip = batch.slice(drop), skip - drop
                    if batch.num_rows:
                        yield batch

    def _embedded(self, batch: pa.RecordBatch) -> list[bytes | None]:
        """The index's audio bytes for rows without a path (an index built from Parquet bytes)."""
        paths = batch.column("path").to_pylist() if "path" in batch.schema.names else [None] * batch.num_rows
        need = [r for r, p in zip(batch.column("row").to_pylist(), paths) if not p]
        if not need or not self._index_has_audio():
            return [None] * batch.num_rows
        found: dict[int, bytes] = {}
        for b in read_rows(self.index, min(need), max(need) + 1, columns=["audio"]):
            wanted = set(need)
            for r, a in zip(b.column("row").to_pylist(), b.column("audio").to_pylist()):
                if r in wanted:
                    found[r] = a.get("bytes") if isinstance(a, dict) else a
        return [found.get(r) for r in batch.column("row").to_pylist()]

    def _index_has_audio(self) -> bool:
        if self._has_audio is None:
            self._has_audio = self.index is not None and "audio" in pq.read_schema(self.index).names
        return self._has_audio

    def _load(self, columns: dict[str, Any], embedded: bytes | None) -> SourceRow:
        path = columns.get("path")
        row = SourceRow(columns)
        if embedded is None and not path:
            row.error = "missing file"
            return row
        try:
            src = embedded if embedded is not None else audio_source(path)
            if self.samples_only:
                row.samples = decode(src, FLAC_RATE)
            elif self.audio == "original":
                data = src if isinstance(src, bytes) else Path(src).read_bytes()
                row.clip = Clip(data, _ext(path, data))
            else:
                row.clip = Clip(flac_bytes(decode(src, FLAC_RATE)), "flac", FLAC_RATE)
        except AudioError as e:
            row.error = e.reason
        except FileNotFoundError:
            row.error = "missing file"
        except OSError:
            row.error = "unreadable"
        return row
