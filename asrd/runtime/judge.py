"""The judge stage (optional): LLM judge actors score finished rows before they are written.

Rows wait here until a judge batch is full (or nothing more is coming); each judge serves one call
at a time (vLLM's offline LLM is not thread-safe). A judge call that fails costs the rows' scores
(`judge_error`), never the rows.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

import ray
from omegaconf import OmegaConf
from ray.exceptions import RayActorError, RayTaskError

from asrd.runtime.records import RowResult


class JudgeWorker:
    """Holds one LLM judge for the whole task."""

    def __init__(self, judge_cfg: dict):
        from asrd.engines.judge import build_judge

        self.judge = build_judge(OmegaConf.create(judge_cfg))

    def score(self, texts: list[str | None]) -> list[tuple[float | None, str | None]]:
        return self.judge.score(texts)

    def close(self) -> None:
        self.judge.close()


@dataclass
class JudgeCall:
    judge: int
    rows: list[RowResult]


class JudgeStage:
    """Batches finished rows to the judges; with no judges, rows pass straight through."""

    def __init__(self, actors: list[Any], batch_size: int):
        self.actors, self.batch = actors, batch_size
        self.waiting: collections.deque[RowResult] = collections.deque()
        self.calls: dict[ray.ObjectRef, JudgeCall] = {}
        self.busy_judges: set[int] = set()

    @property
    def enabled(self) -> bool:
        return bool(self.actors)

    def add(self, row: RowResult) -> None:
        self.waiting.append(row)

    def busy(self) -> bool:
        return bool(self.waiting or self.calls)

    def in_flight(self) -> list[ray.ObjectRef]:
        return list(self.calls)

    def feed(self, nothing_more_coming: bool) -> None:
        for k, actor in enumerate(self.actors):
            if k in self.busy_judges or not self.waiting:
                continue
            if len(self.waiting) < self.batch and not nothing_more_coming:
                return
            rows = [self.waiting.popleft() for _ in range(min(self.batch, len(self.waiting)))]
            self.calls[actor.score.remote([r.text if r.ok else None for r in rows])] = \
                JudgeCall(k, rows)
            self.busy_judges.add(k)

    def counters(self) -> dict[str, float]:
        return {"queue/judge": len(self.waiting)}

    def complete(self, ref: ray.ObjectRef) -> list[RowResult]:
        call = self.calls.pop(ref)
        self.busy_judges.discard(call.judge)
        try:
            results = ray.get(ref)
        except (RayActorError, RayTaskError) as e:
            results = [(None, f"judge failed: {type(e).__name__}")] * len(call.rows)
        for row, (score, error) in zip(call.rows, results):
            row.score, row.judge_error = score, error
        return call.rows
