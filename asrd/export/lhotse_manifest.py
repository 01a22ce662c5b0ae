"""Lhotse: a manifest per shard, written by Lhotse's own writers: `recordings-NNNNN.jsonl.gz`
(one Recording per item) and `supervisions-NNNNN.jsonl.gz` (a SupervisionSegment per segment of
a row, with its text and times; one per window for training windows), plus the audio the
recordings point at: 16 kHz FLAC files in `audio-NNNNN/` (named from the id: asrd.export.names),
or, with `export.audio=original`, the source files where they are (a local file or an s3://
object; embedded bytes and tar shards' members are written out). A recording points at its file's absolute path, or at its s3:// URL (Lhotse's `url`
source) when the export goes to object storage. The row's other columns (score, model, reference, flags, ...) are in each
supervision's `custom`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pyarrow as pa
from omegaconf import DictConfig

from asrd.audio import probe
from asrd.audio.source import is_s3, tar_member
from asrd.export.items import ExportItem
from asrd.export.names import file_name
from asrd.export.writer import ExportShardWriter

TIMED = ("id", "text", "segments", "duration_s")


class LhotseShardWriter(ExportShardWriter):
    def __init__(self, folder: Path, shard: int, schema: pa.Schema, options: DictConfig,
                 dest: Callable[[str], str]):
        from lhotse import RecordingSet, SupervisionSet

        super().__init__(folder, shard, schema, options, dest)
        self.rec_name = f"recordings-{shard:05d}.jsonl.gz"
        self.sup_name = f"supervisions-{shard:05d}.jsonl.gz"
        self.audio_name = f"audio-{shard:05d}"
        self.recs = RecordingSet.open_writer(folder / self.rec_name)
        self.sups = SupervisionSet.open_writer(folder / self.sup_name)
        self.audio_dir = folder / self.audio_name

    def _source(self, item: ExportItem) -> tuple[str, int, int, int]:
        """(path the recording points at, sample rate, samples, channels)."""
        path = item.columns.get("path")
        if self.options.audio == "original" and not self.options.windows and path and \
                tar_member(path) is None:
            info = probe(item.clip.data if is_s3(path) else path)
            return (path if is_s3(path) else str(Path(path).resolve()), info.sample_rate,
                    round(info.duration_s * info.sample_rate), info.channels)
        name = file_name(item.id, item.clip.ext)
        self.audio_dir.mkdir(exist_ok=True)
        (self.audio_dir / name).write_bytes(item.clip.data)
        info = probe(item.clip.data)  # FFmpeg's probe where libsndfile cannot (m4a, opus)
        return (self.dest(f"{self.audio_name}/{name}"), info.sample_rate,
                round(info.duration_s * info.sample_rate), info.channels)

    def add(self, item: ExportItem) -> int:
        from lhotse import AudioSource, Recording, SupervisionSegment

        path, rate, samples, channels = self._source(item)
        kind = "url" if is_s3(path) else "file"
        rec = Recording(id=item.id, sources=[AudioSource(kind, list(range(channels)), path)],
                        sampling_rate=rate, num_samples=samples, duration=samples / rate)
        self.recs.write(rec)
        timed = ("id", "text", "duration_s") if self.options.windows else TIMED
        custom = {k: v for k, v in item.columns.items() if k not in timed and v is not None}
        language = item.columns.get("language")
        spans = [(0.0, rec.duration, item.text)] if self.options.windows else [
            (s["start"], s["end"], s["text"].strip()) for s in item.columns.get("segments") or []]
        for k, (start, end, text) in enumerate(spans):
            end = min(end, rec.duration)
            self.sups.write(SupervisionSegment(
                id=f"{item.id}#{k:04d}", recording_id=item.id, start=start,
                duration=max(0.0, end - start), channel=0, text=text, language=language,
                custom=custom or None))
        return len(item.clip.data) + 512

    def close(self) -> list[str]:
        self.recs.close()
        self.sups.close()
        return [self.rec_name, self.sup_name] + ([self.audio_name] if self.audio_dir.is_dir() else [])
