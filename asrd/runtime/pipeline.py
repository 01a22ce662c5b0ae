"""The actors of one task, started once and reused for every shard it runs (an engine's start-up
is paid once per task): decode actors on the CPUs, engine actors (on the GPUs, or CPUs), judges.

Sizing: every actor must be schedulable inside the task's CPUs, or Ray would wait for resources
forever, so decode actors get fractional CPUs when the task has fewer than one per actor.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, Callable, Iterator

import ray
from omegaconf import DictConfig, OmegaConf
from ray.exceptions import RayActorError

from asrd.audio.vad import check_available as check_vad
from asrd.engines import EngineUnavailable, preparer_modules
from asrd.engines.registry import engine_packs
from asrd.plan import ShardSpec
from asrd.runtime.decode_stage import DecodeStage
from asrd.runtime.decode_worker import DecodeWorker, decode_actor_config
from asrd.runtime.driver import ShardDriver
from asrd.runtime.engine import EngineStage, EngineWorker, engine_actor_config
from asrd.runtime.judge import JudgeStage, JudgeWorker
from asrd.runtime.metrics import ShardMetrics
from asrd.runtime.partial import PartialRows
from asrd.runtime.placement import Placement, engine_gpus
from asrd.runtime.quality import QualityStage
from asrd.runtime.records import IndexRow, RowResult
from asrd.runtime.redo import Redo
from asrd.runtime.streams import LongRecordings
from asrd.runtime.write import ShardWriter

log = logging.getLogger("asrd.pipeline")

CLOSE_TIMEOUT_S = 60.0


class Pipeline:
    def __init__(self, cfg: DictConfig, cpus: int, gpus: int):
        self.cfg = cfg
        e, p, j = cfg.engine, cfg.pipeline, cfg.judge
        if cfg.audio.vad.enabled:
            check_vad()  # here, once, rather than as an error on every row
        packing = engine_packs(cfg)
        if cfg.audio.pack.enabled and not packing:
            log.info("engine %s does not split packed windows by time, or the language-ID "
                     "pass routes clips one by one: every clip is transcribed alone", e.kind)
        n_decode = decode_actor_count(cfg, cpus)
        decode_cpu = min(1.0, max(0.0, cpus - _engine_and_judge_cpus(cfg)) / n_decode)
        self.engines = [
            ray.remote(EngineWorker).options(
                num_cpus=e.cpus_per_engine, num_gpus=engine_gpus(e), max_restarts=2,
                max_concurrency=e.calls_in_flight + 1).remote(*engine_actor_config(cfg))
            for _ in range(e.num_engines)]
        self.decoders = [
            ray.remote(DecodeWorker).options(num_cpus=decode_cpu, max_restarts=-1).remote(
                *decode_actor_config(cfg), packing, preparer_modules(e))
            for _ in range(n_decode)]
        self.judges = [
            ray.remote(JudgeWorker).options(
                num_cpus=0 if j.gpus_per_engine else 1, num_gpus=j.gpus_per_engine,
                max_restarts=2).remote(OmegaConf.to_container(j, resolve=True))
            for _ in range(j.num_engines if j.enabled else 0)]
        # Wait for every engine (and judge): a shard started on the first engine alone never
        # reaches the steady state of several engines per GPU.
        self.model_name = _started([en.name.remote() for en in self.engines], e.kind)[0]
        self.placement = Placement(tuple(tuple(g) for g in ray.get(
            [en.gpu_ids.remote() for en in self.engines])))
        log.info("engine placement: %s", self.placement.describe())
        preparer = ray.get(self.engines[0].input_preparer.remote())
        # by reference (a list, so that Ray passes it on unresolved): decode actors fetch it once
        self.preparer_refs = [ray.put(preparer)] if preparer is not None else []
        self.decode_in_flight = p.decode_in_flight or 2 * n_decode
        self.quality = QualityStage(cfg)
        log.info("pipeline: %d decode actors (%.2f CPU each), %d %s engines (%s)", n_decode,
                 decode_cpu, e.num_engines, e.kind, self.model_name)

    def close(self, wait: bool = True) -> None:
        """Release the engines; `wait=False` when stopping on a signal (the actors die with Ray)."""
        closing = [a.close.remote() for a in self.engines + self.judges]
        if wait:
            ray.wait(closing, num_returns=len(closing), timeout=CLOSE_TIMEOUT_S)

    def output(self, row: RowResult) -> dict[str, Any]:
        return self.quality.assess(row).output(self.model_name, self.cfg.engine.kind,
                                               judged=bool(self.judges))

    def run(self, spec: ShardSpec, rows: Iterator[IndexRow], writer: ShardWriter,
            partial: PartialRows, todo: int, on_metrics: Callable[[dict], None] | None = None
            ) -> ShardMetrics:
        """One shard's rows through the stages into `writer` (long rows' segments on the way
        into `partial`)."""
        c = self.cfg
        redo = Redo(c.audio.retry_segment_s)
        decode = DecodeStage(self.decoders, self.preparer_refs, self.decode_in_flight,
                             c.pipeline.decode_retries, redo.work_item)
        engine = EngineStage(self.engines, c.engine.batch_size, c.engine.calls_in_flight,
                             c.pipeline.engine_retries, prepared=bool(self.preparer_refs))
        judge = JudgeStage(self.judges, c.judge.batch_size)
        long = LongRecordings(decode, partial, c.pipeline.stream_min_s, spec.shard)
        return ShardDriver(rows, c.pipeline.items_per_decode_task, decode, engine, judge, long,
                           redo, writer, partial, self.output, ShardMetrics(spec.shard, todo),
                           on_metrics).run()


def _started(refs: list[ray.ObjectRef], what: str) -> list[Any]:
    """Wait for actors' first answers; an actor whose constructor raised becomes one clear
    EngineUnavailable carrying that error's own message, not Ray's wrapped traceback."""
    try:
        return ray.get(refs)
    except RayActorError as err:
        if not err.actor_init_failed:
            raise
        raise EngineUnavailable(f"the {what} engine could not start: "
                                f"{_last_error_line(err.error_msg)}") from None


def _last_error_line(traceback_text: str) -> str:
    """`Type: message` of the exception that ends a traceback, without its module path."""
    lines = [x.strip() for x in traceback_text.strip().splitlines() if x.strip()]
    start = next((k for k in range(len(lines) - 1, -1, -1)
                  if re.match(r"[A-Za-z_][\w.]*: ", lines[k])), None)
    if start is None:
        return lines[-1] if lines else traceback_text
    head, _, message = " ".join(lines[start:]).partition(": ")
    kind = head.rsplit(".", 1)[-1]  # "asrd.engines.base.EngineUnavailable" -> its class name
    return message if kind == EngineUnavailable.__name__ else f"{kind}: {message}"


def decode_actor_count(cfg: DictConfig, cpus: int) -> int:
    """How many decode actors a task of `cpus` CPUs runs (for planning and warnings)."""
    return cfg.pipeline.decode_actors or max(1, int(cpus - math.ceil(_engine_and_judge_cpus(cfg))))


def _engine_and_judge_cpus(cfg: DictConfig) -> float:
    e, j = cfg.engine, cfg.judge
    judge_cpus = j.num_engines if j.enabled and not j.gpus_per_engine else 0
    return e.num_engines * e.cpus_per_engine + judge_cpus
