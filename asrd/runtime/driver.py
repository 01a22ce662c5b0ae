"""The driver of one shard: routes records between the stages and applies backpressure.

index rows -> decode -> (row assembly) -> engine -> (row assembly) -> judge -> writer

It owns no stage's state: each stage keeps its own calls in flight; the driver waits on all of
them, hands each finished call to the stage that made it, and routes what comes out. Rows that
go round again have their own owners: long recordings (asrd.runtime.streams) and second tries
(asrd.runtime.redo). Decoding runs ahead of the engines by at most a few engine batches
(`high_water`), so memory stays flat however large the shard. Whatever ends the loop (the shard
is done, SIGTERM, a bug), the rows already finished are committed before it returns or raises.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import ray

from asrd.runtime.decode_stage import DecodeStage
from asrd.runtime.engine import EngineStage, SegmentFailed, Transcribed
from asrd.runtime.judge import JudgeStage
from asrd.runtime.metrics import ShardMetrics
from asrd.runtime.partial import PartialRows
from asrd.runtime.records import IndexRow, RowResult
from asrd.runtime.redo import Redo
from asrd.runtime.rows import RowAssembly
from asrd.runtime.streams import LongRecordings
from asrd.runtime.write import ShardWriter

WAIT_S = 1.0  # longest wait for a stage before metrics are refreshed


class ShardDriver:
    def __init__(self, rows: Iterator[IndexRow], rows_per_decode: int,
                 decode: DecodeStage, engine: EngineStage, judge: JudgeStage,
                 long: LongRecordings, redo: Redo, writer: ShardWriter, partial: PartialRows,
                 output: Callable[[RowResult], dict[str, Any]], metrics: ShardMetrics,
                 on_metrics: Callable[[dict], None] | None = None):
        self.rows, self.rows_left, self.rows_per_decode = rows, True, rows_per_decode
        self.decode, self.engine, self.judge = decode, engine, judge
        self.long, self.redo = long, redo
        self.writer, self.partial, self.output = writer, partial, output
        self.metrics, self.on_metrics = metrics, on_metrics
        self.assembly = RowAssembly()
        self.high_water = 2 * engine.batch * len(engine.actors) * engine.depth

    # --- feeding -------------------------------------------------------------------------------
    def _more_rows(self) -> bool:
        return self.rows_left or bool(self.long.waiting)

    def _next_chunk(self) -> bool:
        """Send the next rows to decode together (long ones are set aside to be streamed, and
        no short ones are read while one waits); False when there are none to read now."""
        if not self.rows_left or self.long.waiting:
            return False
        chunk: list[IndexRow] = []
        while len(chunk) < self.rows_per_decode and not self.long.waiting:
            row = next(self.rows, None)
            if row is None:
                self.rows_left = False
                break
            (self.long.set_aside if self.long.is_long(row) else chunk.append)(row)
        if chunk:
            self.decode.submit(chunk)
        return True

    def _feed(self) -> None:
        """Long recordings' pieces first, then chunks of short rows, while the engines have
        room; then the engines and the judge."""
        self.decode.feed()
        while self.decode.has_room() and self.engine.queued() < self.high_water:
            if not (self.long.ask() or self._next_chunk()):
                break
        self.engine.feed(nothing_more_coming=not (self._more_rows() or self.decode.busy()))
        self.judge.feed(nothing_more_coming=not (self._more_rows() or self.decode.busy()
                                                  or self.engine.busy() or len(self.assembly)))

    # --- routing -------------------------------------------------------------------------------
    def _on_decoded(self, ref: ray.ObjectRef) -> None:
        for d in self.decode.complete(ref):
            rec, row = d.decoded, d.decoded.row
            self._finished(self.assembly.start(d.index_row, rec) if rec.first == 0
                           else self.assembly.more(rec))
            self.metrics.segments_reused += len(rec.reused)
            for k, text, engine_s in self.long.reused_texts(rec):
                self._transcribed(self.assembly.text(row, k, text, engine_s))
            if row in self.assembly:
                self.engine.add(d.segments)

    def _on_transcribed(self, ref: ray.ObjectRef) -> None:
        out = self.engine.complete(ref)
        if isinstance(out, Transcribed):
            for s, text in zip(out.segments, out.texts):
                if s.members is None:
                    if self.long.is_streamed(s.row) and s.row in self.assembly:
                        self.long.transcribed(s, self.assembly.span(s.row, s.index), text,
                                              out.engine_s)
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
        """A row whose segments all have texts: finished, unless it goes back to be cut
        shorter (never a streamed one)."""
        if row is not None and not self.long.is_streamed(row.index_row.row) \
                and self.redo.cut_shorter(row):
            self.decode.submit([row.index_row])
            return
        self._finished(row)

    def _alone(self, row: int) -> None:
        """A packed row is decoded again, to be transcribed on its own."""
        index_row = self.assembly.index_row(row)
        if index_row is not None:
            self.redo.alone(row)
            self.decode.submit([index_row])

    def _finished(self, row: RowResult | None) -> None:
        if row is None:
            return
        self.long.finished(row)
        self.metrics.finished(row)
        if self.judge.enabled:
            self.judge.add(row)
        else:
            self.writer.add(self.output(row))

    def _on_judged(self, ref: ray.ObjectRef) -> None:
        for row in self.judge.complete(ref):
            self.writer.add(self.output(row))

    # --- the loop ------------------------------------------------------------------------------
    def run(self) -> ShardMetrics:
        stages = ((self.decode, self._on_decoded), (self.engine, self._on_transcribed),
                  (self.judge, self._on_judged))
        last_report = time.monotonic()
        try:
            while True:
                self._feed()
                owner = {ref: handle for stage, handle in stages for ref in stage.in_flight()}
                if not owner:
                    if (self._more_rows() or self.decode.busy() or self.engine.busy()
                            or self.judge.busy()):
                        continue
                    break
                t = time.monotonic()
                ready, _ = ray.wait(list(owner), num_returns=1, timeout=WAIT_S)
                if not self.engine.calls and not self.engine.waiting and (
                        self._more_rows() or self.decode.busy()):
                    self.metrics.engine_starved_s += time.monotonic() - t
                for ref in ready:
                    owner[ref](ref)
                if time.monotonic() - last_report >= WAIT_S:
                    last_report = time.monotonic()
                    self._report()
                if self.writer.due() or self.partial.due():
                    self._commit()
        finally:
            # Whatever happens (SIGTERM, requeue, a bug), rows already finished become durable.
            self._commit()
        self._report()
        return self.metrics

    def _report(self) -> None:
        self.metrics.warn_if_starved()
        if self.on_metrics:
            self.on_metrics(self.metrics.snapshot([self.decode, self.engine, self.judge,
                                                   self.redo]))

    def _commit(self) -> None:
        """Finished rows, then the segments of rows still in progress."""
        self.writer.commit_part()
        self.partial.commit()
