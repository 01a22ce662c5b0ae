"""Which engine gets what: calls go to the engine with the least audio queued, and a shard's last
segments are spread so that the engines end level. Real engine actors (the timed engine, free),
segments of known lengths; the test only feeds the stage and reads where each call went, so
nothing here depends on how fast the actors answer."""

from collections.abc import Iterator

import numpy as np
import pytest
import ray

from asrd.runtime.engine import EngineStage
from asrd.runtime.pipeline import Pipeline
from asrd.runtime.records import SegmentRef
from asrd.testing.faults import SAMPLE_RATE
from asrd.testing.timed_engine import TimedSettings
from hpc.ray_node import local_ray
from tests.conftest import make_cfg


@pytest.fixture(scope="module")
def pipe(corpus_index, tmp_path_factory) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("balance")
    TimedSettings().write(tmp / "state")
    cfg = make_cfg(corpus_index, tmp / "run", "engine.kind=asrd.testing.timed_engine:TimedEngine",
                   f"faults.state_dir={tmp / 'state'}", "engine.num_engines=4",
                   "engine.cpus_per_engine=0.1", "pipeline.decode_actors=1")
    with local_ray(num_cpus=2, num_gpus=0):
        p = Pipeline(cfg, 2, 0)
        yield p
        p.close()


def segments(lengths: list[float]) -> list[SegmentRef]:
    """One segment per length (seconds), all in one decode call's chunk."""
    chunk = ray.put([[np.zeros(int(x * SAMPLE_RATE), np.float32)] for x in lengths])
    return [SegmentRef(chunk, i, 0, i, f"r{i}", None, seconds=x) for i, x in enumerate(lengths)]


def sent(stage: EngineStage) -> list[list[float]]:
    """Per engine, the lengths of the segments sent to it, in order."""
    out: list[list[float]] = [[] for _ in stage.actors]
    for call in stage.calls.values():
        out[call.engine].extend(s.seconds for s in call.segments)
    return out


def test_calls_go_to_the_engine_with_the_least_audio_queued(pipe):
    stage = EngineStage(pipe.engines[:2], batch_size=1, calls_in_flight=3, retries=2,
                        prepared=False)
    stage.add(segments([10, 1, 1, 1, 1]))
    stage.feed(nothing_more_coming=False)
    # By count the 10 s engine would get every other clip ([10, 1, 1] against [1, 1]); by queued
    # seconds the other takes clips until it is full.
    assert sent(stage) == [[10, 1], [1, 1, 1]]
    assert stage.queued_s == [11, 3]


def test_a_shards_last_segments_are_spread_so_the_engines_end_level(pipe):
    stage = EngineStage(pipe.engines, batch_size=8, calls_in_flight=2, retries=2,
                        prepared=False)
    stage.add(segments([1, 8, 2, 7, 1, 3, 6, 4, 5, 1]))  # 38 s
    stage.feed(nothing_more_coming=True)
    # Not one batch of eight (36 s on one engine, 2 s on another): longest first, each call
    # within its engine's share of what is left (an engine with room still takes one clip), so
    # the engines end within one short clip of each other; the last clip waits for the first
    # engine to come free.
    assert stage.queued_s == [9, 9, 9, 10], sent(stage)
    assert sent(stage) == [[8, 1], [7, 2], [6, 3], [5, 4, 1]]
    assert [s.seconds for s in stage.waiting] == [1]


def test_partial_batches_wait_while_more_is_coming_and_the_engines_are_busy(pipe):
    stage = EngineStage(pipe.engines[:1], batch_size=4, calls_in_flight=2, retries=2,
                        prepared=False)
    stage.add(segments([3, 3, 3, 3, 3, 3]))
    stage.feed(nothing_more_coming=False)
    assert sent(stage) == [[3, 3, 3, 3]] and len(stage.waiting) == 2
