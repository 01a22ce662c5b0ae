"""Second tries: the one owner of which rows are decoded again, and how.

- A packed window whose words could not be placed, or that failed, sends its clips back: each is
  decoded again and transcribed alone.
- A row with a long segment that reads like a failed transcription (asrd.runtime.resegment) goes
  back once, cut into segments of at most `audio.retry_segment_s`, alone; its texts so far are
  dropped. A streamed long recording is never sent back: that would decode and transcribe all of
  it again.

The choice is remembered, so that a row decoded again after its decode actor died is decoded the
same way (the decode stage asks `work_item` for every row it sends).
"""

from __future__ import annotations

from asrd.runtime.records import IndexRow, RowResult, WorkItem
from asrd.runtime.resegment import needs_retry


class Redo:
    def __init__(self, retry_segment_s: float):
        self.retry_segment_s = retry_segment_s
        self.unpacked: set[int] = set()  # rows to transcribe alone, never packed again
        self.shorter: set[int] = set()  # rows cut again into shorter segments (alone too)

    def work_item(self, index_row: IndexRow) -> WorkItem:
        """What a decode actor gets for an index row."""
        n = index_row.row
        cut = n in self.shorter
        return WorkItem.of(index_row, pack=not cut and n not in self.unpacked,
                           max_segment_s=self.retry_segment_s if cut else None)

    def alone(self, row: int) -> None:
        """The row's clip goes again, to be transcribed on its own."""
        self.unpacked.add(row)

    def cut_shorter(self, row: RowResult) -> bool:
        """Whether the finished row goes back to be cut shorter (then it is marked so)."""
        n = row.index_row.row
        if n in self.shorter or not needs_retry(row, self.retry_segment_s):
            return False
        self.shorter.add(n)
        return True

    def counters(self) -> dict[str, float]:
        return {"progress/items_cut_again": len(self.shorter)}
