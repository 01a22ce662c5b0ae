"""The driver of one shard: moves records between the stages and applies backpressure.

index rows -> decode -> (row assembly) -> engine -> (row assembly) -> judge -> writer

It owns no stage's state: each stage keeps its own calls in flight; the driver waits on all of
them, hands each finished call to the stage that made it, and routes what comes out. Decoding
runs ahead of the engines by at most a few engine batches (`high_water`), so memory stays flat
however large the shard. Whatever ends the loop (the shard is done, SIGTERM, a bug), the rows
already finished are committed before it returns or raises.

A row longer than `stream_min_s` (by the index's `duration_s`) is decoded as a stream, piece by
piece, each piece asked for only when the engines have room, and its transcribed segments are
committed as partial rows (asrd.runtime.partial) at the pace of the parts; on resume its
committed segments are not transcribed again.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import ray

from asrd.engines.base import Hypothesis
from asrd.plan import ShardSpec
from asrd.runtime.decode import DecodeStage
from asrd.runtime.engine import EngineStage, SegmentFailed, Transcribed
from asrd.runtime.judge import JudgeStage
from asrd.runtime.partial import PartialRows, SegmentDone
from asrd.runtime.records import RowResult
from asrd.runtime.resegment import needs_retry
from asrd.runtime.rows import RowAssembly
from asrd.runtime.write import ShardWriter
from asrd.schema import error_reason

log = logging.getLogger("asrd.driver")

WAIT_S = 1.0  # longest wait for a stage before metrics are refreshed
STARVED_WARNING_S = 60.0  # warn once the engines have idled this long into a shard ...
STARVED_WARNING_SHARE = 0.2  # ... for more than this share of it


@dataclass
class ShardStats:
    done: int = 0
    failed: int = 0
    audio_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    decode_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=2048))
    engine_starved_s: float = 0.0
    segments_reused: int = 0  # of long recordings, committed before a stop: not transcribed again


def _pct(values: collections.deque, q: float) -> float:
    return float(np.percentile(np.fromiter(values, float), q)) if values else 0.0


class ShardDriver:
    def __init__(self, spec: ShardSpec, rows: Iterator[dict[str, Any]], todo: int,
                 decode: DecodeStage, engine: EngineStage, judge: JudgeStage,
                 writer: ShardWriter, partial: PartialRows,
                 output: Callable[[RowResult], dict[str, Any]], rows_per_decode: int,
                 stream_min_s: float, on_metrics: Callable[[dict], None] | None = None,
                 retry_segment_s: float = 0.0):
        self.spec, self.rows, self.rows_left, self.todo = spec, rows, True, todo
        self.decode, self.engine, self.judge, self.writer = decode, engine, judge, writer
        self.partial, self.stream_min_s = partial, stream_min_s
        self.output, self.rows_per_decode, self.on_metrics = output, rows_per_decode, on_metrics
        self.assembly = RowAssembly()
        self.retry_segment_s = retry_segment_s
        self.cut_again: set[int] = set()  # rows decoded a second time, shorter
        self.long_waiting: collections.deque[dict[str, Any]] = collections.deque()
        self.long: dict[int, dict[int, SegmentDone]] = {}  # streamed rows: committed segments
        self.reused: dict[int, int] = {}  # streamed rows: committed segments used again
        self.stats = ShardStats()
        self.high_water = 2 * engine.batch * len(engine.actors) * engine.depth
        self.t0 = time.monotonic()

    # --- moving records ------------------------------------------------------------------------
    def _is_long(self, row: dict[str, Any]) -> bool:
        duration = row.get("duration_s")
        return isinstance(duration, (int, float)) and duration > self.stream_min_s

    def _next_chunk(self) -> list[dict[str, Any]]:
        """The next rows to decode together; long ones are set aside to be streamed."""
        chunk: list[dict[str, Any]] = []
        while self.rows_left and len(chunk) < self.rows_per_decode and not self.long_waiting:
            try:
                row = next(self.rows)
            except StopIteration:
                self.rows_left = False
                break
            (self.long_waiting if self._is_long(row) else chunk).append(row)
        return chunk

    @property
    def _more_rows(self) -> bool:
        return self.rows_left or bool(self.long_waiting)

    def _feed(self) -> None:
        """Streams' next pieces first (they finish rows and hold memory), then new long rows,
        then chunks of short ones; all only while the engines have room."""
        self.decode.feed()
        while self.decode.has_room() and self.engine.queued() < self.high_water:
            stream = self.decode.waiting_stream()
            if stream is not None:
                self.decode.next_piece(stream)
            elif self.long_waiting and self.decode.can_open_stream():
                row = self.long_waiting.popleft()
                self.long[row["row"]] = self.partial.committed(row["row"], str(row.get("id")))
                self.decode.open_stream(row, {k: (s.start, s.end)
                                              for k, s in self.long[row["row"]].items()})
            elif self.rows_left and not self.long_waiting:
                chunk = self._next_chunk()
                if chunk:
                    self.decode.submit(chunk)
            else:
                break
        self.engine.feed(nothing_more_coming=not (self._more_rows or self.decode.busy()))
        upstream_done = not (self._more_rows or self.decode.busy() or self.engine.busy()
                             or len(self.assembly))
        self.judge.feed(nothing_more_coming=upstream_done)

    def _on_decoded(self, ref: ray.ObjectRef) -> None:
        for d in self.decode.complete(ref):
            rec, row = d.decoded, d.decoded.row
            self.stats.decode_ms.append(rec.decode_s * 1000)
            if rec.first == 0:
                self._finished(self.assembly.start(d.index_row, rec))
            else:
                self._finished(self.assembly.more(rec))
            committed = self.long.get(row, {})
            if rec.reused:
                self.reused[row] = self.reused.get(row, 0) + len(rec.reused)
                self.stats.segments_reused += len(rec.reused)
            for k in rec.reused:  # transcribed before a kill: committed as a partial row
                # (its text only: the engine's signals of such a segment are not kept)
                self._transcribed(self.assembly.text(row, k, Hypothesis(committed[k].text),
                                                     committed[k].engine_s))
            if row in self.assembly:
                self.engine.add(d.segments)

    def _on_transcribed(self, ref: ray.ObjectRef) -> None:
        out = self.engine.complete(ref)
        if isinstance(out, Transcribed):
            for s, text in zip(out.segments, out.texts):
                if s.members is None:
                    if s.row in self.long and s.row in self.assembly:
                        start, end = self.assembly.span(s.row, s.index)
                        self.partial.add(SegmentDone(s.row, s.id, s.index, start, end, text.text,
                                                     out.engine_s))
                    self._transcribed(self.assembly.text(s.row, s.index, text, out.engine_s))
                    continue
                share = out.engine_s / len(s.members)
                for m, t in zip(s.members, text):
                    if t is None:
                        self._alone(m.row)
                    else:
                        self._finished(self.assembly.text(m.row, 0, t, share,
                                                          (s.id, m.offset_s)))
        elif isinstance(out, SegmentFailed):
            if out.segment.members is None:
                self._finished(self.assembly.fail(out.segment.row, out.error))
            else:  # a window that failed: its rows go again, each alone
                for m in out.segment.members:
                    self._alone(m.row)

    def _transcribed(self, row: RowResult | None) -> None:
        """A row whose segments all have texts: finished, unless one of its long segments reads
        like a failed transcription (asrd.runtime.resegment) and it has not been cut again yet:
        then it goes back to decode, cut shorter, and its texts so far are dropped. A streamed
        long recording is not sent back: that would decode and transcribe all of it again."""
        if row is not None and row.index_row["row"] not in self.cut_again \
                and row.index_row["row"] not in self.long \
                and needs_retry(row, self.retry_segment_s):
            self.cut_again.add(row.index_row["row"])
            self.decode.submit([row.index_row], pack=False, max_segment_s=self.retry_segment_s)
            return
        self._finished(row)

    def _alone(self, row: int) -> None:
        """Decode a packed row again, to be transcribed on its own."""
        index_row = self.assembly.index_row(row)
        if index_row is not None:
            self.decode.submit([index_row], pack=False)

    def _on_judged(self, ref: ray.ObjectRef) -> None:
        for row in self.judge.complete(ref):
            self.writer.add(self.output(row))

    def _finished(self, row: RowResult | None) -> None:
        if row is None:
            return
        if self.long.pop(row.index_row["row"], None) is not None:  # a streamed row
            self.partial.forget(row.index_row["row"])
            self.decode.drop_stream(row.index_row["row"])
            reused = self.reused.pop(row.index_row["row"], 0)
            if reused:
                log.info("shard %d: long recording %r resumed: %d of its %d segments were "
                         "transcribed before the task stopped and reused", self.spec.shard,
                         row.index_row.get("id"), reused, len(row.segments or ()))
        s = self.stats
        s.done += 1
        if row.ok:
            s.audio_s += row.duration_s or 0.0
        else:
            s.failed += 1
            reason = error_reason(row.error or "")
            s.errors[reason] = s.errors.get(reason, 0) + 1
        if self.judge.enabled:
            self.judge.add(row)
        else:
            self.writer.add(self.output(row))

    # --- the loop ------------------------------------------------------------------------------
    def run(self) -> ShardStats:
        stages = ((self.decode, self._on_decoded), (self.engine, self._on_transcribed),
                  (self.judge, self._on_judged))
        last_metrics = time.monotonic()
        warned = False
        try:
            while True:
                self._feed()
                owner = {ref: handle for stage, handle in stages for ref in stage.in_flight()}
                if not owner:
                    if (self._more_rows or self.decode.busy() or self.engine.busy()
                            or self.judge.busy()):
                        continue
                    break
                t = time.monotonic()
                ready, _ = ray.wait(list(owner), num_returns=1, timeout=WAIT_S)
                if not self.engine.calls and not self.engine.waiting and (
                        self._more_rows or self.decode.busy()):
                    self.stats.engine_starved_s += time.monotonic() - t
                for ref in ready:
                    owner[ref](ref)
                now = time.monotonic()
                if now - last_metrics >= WAIT_S:
                    last_metrics = now
                    if self.on_metrics:
                        self.on_metrics(self.metrics())
                    warned = warned or self._warn_if_starved(now - self.t0)
                if self.writer.due() or self.partial.due():
                    self._commit()
        finally:
            # Whatever happens (SIGTERM, requeue, a bug), rows already finished become durable.
            self._commit()
        if self.on_metrics:
            self.on_metrics(self.metrics())
        return self.stats

    def _commit(self) -> None:
        """Finished rows, then the segments of rows still in progress."""
        self.writer.commit_part()
        self.partial.commit()

    def _warn_if_starved(self, elapsed: float) -> bool:
        starved = self.stats.engine_starved_s
        if elapsed > STARVED_WARNING_S and starved > STARVED_WARNING_SHARE * elapsed:
            log.warning("decode cannot keep up: engines idle %.0f%% of the time; raise "
                        "pipeline.decode_actors or CPUs per task", 100 * starved / elapsed)
            return True
        return False

    def metrics(self) -> dict[str, Any]:
        """The shard's metrics under their logged names (asrd.tracking sums the counters over
        the task's shards and derives rates from them)."""
        s = self.stats
        m: dict[str, Any] = {
            "progress/shard": self.spec.shard, "progress/items_done": s.done,
            "progress/items_total": self.todo, "progress/items_failed": s.failed,
            "progress/audio_s_done": s.audio_s,
            "progress/shard_elapsed_s": time.monotonic() - self.t0,
            "latency/decode_ms_p50": _pct(s.decode_ms, 50),
            "latency/decode_ms_p90": _pct(s.decode_ms, 90),
            "latency/engine_ms_p50": _pct(self.engine.latency_ms, 50),
            "latency/engine_ms_p90": _pct(self.engine.latency_ms, 90),
            "queue/decode": len(self.decode.calls), "queue/engine": self.engine.queued(),
            "queue/judge": len(self.judge.waiting),
            "engine/calls_in_flight": len(self.engine.calls),
            "engine/starved_s": s.engine_starved_s, "progress/items_cut_again": len(self.cut_again),
            "progress/segments_reused": s.segments_reused}
        m.update({f"failures/{k}": v for k, v in s.errors.items()})
        return m
