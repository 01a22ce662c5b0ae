"""The shard writer: results stream into committed parts, then into one shard file, then a marker.

Parts are the in-shard checkpoint: every `part_rows` rows (or `part_seconds`) the buffered rows are
committed atomically as `shard-K.parts/part-NNNNN.parquet`. A task killed mid-shard loses at most
the uncommitted buffer; on restart `done_rows()` says which index rows are already in parts and the
pipeline skips them. Each part carries the shard's key under the plan (`Plan.shard_key`) in its
Parquet metadata; a part that does not read (truncated, corrupt) or was made for another plan is
discarded there, with a log line, and its rows are done again. `finalize` streams the parts into the shard file (memory flat in shard size),
checks that every row of the shard is there exactly once, commits it, writes the marker last and
only then removes the parts.
"""

from __future__ import annotations

import logging
import shutil
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from asrd import __version__
from asrd.done_marker import DoneMarker
from asrd.plan_record import ShardSpec
from asrd.row_coverage import RowCoverage, RowsNotOnce
from asrd.rundir import RunDir
from asrd.schema import tally
from asrd.verify import sha256_file
from hpc.commit import atomic_path
from hpc.slurm_env import SlurmEnv

if TYPE_CHECKING:
    from asrd.runtime.placement import Placement

log = logging.getLogger("asrd.write")

SHARD_KEY = b"asrd.shard_key"  # the Parquet metadata key of a part's shard key


class ShardIncomplete(RuntimeError):
    """The parts do not hold every row of the shard exactly once; nothing was committed."""


class ShardWriter:
    def __init__(self, run_dir: RunDir, spec: ShardSpec, schema: pa.Schema, part_rows: int = 256,
                 part_seconds: float = 120.0, *, shard_key: str,
                 on_commit: Callable[[], None] | None = None):
        self.run_dir, self.spec, self.schema, self.shard_key = run_dir, spec, schema, shard_key
        self.on_commit = on_commit  # called after each part is durable
        self.part_rows, self.part_seconds = part_rows, part_seconds
        self.parts_dir = run_dir.parts_dir(spec.shard)
        self.buffer: list[dict[str, Any]] = []
        self.last_commit = time.monotonic()
        existing = self._part_files()
        self.next_part = 1 + max((int(p.stem.split("-")[1]) for p in existing), default=-1)

    def _part_files(self) -> list[Path]:
        return sorted(self.parts_dir.glob("part-*.parquet")) if self.parts_dir.is_dir() else []

    def done_rows(self) -> np.ndarray:
        """Index rows already committed in parts (the resume point); discards the parts that
        cannot be used, so that their rows are done again."""
        rows = []
        for part in self._part_files():
            try:
                table = pq.read_table(part, columns=["row"])
                why = None if (table.schema.metadata or {}).get(SHARD_KEY) == self.shard_key.encode() \
                    else "it was made for another plan of this shard"
            except (pa.ArrowException, OSError) as e:
                why = f"it does not read ({e})"
            if why is None:
                rows.append(table.column(0).to_numpy())
            else:
                log.warning("shard %d: discarding %s, its rows will be done again: %s",
                            self.spec.shard, part, why)
                part.unlink(missing_ok=True)
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
            table = pa.Table.from_pylist(self.buffer, schema=self.schema.with_metadata(
                {**(self.schema.metadata or {}), SHARD_KEY: self.shard_key.encode()}))
            with atomic_path(self.parts_dir / f"part-{self.next_part:05d}.parquet") as tmp:
                pq.write_table(table, tmp, compression="zstd")
            self.next_part += 1
            self.buffer = []
            if self.on_commit is not None:
                self.on_commit()
        self.last_commit = time.monotonic()

    def _read_part(self, part: Path) -> pa.Table:
        """A committed part for the shard file. One that no longer reads (changed on the store
        under the running task) is discarded, so that the next run does its rows again, and the
        shard ends here: nothing is committed from it."""
        try:
            return pq.read_table(part, schema=self.schema)
        except (pa.ArrowException, OSError) as e:
            part.unlink(missing_ok=True)
            raise ShardIncomplete(
                f"shard {self.spec.shard}: the committed part {part} does not read any more "
                f"({type(e).__name__}: {e}); it was discarded and nothing was committed: run the "
                "shard again (`asrd run` or `asrd resubmit`) to do its rows again") from None

    def finalize(self, wall_s: float, config_hash: str, model: str, *, resumed_rows: int = 0,
                 segments_reused: int = 0, task_startup_s: float | None = None,
                 placement: Placement | None = None) -> DoneMarker:
        """Parts -> shard file -> marker (with where the engines ran). Returns the marker."""
        self.commit_part()
        coverage = RowCoverage(self.spec)
        ok = failed = 0
        audio_s = 0.0
        errors: dict[str, int] = {}
        final = self.run_dir.shard_file(self.spec.shard)
        with atomic_path(final) as tmp:
            with pq.ParquetWriter(tmp, self.schema, compression="zstd") as out:
                for part in self._part_files():
                    table = self._read_part(part)
                    try:
                        coverage.add(table.column("row").to_numpy())
                    except RowsNotOnce as e:
                        raise ShardIncomplete(f"{part}: {e}") from None
                    out.write_table(table)
                    n_ok, n_failed, ok_audio = tally(table, errors)
                    ok, failed, audio_s = ok + n_ok, failed + n_failed, audio_s + ok_audio
            try:
                coverage.check_complete()
            except RowsNotOnce as e:
                raise ShardIncomplete(f"shard {self.spec.shard}: {e}") from None
        slurm = SlurmEnv.from_environ()
        st = final.stat()
        marker = DoneMarker(
            shard=self.spec.shard, rows=self.spec.rows, ok=ok, failed=failed, errors=errors,
            audio_s=audio_s, wall_s=wall_s, config_hash=config_hash, asrd_version=__version__,
            model=model, host=socket.gethostname(), slurm_job_id=slurm.job_id,
            slurm_array=slurm.task_key if slurm.in_slurm else None, shard_key=self.shard_key,
            file=final.name, bytes=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha256_file(final),
            finished_at=time.time(), resumed_rows=resumed_rows, segments_reused=segments_reused,
            task_startup_s=task_startup_s,
            engine_gpus=[list(g) for g in placement.engine_gpus] if placement else [],
            gpu_engines=placement.sharing() if placement else {})
        self.run_dir.markers.write(self.spec.shard, marker.to_json())
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        return marker
