"""The exactly-once check of a shard's rows: every index row of the shard once, none outside it.
The shard writer makes it before it commits a shard file, and merge again before it takes one."""

from __future__ import annotations

import numpy as np

from asrd.plan_record import ShardSpec


class RowsNotOnce(ValueError):
    """A shard's rows are not each there exactly once; the message says how."""


class RowCoverage:
    """The index rows of one shard seen so far, batch by batch (memory: one bool per row)."""

    def __init__(self, spec: ShardSpec):
        self.spec = spec
        self.seen = np.zeros(spec.rows, dtype=bool)

    def add(self, rows: np.ndarray) -> np.ndarray:
        """Count a batch's index rows; returns them as positions in the shard."""
        rel = rows - self.spec.start
        if rel.size and (rel.min() < 0 or rel.max() >= self.spec.rows):
            raise RowsNotOnce(f"it holds rows outside shard {self.spec.shard} (index rows "
                              f"{self.spec.start}-{self.spec.stop - 1})")
        if self.seen[rel].any() or len(np.unique(rel)) != len(rel):
            raise RowsNotOnce("it repeats rows")
        self.seen[rel] = True
        return rel

    def check_complete(self) -> None:
        if not self.seen.all():
            missing = (np.flatnonzero(~self.seen)[:10] + self.spec.start).tolist()
            raise RowsNotOnce(f"{int((~self.seen).sum())} rows missing (first index rows "
                              f"{missing})")
