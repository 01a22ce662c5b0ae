"""The engine stage: actors that each hold one engine for the whole task, and the driver's side
that batches waiting segments into calls and keeps every engine `calls_in_flight` calls deep, so
the GPU is never left idle while decoded audio waits.

A call that fails is split in halves and retried, down to single segments; a single segment is
retried `pipeline.engine_retries` times, then its row becomes the error row `engine error: ...`.
So one bad segment costs its own row only, and an engine never has to invent a partial answer.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import ray
from omegaconf import DictConfig, OmegaConf
from ray.exceptions import RayActorError, RayTaskError

from asrd import hooks
from asrd.engines import Hypothesis, InputPreparer, PackedWindow, Segment
from asrd.engines.language_id import build_run_engine
from asrd.runtime.health import ActorHealth
from asrd.runtime.metrics import percentile
from asrd.runtime.placement import assigned_gpus
from asrd.runtime.records import SegmentPick, SegmentRef, Transcripts


class EngineWorker:
    """Holds one engine for the whole task; serves `calls_in_flight` queued calls."""

    def __init__(self, engine_cfg: dict, faults_cfg: dict, quality_cfg: dict,
                 language_id_cfg: dict):
        hooks.configure(faults_cfg)  # the hook settings of this actor's process
        self.engine = build_run_engine(OmegaConf.create(engine_cfg),
                                       OmegaConf.create(quality_cfg),
                                       OmegaConf.create(language_id_cfg))
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
    audio_s: float  # what it adds to its engine's queue


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


class EnginesLost(RuntimeError):
    """Every engine actor died for good: the shard cannot go on (its finished rows stay)."""


class EngineStage:
    """Batches waiting segments into engine calls; splits and retries failed calls.

    Each call goes to the engine with the least audio queued (seconds, not calls: a 30 s segment
    costs fifteen 2 s ones). At a shard's end (nothing more coming) the last segments go longest
    first, and no call takes more than its engine's fair share of the audio left, so the engines
    finish together instead of one finishing a long last batch while the others idle."""

    def __init__(self, actors: list[Any], batch_size: int, calls_in_flight: int, retries: int,
                 prepared: bool):
        self.actors, self.batch, self.depth = actors, batch_size, calls_in_flight
        self.retries, self.prepared = retries, prepared
        self.waiting: collections.deque[SegmentRef] = collections.deque()
        self.waiting_s = 0.0
        self.longest_first = False  # whether `waiting` is ordered for the shard's end
        self.retry: collections.deque[tuple[list[SegmentRef], int]] = collections.deque()
        self.calls: dict[ray.ObjectRef, EngineCall] = {}
        self.load = [0] * len(actors)  # calls in flight, per engine
        self.queued_s = [0.0] * len(actors)  # audio seconds in those calls
        self.latency_ms: collections.deque[float] = collections.deque(maxlen=2048)
        self.health = ActorHealth(actors)

    def add(self, segments: list[SegmentRef]) -> None:
        self.waiting.extend(segments)
        self.waiting_s += sum(s.audio_s for s in segments)
        self.longest_first = False

    def queued(self) -> int:
        """Segments waiting for a call (backpressure for the decode stage)."""
        return len(self.waiting) + sum(len(s) for s, _ in self.retry)

    def busy(self) -> bool:
        return bool(self.calls or self.waiting or self.retry or self.health.pings)

    def in_flight(self) -> list[ray.ObjectRef]:
        return list(self.calls) + list(self.health.pings)

    def _least_loaded(self) -> int | None:
        """The usable engine with room and the least audio queued (then fewest calls)."""
        room = [k for k in range(len(self.actors))
                if self.load[k] < self.depth and self.health.usable(k)]
        return min(room, key=lambda k: (self.queued_s[k], self.load[k], k), default=None)

    def _fair_share(self, k: int) -> float:
        """Audio seconds engine `k` may still take for all usable engines to end level."""
        usable = [j for j in range(len(self.actors)) if self.health.usable(j)]
        level = (sum(self.queued_s[j] for j in usable) + self.waiting_s) / len(usable)
        return level - self.queued_s[k]

    def _take(self, k: int, force: bool, end: bool) -> tuple[list[SegmentRef], int] | None:
        if self.retry:
            return self.retry.popleft()
        if not self.waiting or (len(self.waiting) < self.batch and not force):
            return None
        cap = self._fair_share(k) if end else math.inf
        taken = [self.waiting.popleft()]
        seconds = taken[0].audio_s
        while (self.waiting and len(taken) < self.batch
               and seconds + self.waiting[0].audio_s <= cap):
            taken.append(self.waiting.popleft())
            seconds += taken[-1].audio_s
        self.waiting_s -= seconds
        return taken, 0

    def feed(self, nothing_more_coming: bool) -> None:
        """Send calls while an engine has room, each to the least loaded. A partial batch goes
        out when nothing more is coming, or when its engine would otherwise idle."""
        self.health.feed()
        if self.health.all_gone() and (self.waiting or self.retry):
            raise EnginesLost("every engine actor died and Ray's restarts are used up: the "
                              "shard's finished rows are committed; run its task again")
        if nothing_more_coming and not self.longest_first:
            self.waiting = collections.deque(sorted(self.waiting, key=lambda s: -s.audio_s))
            self.longest_first = True
        while (k := self._least_loaded()) is not None:
            got = self._take(k, force=nothing_more_coming or self.load[k] == 0,
                             end=nothing_more_coming)
            if got is None:
                break
            self._send(k, *got)

    def _send(self, k: int, segments: list[SegmentRef], attempt: int) -> None:
        chunks = list(dict.fromkeys(s.chunk for s in segments))
        pos = {c: i for i, c in enumerate(chunks)}
        picks = [SegmentPick(pos[s.chunk], s.item, s.seg, s.id, s.language, s.members)
                 for s in segments]
        ref = self.actors[k].transcribe.remote(chunks, picks, self.prepared)
        call = EngineCall(k, segments, attempt, sum(s.audio_s for s in segments))
        self.calls[ref] = call
        self.load[k] += 1
        self.queued_s[k] += call.audio_s

    def complete(self, ref: ray.ObjectRef) -> Transcribed | SegmentFailed | None:
        """A finished call's texts; a segment that failed for good; or None (split and queued,
        or a ping)."""
        if ref in self.health.pings:
            self.health.complete(ref)
            return None
        call = self.calls.pop(ref)
        self.load[call.engine] -= 1
        self.queued_s[call.engine] -= call.audio_s
        try:
            result: Transcripts = ray.get(ref)
        except (RayActorError, RayTaskError) as e:
            if isinstance(e, RayActorError):
                self.health.failed(call.engine)
            return self._failed(call, e)
        self.latency_ms.append(result.took_s * 1000)
        return Transcribed(call.segments, result.texts, result.took_s / len(call.segments))

    def counters(self) -> dict[str, float]:
        return {"latency/engine_ms_p50": percentile(self.latency_ms, 50),
                "latency/engine_ms_p90": percentile(self.latency_ms, 90),
                "queue/engine": self.queued(), "engine/calls_in_flight": len(self.calls)}

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


def engine_actor_config(cfg: DictConfig) -> tuple[dict, dict, dict, dict]:
    return (OmegaConf.to_container(cfg.engine, resolve=True),  # type: ignore[return-value]
            OmegaConf.to_container(cfg.faults, resolve=True),
            OmegaConf.to_container(cfg.quality, resolve=True),
            OmegaConf.to_container(cfg.language_id, resolve=True))
