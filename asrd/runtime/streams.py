"""Long recordings: rows longer than `pipeline.stream_min_s` (by the index's `duration_s`) are
decoded as streams, piece by piece, each piece asked for only when the engines have room, so a
task holds about a window of each however long it is.

Their transcribed segments are committed as partial rows (asrd.runtime.partial) at the pace of the
parts; on resume, segments committed before a stop are cut but not transcribed again, and their
committed texts are used instead.
"""

from __future__ import annotations

import collections
import logging

from asrd.engines.base import Hypothesis
from asrd.runtime.decode_stage import DecodeStage
from asrd.runtime.partial import PartialRows, SegmentDone
from asrd.runtime.records import Decoded, IndexRow, RowResult, SegmentRef

log = logging.getLogger("asrd.streams")


class LongRecordings:
    def __init__(self, decode: DecodeStage, partial: PartialRows, stream_min_s: float,
                 shard: int):
        self.decode, self.partial, self.stream_min_s, self.shard = (decode, partial,
                                                                    stream_min_s, shard)
        self.waiting: collections.deque[IndexRow] = collections.deque()
        self.open: dict[int, dict[int, SegmentDone]] = {}  # streamed rows: committed segments
        self.reused: dict[int, int] = {}  # streamed rows: committed segments used again

    def is_long(self, index_row: IndexRow) -> bool:
        return (index_row.duration_s or 0.0) > self.stream_min_s

    def set_aside(self, index_row: IndexRow) -> None:
        self.waiting.append(index_row)

    def is_streamed(self, row: int) -> bool:
        return row in self.open

    def ask(self) -> bool:
        """Ask for an open stream's next piece (they finish rows and hold memory), else open a
        waiting recording; False when neither can be done now."""
        stream = self.decode.waiting_stream()
        if stream is not None:
            self.decode.next_piece(stream)
            return True
        if self.waiting and self.decode.can_open_stream():
            index_row = self.waiting.popleft()
            committed = self.partial.committed(index_row.row, index_row.id)
            self.open[index_row.row] = committed
            self.decode.open_stream(index_row, {k: (s.start, s.end)
                                                for k, s in committed.items()})
            return True
        return False

    def reused_texts(self, rec: Decoded) -> list[tuple[int, Hypothesis, float]]:
        """A piece's segments transcribed before a stop: (index, committed text, engine time).
        Their text and speaker turns only: the engine's signals of such a segment are not
        kept."""
        if not rec.reused:
            return []
        committed = self.open.get(rec.row, {})
        self.reused[rec.row] = self.reused.get(rec.row, 0) + len(rec.reused)
        return [(k, Hypothesis(committed[k].text, speaker_turns=committed[k].speaker_turns),
                 committed[k].engine_s) for k in rec.reused]

    def transcribed(self, segment: SegmentRef, span: tuple[float, float], said: Hypothesis,
                    engine_s: float) -> None:
        """A streamed row's segment has its text: committed with the next part."""
        self.partial.add(SegmentDone(segment.row, segment.id, segment.index, span[0], span[1],
                                     said.text, engine_s, said.speaker_turns))

    def finished(self, row: RowResult) -> None:
        """A row is finished: if it was streamed, nothing more of it is asked for or kept."""
        n = row.index_row.row
        if self.open.pop(n, None) is None:
            return
        self.partial.forget(n)
        self.decode.drop_stream(n)
        reused = self.reused.pop(n, 0)
        if reused:
            log.info("shard %d: long recording %r resumed: %d of its %d segments were "
                     "transcribed before the task stopped and reused", self.shard,
                     row.index_row.id, reused, len(row.segments or ()))
