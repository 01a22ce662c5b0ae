"""The shard writer: results stream into committed parts, then into one shard file, then a marker.

Parts are the in-shard checkpoint: every `part_rows` rows (or `part_seconds`) the buffered rows are
committed atomically as `shard-K.parts/part-NNNNN.parquet`. A task killed mid-shard loses at most
the uncommitted buffer; on restart `done_rows()` says which index rows are already in parts and the
pipeline skips them. `finalize` streams the parts into the shard file (memory flat in shard size),
checks that every row of the shard is there exactly once, commits it, writes the marker last and
only then removes the parts.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from asrd import __version__
from asrd.plan import ShardSpec
from asrd.rundir import RunDir
from asrd.schema import tally
from hpc.commit import atomic_path
from hpc.slurm_env import SlurmEnv


class ShardIncomplete(RuntimeError):
    """The parts do not hold every row of the shard exactly once; nothing was committed."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


class ShardWriter:
    def __init__(self, run_dir: RunDir, spec: ShardSpec, schema: pa.Schema, part_rows: int = 256,
                 part_seconds: float = 120.0):
        self.run_dir, self.spec, self.schema = run_dir, spec, schema
        self.part_rows, self.part_seconds = part_rows, part_seconds
        self.parts_dir = run_dir.parts_dir(spec.shard)
        self.buffer: list[dict[str, Any]] = []
        self.last_commit = time.monotonic()
        existing = self._part_files()
        self.next_part = 1 + max((int(p.stem.split("-")[1]) for p in existing), default=-1)

    def _part_files(self) -> list[Path]:
        return sorted(self.parts_dir.glob("part-*.parquet")) if self.parts_dir.is_dir() else []

    def done_rows(self) -> np.ndarray:
        """Index rows already committed in parts (the resume point)."""
        rows = [pq.read_table(p, columns=["row"]).column(0).to_numpy() for p in self._part_files()]
        return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)

    def add(self, row: dict[str, Any]) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= self.part_rows or self.due():
            self.commit_part()

    def due(self) -> bool:
        """Rows have waited `part_seconds` since the last commit."""
        return bool(self.buffer) and time.monotonic() - self.last_commit >= self.part_seconds

    def commit_part(self) -> None:
        """Make the buffered rows durable (also called on SIGTERM/requeue before exiting)."""
        if self.buffer:
            table = pa.Table.from_pylist(self.buffer, schema=self.schema)
            with atomic_path(self.parts_dir / f"part-{self.next_part:05d}.parquet") as tmp:
                pq.write_table(table, tmp, compression="zstd")
            self.next_part += 1
            self.buffer = []
        self.last_commit = time.monotonic()

    def finalize(self, wall_s: float, config_hash: str, model: str, extra: dict | None = None
                 ) -> dict[str, Any]:
        """Parts -> shard file -> marker. Returns the marker."""
        self.commit_part()
        seen = np.zeros(self.spec.rows, dtype=bool)
        ok = failed = 0
        audio_s = 0.0
        errors: dict[str, int] = {}
        final = self.run_dir.shard_file(self.spec.shard)
        with atomic_path(final) as tmp:
            with pq.ParquetWriter(tmp, self.schema, compression="zstd") as out:
                for part in self._part_files():
                    table = pq.read_table(part, schema=self.schema)
                    rel = table.column("row").to_numpy() - self.spec.start
                    if rel.size and (rel.min() < 0 or rel.max() >= self.spec.rows):
                        raise ShardIncomplete(f"{part} holds rows outside shard {self.spec.shard}")
                    if seen[rel].any() or len(np.unique(rel)) != len(rel):
                        raise ShardIncomplete(f"{part} repeats rows already committed")
                    seen[rel] = True
                    out.write_table(table)
                    n_ok, n_failed, ok_audio = tally(table, errors)
                    ok, failed, audio_s = ok + n_ok, failed + n_failed, audio_s + ok_audio
            if not seen.all():
                missing = (np.flatnonzero(~seen)[:10] + self.spec.start).tolist()
                raise ShardIncomplete(f"shard {self.spec.shard}: {int((~seen).sum())} rows missing "
                                      f"(first index rows {missing})")
        slurm = SlurmEnv.from_environ()
        marker = {
            "shard": self.spec.shard, "rows": self.spec.rows, "ok": ok, "failed": failed,
            "errors": errors, "audio_s": audio_s, "wall_s": wall_s, "config_hash": config_hash,
            "asrd_version": __version__, "model": model, "host": socket.gethostname(),
            "slurm_job_id": slurm.job_id, "slurm_array": slurm.task_key if slurm.in_slurm else None,
            "file": final.name, "bytes": final.stat().st_size, "sha256": _sha256(final),
            "finished_at": time.time(), **(extra or {}),
        }
        self.run_dir.markers.write(self.spec.shard, marker)
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        return marker
