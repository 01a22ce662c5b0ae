"""The engine stage: actors that each hold one engine for the whole task, and the driver's side
that batches waiting segments into calls and keeps every engine `calls_in_flight` calls deep, so
the GPU is never left idle while decoded audio waits.

A call that fails is split in halves and retried, down to single segments; a single segment is
retried `pipeline.engine_retries` times, then its row becomes the error row `engine error: ...`.
So one bad segment costs its own row only, and an engine never has to invent a partial answer.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any

import ray
from omegaconf import DictConfig, OmegaConf
from ray.exceptions import RayActorError, RayTaskError

from asrd.engines import Hypothesis, InputPreparer, PackedWindow, Segment, build_engine
from asrd.runtime.health import ActorHealth
from asrd.runtime.placement import assigned_gpus
from asrd.runtime.records import SegmentPick, SegmentRef, Transcripts


class EngineWorker:
    """Holds one engine for the whole task; serves `calls_in_flight` queued calls."""

    def __init__(self, engine_cfg: dict, faults_cfg: dict, quality_cfg: dict):
        self.engine = build_engine(OmegaConf.create(engine_cfg), OmegaConf.create(faults_cfg),
                                   OmegaConf.create(quality_cfg))
        self.gate = threading.Semaphore(max(1, self.engine.max_concurrency))

    def name(self) -> str:
        return self.engine.name

    def input_preparer(self) -> InputPreparer | None:
        return self.engine.input_preparer()

    def transcribe(self, chunks: list[ray.ObjectRef], picks: list[SegmentPick],
                   prepared: bool) -> Transcripts:
        """Hypotheses for the picked segments of decode calls (arrays, or prepared inputs)."""
        found = ray.get(chunks)  # arrays are zero-copy views into the object store
        segments = []
        for p in picks:
            x = found[p.chunk][p.item][p.seg]
            segments.append(Segment(None, p.language, x, p.id) if prepared
                            else Segment(x, p.language, id=p.id))
        plain = [k for k, p in enumerate(picks) if not p.members]
        texts: list[Hypothesis | list[Hypothesis | None]] = [Hypothesis("")] * len(picks)
        with self.gate:
            t0 = time.perf_counter()
            if plain:
                got = self.engine.hypotheses([segments[k] for k in plain])
                if len(got) != len(plain):
                    raise RuntimeError(f"engine returned {len(got)} hypotheses for {len(plain)} "
                                       "segments")
                for k, text in zip(plain, got):
                    texts[k] = text
            packed = [k for k, p in enumerate(picks) if p.members]
            if packed:
                got = self.engine.hypotheses_windows(
                    [PackedWindow(segments[k], tuple(picks[k].members)) for k in packed])
                for k, hyps in zip(packed, got, strict=True):
                    texts[k] = hyps
            took = time.perf_counter() - t0
        return Transcripts(texts, took)

    def ping(self) -> bool:
        return True

    def gpu_ids(self) -> list[str]:
        """The GPUs Ray assigned this actor (its CUDA_VISIBLE_DEVICES come from them)."""
        return assigned_gpus()

    def close(self) -> None:
        self.engine.close()


@dataclass
class EngineCall:
    engine: int
    segments: list[SegmentRef]
    attempt: int


@dataclass
class Transcribed:
    """A finished call's segments, with their texts (a list per packed window) and each one's
    share of the engine time."""

    segments: list[SegmentRef]
    texts: list[Hypothesis | list[Hypothesis | None]]
    engine_s: float


@dataclass
class SegmentFailed:
    """A segment that used up its retries."""

    segment: SegmentRef
    error: str


class EngineStage:
    """Batches waiting segments into engine calls; splits and retries failed calls."""

    def __init__(self, actors: list[Any], batch_size: int, calls_in_flight: int, retries: int,
                 prepared: bool):
        self.actors, self.batch, self.depth = actors, batch_size, calls_in_flight
        self.retries, self.prepared = retries, prepared
        self.waiting: collections.deque[SegmentRef] = collections.deque()
        self.retry: collections.deque[tuple[list[SegmentRef], int]] = collections.deque()
        self.calls: dict[ray.ObjectRef, EngineCall] = {}
        self.load = [0] * len(actors)
        self.latency_ms: collections.deque[float] = collections.deque(maxlen=2048)
        self.health = ActorHealth(actors)

    def add(self, segments: list[SegmentRef]) -> None:
        self.waiting.extend(segments)

    def queued(self) -> int:
        """Segments waiting for a call (backpressure for the decode stage)."""
        return len(self.waiting) + sum(len(s) for s, _ in self.retry)

    def busy(self) -> bool:
        return bool(self.calls or self.waiting or self.retry or self.health.pings)

    def in_flight(self) -> list[ray.ObjectRef]:
        return list(self.calls) + list(self.health.pings)

    def _take(self, force: bool) -> tuple[list[SegmentRef], int] | None:
        if self.retry:
            return self.retry.popleft()
        if len(self.waiting) >= self.batch or (force and self.waiting):
            return [self.waiting.popleft() for _ in range(min(self.batch, len(self.waiting)))], 0
        return None

    def feed(self, nothing_more_coming: bool) -> None:
        """Fill every engine up to its depth, least loaded first. A partial batch goes out when
        nothing more is coming, or when its engine would otherwise idle."""
        self.health.feed()
        for k in sorted(range(len(self.actors)), key=lambda k: self.load[k]):
            while self.load[k] < self.depth and self.health.ok[k]:
                got = self._take(force=nothing_more_coming or self.load[k] == 0)
                if got is None:
                    break
                segments, attempt = got
                chunks = list(dict.fromkeys(s.chunk for s in segments))
                pos = {c: i for i, c in enumerate(chunks)}
                picks = [SegmentPick(pos[s.chunk], s.item, s.seg, s.id, s.language, s.members)
                         for s in segments]
                ref = self.actors[k].transcribe.remote(chunks, picks, self.prepared)
                self.calls[ref] = EngineCall(k, segments, attempt)
                self.load[k] += 1

    def complete(self, ref: ray.ObjectRef) -> Transcribed | SegmentFailed | None:
        """A finished call's texts; a segment that failed for good; or None (split and queued,
        or a ping)."""
        if ref in self.health.pings:
            self.health.complete(ref)
            return None
        call = self.calls.pop(ref)
        self.load[call.engine] -= 1
        try:
            result: Transcripts = ray.get(ref)
        except (RayActorError, RayTaskError) as e:
            if isinstance(e, RayActorError):
                self.health.failed(call.engine)
            return self._failed(call, e)
        self.latency_ms.append(result.took_s * 1000)
        return Transcribed(call.segments, result.texts, result.took_s / len(call.segments))

    def _failed(self, call: EngineCall, e: Exception) -> SegmentFailed | None:
        if len(call.segments) > 1:
            half = len(call.segments) // 2
            self.retry.extend([(call.segments[:half], call.attempt),
                               (call.segments[half:], call.attempt)])
            return None
        if call.attempt < self.retries:
            self.retry.append((call.segments, call.attempt + 1))
            return None
        reason = getattr(e, "cause", None) or e
        text = str(reason).strip()
        msg = text.splitlines()[-1][:300] if text else ""
        return SegmentFailed(call.segments[0], f"engine error: {type(reason).__name__}: {msg}")


def engine_actor_config(cfg: DictConfig) -> tuple[dict, dict, dict]:
    return (OmegaConf.to_container(cfg.engine, resolve=True),  # type: ignore[return-value]
            OmegaConf.to_container(cfg.faults, resolve=True),
            OmegaConf.to_container(cfg.quality, resolve=True))
