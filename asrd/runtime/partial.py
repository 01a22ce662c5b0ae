"""Partial rows: the transcribed segments of long recordings whose rows are not finished yet.

A recording of hours is one row, and a row is committed only whole (in the shard's parts), so a
task killed inside it would transcribe it again from the start. Its segments' texts are therefore
committed as they come, beside the parts and at their pace, in `shard-K.partial/` (one Parquet
file per commit: row, id, segment index, its span, text, a diarising model's speaker turns). A
resumed task decodes the recording again (cheap next to transcribing it) and sends the engines
only the segments not found here; the row is assembled from both and written once, like any
row. Entries of another config, or whose span no longer matches the audio, are not used. The
folder goes once the shard file is committed.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from asrd.engines.base import SpeakerTurn
from asrd.schema import SPEAKER_TURN_TYPE
from hpc.commit import atomic_path

log = logging.getLogger("asrd.partial")

SCHEMA = pa.schema([("row", pa.int64()), ("id", pa.string()), ("seg", pa.int64()),
                    ("start", pa.float64()), ("end", pa.float64()), ("text", pa.string()),
                    ("engine_s", pa.float64()), ("config_hash", pa.string()),
                    ("speaker_turns", pa.list_(SPEAKER_TURN_TYPE))])


@dataclass(frozen=True)
class SegmentDone:
    """One transcribed segment of a row still in progress."""

    row: int
    id: str
    seg: int  # its position in the row
    start: float  # its span in the recording (s), as the decode actor cut it
    end: float
    text: str
    engine_s: float
    speaker_turns: tuple[SpeakerTurn, ...] | None = None  # in the segment's own time, as said


class PartialRows:
    """Committed segments of unfinished long rows, read on resume and added to as they come."""

    def __init__(self, folder: Path, config_hash: str, every_s: float):
        self.folder, self.config_hash, self.every_s = folder, config_hash, every_s
        self.buffer: list[SegmentDone] = []
        self.last_commit = time.monotonic()
        self.done = self._load()
        self.next_file = 1 + max((int(p.stem.split("-")[1]) for p in self._files()), default=-1)

    def _files(self) -> list[Path]:
        return sorted(self.folder.glob("seg-*.parquet")) if self.folder.is_dir() else []

    def _load(self) -> dict[tuple[int, str], dict[int, SegmentDone]]:
        done: dict[tuple[int, str], dict[int, SegmentDone]] = {}
        for path in self._files():
            try:
                rows = pq.read_table(path).to_pylist()
            except Exception as e:  # a damaged file costs its segments, not the task
                log.warning("ignoring %s (%s: %s): its segments are transcribed again",
                            path.name, type(e).__name__, e)
                continue
            for r in rows:
                if r.pop("config_hash") == self.config_hash:
                    turns = r.pop("speaker_turns", None)
                    s = SegmentDone(**r, speaker_turns=None if turns is None else tuple(
                        SpeakerTurn(**t) for t in turns))
                    done.setdefault((s.row, s.id), {})[s.seg] = s
        return done

    def committed(self, row: int, row_id: str) -> dict[int, SegmentDone]:
        """The row's committed segments, by index (those of another id at this row number were
        made from another index: not used)."""
        return dict(self.done.get((row, row_id), {}))

    def add(self, segment: SegmentDone) -> None:
        self.buffer.append(segment)

    def forget(self, row: int) -> None:
        """The row is finished: its segments travel in the row now."""
        self.buffer = [s for s in self.buffer if s.row != row]
        self.done = {k: v for k, v in self.done.items() if k[0] != row}

    def due(self) -> bool:
        return bool(self.buffer) and time.monotonic() - self.last_commit >= self.every_s

    def commit(self) -> None:
        if self.buffer:
            rows = [{**asdict(s), "config_hash": self.config_hash} for s in self.buffer]
            with atomic_path(self.folder / f"seg-{self.next_file:05d}.parquet") as tmp:
                pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp)
            self.next_file += 1
            self.buffer = []
        self.last_commit = time.monotonic()

    def clear(self) -> None:
        """The shard file is committed: nothing here is needed any more."""
        self.buffer, self.done = [], {}
        shutil.rmtree(self.folder, ignore_errors=True)
