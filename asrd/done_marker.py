"""The done-marker of a shard: what the shard writer records once the shard file is committed,
and what verify, merge, forecast and status read back. One record, one writer (`to_json`) and one
reader (`from_json`), so a field is spelled in one place; the JSON keys are the on-disk format.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

from hpc.marker_summary import UnreadableMarker


@dataclass(frozen=True, kw_only=True)
class DoneMarker:
    shard: int
    rows: int
    ok: int
    failed: int
    errors: dict[str, int] = field(default_factory=dict)  # error reason -> rows that failed for it
    audio_s: float  # audio seconds of the rows that succeeded
    wall_s: float  # the shard's wall time in its task
    config_hash: str
    asrd_version: str = ""
    model: str = ""
    host: str = ""
    slurm_job_id: str | None = None
    slurm_array: str | None = None
    shard_key: str  # the shard's key under the plan (Plan.shard_key)
    file: str = ""  # the shard file's name in shards/
    bytes: int
    mtime_ns: int
    sha256: str
    finished_at: float | None = None  # None only in markers older than the field
    resumed_rows: int = 0  # rows found already committed in parts when the shard started
    segments_reused: int = 0
    task_startup_s: float | None = None  # process start to pipeline ready; its task's first shard
    engine_gpus: list[list[str]] = field(default_factory=list)  # engine number -> its GPU ids
    gpu_engines: dict[str, list[int]] = field(default_factory=dict)  # GPU id -> engines on it
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "extra"}
        if self.task_startup_s is None:  # only a task's first shard records it
            del out["task_startup_s"]
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, d: dict[str, Any] | UnreadableMarker) -> DoneMarker | UnreadableMarker:
        """The marker, or why it cannot be one (a marker without a field every marker has)."""
        if isinstance(d, UnreadableMarker):
            return d
        known, required = _field_names(cls)
        missing = [name for name in required if name not in d]
        if missing:
            return UnreadableMarker(f"it lacks {', '.join(missing)}")
        unknown = d.keys() - known
        if not unknown:  # nearly always: no copy of the keys (status parses 10,000 markers)
            return cls(**d)
        return cls(**{k: v for k, v in d.items() if k in known},
                   extra={k: v for k, v in d.items() if k in unknown})


@functools.cache
def _field_names(cls: type) -> tuple[frozenset[str], tuple[str, ...]]:
    """(the fields a marker's JSON may carry, those it must): worked out once per class, not
    once per marker (status parses 10,000 markers)."""
    fields = [f for f in dataclasses.fields(cls) if f.name != "extra"]
    return (frozenset(f.name for f in fields),
            tuple(f.name for f in fields if f.default is dataclasses.MISSING
                  and f.default_factory is dataclasses.MISSING))
