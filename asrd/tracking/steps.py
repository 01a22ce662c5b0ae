"""The W&B step of a task's run: whole seconds since the task *first* started.

Why: a requeued task resumes the same run id, online or through `wandb sync` of its offline
fragments one after another. Steps that keep increasing across requeues (and across nodes whose
clocks disagree a little) mean a later fragment never overwrites an earlier one's history. The
first start and the last step are kept in a small JSON file next to the runs.
"""

from __future__ import annotations

import time
from pathlib import Path

from hpc.commit import read_json, write_json


class Steps:
    """Step numbers for one run id; `path` None keeps them in memory only (no W&B run)."""

    def __init__(self, path: Path | None):
        self.path = path
        saved = read_json(path) if path is not None and path.is_file() else {}
        self.first_start: float = saved.get("first_start", time.time())
        self.last: int = saved.get("last_step", -1)

    def next(self) -> int:
        self.last = max(self.last + 1, int(time.time() - self.first_start))
        return self.last

    def save(self) -> None:
        if self.path is not None:
            write_json(self.path, {"first_start": self.first_start, "last_step": self.last})
