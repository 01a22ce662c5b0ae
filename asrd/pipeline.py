"""The on-node pipeline: index rows -> decode actors (CPU) -> engine actors -> shard writer.

The driver (the task process) never touches audio samples: a decode actor returns two objects,
small metadata and the segment arrays; the driver reads the metadata and hands references to the
arrays to an engine actor, which maps them zero-copy from Ray's shared-memory object store. Where
the engine hands out an input preparer (vLLM: its renderer; Whisper: log-mel features), the
decode actors also run it and return engine inputs instead of arrays, so input preparation grows
with the CPUs and the engine's process only feeds its GPU.

Backpressure: at most `decode_in_flight` decode calls are outstanding, and new decodes start only
while fewer than a few engine batches of decoded segments are waiting, so memory stays flat however
large the shard. Each engine actor keeps `calls_in_flight` calls queued, so the GPU side is never
left idle while decoded audio waits.

Failures never lose rows: a decode error is an error row; a decode actor that dies is restarted by
Ray and its items are retried one by one up to `decode_retries`; an engine call that fails is
split in halves and retried down to single segments, then the row becomes an error row.
"""

from __future__ import annotations

import collections
import importlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import ray
from omegaconf import DictConfig, OmegaConf
from ray.exceptions import RayActorError, RayTaskError

from asrd.audio import AudioError, decode, split_points
from asrd.audio_cache import AudioCache
from asrd.engines import InputPreparer, Segment, build_engine, preparer_modules
from asrd.plan import ShardSpec
from asrd.schema import error_reason
from asrd.writer import ShardWriter

log = logging.getLogger("asrd.pipeline")

ITEM_FIELDS = ("row", "id", "path", "audio", "language")


def item_language(item: dict) -> str | None:
    """The item's language from the index (a missing value reads as NaN or None there)."""
    lang = item.get("language")
    return lang if isinstance(lang, str) else None


def item_meta(item: dict, error: str | None = None) -> dict[str, Any]:
    """What a decode actor reports of one item beside its segments."""
    return {"row": item["row"], "error": error, "spans": [], "duration_s": None, "decode_s": 0.0}


# --- actors ------------------------------------------------------------------------------------------

class DecodeWorker:
    """Decode, downmix, resample and segment a chunk of items (one CPU each); where the engine
    hands out an `InputPreparer`, also turn each segment into the engine's input."""

    def __init__(self, audio_cfg: dict, cache_cfg: dict, preload: list[str]):
        self.audio = audio_cfg
        self.cache = AudioCache.from_config(OmegaConf.create(cache_cfg))
        self.preparer: InputPreparer | None = None
        self.preparer_ref: ray.ObjectRef | None = None
        # Imports for the preparer run while the engines start (a decode call waits for them).
        threading.Thread(target=lambda: [importlib.import_module(m) for m in preload],
                         daemon=True).start()

    def _use_preparer(self, refs: list[ray.ObjectRef]) -> None:
        """The preparer travels by reference with every call, so a restarted actor has it too."""
        ref = refs[0] if refs else None
        if ref != self.preparer_ref:
            self.preparer, self.preparer_ref = (ray.get(ref) if ref else None), ref

    def _source(self, item: dict) -> str | bytes:
        if item.get("audio") is not None:
            return item["audio"]
        if not item.get("path"):
            raise AudioError("missing file", "the index row names no audio")
        path = item["path"]
        return self.cache.local_path(path) if self.cache else path

    def _decode_one(self, item: dict) -> tuple[dict, list[Any]]:
        t0 = time.perf_counter()
        sr = self.audio["sample_rate"]
        meta = item_meta(item)
        segments: list[Any] = []
        for attempt in range(self.audio["read_retries"] + 1):
            try:
                x = decode(self._source(item), sr, self.audio["max_duration_s"])
                spans = split_points(x, sr, self.audio["max_segment_s"])
                segments = [x[a:b] for a, b in spans]
                meta.update(duration_s=len(x) / sr, spans=[(a / sr, b / sr) for a, b in spans])
                break
            except AudioError as e:
                meta["error"] = str(e)
                if e.reason != "unreadable" or attempt == self.audio["read_retries"]:
                    break
            except Exception as e:  # a decoder bug must cost one row, not the shard
                meta["error"] = f"decode error: {type(e).__name__}: {e}"
                break
        if meta["error"]:
            segments = []
        else:
            meta["error"] = None
        if segments and self.preparer is not None:
            lang = item_language(item)
            try:
                segments = [self.preparer.prepare(s, lang) for s in segments]
            except Exception as e:  # audio the model cannot take costs its row, not the shard
                meta["error"], segments = f"engine input error: {type(e).__name__}: {e}", []
        meta["decode_s"] = time.perf_counter() - t0
        return meta, segments

    @ray.method(num_returns=2)
    def decode(self, items: list[dict], preparer: list[ray.ObjectRef]
               ) -> tuple[list[dict], list[list[Any]]]:
        """Metadata per item, and its segments (arrays, or engine inputs when preparing)."""
        try:
            self._use_preparer(preparer)
        except Exception as e:  # say why, rather than look like a dead actor
            why = (str(e).strip().splitlines() or [""])[-1][:300]
            error = f"engine input error: cannot load the engine's input preparer: {why}"
            return [item_meta(it, error) for it in items], [[] for _ in items]
        out = [self._decode_one(it) for it in items]
        return [m for m, _ in out], [s for _, s in out]


class EngineWorker:
    """Holds one engine for the whole task; serves `calls_in_flight` queued calls."""

    def __init__(self, engine_cfg: dict):
        self.engine = build_engine(OmegaConf.create(engine_cfg))
        self.gate = threading.Semaphore(max(1, self.engine.max_concurrency))

    def name(self) -> str:
        return self.engine.name

    def input_preparer(self) -> InputPreparer | None:
        return self.engine.input_preparer()

    def transcribe(self, refs: list[ray.ObjectRef], picks: list[tuple[int, int, int, str | None]],
                   prepared: bool) -> tuple[list[str], float]:
        """Texts for the picked segments of decode results (arrays, or prepared inputs)."""
        chunks = ray.get(refs)  # arrays are zero-copy views into the object store
        found = [(chunks[r][i][s], lang) for r, i, s, lang in picks]
        segments = [Segment(None, lang, x) if prepared else Segment(x, lang) for x, lang in found]
        with self.gate:
            t0 = time.perf_counter()
            texts = self.engine.transcribe(segments)
            took = time.perf_counter() - t0
        if len(texts) != len(segments):
            raise RuntimeError(f"engine returned {len(texts)} texts for {len(segments)} segments")
        return texts, took

    def close(self) -> None:
        self.engine.close()


class JudgeWorker:
    """Holds one LLM judge for the whole task; scores transcripts (one call at a time)."""

    def __init__(self, judge_cfg: dict):
        from asrd.judge import build_judge

        self.judge = build_judge(OmegaConf.create(judge_cfg))

    def score(self, texts: list[str | None]) -> list[tuple[float | None, str | None]]:
        return self.judge.score(texts)

    def close(self) -> None:
        self.judge.close()


# --- driver state --------------------------------------------------------------------------------------

@dataclass
class Pick:
    """One segment waiting for (or in) an engine call."""

    ref: ray.ObjectRef  # the decode call's segment arrays
    item: int  # item index within that decode call
    seg: int
    row: int
    language: str | None


@dataclass
class RowState:
    item: dict
    meta: dict
    texts: list[str | None]
    left: int
    engine_s: float = 0.0


@dataclass
class Stats:
    done: int = 0
    failed: int = 0
    audio_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    decode_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=2048))
    engine_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=2048))
    engine_starved_s: float = 0.0


def _pct(values: collections.deque, q: float) -> float:
    return float(np.percentile(np.fromiter(values, float), q)) if values else 0.0


class Pipeline:
    """The actors of one task, reused for every shard it runs (engine start-up is paid once)."""

    def __init__(self, cfg: DictConfig, cpus: int, gpus: int):
        self.cfg = cfg
        e, p = cfg.engine, cfg.pipeline
        n_decode = decode_actor_count(cfg, cpus)
        # Fractional CPUs when the task has fewer than one per actor: every actor must be
        # schedulable, or Ray would wait for resources forever.
        decode_cpu = min(1.0, max(0.0, cpus - _engine_and_judge_cpus(cfg)) / n_decode)
        engine_cfg = OmegaConf.to_container(e, resolve=True)
        self.engines = [
            ray.remote(EngineWorker).options(
                num_cpus=e.cpus_per_engine, num_gpus=e.gpus_per_engine, max_restarts=2,
                max_concurrency=e.calls_in_flight + 1).remote(engine_cfg)
            for _ in range(e.num_engines)]
        audio_cfg = OmegaConf.to_container(cfg.audio, resolve=True)
        store_cfg = OmegaConf.to_container(cfg.store, resolve=True)
        preload = preparer_modules(e)
        self.decoders = [
            ray.remote(DecodeWorker).options(num_cpus=decode_cpu, max_restarts=-1).remote(
                audio_cfg, store_cfg, preload) for _ in range(n_decode)]
        j = cfg.judge
        self.judges = [
            ray.remote(JudgeWorker).options(
                num_cpus=0 if j.gpus_per_engine else 1, num_gpus=j.gpus_per_engine,
                max_restarts=2).remote(OmegaConf.to_container(j, resolve=True))
            for _ in range(j.num_engines if j.enabled else 0)]
        # Wait for every engine (and judge): a shard started on the first engine alone never
        # reaches the steady state of several engines per GPU.
        self.model_name = ray.get([en.name.remote() for en in self.engines])[0]
        preparer = ray.get(self.engines[0].input_preparer.remote())
        # by reference (a list, so that Ray passes it on unresolved): decode actors fetch it once
        self.preparer_refs = [ray.put(preparer)] if preparer is not None else []
        self.decode_in_flight = p.decode_in_flight or 2 * n_decode
        log.info("pipeline: %d decode actors (%.2f CPU each), %d %s engines (%s)", n_decode,
                 decode_cpu, e.num_engines, e.kind, self.model_name)

    def close(self) -> None:
        with_timeout = [a.close.remote() for a in self.engines + self.judges]
        ray.wait(with_timeout, num_returns=len(with_timeout), timeout=60)

    def run(self, spec: ShardSpec, items: Iterator[dict], writer: ShardWriter, todo: int,
            on_metrics: Callable[[dict], None] | None = None) -> Stats:
        return _ShardRun(self, spec, items, writer, todo, on_metrics).run()


class _ShardRun:
    """The driver loop for one shard: feed decoders, batch segments to engines, write rows."""

    def __init__(self, pipe: Pipeline, spec: ShardSpec, items: Iterator[dict], writer: ShardWriter,
                 todo: int, on_metrics: Callable[[dict], None] | None):
        self.pipe, self.cfg, self.spec, self.writer = pipe, pipe.cfg, spec, writer
        self.items, self.items_left = items, True
        self.todo, self.on_metrics = todo, on_metrics
        self.stats = Stats()
        self.rows: dict[int, RowState] = {}
        self.ready: collections.deque[Pick] = collections.deque()
        self.retry: collections.deque[tuple[list[Pick], int]] = collections.deque()
        self.decoding: dict[ray.ObjectRef, tuple[int, ray.ObjectRef, list[dict], int]] = {}
        self.calls: dict[ray.ObjectRef, tuple[int, list[Pick], int]] = {}
        self.engine_load = [0] * len(pipe.engines)
        self.to_judge: collections.deque[dict] = collections.deque()
        self.judging: dict[ray.ObjectRef, tuple[int, list[dict]]] = {}
        self.judge_load = [0] * len(pipe.judges)
        self.next_decoder = 0
        self.batch = self.cfg.engine.batch_size
        self.high_water = 2 * self.batch * len(pipe.engines) * self.cfg.engine.calls_in_flight
        self.t0 = time.monotonic()

    # --- feeding ---------------------------------------------------------------------------------
    def _next_chunk(self) -> list[dict]:
        chunk = []
        while self.items_left and len(chunk) < self.cfg.pipeline.items_per_decode_task:
            try:
                chunk.append(next(self.items))
            except StopIteration:
                self.items_left = False
        return chunk

    def _submit_decode(self, chunk: list[dict], attempt: int = 0) -> None:
        k = self.next_decoder % len(self.pipe.decoders)
        self.next_decoder += 1
        meta_ref, audio_ref = self.pipe.decoders[k].decode.remote(
            [{f: it.get(f) for f in ITEM_FIELDS} for it in chunk], self.pipe.preparer_refs)
        self.decoding[meta_ref] = (k, audio_ref, chunk, attempt)

    def _feed_decoders(self) -> None:
        while (len(self.decoding) < self.pipe.decode_in_flight and self.items_left
               and len(self.ready) < self.high_water):
            chunk = self._next_chunk()
            if chunk:
                self._submit_decode(chunk)

    def _take_batch(self, force: bool) -> tuple[list[Pick], int] | None:
        if self.retry:
            return self.retry.popleft()
        if len(self.ready) >= self.batch or (force and self.ready):
            return [self.ready.popleft() for _ in range(min(self.batch, len(self.ready)))], 0
        return None

    def _feed_engines(self) -> None:
        starving = not self.items_left and not self.decoding
        for k, load in sorted(enumerate(self.engine_load), key=lambda kv: kv[1]):
            while self.engine_load[k] < self.cfg.engine.calls_in_flight:
                # A partial batch goes out when nothing more is coming, or the engine would idle.
                got = self._take_batch(force=starving or self.engine_load[k] == 0)
                if got is None:
                    break
                picks, attempt = got
                refs = list(dict.fromkeys(p.ref for p in picks))
                pos = {r: i for i, r in enumerate(refs)}
                call = self.pipe.engines[k].transcribe.remote(
                    refs, [(pos[p.ref], p.item, p.seg, p.language) for p in picks],
                    bool(self.pipe.preparer_refs))
                self.calls[call] = (k, picks, attempt)
                self.engine_load[k] += 1

    # --- results -----------------------------------------------------------------------------------
    def _on_decoded(self, meta_ref: ray.ObjectRef) -> None:
        k, audio_ref, chunk, attempt = self.decoding.pop(meta_ref)
        try:
            metas = ray.get(meta_ref)
        except (RayActorError, RayTaskError) as e:
            # The actor died mid-chunk (Ray restarts it): retry items one by one, so a poison
            # file costs only its own row.
            if attempt >= self.cfg.pipeline.decode_retries:
                for it in chunk:
                    self._finish_error(it, f"decode worker died: {type(e).__name__}")
            else:
                for it in chunk:
                    self._submit_decode([it], attempt + 1)
            return
        for i, (it, meta) in enumerate(zip(chunk, metas)):
            self.stats.decode_ms.append(meta["decode_s"] * 1000)
            if meta["error"]:
                self._finish_error(it, meta["error"], meta)
                continue
            n = len(meta["spans"])
            self.rows[it["row"]] = RowState(it, meta, [None] * n, n)
            lang = item_language(it)
            self.ready.extend(Pick(audio_ref, i, s, it["row"], lang) for s in range(n))

    def _on_called(self, call: ray.ObjectRef) -> None:
        k, picks, attempt = self.calls.pop(call)
        self.engine_load[k] -= 1
        try:
            texts, took = ray.get(call)
        except (RayActorError, RayTaskError) as e:
            self._engine_failed(picks, attempt, e)
            return
        self.stats.engine_ms.append(took * 1000)
        for p, text in zip(picks, texts):
            state = self.rows.get(p.row)
            if state is None:  # the row already failed through another segment
                continue
            state.texts[p.seg] = text
            state.engine_s += took / len(picks)
            state.left -= 1
            if state.left == 0:
                self._finish_ok(self.rows.pop(p.row))

    def _engine_failed(self, picks: list[Pick], attempt: int, e: Exception) -> None:
        reason = getattr(e, "cause", None) or e
        if len(picks) > 1:
            half = len(picks) // 2
            self.retry.extend([(picks[:half], attempt), (picks[half:], attempt)])
        elif attempt < self.cfg.pipeline.engine_retries:
            self.retry.append((picks, attempt + 1))
        else:
            state = self.rows.pop(picks[0].row, None)
            if state is not None:
                msg = str(reason).strip().splitlines()[-1][:300] if str(reason).strip() else ""
                self._finish_error(state.item, f"engine error: {type(reason).__name__}: {msg}",
                                   state.meta)

    # --- rows ----------------------------------------------------------------------------------------
    def _base_row(self, item: dict, meta: dict | None) -> dict[str, Any]:
        row = {k: v for k, v in item.items() if k != "audio"}
        row.update(model=self.pipe.model_name, engine=self.cfg.engine.kind, text=None,
                   segments=None, engine_s=None,
                   duration_s=(meta or {}).get("duration_s") or item.get("duration_s"),
                   decode_s=(meta or {}).get("decode_s"))
        return row

    def _finish_ok(self, state: RowState) -> None:
        row = self._base_row(state.item, state.meta)
        texts = [t.strip() for t in state.texts]
        row.update(text=" ".join(t for t in texts if t), error=None, engine_s=state.engine_s,
                   segments=[{"start": a, "end": b, "text": t}
                             for (a, b), t in zip(state.meta["spans"], texts)])
        self.stats.done += 1
        self.stats.audio_s += row["duration_s"] or 0.0
        self._emit(row)

    def _finish_error(self, item: dict, error: str, meta: dict | None = None) -> None:
        row = self._base_row(item, meta)
        row["error"] = error
        reason = error_reason(error)
        self.stats.errors[reason] = self.stats.errors.get(reason, 0) + 1
        self.stats.done += 1
        self.stats.failed += 1
        self._emit(row)

    def _emit(self, row: dict[str, Any]) -> None:
        """A finished row goes to the judge (when there is one), else straight to the writer."""
        if self.pipe.judges:
            self.to_judge.append(row)
        else:
            self.writer.add(row)

    # --- judge ---------------------------------------------------------------------------------------
    def _feed_judges(self) -> None:
        size = self.cfg.judge.batch_size
        upstream_done = not (self.items_left or self.decoding or self.calls or self.ready
                             or self.retry or self.rows)
        for k in range(len(self.pipe.judges)):
            if self.judge_load[k] or not self.to_judge:
                continue  # one call at a time per judge (vLLM's LLM is not thread-safe)
            if len(self.to_judge) < size and not upstream_done:
                continue
            rows = [self.to_judge.popleft() for _ in range(min(size, len(self.to_judge)))]
            texts = [r["text"] if r["error"] is None else None for r in rows]
            self.judging[self.pipe.judges[k].score.remote(texts)] = (k, rows)
            self.judge_load[k] += 1

    def _on_judged(self, call: ray.ObjectRef) -> None:
        k, rows = self.judging.pop(call)
        self.judge_load[k] -= 1
        try:
            results = ray.get(call)
        except (RayActorError, RayTaskError) as e:
            results = [(None, f"judge failed: {type(e).__name__}")] * len(rows)
        for row, (score, error) in zip(rows, results):
            row.update(score=score, judge_error=error)
            self.writer.add(row)

    # --- loop --------------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        s = self.stats
        m = {"shard": self.spec.shard, "items_done": s.done, "items_total": self.todo,
             "items_failed": s.failed, "audio_s_done": s.audio_s,
             "elapsed_s": time.monotonic() - self.t0,
             "decode_ms_p50": _pct(s.decode_ms, 50), "decode_ms_p90": _pct(s.decode_ms, 90),
             "engine_ms_p50": _pct(s.engine_ms, 50), "engine_ms_p90": _pct(s.engine_ms, 90),
             "queue_decode": len(self.decoding), "queue_engine": len(self.ready),
             "queue_judge": len(self.to_judge),
             "engine_calls_in_flight": len(self.calls), "engine_starved_s": s.engine_starved_s}
        m.update({f"failures/{k}": v for k, v in s.errors.items()})
        return m

    def run(self) -> Stats:
        last_metrics = time.monotonic()
        warned = False
        try:
            while True:
                self._feed_decoders()
                self._feed_engines()
                self._feed_judges()
                pending = list(self.decoding) + list(self.calls) + list(self.judging)
                if not pending:
                    if self.items_left or self.ready or self.retry or self.to_judge:
                        continue
                    break
                t = time.monotonic()
                ready, _ = ray.wait(pending, num_returns=1, timeout=1.0)
                if not self.calls and not self.ready and (self.items_left or self.decoding):
                    self.stats.engine_starved_s += time.monotonic() - t
                for ref in ready:
                    if ref in self.decoding:
                        self._on_decoded(ref)
                    elif ref in self.calls:
                        self._on_called(ref)
                    else:
                        self._on_judged(ref)
                now = time.monotonic()
                if now - last_metrics >= 1.0:
                    last_metrics = now
                    if self.on_metrics:
                        self.on_metrics(self.metrics())
                    elapsed = now - self.t0
                    if (not warned and elapsed > 60
                            and self.stats.engine_starved_s > 0.2 * elapsed):
                        warned = True
                        log.warning("decode cannot keep up: engines idle %.0f%% of the time; raise "
                                    "pipeline.decode_actors or CPUs per task",
                                    100 * self.stats.engine_starved_s / elapsed)
                if self.writer.buffer and now - self.writer.last_commit >= self.writer.part_seconds:
                    self.writer.commit_part()
        finally:
            # Whatever happens (SIGTERM, requeue, a bug), rows already finished become durable.
            self.writer.commit_part()
        if self.on_metrics:
            self.on_metrics(self.metrics())
        return self.stats


def decode_actor_count(cfg: DictConfig, cpus: int) -> int:
    """How many decode actors a task of `cpus` CPUs runs (for planning and warnings)."""
    return cfg.pipeline.decode_actors or max(1, int(cpus - math.ceil(_engine_and_judge_cpus(cfg))))


def _engine_and_judge_cpus(cfg: DictConfig) -> float:
    e, j = cfg.engine, cfg.judge
    judge_cpus = j.num_engines if j.enabled and not j.gpus_per_engine else 0
    return e.num_engines * e.cpus_per_engine + judge_cpus
